//! `template.yaml` (AWS SAM) against the rest of the repository: the table is exactly
//! `infra/table.json`; every function is one `functions/<name>` binary built the same way; the
//! routes are DESIGN.md section 3's with the notify and session routes never behind an
//! authorizer; secrets come only from Secrets Manager; each function may use only the DynamoDB
//! actions and indexes its store calls need. `cfn-lint` (run by scripts/test.sh) checks the
//! template against CloudFormation's schemas; this checks it against the project.

use std::collections::{BTreeMap, BTreeSet};

use crate::deploy_support::{
    DAILY_FUNCTIONS, at, design_routes, function_names, path, repo, scheduled_functions,
    secret_variables,
};
use serde_norway::{Mapping, Value};
use shared::store::TableDefinition;

fn template_text() -> String {
    std::fs::read_to_string(repo().join("template.yaml")).expect("read template.yaml")
}

fn template() -> Value {
    serde_norway::from_str(&template_text()).expect("template.yaml is YAML")
}

fn text(v: &Value) -> Option<&str> {
    v.as_str()
}

/// An intrinsic function, short (`!Ref X`) or long (`{"Ref": X}`, `{"Fn::If": ...}`) form,
/// as its short name (`Ref`, `If`, `Sub`, `GetAtt`, ...) and argument.
fn intrinsic(v: &Value) -> Option<(String, &Value)> {
    match v {
        Value::Tagged(t) => Some((
            t.tag.to_string().trim_start_matches('!').to_owned(),
            &t.value,
        )),
        Value::Mapping(m) if m.len() == 1 => {
            let (k, arg) = m.iter().next()?;
            let k = k.as_str()?;
            if k == "Ref" || k == "Condition" {
                Some((k.to_owned(), arg))
            } else {
                k.strip_prefix("Fn::").map(|name| (name.to_owned(), arg))
            }
        }
        _ => None,
    }
}

/// `!Ref X` -> `X`.
fn ref_name(v: &Value) -> Option<&str> {
    match intrinsic(v)? {
        (n, arg) if n == "Ref" => arg.as_str(),
        _ => None,
    }
}

/// `!GetAtt X.Arn` or `!GetAtt [X, Arn]` -> `X`.
fn get_att_resource(v: &Value) -> Option<String> {
    match intrinsic(v)? {
        (n, Value::String(s)) if n == "GetAtt" => s.split('.').next().map(str::to_owned),
        (n, Value::Sequence(s)) if n == "GetAtt" => s.first()?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// The `${...}` names of a `!Sub` string.
fn sub_names(v: &Value) -> Vec<String> {
    let s = match intrinsic(v) {
        Some((n, Value::String(s))) if n == "Sub" => s.as_str(),
        Some((n, Value::Sequence(seq))) if n == "Sub" => {
            seq.first().and_then(Value::as_str).unwrap_or("")
        }
        _ => return Vec::new(),
    };
    s.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
        .collect()
}

fn resources(t: &Value) -> &Mapping {
    at(t, "Resources").as_mapping().expect("Resources")
}

fn resources_of<'a>(t: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    resources(t)
        .iter()
        .filter(|(_, r)| text(at(r, "Type")) == Some(kind))
        .map(|(k, r)| (k.as_str().expect("resource name"), r))
        .collect()
}

/// SAM's Globals merge: mappings merge key by key (the function's value wins), anything else
/// is the function's value when it has one.
fn merge(global: &Value, local: &Value) -> Value {
    match (global, local) {
        (Value::Mapping(g), Value::Mapping(l))
            if intrinsic(global).is_none() && intrinsic(local).is_none() =>
        {
            let mut out = g.clone();
            for (k, v) in l {
                let merged = match g.get(k) {
                    Some(gv) => merge(gv, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Mapping(out)
        }
        (_, Value::Null) => global.clone(),
        _ => local.clone(),
    }
}

/// One function as deployed: its resource name, binary, Metadata and Globals-merged Properties.
struct Function<'a> {
    resource: &'a str,
    binary: String,
    metadata: &'a Value,
    properties: Value,
}

fn functions(t: &Value) -> BTreeMap<String, Function<'_>> {
    let globals = path(t, &["Globals", "Function"]);
    let mut out = BTreeMap::new();
    for (name, r) in resources_of(t, "AWS::Serverless::Function") {
        let binary = text(path(r, &["Metadata", "BuildProperties", "Binary"]))
            .unwrap_or_else(|| panic!("{name}: Metadata.BuildProperties.Binary"))
            .to_owned();
        let f = Function {
            resource: name,
            binary: binary.clone(),
            metadata: at(r, "Metadata"),
            properties: merge(globals, at(r, "Properties")),
        };
        assert!(
            out.insert(binary.clone(), f).is_none(),
            "two functions build {binary}"
        );
    }
    out
}

fn variables<'a>(f: &'a Function<'_>) -> &'a Mapping {
    path(&f.properties, &["Environment", "Variables"])
        .as_mapping()
        .unwrap_or_else(|| panic!("{}: Environment.Variables", f.resource))
}

fn variable<'a>(f: &'a Function<'_>, name: &str) -> &'a Value {
    variables(f)
        .get(name)
        .unwrap_or_else(|| panic!("{} does not set {name}", f.binary))
}

// ------------------------------------------------------------------------------- the table

/// The table's properties as JSON, to compare with `infra/table.json` (also JSON).
fn table_properties(t: &Value) -> serde_json::Value {
    let tables = resources_of(t, "AWS::DynamoDB::Table");
    assert_eq!(
        tables.len(),
        1,
        "one DynamoDB table: {:?}",
        tables.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    serde_json::to_value(at(tables[0].1, "Properties")).expect("table properties as JSON")
}

fn pairs(v: &serde_json::Value, a: &str, b: &str) -> Vec<(String, String)> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a list, got {v}"))
        .iter()
        .map(|e| {
            let field = |k: &str| {
                e[k].as_str()
                    .unwrap_or_else(|| panic!("{k} of {e} must be a plain string"))
                    .to_owned()
            };
            (field(a), field(b))
        })
        .collect()
}

#[test]
fn the_table_is_exactly_infra_table_json() {
    let def = TableDefinition::load().expect("infra/table.json");
    let def_json: serde_json::Value =
        serde_json::from_str(shared::store::TABLE_DEFINITION_JSON).expect("table.json");
    let p = table_properties(&template());

    // Key schema: same attributes, same roles, same order (HASH first).
    assert_eq!(
        pairs(&p["KeySchema"], "AttributeName", "KeyType"),
        pairs(&def_json["KeySchema"], "AttributeName", "KeyType"),
        "KeySchema"
    );
    // Attribute definitions: the same set (CloudFormation ignores the order).
    let set = |v: &serde_json::Value| -> BTreeSet<(String, String)> {
        pairs(v, "AttributeName", "AttributeType")
            .into_iter()
            .collect()
    };
    assert_eq!(
        set(&p["AttributeDefinitions"]),
        set(&def_json["AttributeDefinitions"]),
        "AttributeDefinitions"
    );
    assert_eq!(
        p["AttributeDefinitions"].as_array().map(Vec::len),
        Some(def.attribute_definitions.len()),
        "AttributeDefinitions has duplicates"
    );
    // Every index, by name: key schema and the whole projection (no NonKeyAttributes etc.).
    let indexes = |v: &serde_json::Value| -> BTreeMap<String, serde_json::Value> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|g| (g["IndexName"].as_str().unwrap_or("?").to_owned(), g.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (ours, theirs) = (
        indexes(&p["GlobalSecondaryIndexes"]),
        indexes(&def_json["GlobalSecondaryIndexes"]),
    );
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "GlobalSecondaryIndexes names"
    );
    for (name, g) in &theirs {
        let o = &ours[name];
        assert_eq!(
            pairs(&o["KeySchema"], "AttributeName", "KeyType"),
            pairs(&g["KeySchema"], "AttributeName", "KeyType"),
            "{name} KeySchema"
        );
        assert_eq!(o["Projection"], g["Projection"], "{name} Projection");
        let mut keys: Vec<_> = o
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        assert_eq!(
            keys,
            ["IndexName", "KeySchema", "Projection"],
            "{name}: only what table.json has (on-demand: no throughput)"
        );
    }
    assert!(
        p.get("LocalSecondaryIndexes").is_none(),
        "table.json has no LSI"
    );
    assert_eq!(p["BillingMode"], def_json["BillingMode"], "BillingMode");
    assert!(
        p.get("ProvisionedThroughput").is_none(),
        "on-demand table with throughput"
    );
    // Streams: CloudFormation enables them by giving a view type.
    assert!(def.stream_specification.stream_enabled);
    assert_eq!(
        p["StreamSpecification"]["StreamViewType"].as_str(),
        Some(def.stream_specification.stream_view_type.as_str()),
        "StreamViewType"
    );
    assert_eq!(
        p["TimeToLiveSpecification"], def_json["TimeToLiveSpecification"],
        "TimeToLiveSpecification"
    );
}

// ------------------------------------------------------------------------------- functions

#[test]
fn every_function_is_one_arm64_cargo_lambda_binary_of_this_workspace() {
    let t = template();
    let fs = functions(&t);
    assert_eq!(
        fs.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        function_names(),
        "the template's functions: one per shared::app::Function"
    );
    for f in fs.values() {
        let p = &f.properties;
        let who = &f.binary;
        assert_eq!(
            text(at(f.metadata, "BuildMethod")),
            Some("rust-cargolambda"),
            "{who}: BuildMethod"
        );
        assert_eq!(
            text(at(p, "Runtime")),
            Some("provided.al2023"),
            "{who}: Runtime"
        );
        assert_eq!(text(at(p, "Handler")), Some("bootstrap"), "{who}: Handler");
        assert_eq!(
            at(p, "Architectures")
                .as_sequence()
                .map(|a| a.iter().map(text).collect::<Vec<_>>()),
            Some(vec![Some("arm64")]),
            "{who}: Architectures"
        );
        assert_eq!(
            text(at(p, "CodeUri")),
            Some("."),
            "{who}: CodeUri is the workspace root"
        );
        assert_eq!(
            text(path(p, &["LoggingConfig", "LogFormat"])),
            Some("JSON"),
            "{who}: LogFormat"
        );
        // The binary is a package of the workspace with a [[bin]] of that name.
        let manifest = repo().join("functions").join(who).join("Cargo.toml");
        let manifest = std::fs::read_to_string(&manifest)
            .unwrap_or_else(|e| panic!("{who}: {} ({e})", manifest.display()));
        assert!(
            manifest.contains(&format!("name = \"{who}\"")),
            "{who}: functions/{who}/Cargo.toml names no package or bin {who}"
        );
        let workspace = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
        assert!(
            workspace.contains(&format!("\"functions/{who}\""))
                || workspace.contains("\"functions/*\""),
            "{who} is not a workspace member"
        );
    }
}

/// The EventBridge schedules of a function (`Schedule` / `ScheduleV2` events), as expressions.
fn schedules(f: &Function<'_>) -> Vec<Option<String>> {
    events_of(f, &["Schedule", "ScheduleV2"])
        .into_iter()
        .map(|e| {
            text(path(e, &["Properties", "Schedule"]))
                .or(text(path(e, &["Properties", "ScheduleExpression"])))
                .map(str::to_owned)
        })
        .collect()
}

/// A function's SAM events of the given types.
fn events_of<'a>(f: &'a Function<'_>, kinds: &[&str]) -> Vec<&'a Value> {
    at(&f.properties, "Events")
        .as_mapping()
        .map(|m| {
            m.values()
                .filter(|e| text(at(e, "Type")).is_some_and(|t| kinds.contains(&t)))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_scheduled_job_runs_on_its_schedule_and_no_http_function_is_scheduled() {
    let t = template();
    let scheduled = scheduled_functions();
    assert!(
        scheduled.contains("timeout-sweeper") && scheduled.contains("event-dispatcher"),
        "{scheduled:?}"
    );
    for f in functions(&t).values() {
        if DAILY_FUNCTIONS.contains(&f.binary.as_str()) {
            // After WeChat Pay's bills are ready (10:00 Beijing), every half hour until noon.
            assert_eq!(
                schedules(f),
                [Some("cron(15,45 2-3 * * ? *)".to_owned())],
                "{}: the morning's schedule (UTC)",
                f.binary
            );
        } else if scheduled.contains(f.binary.as_str()) {
            assert_eq!(
                schedules(f),
                [Some("rate(1 minute)".to_owned())],
                "{}: one schedule, every minute",
                f.binary
            );
        }
        if scheduled.contains(f.binary.as_str()) {
            // A run that failed is not retried late: the next minute's run covers it.
            assert_eq!(
                path(
                    &f.properties,
                    &["EventInvokeConfig", "MaximumRetryAttempts"]
                )
                .as_u64(),
                Some(0),
                "{}: EventInvokeConfig.MaximumRetryAttempts",
                f.binary
            );
        } else {
            assert!(schedules(f).is_empty(), "{} has a schedule", f.binary);
        }
    }
}

// ------------------------------------------------------------------------------- secrets

#[test]
fn debug_identity_is_nowhere_in_the_template() {
    assert!(!template_text().contains("ALLOW_DEBUG_IDENTITY"));
}

#[test]
fn secret_variables_come_only_from_secrets_manager() {
    let t = template();
    let secret_names = secret_variables();
    // No environment (Globals or function) sets a secret variable: no template parameter, no
    // literal, no dynamic reference can end up in a Lambda variable.
    let mut environments = vec![(
        "Globals",
        path(&t, &["Globals", "Function", "Environment", "Variables"]),
    )];
    for (name, r) in resources_of(&t, "AWS::Serverless::Function") {
        environments.push((name, path(r, &["Properties", "Environment", "Variables"])));
    }
    for (who, vars) in environments {
        for key in vars.as_mapping().into_iter().flat_map(|m| m.keys()) {
            let key = key.as_str().unwrap_or_default();
            assert!(!secret_names.contains(key), "{who} sets {key}");
        }
    }
    // No parameter is a secret typed in at deploy time.
    for (name, p) in at(&t, "Parameters").as_mapping().into_iter().flatten() {
        assert_ne!(
            at(p, "NoEcho"),
            &Value::Bool(true),
            "{name:?} is a NoEcho parameter: use the secret"
        );
    }
    // Every function names its secret in SECRETS_ID (`!Ref` a parameter, or `!If` between
    // two) and may read exactly the secrets it can name, nothing else.
    let fs = functions(&t);
    let mut named: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for f in fs.values() {
        let params = secret_params(variable(f, "SECRETS_ID"))
            .unwrap_or_else(|| panic!("{}: SECRETS_ID must be !Ref (or !If of !Ref)", f.binary));
        let readable: Vec<Vec<String>> = statements(f)
            .into_iter()
            .filter(|s| actions(s).iter().any(|a| a.starts_with("secretsmanager:")))
            .map(|s| {
                assert_eq!(
                    actions(&s),
                    ["secretsmanager:GetSecretValue"],
                    "{}",
                    f.binary
                );
                let resource = at(&s, "Resource");
                let mut names = sub_names(resource);
                if let Some((n, Value::Sequence(branches))) = intrinsic(resource)
                    && n == "If"
                {
                    names.extend(branches.iter().skip(1).flat_map(sub_names));
                }
                names
            })
            .collect();
        assert_eq!(readable.len(), 1, "{}: one secret statement", f.binary);
        let mut can_read: Vec<String> = readable[0]
            .iter()
            .filter(|n| !n.starts_with("AWS::"))
            .cloned()
            .collect();
        can_read.sort();
        let mut may_name = params.clone();
        may_name.sort();
        assert_eq!(
            can_read, may_name,
            "{}: reads exactly its secrets",
            f.binary
        );
        named.insert(f.binary.as_str(), params);
    }
    // The session's secret (AppSecret, signing key) is not the merchant's: the functions that
    // verify session tokens never hold the signing key (DESIGN.md section 2).
    // Likewise the webhook's signing secret: only event-dispatcher can sign events, and it
    // holds neither the merchant's keys nor the session key.
    for own in ["session", "event-dispatcher"] {
        let secret = &named[own];
        assert!(!secret.is_empty(), "{own} names no secret");
        for (other, params) in named.iter().filter(|(f, _)| **f != own) {
            assert!(
                params.iter().all(|p| !secret.contains(p)),
                "{other} reads {own}'s secret"
            );
        }
    }
    // Issue 12.8: payment-callback can be given a secret of its own (the APIv3 key alone),
    // so with a WeChat Pay public key it cannot read the merchant private key.
    assert_eq!(
        named["payment-callback"],
        [
            "NotifySecretName".to_owned(),
            "MerchantSecretName".to_owned()
        ]
    );
}

/// The parameters a `SECRETS_ID` value can name: `!Ref P`, or `!If [cond, !Ref A, !Ref B]`
/// where B may be `AWS::NoValue` (no secret to read: the variable is unset).
fn secret_params(v: &Value) -> Option<Vec<String>> {
    if let Some(name) = ref_name(v) {
        return Some(vec![name.to_owned()]);
    }
    match intrinsic(v)? {
        (n, Value::Sequence(branches)) if n == "If" && branches.len() == 3 => {
            let names: Option<Vec<String>> = branches[1..]
                .iter()
                .map(|b| ref_name(b).map(str::to_owned))
                .collect();
            let names: Vec<String> = names?.into_iter().filter(|n| n != "AWS::NoValue").collect();
            (!names.is_empty()).then_some(names)
        }
        _ => None,
    }
}

// ------------------------------------------------------------------------------- IAM

fn statements(f: &Function<'_>) -> Vec<Value> {
    let mut out = Vec::new();
    for policy in at(&f.properties, "Policies")
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let statements = at(policy, "Statement");
        assert!(
            statements.is_sequence(),
            "{}: only inline statements (no managed or SAM policy templates): {policy:?}",
            f.binary
        );
        out.extend(statements.as_sequence().into_iter().flatten().cloned());
    }
    out
}

fn actions(statement: &Value) -> Vec<String> {
    match at(statement, "Action") {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(a) => a
            .iter()
            .map(|a| a.as_str().expect("plain action").to_owned())
            .collect(),
        other => panic!("Action {other:?}"),
    }
}

/// What each function's store calls need (shared/src/store/dynamo.rs): GetItem (get_order,
/// get_idempotency), BatchGetItem (get_products), PutItem/UpdateItem for the Put and Update
/// actions of TransactWriteItems and for record_anomaly, take_over_idempotency, record_prepay,
/// the query-order sync claim; DeleteItem (release_idempotency). Query only on an index.
/// A Query on the table itself (one partition by key), in place of an index name.
const TABLE_QUERY: &str = "(table)";

fn expected_dynamodb(binary: &str) -> (BTreeSet<&'static str>, Vec<&'static str>) {
    let base = [
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    ];
    match binary {
        "session" => (BTreeSet::new(), vec![]),
        "place-order" => (
            base.into_iter()
                .chain(["dynamodb:BatchGetItem", "dynamodb:DeleteItem"])
                .collect(),
            vec![],
        ),
        "payment-callback" => (base.into_iter().collect(), vec![]),
        // get_payment, get_order: GetItem; a settlement: the transition's Update and Put;
        // record_anomaly: PutItem.
        "mp-push" => (base.into_iter().collect(), vec![]),
        "query-order" => (
            base.into_iter().chain(["dynamodb:Query"]).collect(),
            vec!["gsi1"],
        ),
        // due_pending / due_shipments: gsi2; the stock rebalancer: the table's STOCK_SHARDED
        // partition (Query) and its shards (BatchGetItem).
        "timeout-sweeper" => (
            base.into_iter()
                .chain(["dynamodb:Query", "dynamodb:BatchGetItem"])
                .collect(),
            vec![TABLE_QUERY, "gsi2"],
        ),
        // list_anomalies: Query of one order's anomaly partition, on the table itself;
        // recent_anomalies: gsi1's ANOMALIES partition; redeliver_event: GetItem + UpdateItem;
        // a bill reconciliation on demand: as the bill-reconciler's.
        "merchant-api" => (
            base.into_iter()
                .chain(["dynamodb:Query", "dynamodb:BatchGetItem"])
                .collect(),
            vec![TABLE_QUERY, "gsi1", "gsi2"],
        ),
        // get_payments / get_refunds: BatchGetItem; payments_on / refunds_on: gsi2's day
        // partitions; the report and anomalies: PutItem; recoveries: the transitions'.
        "bill-reconciler" => (
            base.into_iter()
                .chain(["dynamodb:Query", "dynamodb:BatchGetItem"])
                .collect(),
            vec!["gsi2"],
        ),
        // due_events: Query of gsi2's OUTBOX#<shard> partitions; claim_event, update_event:
        // UpdateItem; get_event: GetItem. Events are written by the transitions, not here.
        "event-dispatcher" => (
            ["dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query"]
                .into_iter()
                .collect(),
            vec!["gsi2"],
        ),
        other => panic!("unknown function {other}"),
    }
}

#[test]
fn each_function_gets_only_the_dynamodb_actions_and_indexes_it_uses() {
    let t = template();
    for f in functions(&t).values() {
        let mut granted = BTreeSet::new();
        let mut query_indexes = BTreeSet::new();
        for s in statements(f) {
            assert_eq!(text(at(&s, "Effect")), Some("Allow"), "{}", f.binary);
            for a in actions(&s) {
                assert!(!a.contains('*'), "{}: wildcard action {a}", f.binary);
                if !a.starts_with("dynamodb:") {
                    continue;
                }
                let resource = at(&s, "Resource");
                if a == "dynamodb:Query"
                    && get_att_resource(resource).as_deref() == Some("OrdersTable")
                {
                    query_indexes.insert(TABLE_QUERY.to_owned());
                } else if a == "dynamodb:Query" {
                    // `${OrdersTable.Arn}/index/<name>`: one index.
                    let (n, arg) = intrinsic(resource).expect("Query resource");
                    let sub = arg
                        .as_str()
                        .filter(|_| n == "Sub")
                        .expect("Query on !Sub ...index");
                    let index = sub
                        .strip_prefix("${OrdersTable.Arn}/index/")
                        .unwrap_or_else(|| panic!("{}: Query on {sub}", f.binary));
                    query_indexes.insert(index.to_owned());
                } else {
                    assert_eq!(
                        get_att_resource(resource).as_deref(),
                        Some("OrdersTable"),
                        "{}: {a} on the table only",
                        f.binary
                    );
                }
                granted.insert(a);
            }
        }
        let (expected, index) = expected_dynamodb(&f.binary);
        assert_eq!(
            granted.iter().map(String::as_str).collect::<BTreeSet<_>>(),
            expected,
            "{}: DynamoDB actions",
            f.binary
        );
        assert_eq!(
            query_indexes.iter().map(String::as_str).collect::<Vec<_>>(),
            index
                .into_iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>(),
            "{}: queried indexes",
            f.binary
        );
    }
}

// ------------------------------------------------------------------------------- the API

/// Route key -> (the binary its integration invokes, the route's properties).
fn routes(t: &Value) -> BTreeMap<String, (String, Value)> {
    let fs = functions(t);
    let binary_of_resource: BTreeMap<&str, &str> = fs
        .values()
        .map(|f| (f.resource, f.binary.as_str()))
        .collect();
    let mut out = BTreeMap::new();
    for (name, r) in resources_of(t, "AWS::ApiGatewayV2::Route") {
        let p = at(r, "Properties");
        let key = text(at(p, "RouteKey"))
            .unwrap_or_else(|| panic!("{name}: RouteKey"))
            .to_owned();
        let target = sub_names(at(p, "Target"));
        assert_eq!(
            target.len(),
            1,
            "{name}: Target must be !Sub integrations/${{Integration}}"
        );
        let integration = path(
            resources(t)
                .get(&target[0])
                .unwrap_or_else(|| panic!("{name}: no {}", target[0])),
            &["Properties"],
        );
        assert_eq!(
            text(at(integration, "IntegrationType")),
            Some("AWS_PROXY"),
            "{name}"
        );
        assert_eq!(
            text(at(integration, "PayloadFormatVersion")),
            Some("2.0"),
            "{name}"
        );
        let function = get_att_resource(at(integration, "IntegrationUri"))
            .expect("IntegrationUri !GetAtt F.Arn");
        let binary = binary_of_resource
            .get(function.as_str())
            .unwrap_or_else(|| panic!("{name}: {function} is not a function"));
        assert!(
            out.insert(key.clone(), (binary.to_string(), p.clone()))
                .is_none(),
            "two routes {key}"
        );
    }
    out
}

#[test]
fn the_routes_are_design_section_3() {
    let got: BTreeMap<String, String> = routes(&template())
        .into_iter()
        .map(|(k, (b, _))| (k, b))
        .collect();
    let want = design_routes();
    assert_eq!(got, want);
}

#[test]
fn notify_and_session_routes_never_have_an_authorizer() {
    let t = template();
    for (key, (binary, p)) in routes(&t) {
        if binary != "session" && binary != "payment-callback" {
            continue;
        }
        assert_eq!(
            text(at(&p, "AuthorizationType")),
            Some("NONE"),
            "{key}: AuthorizationType"
        );
        assert!(at(&p, "AuthorizerId").is_null(), "{key} has an authorizer");
        assert!(at(&p, "AuthorizationScopes").is_null(), "{key} has scopes");
    }
    // ...and no default route or catch-all could put one in front of them.
    for key in routes(&t).keys() {
        assert!(
            !key.contains("$default") && !key.contains("{proxy+}"),
            "catch-all route {key}"
        );
    }
}

#[test]
fn merchant_routes_are_iam_authorized_and_nothing_else_is() {
    let t = template();
    let mut merchant = 0;
    for (key, (binary, p)) in routes(&t) {
        let iam = text(at(&p, "AuthorizationType")) == Some("AWS_IAM");
        assert_eq!(binary == "merchant-api", iam, "{key}: AuthorizationType");
        assert_eq!(key.contains(" /merchant/"), iam, "{key}");
        merchant += usize::from(iam);
    }
    let designed = design_routes()
        .values()
        .filter(|f| *f == "merchant-api")
        .count();
    assert!(designed >= 8, "the redelivery route is a merchant route");
    assert_eq!(merchant, designed);
}

#[test]
fn the_orders_authorizer_is_optional_and_off_by_default() {
    let t = template();
    let conditions = at(&t, "Conditions");
    let mut authorizer_conditions = BTreeSet::new();
    for (key, (binary, p)) in routes(&t) {
        if binary != "place-order" && binary != "query-order" {
            continue;
        }
        // AuthorizationType: !If [Cond, JWT, NONE]; AuthorizerId: !If [Cond, !Ref A, NoValue]
        let (n, args) = intrinsic(at(&p, "AuthorizationType"))
            .unwrap_or_else(|| panic!("{key}: AuthorizationType !If"));
        assert_eq!(n, "If", "{key}");
        let args = args.as_sequence().expect("If args");
        assert_eq!(
            (text(&args[1]), text(&args[2])),
            (Some("JWT"), Some("NONE")),
            "{key}"
        );
        let cond = text(&args[0]).expect("condition name").to_owned();
        let (n, id) =
            intrinsic(at(&p, "AuthorizerId")).unwrap_or_else(|| panic!("{key}: AuthorizerId !If"));
        let id = id.as_sequence().expect("If args");
        assert_eq!(
            (n.as_str(), text(&id[0])),
            ("If", Some(cond.as_str())),
            "{key}"
        );
        assert_eq!(ref_name(&id[2]), Some("AWS::NoValue"), "{key}");
        let authorizer = ref_name(&id[1]).expect("!Ref authorizer");
        let a = &resources(&t)[authorizer];
        assert_eq!(text(at(a, "Type")), Some("AWS::ApiGatewayV2::Authorizer"));
        assert_eq!(
            text(at(a, "Condition")),
            Some(cond.as_str()),
            "the authorizer exists only under {cond}"
        );
        assert_eq!(
            text(path(a, &["Properties", "AuthorizerType"])),
            Some("JWT")
        );
        authorizer_conditions.insert(cond);
    }
    assert_eq!(
        authorizer_conditions.len(),
        1,
        "one condition for every /orders route"
    );
    let cond = authorizer_conditions.into_iter().next().unwrap();
    // Cond = !Not [!Equals [!Ref Param, ""]] with Param defaulting to "": off by default.
    let (n, not) = intrinsic(at(conditions, &cond)).expect("condition");
    assert_eq!(n, "Not");
    let (n, eq) = intrinsic(&not.as_sequence().expect("Not args")[0]).expect("Equals");
    assert_eq!(n, "Equals");
    let eq = eq.as_sequence().expect("Equals args");
    let param = ref_name(&eq[0]).expect("!Ref parameter");
    assert_eq!(text(&eq[1]), Some(""));
    assert_eq!(
        path(&t, &["Parameters", param, "Default"]),
        &Value::String(String::new()),
        "{param} default"
    );
    // The functions follow the same switch: token by default, authorizer with the authorizer.
    let fs = functions(&t);
    for binary in ["place-order", "query-order"] {
        let mode = variable(&fs[binary], "AUTH_MODE");
        let (n, args) = intrinsic(mode).unwrap_or_else(|| panic!("{binary}: AUTH_MODE !If"));
        let args = args.as_sequence().unwrap();
        assert_eq!(
            (n.as_str(), text(&args[0]), text(&args[1]), text(&args[2])),
            ("If", Some(cond.as_str()), Some("authorizer"), Some("token")),
            "{binary}: AUTH_MODE"
        );
    }
}

#[test]
fn every_http_function_may_be_invoked_by_the_api_and_the_urls_agree() {
    let t = template();
    let fs = functions(&t);
    let permitted: BTreeSet<String> = resources_of(&t, "AWS::Lambda::Permission")
        .into_iter()
        .filter(|(_, r)| {
            text(path(r, &["Properties", "Principal"])) == Some("apigateway.amazonaws.com")
        })
        .filter_map(|(_, r)| ref_name(path(r, &["Properties", "FunctionName"])).map(str::to_owned))
        .collect();
    for (_, (binary, _)) in routes(&t) {
        assert!(
            permitted.contains(fs[&binary].resource),
            "API Gateway may not invoke {binary}"
        );
    }
    // The notify URL place-order sends is the output the merchant pastes; the issuer is the
    // same for the signer and the verifiers.
    let outputs = at(&t, "Outputs");
    let notify = path(outputs, &["NotifyUrl", "Value"]);
    assert_eq!(variable(&fs["place-order"], "WXPAY_NOTIFY_URL"), notify);
    assert!(
        serde_norway::to_string(notify)
            .unwrap()
            .contains("/notify/wechatpay")
    );
    let issuer = path(outputs, &["IssuerUrl", "Value"]);
    for binary in ["session", "place-order", "query-order"] {
        assert_eq!(
            variable(&fs[binary], "SESSION_ISSUER"),
            issuer,
            "{binary}: SESSION_ISSUER"
        );
    }
    assert!(
        serde_norway::to_string(path(outputs, &["JwksUrl", "Value"]))
            .unwrap()
            .contains("/.well-known/jwks.json")
    );
}

// ------------------------------------------------------------------------------- alarms

/// One metric an alarm watches, with what the alarm does with it.
#[derive(Debug)]
struct Watched {
    alarm: String,
    namespace: String,
    metric: String,
    /// (name, value): a literal, or the resource a `!Ref` / `!GetAtt` names.
    dimensions: Vec<(String, String)>,
    /// `Statistic` of a one-metric alarm, `Stat` of a metric-math one's metric.
    statistic: String,
    threshold: Option<f64>,
    comparison: String,
}

impl Watched {
    fn is(&self, namespace: &str, metric: &str, dimension: (&str, &str)) -> bool {
        self.namespace == namespace
            && self.metric == metric
            && self
                .dimensions
                .iter()
                .any(|(k, v)| k == dimension.0 && v == dimension.1)
    }

    /// Whether one occurrence (a value of 1) is enough to fire.
    fn fires_on_one(&self) -> bool {
        match (self.comparison.as_str(), self.threshold) {
            ("GreaterThanThreshold", Some(t)) => t < 1.0,
            ("GreaterThanOrEqualToThreshold", Some(t)) => t <= 1.0,
            _ => false,
        }
    }
}

fn watched_metrics(t: &Value) -> Vec<Watched> {
    let mut found = Vec::new();
    for (name, a) in resources_of(t, "AWS::CloudWatch::Alarm") {
        let p = at(a, "Properties");
        let threshold = at(p, "Threshold").as_f64();
        let comparison = text(at(p, "ComparisonOperator")).unwrap_or("").to_owned();
        let mut add = |m: &Value, statistic: &Value| {
            let dimensions = at(m, "Dimensions")
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|d| {
                    let v = at(d, "Value");
                    // (`as_str` looks through tags: `!GetAtt Q.QueueName` first.)
                    let value = get_att_resource(v)
                        .or_else(|| ref_name(v).or(text(v)).map(str::to_owned))
                        .unwrap_or_default();
                    (text(at(d, "Name")).unwrap_or("").to_owned(), value)
                })
                .collect();
            found.push(Watched {
                alarm: name.to_owned(),
                namespace: text(at(m, "Namespace")).unwrap_or("").to_owned(),
                metric: text(at(m, "MetricName")).unwrap_or("").to_owned(),
                dimensions,
                statistic: text(statistic).unwrap_or("").to_owned(),
                threshold,
                comparison: comparison.clone(),
            });
        };
        if !at(p, "MetricName").is_null() {
            add(p, at(p, "Statistic"));
        }
        for m in at(p, "Metrics").as_sequence().into_iter().flatten() {
            let stat = at(m, "MetricStat");
            if !stat.is_null() {
                add(at(stat, "Metric"), at(stat, "Stat"));
            }
        }
    }
    found
}

#[test]
fn alarms_watch_every_function_the_sweeper_and_anomalies() {
    let t = template();
    let fs = functions(&t);
    let watched = watched_metrics(&t);
    let has = |ns: &str, name: &str, dim: (&str, &str)| watched.iter().any(|w| w.is(ns, name, dim));
    for f in fs.values() {
        assert!(
            has("AWS/Lambda", "Errors", ("FunctionName", f.resource)),
            "no Errors alarm for {}",
            f.binary
        );
    }
    assert!(
        has(
            "WxpayOrders",
            "SweepFailed",
            ("Function", "timeout-sweeper")
        ),
        "no SweepFailed alarm"
    );
    // Issue 12.9: the notify endpoint's refusals and failures each have an alarm.
    for name in ["NotifyRejected", "NotifyRefused", "NotifyFailed"] {
        assert!(
            has("WxpayOrders", name, ("Function", "payment-callback")),
            "no {name} alarm"
        );
    }
    for binary in ["payment-callback", "query-order", "timeout-sweeper"] {
        assert!(
            has("WxpayOrders", "PaymentAnomaly", ("Function", binary)),
            "no PaymentAnomaly alarm for {binary}"
        );
    }
    for (name, a) in resources_of(&t, "AWS::CloudWatch::Alarm") {
        assert!(
            at(at(a, "Properties"), "AlarmActions")
                .as_sequence()
                .is_some_and(|s| !s.is_empty()),
            "{name} notifies nobody"
        );
    }
}

/// An alarm on our own metrics watches a name the functions emit (`telemetry::Metric`), in
/// the namespace and with the one dimension `telemetry::emf_line` writes, for a function that
/// exists: a renamed metric or function must not leave an alarm that can never fire.
#[test]
fn every_custom_metric_alarm_names_a_metric_a_function_emits() {
    use shared::telemetry::{METRICS_NAMESPACE, Metric};
    let t = template();
    let watched = watched_metrics(&t);
    let functions = function_names();
    let mut custom = 0;
    for w in &watched {
        if w.namespace.starts_with("AWS/") {
            continue;
        }
        custom += 1;
        assert_eq!(w.namespace, METRICS_NAMESPACE, "{}: namespace", w.alarm);
        let metric = Metric::ALL
            .into_iter()
            .find(|m| m.as_str() == w.metric)
            .unwrap_or_else(|| panic!("{}: no function emits {}", w.alarm, w.metric));
        assert_eq!(w.dimensions.len(), 1, "{}: {:?}", w.alarm, w.dimensions);
        let (name, value) = &w.dimensions[0];
        assert_eq!(name, "Function", "{}: dimension", w.alarm);
        assert!(
            functions.contains(value.as_str()),
            "{}: no function {value}",
            w.alarm
        );
        // An age is not a count: its sum over runs means nothing.
        if metric.unit() == "Seconds" {
            assert_eq!(w.statistic, "Maximum", "{}: statistic of an age", w.alarm);
        }
    }
    assert!(custom >= 10, "{custom} custom-metric alarms");
}

#[test]
fn undelivered_order_events_raise_alarms() {
    let t = template();
    let fs = functions(&t);
    let watched = watched_metrics(&t);
    let dispatcher = ("Function", "event-dispatcher");
    // One dead event is one too many: the merchant never heard of that transition.
    let dead: Vec<_> = watched
        .iter()
        .filter(|w| w.is("WxpayOrders", "EventDead", dispatcher))
        .collect();
    assert!(!dead.is_empty(), "no EventDead alarm");
    assert!(dead.iter().all(|w| w.fires_on_one()), "{dead:?}");
    // The backlog: an event due for more than 10 minutes (seconds; the timer runs every
    // minute and the first retries come after 5 s and 5 min, so less would be noise).
    let age: Vec<_> = watched
        .iter()
        .filter(|w| w.is("WxpayOrders", "EventOldestUndeliveredAge", dispatcher))
        .collect();
    assert!(!age.is_empty(), "no EventOldestUndeliveredAge alarm");
    for w in age {
        let threshold = w.threshold.expect("threshold");
        assert!(
            (120.0..=600.0).contains(&threshold),
            "{}: threshold {threshold} s",
            w.alarm
        );
    }
    // Every stream consumer: an IteratorAge alarm (milliseconds, up to a minute behind), and
    // an alarm on its failure destination's first message.
    for (binary, event) in stream_sources(&t) {
        let resource = fs[&binary].resource;
        let iterator: Vec<_> = watched
            .iter()
            .filter(|w| w.is("AWS/Lambda", "IteratorAge", ("FunctionName", resource)))
            .collect();
        assert!(!iterator.is_empty(), "{binary}: no IteratorAge alarm");
        for w in iterator {
            let ms = w.threshold.expect("threshold");
            assert!(
                (1_000.0..=60_000.0).contains(&ms),
                "{}: IteratorAge is in milliseconds: {ms}",
                w.alarm
            );
            assert_eq!(w.statistic, "Maximum", "{}", w.alarm);
        }
        let queue = failure_queue(&t, &binary, &event);
        let dlq: Vec<_> = watched
            .iter()
            .filter(|w| {
                w.is(
                    "AWS/SQS",
                    "ApproximateNumberOfMessagesVisible",
                    ("QueueName", &queue),
                )
            })
            .collect();
        assert!(
            dlq.iter().any(|w| w.fires_on_one()),
            "{binary}: no alarm on the first message of {queue}: {dlq:?}"
        );
    }
}

// ------------------------------------------------------------------------------- order events

/// Every DynamoDB stream event source: (function binary, the event's Properties).
fn stream_sources(t: &Value) -> Vec<(String, Value)> {
    functions(t)
        .values()
        .flat_map(|f| {
            events_of(f, &["DynamoDB"])
                .into_iter()
                .map(|e| (f.binary.clone(), at(e, "Properties").clone()))
        })
        .collect()
}

/// The SQS queue (resource name) a stream mapping sends what it gives up on to.
fn failure_queue(t: &Value, binary: &str, event: &Value) -> String {
    let on_failure = path(event, &["DestinationConfig", "OnFailure"]);
    // Type SQS is what makes SAM grant the function sqs:SendMessage on it.
    assert_eq!(
        text(at(on_failure, "Type")),
        Some("SQS"),
        "{binary}: OnFailure.Type"
    );
    let queue = get_att_resource(at(on_failure, "Destination"))
        .unwrap_or_else(|| panic!("{binary}: OnFailure.Destination !GetAtt Queue.Arn"));
    assert_eq!(
        text(path(&resources(t)[queue.as_str()], &["Type"])),
        Some("AWS::SQS::Queue"),
        "{binary}: {queue}"
    );
    queue
}

/// The subset of EventBridge patterns Lambda filters use that a filter here may use: nested
/// objects, lists of exact values, `{"prefix": ...}` and `{"exists": ...}`. Anything else is
/// refused, so the test never passes a filter it does not understand.
fn pattern_matches(pattern: &serde_json::Value, record: Option<&serde_json::Value>) -> bool {
    use serde_json::Value as J;
    match pattern {
        J::Object(fields) => fields.iter().all(|(k, p)| {
            let inner = record.and_then(|r| r.get(k));
            match p {
                J::Object(_) => inner.is_some() && pattern_matches(p, inner),
                _ => pattern_matches(p, inner),
            }
        }),
        J::Array(rules) => rules.iter().any(|rule| match rule {
            J::String(_) | J::Number(_) | J::Bool(_) | J::Null => record == Some(rule),
            J::Object(op) if op.len() == 1 => match op.iter().next().unwrap() {
                (k, J::String(prefix)) if k == "prefix" => record
                    .and_then(J::as_str)
                    .is_some_and(|v| v.starts_with(prefix.as_str())),
                (k, J::Bool(exists)) if k == "exists" => record.is_some() == *exists,
                other => panic!("filter operator this test does not know: {other:?}"),
            },
            other => panic!("filter rule this test does not know: {other}"),
        }),
        other => panic!("a filter's leaves are lists of rules, not {other}"),
    }
}

/// A stream record as Lambda filters it: its `dynamodb` part, with the key and the new image.
fn stream_record(
    event_name: &str,
    pk: &str,
    sk: &str,
    new_image: Option<serde_json::Value>,
) -> serde_json::Value {
    let keys = serde_json::json!({"pk": {"S": pk}, "sk": {"S": sk}});
    let mut dynamodb = serde_json::json!({"Keys": keys, "SequenceNumber": "1", "StreamViewType": "NEW_AND_OLD_IMAGES"});
    if let Some(mut image) = new_image {
        image["pk"] = keys["pk"].clone();
        image["sk"] = keys["sk"].clone();
        dynamodb["NewImage"] = image;
    }
    serde_json::json!({"eventName": event_name, "eventSource": "aws:dynamodb", "dynamodb": dynamodb})
}

#[test]
fn only_the_dispatcher_reads_the_table_stream_from_its_start() {
    let t = template();
    let sources = stream_sources(&t);
    assert_eq!(
        sources.iter().map(|(b, _)| b.as_str()).collect::<Vec<_>>(),
        ["event-dispatcher"],
        "stream consumers"
    );
    let (_, event) = &sources[0];
    let (n, arg) = intrinsic(at(event, "Stream")).expect("Stream: !GetAtt OrdersTable.StreamArn");
    assert_eq!(n, "GetAtt");
    let arg = serde_norway::to_string(arg).unwrap();
    assert!(
        arg.contains("OrdersTable") && arg.contains("StreamArn"),
        "{arg}"
    );
    // LATEST would skip what was written while the mapping was off or being created.
    assert_eq!(text(at(event, "StartingPosition")), Some("TRIM_HORIZON"));
}

/// DESIGN.md section 4's event items (`pk = EVENT#<id>`, `attempts = 0` as a transition or a
/// redelivery writes them) pass; the dispatcher's own claims and records, TTL removals and
/// every other item do not, so the stream path neither loops nor wakes up for orders.
#[test]
fn the_stream_filter_passes_only_new_and_redelivered_event_items() {
    let t = template();
    let (_, event) = stream_sources(&t).pop().expect("a stream source");
    let filters: Vec<serde_json::Value> = path(&event, &["FilterCriteria", "Filters"])
        .as_sequence()
        .expect("FilterCriteria.Filters: the stream carries every item of the table")
        .iter()
        .map(|f| {
            let pattern = text(at(f, "Pattern")).expect("Pattern: a JSON string");
            serde_json::from_str(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"))
        })
        .collect();
    assert!(!filters.is_empty() && filters.len() <= 5, "1-5 filters");
    for f in &filters {
        let keys: Vec<_> = f.as_object().expect("pattern object").keys().collect();
        // DynamoDB event source mappings filter on the `dynamodb` key only.
        assert_eq!(keys, ["dynamodb"], "{f}");
    }
    let passes =
        |record: &serde_json::Value| filters.iter().any(|f| pattern_matches(f, Some(record)));
    let event_image = |attempts: &str, status: &str| {
        Some(serde_json::json!({
            "entity": {"S": "EVENT"}, "id": {"S": "evt_01JD3X5W8Q2Y7Z9A0B1C2D3E4F_2"},
            "type": {"S": "order.paid"}, "attempts": {"N": attempts}, "status": {"S": status},
            "body": {"S": "{}"}, "gsi2pk": {"S": "OUTBOX#1"},
        }))
    };
    let id = "EVENT#evt_01JD3X5W8Q2Y7Z9A0B1C2D3E4F_2";
    let pass = [
        (
            "a transition's new event",
            stream_record("INSERT", id, "EVENT", event_image("0", "PENDING")),
        ),
        (
            "a redelivered event",
            stream_record("MODIFY", id, "EVENT", event_image("0", "PENDING")),
        ),
    ];
    let order_image = Some(
        serde_json::json!({"status": {"S": "PAID"}, "version": {"N": "0"}, "attempts": {"N": "0"}}),
    );
    let drop = [
        (
            "its claim",
            stream_record("MODIFY", id, "EVENT", event_image("1", "PENDING")),
        ),
        (
            "a failed attempt recorded",
            stream_record("MODIFY", id, "EVENT", event_image("2", "PENDING")),
        ),
        (
            "its delivery recorded",
            stream_record("MODIFY", id, "EVENT", event_image("1", "DELIVERED")),
        ),
        (
            "dead",
            stream_record("MODIFY", id, "EVENT", event_image("10", "DEAD")),
        ),
        (
            "its TTL removal",
            stream_record("REMOVE", id, "EVENT", None),
        ),
        (
            "an order",
            stream_record(
                "INSERT",
                "ORDER#01JD3X5W8Q2Y7Z9A0B1C2D3E4F",
                "ORDER",
                order_image.clone(),
            ),
        ),
        (
            "an anomaly",
            stream_record(
                "INSERT",
                "ANOMALY#EVENT#x",
                "DOUBLE_PAYMENT#4200",
                order_image.clone(),
            ),
        ),
        (
            "a near-miss key",
            stream_record("INSERT", "EVT#x", "EVENT", event_image("0", "PENDING")),
        ),
        (
            "another near-miss key",
            stream_record("INSERT", "EVENTS#x", "EVENT", event_image("0", "PENDING")),
        ),
        (
            "a lowercase key",
            stream_record(
                "INSERT",
                "event#evt_x",
                "EVENT",
                event_image("0", "PENDING"),
            ),
        ),
        (
            "no attempts",
            stream_record(
                "INSERT",
                id,
                "EVENT",
                Some(serde_json::json!({"status": {"S": "PENDING"}})),
            ),
        ),
    ];
    for (what, record) in &pass {
        assert!(passes(record), "{what} is filtered out: {record}");
    }
    for (what, record) in &drop {
        assert!(!passes(record), "{what} reaches the function: {record}");
    }
}

#[test]
fn a_failing_stream_batch_never_blocks_its_shard() {
    let t = template();
    for (binary, event) in stream_sources(&t) {
        // The function answers batchItemFailures (store failures only); without this Lambda
        // ignores that answer and counts the batch a success.
        let types: Vec<_> = at(&event, "FunctionResponseTypes")
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(text)
            .collect();
        assert!(
            types.contains(&"ReportBatchItemFailures"),
            "{binary}: {types:?}"
        );
        assert_eq!(
            at(&event, "BisectBatchOnFunctionError"),
            &Value::Bool(true),
            "{binary}: bisect"
        );
        // Lambda's defaults (-1) retry a failing record until it leaves the stream, 24 h on.
        let retries = at(&event, "MaximumRetryAttempts").as_i64();
        assert!(
            retries.is_some_and(|r| (0..=10).contains(&r)),
            "{binary}: MaximumRetryAttempts {retries:?}"
        );
        let age = at(&event, "MaximumRecordAgeInSeconds").as_i64();
        assert!(
            age.is_some_and(|a| (60..=6 * 3600).contains(&a)),
            "{binary}: MaximumRecordAgeInSeconds {age:?}"
        );
        let parallel = at(&event, "ParallelizationFactor").as_i64().unwrap_or(1);
        assert!(
            (1..=10).contains(&parallel),
            "{binary}: ParallelizationFactor"
        );
        // What it gives up on goes somewhere an alarm watches (undelivered_order_events_...).
        failure_queue(&t, &binary, &event);
    }
}

/// A valid webhook secret: `whsec_` + base64 of 32 bytes.
fn whsec() -> String {
    use base64::Engine as _;
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    )
}

/// A stream batch is dispatched whole in one invocation (no deadline on that path): its
/// rounds of `concurrency` attempts, each the webhook's timeout and two store calls at most,
/// must fit the function's Timeout. The same bound leaves a timer run time for an attempt.
#[test]
fn the_dispatcher_finishes_a_stream_batch_within_its_timeout() {
    use shared::config::{Env, WebhookConfig};
    let t = template();
    let fs = functions(&t);
    let f = &fs["event-dispatcher"];
    let timeout = at(&f.properties, "Timeout").as_u64().expect("Timeout");
    // The webhook timeout the function will use, read as it reads it.
    let secret = whsec();
    let mut vars = vec![
        ("WEBHOOK_URL", "https://merchant.example/hooks"),
        ("WEBHOOK_SECRET", secret.as_str()),
    ];
    let configured = variables(f).get("WEBHOOK_TIMEOUT_SECONDS").map(|v| {
        text(v)
            .expect("WEBHOOK_TIMEOUT_SECONDS: a literal")
            .to_owned()
    });
    if let Some(v) = &configured {
        vars.push(("WEBHOOK_TIMEOUT_SECONDS", v.as_str()));
    }
    let webhook = WebhookConfig::from_env(&Env::from_pairs(vars))
        .expect("the template's webhook settings are valid")
        .expect("a webhook")
        .timeout;
    let store_call = shared::store::ClientSettings::default().operation_timeout;
    let concurrency = shared::service::DispatchSettings::default().concurrency as u64;
    let attempt = webhook + store_call * shared::service::STORE_CALLS_PER_ATTEMPT;
    for (binary, event) in stream_sources(&t) {
        assert_eq!(binary, "event-dispatcher");
        let batch = at(&event, "BatchSize").as_u64().unwrap_or(100);
        let rounds = batch.div_ceil(concurrency);
        let needed = attempt * rounds as u32;
        assert!(
            std::time::Duration::from_secs(timeout) >= needed,
            "Timeout {timeout} s < {rounds} rounds of {attempt:?} ({batch} events, {concurrency} at once)"
        );
        let window = at(&event, "MaximumBatchingWindowInSeconds")
            .as_u64()
            .unwrap_or(0);
        assert!(window <= 5, "events wait {window} s for a batch");
    }
    assert!(
        std::time::Duration::from_secs(timeout) > attempt,
        "a timer run has no time for one attempt"
    );
    assert!(timeout <= 900);
}

/// Without `WebhookUrl` (the default) the dispatcher starts, keeps events, and needs no
/// secret; with it, it reads its own secret.
#[test]
fn the_webhook_is_off_until_its_url_is_given() {
    use shared::config::{Env, WebhookConfig};
    let t = template();
    let fs = functions(&t);
    let f = &fs["event-dispatcher"];
    let url = variable(f, "WEBHOOK_URL");
    let param = ref_name(url)
        .map(str::to_owned)
        .or_else(|| {
            // !If [Cond, !Ref Param, !Ref AWS::NoValue]
            let (n, args) = intrinsic(url)?;
            (n == "If").then(|| ref_name(&args.as_sequence()?[1]).map(str::to_owned))?
        })
        .expect("WEBHOOK_URL names a parameter");
    let default = text(path(&t, &["Parameters", &param, "Default"])).expect("a default");
    let env = Env::from_pairs([("WEBHOOK_URL", default), ("WEBHOOK_TIMEOUT_SECONDS", "15")]);
    assert!(
        matches!(WebhookConfig::from_env(&env), Ok(None)),
        "WEBHOOK_URL={default:?} must mean no webhook, not a start-up error"
    );
    // SECRETS_ID: !If [Cond, !Ref Secret, !Ref AWS::NoValue], Cond = the URL is not empty.
    let (n, args) = intrinsic(variable(f, "SECRETS_ID")).expect("SECRETS_ID !If");
    assert_eq!(n, "If");
    let args = args.as_sequence().unwrap();
    assert_eq!(ref_name(&args[2]), Some("AWS::NoValue"));
    let cond = path(&t, &["Conditions", text(&args[0]).expect("condition")]);
    let cond = serde_norway::to_string(cond).unwrap();
    assert!(
        cond.contains("Not") && cond.contains("Equals") && cond.contains(&param),
        "SECRETS_ID's condition is not `{param}` set: {cond}"
    );
}

/// The secret the template names holds `WEBHOOK_SECRET` (DESIGN.md section 2: a secret like
/// the others); start-up must accept it and build the webhook from it.
#[test]
fn the_webhook_secret_is_read_from_secrets_manager() {
    use shared::config::{Env, WebhookConfig};
    let secret = serde_json::json!({ "WEBHOOK_SECRET": whsec() }).to_string();
    let values = shared::secrets::parse(&secret).expect("the dispatcher's secret is accepted");
    let env = Env::from_pairs([("WEBHOOK_URL", "https://merchant.example/hooks")]).overlay(values);
    assert!(matches!(WebhookConfig::from_env(&env), Ok(Some(_))));
}

// ------------------------------------------------------------------------------- key format

#[test]
fn the_one_line_wechatpay_public_key_parameter_becomes_a_key_the_configuration_reads() {
    // The template builds the PEM from a one-line parameter (CloudFormation parameters are one
    // line); check that what it builds is accepted, with a real key.
    let t = template();
    let fs = functions(&t);
    let built = variable(&fs["place-order"], "WXPAY_PUBLIC_KEY");
    let (n, args) = intrinsic(built).expect("WXPAY_PUBLIC_KEY !If");
    assert_eq!(n, "If");
    let sub = &args.as_sequence().unwrap()[1];
    let names = sub_names(sub);
    assert_eq!(names.len(), 1, "one parameter in the PEM: {names:?}");
    let (_, pattern) = intrinsic(sub).unwrap();
    let pem =
        std::fs::read_to_string(repo().join("testdata/keys/test_platform_public.pem")).unwrap();
    let one_line: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let rebuilt = pattern
        .as_str()
        .unwrap()
        .replace(&format!("${{{}}}", names[0]), &one_line);
    shared::wechatpay::keys::RsaPublicKey::from_spki_pem(&rebuilt)
        .unwrap_or_else(|e| panic!("the template's PEM is not read back: {e}\n{rebuilt}"));
}

/// Issue 12.8: the notify route has its own throttle, apart from the user routes' default.
#[test]
fn the_notify_route_is_throttled_apart_from_user_routes() {
    let t = template();
    let stage = resources_of(&t, "AWS::ApiGatewayV2::Stage")
        .into_iter()
        .map(|(_, s)| s)
        .next()
        .expect("a stage");
    let props = at(stage, "Properties");
    let notify = path(props, &["RouteSettings", "POST /notify/wechatpay"]);
    let default = at(props, "DefaultRouteSettings");
    let limit = |v: &Value, k: &str| at(v, k).as_u64().unwrap_or_else(|| panic!("{k}"));
    assert!(limit(notify, "ThrottlingRateLimit") > 0);
    assert!(limit(notify, "ThrottlingBurstLimit") >= limit(notify, "ThrottlingRateLimit"));
    assert!(limit(default, "ThrottlingRateLimit") > 0);
    let routes: Vec<_> = resources_of(&t, "AWS::ApiGatewayV2::Route")
        .into_iter()
        .filter_map(|(_, r)| text(path(r, &["Properties", "RouteKey"])).map(str::to_owned))
        .collect();
    assert!(routes.contains(&"POST /notify/wechatpay".to_owned()));
}
