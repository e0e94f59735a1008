//! `template.yaml` (AWS SAM) against the rest of the repository: the table is exactly
//! `infra/table.json`; every function is one `functions/<name>` binary built the same way; the
//! routes are DESIGN.md section 3's with the notify and session routes never behind an
//! authorizer; secrets come only from Secrets Manager; each function may use only the DynamoDB
//! actions and indexes its store calls need. `cfn-lint` (run by scripts/test.sh) checks the
//! template against CloudFormation's schemas; this checks it against the project.

use std::collections::{BTreeMap, BTreeSet};

use crate::deploy_support::{at, design_routes, path, repo};
use serde_norway::{Mapping, Value};
use shared::secrets::SECRET_VARIABLES;
use shared::store::TableDefinition;

const FUNCTIONS: [&str; 6] = [
    "session",
    "place-order",
    "query-order",
    "payment-callback",
    "timeout-sweeper",
    "merchant-api",
];

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
        FUNCTIONS.into_iter().collect::<BTreeSet<_>>(),
        "the template's functions"
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

#[test]
fn the_sweeper_runs_every_minute_and_only_the_sweeper_is_scheduled() {
    let t = template();
    for f in functions(&t).values() {
        let schedules: Vec<_> = at(&f.properties, "Events")
            .as_mapping()
            .map(|m| {
                m.values()
                    .filter(|e| matches!(text(at(e, "Type")), Some("Schedule" | "ScheduleV2")))
                    .map(|e| {
                        text(path(e, &["Properties", "Schedule"]))
                            .or(text(path(e, &["Properties", "ScheduleExpression"])))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if f.binary == "timeout-sweeper" {
            assert_eq!(
                schedules,
                [Some("rate(1 minute)")],
                "the sweeper's schedule"
            );
        } else {
            assert!(schedules.is_empty(), "{} has a schedule", f.binary);
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
    let secret_names: Vec<String> = SECRET_VARIABLES
        .iter()
        .flat_map(|v| [v.to_string(), format!("{v}_FILE")])
        .collect();
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
            assert!(!secret_names.iter().any(|s| s == key), "{who} sets {key}");
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
    let session = &named["session"];
    for other in FUNCTIONS.iter().filter(|f| **f != "session") {
        assert!(
            named[*other].iter().all(|p| !session.contains(p)),
            "{other} reads the session secret"
        );
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

/// The parameters a `SECRETS_ID` value can name: `!Ref P`, or `!If [cond, !Ref A, !Ref B]`.
fn secret_params(v: &Value) -> Option<Vec<String>> {
    if let Some(name) = ref_name(v) {
        return Some(vec![name.to_owned()]);
    }
    match intrinsic(v)? {
        (n, Value::Sequence(branches)) if n == "If" && branches.len() == 3 => branches[1..]
            .iter()
            .map(|b| ref_name(b).map(str::to_owned))
            .collect(),
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
        "query-order" => (
            base.into_iter().chain(["dynamodb:Query"]).collect(),
            vec!["gsi1"],
        ),
        "timeout-sweeper" => (
            base.into_iter().chain(["dynamodb:Query"]).collect(),
            vec!["gsi2"],
        ),
        // list_anomalies: Query of one order's anomaly partition, on the table itself;
        // recent_anomalies: gsi1's ANOMALIES partition.
        "merchant-api" => (
            base.into_iter().chain(["dynamodb:Query"]).collect(),
            vec![TABLE_QUERY, "gsi1"],
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
    assert_eq!(merchant, 7);
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

/// (namespace, metric name, dimensions as (name, value or !Ref target)).
type WatchedMetric = (String, String, Vec<(String, String)>);

#[test]
fn alarms_watch_every_function_the_sweeper_and_anomalies() {
    let t = template();
    let fs = functions(&t);
    let alarms = resources_of(&t, "AWS::CloudWatch::Alarm");
    let metric = |a: &Value| -> Vec<WatchedMetric> {
        let p = at(a, "Properties");
        let mut found = Vec::new();
        let mut add = |m: &Value| {
            let dims = at(m, "Dimensions")
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|d| {
                    let v = at(d, "Value");
                    (
                        text(at(d, "Name")).unwrap_or("").to_owned(),
                        text(v).or(ref_name(v)).unwrap_or("").to_owned(),
                    )
                })
                .collect();
            found.push((
                text(at(m, "Namespace")).unwrap_or("").to_owned(),
                text(at(m, "MetricName")).unwrap_or("").to_owned(),
                dims,
            ));
        };
        if !at(p, "MetricName").is_null() {
            add(p);
        }
        for m in at(p, "Metrics").as_sequence().into_iter().flatten() {
            let stat = path(m, &["MetricStat", "Metric"]);
            if !stat.is_null() {
                add(stat);
            }
        }
        found
    };
    let watched: Vec<_> = alarms.iter().flat_map(|(_, a)| metric(a)).collect();
    let has = |ns: &str, name: &str, dim: (&str, &str)| {
        watched.iter().any(|(n, m, d)| {
            n == ns && m == name && d.iter().any(|(k, v)| k == dim.0 && v == dim.1)
        })
    };
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
    for (name, a) in &alarms {
        assert!(
            at(at(a, "Properties"), "AlarmActions")
                .as_sequence()
                .is_some_and(|s| !s.is_empty()),
            "{name} notifies nobody"
        );
    }
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
