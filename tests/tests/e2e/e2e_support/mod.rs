//! The end-to-end harness (zero2prod's `spawn_app`): a fresh in-memory Dynoxide with the
//! table from `infra/table.json` and a seeded catalog, the WeChat Pay simulator in-process
//! with freshly generated sandbox keys, and the BUILT function
//! binaries as child processes in plain HTTP mode (`PORT=0`), configured only through the
//! environment variables of DESIGN.md section 2.
//!
//! Everything is per test (own table, own simulator, own ports, own keys), so tests run in
//! parallel. Children are killed on drop; their stdout and stderr are kept for assertions and
//! echoed to the test's stderr (shown by the test runner on failure).
//!
//! The function binaries belong to other packages, so they are not `CARGO_BIN_EXE_*` here:
//! they are looked up next to this test executable (`target/<profile>/`) and built (at most
//! once per process) with `cargo build -p <each function>` when missing or
//! older than a source file their dep-info lists (set `WXPAY_E2E_NO_BUILD=1` to never build).

#![allow(dead_code)] // not every test uses every helper

use shared::store::StoreSupport;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;
use sandbox::{DeliveryAttempt, SandboxKeys, Simulator, SimulatorConfig, SimulatorHandle};
use serde_json::{Value, json};
use shared::domain::{Openid, Order, OutTradeNo, Product, SkuId};
use shared::store::embedded::Embedded;
use shared::store::{DynamoStore, Payment, Store};
use shared::timefmt::{to_utc_string, to_wechat};
use shared::wechatpay::{
    NotificationDraft, Payer, TradeState, Transaction, TransactionAmount, build_notification,
};
use time::OffsetDateTime;
use wxpay_tests::aws_sdk_dynamodb::types::AttributeValue;

pub const APPID: &str = "wxd678efh567hg6787";
/// `SESSION_ISSUER` of [`Backend::token_env`].
pub const TOKEN_ISSUER: &str = "https://api.e2e.example.com";
pub const MCHID: &str = "1230000109";

/// Limited stock (10), 9.90 CNY.
pub const SKU_LIMITED: &str = "sku-limited";
pub const LIMITED_PRICE: i64 = 990;
pub const LIMITED_STOCK: i64 = 10;
/// No stock attribute: unlimited, 15.00 CNY.
pub const SKU_UNLIMITED: &str = "sku-unlimited";
pub const UNLIMITED_PRICE: i64 = 1500;
/// In the catalog but not on sale.
pub const SKU_INACTIVE: &str = "sku-inactive";

/// Longest any single wait may take (a notification acknowledged, a process ready).
pub const WAIT: Duration = Duration::from_secs(20);

/// The function binaries this suite drives (each is the package `functions/<binary>`).
/// The function binaries, as `shared::app` names them (`Function::name` is the binary).
pub use shared::app::Function;

// ---- locating (and if need be building) the binaries ---------------------------------------

/// `target/<profile>/`: integration tests run from `target/<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    let dir = exe.parent().expect("test executable has a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("deps has a parent").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Whether `binary` is missing or older than a source file it was built from, as listed by
/// cargo's dep-info file next to it (`<binary>.d`: every `.rs` file of the binary and of the
/// path dependencies it links, i.e. `shared`). Cargo decides the rest; when nothing changed
/// no build is started, so other engineers' builds with other features cost nothing here.
fn needs_build(binary: &Path) -> bool {
    let Some(built) = modified(binary) else {
        return true;
    };
    let mut dep_info = binary.as_os_str().to_owned();
    dep_info.push(".d");
    let Ok(text) = std::fs::read_to_string(&dep_info) else {
        return true;
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace");
    let sources = text
        .split_once(": ")
        .map_or("", |(_, deps)| deps)
        .replace("\\ ", "\u{0}")
        .split_whitespace()
        .map(|p| PathBuf::from(p.replace('\u{0}', " ")))
        .chain([
            workspace.join("Cargo.lock"),
            workspace.join("shared/Cargo.toml"),
        ])
        .collect::<Vec<_>>();
    sources
        .iter()
        .any(|source| modified(source).is_none_or(|changed| changed > built))
}

fn build_functions(profile: &Path) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--quiet"])
        .args(Function::ALL.iter().flat_map(|f| ["-p", f.name()]))
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"));
    if let Some(target) = profile.parent() {
        command.arg("--target-dir").arg(target);
    }
    match profile.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(other) => {
            command.args(["--profile", other]);
        }
    }
    eprintln!("e2e: building the function binaries: {command:?}");
    let status = command.status().expect("cargo can be run");
    assert!(status.success(), "{command:?} failed");
}

/// Path of a function binary, built first (once per process) when missing or stale.
pub fn binary(function: Function) -> PathBuf {
    static CHECKED: OnceLock<PathBuf> = OnceLock::new();
    let profile = CHECKED.get_or_init(|| {
        let profile = profile_dir();
        let paths: Vec<PathBuf> = Function::ALL
            .iter()
            .map(|f| profile.join(format!("{}{}", f.name(), std::env::consts::EXE_SUFFIX)))
            .collect();
        if std::env::var_os("WXPAY_E2E_NO_BUILD").is_none() && paths.iter().any(|p| needs_build(p))
        {
            build_functions(&profile);
        }
        for p in &paths {
            assert!(
                p.is_file(),
                "{} is missing: run `cargo build --workspace --bins`",
                p.display()
            );
        }
        profile
    });
    profile.join(format!(
        "{}{}",
        function.name(),
        std::env::consts::EXE_SUFFIX
    ))
}

// ---- child processes -------------------------------------------------------------------------

/// A function binary running as a child process; killed (SIGKILL) when dropped.
pub struct FunctionProcess {
    pub function: Function,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl FunctionProcess {
    /// Starts `function` with exactly `env` (the inherited environment is cleared, so nothing
    /// from the developer's shell, such as `AWS_PROFILE` or `RUST_LOG`, changes the run).
    pub fn spawn(function: Function, env: &[(String, String)]) -> FunctionProcess {
        let mut command = Command::new(binary(function));
        command
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", function.name()));
        let tag = |which: &str| format!("[{} {which}]", function.name());
        let stdout = collect_lines(child.stdout.take().expect("stdout piped"), tag("out"));
        let stderr = collect_lines(child.stderr.take().expect("stderr piped"), tag("err"));
        FunctionProcess {
            function,
            child,
            stdout,
            stderr,
        }
    }

    /// Waits for the one `ready` log line (JSON logs) and returns it; fails at once if the
    /// process exits first (a configuration error, with its one line in the output).
    pub async fn wait_ready(&mut self) -> Value {
        let start = Instant::now();
        loop {
            let ready = self
                .stdout()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["message"] == "ready");
            if let Some(line) = ready {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader threads drain what the process wrote before it died.
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "{} exited with {status} before it was ready:\n{}\n{}",
                    self.function.name(),
                    self.stdout().join("\n"),
                    self.stderr().join("\n")
                );
            }
            assert!(
                start.elapsed() < WAIT,
                "{} not ready within {WAIT:?}",
                self.function.name()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// In plain HTTP mode: waits for `ready` and returns `http://127.0.0.1:<port>`.
    pub async fn wait_http(&mut self) -> String {
        let ready = self.wait_ready().await;
        assert_eq!(ready["mode"], "http", "{ready}");
        let addr = ready["addr"]
            .as_str()
            .expect("ready line names the address");
        let port: u16 = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {addr}"));
        format!("http://127.0.0.1:{port}")
    }

    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// The stdout lines that are JSON objects (all of them, with `LOG_FORMAT=json`).
    pub fn json_logs(&self) -> Vec<Value> {
        self.stdout()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    /// SIGKILL, as a crashed or timed-out instance: no graceful shutdown, nothing flushed.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `stream` line by line on a thread, echoing each line (tagged) to the test's stderr.
fn collect_lines(
    stream: impl std::io::Read + Send + 'static,
    tag: String,
) -> Arc<Mutex<Vec<String>>> {
    let sink = Arc::new(Mutex::new(Vec::new()));
    let lines = Arc::clone(&sink);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            eprintln!("{tag} {line}");
            lines.lock().unwrap().push(line);
        }
    });
    sink
}

// ---- per-test scratch directory ------------------------------------------------------------

/// A directory under `CARGO_TARGET_TMPDIR`, removed on drop (the sandbox keys live here).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "{prefix}-{}-{nanos}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- the backend the functions run against ---------------------------------------------------

/// The functions' surroundings: DynamoDB (embedded Dynoxide), the catalog, the WeChat Pay
/// simulator and the keys. Tests read the store directly to check what the functions did.
pub struct Backend {
    pub store: DynamoStore,
    pub sim: SimulatorHandle,
    pub keys: SandboxKeys,
    pub table: String,
    /// A client for the functions' HTTP ports (no proxy, whatever the environment says).
    pub http: reqwest::Client,
    engine: Embedded,
    dir: TempDir,
}

impl Backend {
    pub async fn start() -> Backend {
        Backend::start_with(|_| {}).await
    }

    /// [`Backend::start`] with the simulator's configuration adjusted first (a sooner
    /// `time_expire` accepted, say, for orders that must expire within a test).
    pub async fn start_with(tweak: impl FnOnce(&mut SimulatorConfig)) -> Backend {
        let table = wxpay_tests::unique_table("e2e");
        let engine = Embedded::memory(&table)
            .await
            .expect("start embedded Dynoxide");
        let store = DynamoStore::new(engine.client().clone(), &table);
        store
            .put_products(&catalog())
            .await
            .expect("seed the catalog");

        let dir = TempDir::new("e2e");
        let keys = SandboxKeys::load_or_generate(dir.path()).expect("generate sandbox keys");
        let mut config = SimulatorConfig::new("127.0.0.1:0".parse().unwrap(), APPID, MCHID, &keys);
        // WeChat Pay's retry schedule shrunk a thousandfold: 15 s becomes 15 ms.
        config.retry_scale = 0.001;
        tweak(&mut config);
        let sim = Simulator::start(config).await.expect("start the simulator");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        Backend {
            store,
            sim,
            keys,
            table,
            http,
            engine,
            dir,
        }
    }

    /// `http://127.0.0.1:<port>` of the embedded DynamoDB (`DYNAMODB_ENDPOINT`).
    pub fn dynamodb_endpoint(&self) -> &str {
        self.engine.endpoint()
    }

    /// The environment of a function in plain HTTP mode on an OS-chosen port, as DESIGN.md
    /// section 2 names it. `notify_url` is required by place-order.
    pub fn function_env(&self, notify_url: Option<&str>) -> Vec<(String, String)> {
        let keys = &self.keys;
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let mut env: Vec<(String, String)> = [
            ("WXPAY_APPID", APPID.to_owned()),
            ("WXPAY_MCHID", MCHID.to_owned()),
            ("WXPAY_MCH_SERIAL_NO", keys.merchant_serial_no().to_owned()),
            ("WXPAY_MCH_PRIVATE_KEY_FILE", path(keys.merchant_key_path())),
            ("WXPAY_APIV3_KEY", keys.apiv3_key_text().to_owned()),
            ("WXPAY_PUBLIC_KEY_FILE", path(keys.wechatpay_public_path())),
            (
                "WXPAY_PUBLIC_KEY_ID",
                keys.wechatpay_public_key_id().to_owned(),
            ),
            ("WXPAY_API_BASE", self.sim.base_url()),
            ("ORDERS_TABLE", self.table.clone()),
            ("DYNAMODB_ENDPOINT", self.dynamodb_endpoint().to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "e2e-dummy-access-key".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "e2e-dummy-secret-key".to_owned()),
            ("ALLOW_DEBUG_IDENTITY", "1".to_owned()),
            ("AUTH_MODE", "authorizer".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "info".to_owned()),
            ("PORT", "0".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if let Some(url) = notify_url {
            env.push(("WXPAY_NOTIFY_URL".to_owned(), url.to_owned()));
        }
        env
    }

    /// [`Backend::function_env`] as deployed on a cloud: `AUTH_MODE=token` with the sandbox's
    /// session key and no debug identity (refused there); callers send
    /// [`Backend::bearer`] tokens.
    pub fn token_env(&self, notify_url: Option<&str>) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .function_env(notify_url)
            .into_iter()
            .filter(|(k, _)| k != "ALLOW_DEBUG_IDENTITY" && k != "AUTH_MODE")
            .collect();
        env.push(("AUTH_MODE".into(), "token".into()));
        env.push((
            "SESSION_PUBLIC_KEYS".into(),
            self.keys.session_key().public_key().to_spki_pem(),
        ));
        env.push(("SESSION_ISSUER".into(), TOKEN_ISSUER.into()));
        env
    }

    /// `Bearer <session token>` for `openid`, as the session function issues it.
    pub fn bearer(&self, openid: &str) -> String {
        let signer = shared::session::TokenSigner::new(
            self.keys.session_key().clone(),
            TOKEN_ISSUER,
            APPID,
            Duration::from_secs(3600),
        );
        let openid = Openid::parse(openid).expect("openid");
        format!(
            "Bearer {}",
            signer.issue(&openid, OffsetDateTime::now_utc()).token
        )
    }

    /// Runs the BUILT event-dispatcher once, locally (its timer path; no webhook here): it
    /// counts paid units sold by projecting each `order.paid` (DESIGN 5: PAID touches no
    /// product item). Its summary.
    pub async fn run_dispatcher(&self) -> Value {
        let env: Vec<(String, String)> = self
            .function_env(None)
            .into_iter()
            .filter(|(k, _)| k != "PORT")
            .collect();
        let output = tokio::task::spawn_blocking(move || {
            Command::new(binary(shared::app::Function::EventDispatcher))
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdin(Stdio::null())
                .output()
                .expect("event-dispatcher runs")
        })
        .await
        .expect("dispatcher thread");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "event-dispatcher exited {:?}: {stdout}",
            output.status
        );
        let last = stdout.lines().last().expect("a summary line");
        let summary: Value = serde_json::from_str(last).expect("the summary is JSON");
        assert_eq!(summary["failed"], 0, "{summary}");
        summary
    }

    // ---- reading the store ------------------------------------------------------------------

    pub async fn order(&self, out_trade_no: &str) -> Order {
        self.store
            .get_order(&OutTradeNo::parse(out_trade_no).expect("out_trade_no"))
            .await
            .expect("read order")
            .unwrap_or_else(|| panic!("order {out_trade_no} is not in the store"))
    }

    pub async fn product(&self, sku: &str) -> Product {
        self.store
            .get_product(&SkuId::parse(sku).expect("sku"))
            .await
            .expect("read product")
            .unwrap_or_else(|| panic!("product {sku} is not in the store"))
    }

    pub async fn payment(&self, transaction_id: &str) -> Option<Payment> {
        self.store
            .get_payment(transaction_id)
            .await
            .expect("read payment")
    }

    /// Every order of `openid`, newest first.
    pub async fn orders_of(&self, openid: &str) -> Vec<Order> {
        let page = self
            .store
            .list_orders(&Openid::parse(openid).expect("openid"), 100, None)
            .await
            .expect("list orders");
        assert!(page.next.is_none(), "more than 100 orders for {openid}");
        page.items
    }

    /// Every item of the table, each as a sorted attribute map, sorted: equal snapshots mean
    /// nothing was written in between.
    pub async fn snapshot(&self) -> Vec<String> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .store
                .client()
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan the table");
            for item in out.items() {
                let mut text = String::new();
                canonical_map(item, &mut text);
                items.push(text);
            }
            match out.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        items.sort();
        items
    }

    /// TEST-ONLY SHORTCUT: moves the `locked_until` of the idempotency record of
    /// (`openid`, `key`) one second into the past, directly through the DynamoDB API.
    ///
    /// In plain HTTP mode a claim is locked for `idempotency::DEFAULT_LOCK` (30 s) because no
    /// invocation deadline is known; a crashed request's key only becomes resumable after
    /// that. Rather than sleeping 30 s, the crash test ages the lock: exactly what the clock
    /// would do, and nothing else about the record changes.
    pub async fn expire_idempotency_lock(&self, openid: &str, key: &str) {
        let past = to_utc_string(OffsetDateTime::now_utc() - time::Duration::seconds(1));
        self.store
            .client()
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(format!("IDEM#{openid}#{key}")))
            .key("sk", AttributeValue::S("IDEM".to_owned()))
            .update_expression("SET locked_until = :past")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":past", AttributeValue::S(past))
            .send()
            .await
            .expect("age the idempotency lock");
    }

    // ---- WeChat Pay's side ------------------------------------------------------------------

    /// A SUCCESS transaction for `order` as WeChat Pay would notify it.
    pub fn success_transaction(
        &self,
        order: &Order,
        transaction_id: &str,
        total: i64,
    ) -> Transaction {
        Transaction {
            appid: APPID.to_owned(),
            mchid: MCHID.to_owned(),
            out_trade_no: order.out_trade_no.to_string(),
            transaction_id: Some(transaction_id.to_owned()),
            trade_type: Some("JSAPI".to_owned()),
            trade_state: TradeState::Success,
            trade_state_desc: Some("支付成功".to_owned()),
            bank_type: Some("OTHERS".to_owned()),
            attach: order.attach.clone(),
            success_time: Some(to_wechat(OffsetDateTime::now_utc())),
            payer: Some(Payer {
                openid: order.openid.to_string(),
            }),
            amount: Some(TransactionAmount {
                total,
                payer_total: Some(total),
                currency: Some("CNY".to_owned()),
                payer_currency: Some("CNY".to_owned()),
            }),
            scene_info: None,
            promotion_detail: None,
            request_id: None,
        }
    }

    /// A `TRANSACTION.SUCCESS` notification of `txn`, signed at `timestamp` with the
    /// simulator's platform key under `serial` (the real public-key id when `None`) and sealed
    /// with the APIv3 key, exactly as the simulator (and WeChat Pay) builds them.
    pub fn notification(
        &self,
        txn: &Transaction,
        notification_id: &str,
        timestamp: i64,
        serial: Option<&str>,
    ) -> (HeaderMap, Vec<u8>) {
        let plaintext = serde_json::to_vec(txn).expect("transaction JSON");
        let create_time = to_wechat(OffsetDateTime::now_utc());
        let draft =
            NotificationDraft::transaction_success(notification_id, &create_time, &plaintext);
        build_notification(
            self.keys.wechatpay_key(),
            serial.unwrap_or(self.keys.wechatpay_public_key_id()),
            self.keys.apiv3_key(),
            &draft,
            timestamp,
        )
    }

    /// Polls the simulator's delivery log for `out_trade_no` until `done` holds.
    pub async fn wait_deliveries(
        &self,
        out_trade_no: &str,
        what: &str,
        done: impl Fn(&[DeliveryAttempt]) -> bool,
    ) -> Vec<DeliveryAttempt> {
        eventually(what, || {
            let attempts = self.sim.deliveries(out_trade_no);
            done(&attempts).then_some(attempts)
        })
        .await
    }

    /// Waits until a delivery of the order's notification got 204, and returns the log.
    pub async fn wait_acknowledged(&self, out_trade_no: &str) -> Vec<DeliveryAttempt> {
        self.wait_deliveries(out_trade_no, "a delivery acknowledged with 204", |a| {
            a.iter().any(|d| d.status == Some(204))
        })
        .await
    }

    /// Waits until every notification of the order is finished (acknowledged and no copy in
    /// flight, or retries exhausted), and returns the log.
    pub async fn wait_notifications_finished(&self, out_trade_no: &str) -> Vec<DeliveryAttempt> {
        eventually("every delivery finished", || {
            let notifications = self.sim.notifications(out_trade_no);
            (!notifications.is_empty() && notifications.iter().all(|n| n.finished)).then_some(())
        })
        .await;
        self.sim.deliveries(out_trade_no)
    }
}

/// A map of attributes as text with keys sorted at every level (the SDK's maps are hash
/// maps, whose order varies between two reads of the same item).
fn canonical_map(map: &std::collections::HashMap<String, AttributeValue>, out: &mut String) {
    let sorted: BTreeMap<&String, &AttributeValue> = map.iter().collect();
    out.push('{');
    for (key, value) in sorted {
        out.push_str(&format!("{key:?}: "));
        canonical(value, out);
        out.push_str(", ");
    }
    out.push('}');
}

fn canonical(value: &AttributeValue, out: &mut String) {
    match value {
        AttributeValue::M(map) => canonical_map(map, out),
        AttributeValue::L(list) => {
            out.push('[');
            for v in list {
                canonical(v, out);
                out.push_str(", ");
            }
            out.push(']');
        }
        AttributeValue::Ss(set) | AttributeValue::Ns(set) => {
            let mut sorted = set.clone();
            sorted.sort();
            out.push_str(&format!("{sorted:?}"));
        }
        other => out.push_str(&format!("{other:?}")),
    }
}

/// One product with stock 10, one unlimited, one inactive.
pub fn catalog() -> Vec<Product> {
    let product = |sku: &str, name: &str, price: i64, stock: Option<i64>, active: bool| Product {
        sku_id: SkuId::parse(sku).unwrap(),
        name: name.to_owned(),
        price: shared::domain::Money::from_fen(price).unwrap(),
        stock,
        reserved: 0,
        sold: 0,
        active,
        stock_shards: 1,
    };
    vec![
        product(
            SKU_LIMITED,
            "Limited tea",
            LIMITED_PRICE,
            Some(LIMITED_STOCK),
            true,
        ),
        product(SKU_UNLIMITED, "Unlimited cup", UNLIMITED_PRICE, None, true),
        product(SKU_INACTIVE, "Retired mug", 500, Some(100), false),
    ]
}

/// Polls `f` every 20 ms until it yields, failing the test after [`WAIT`].
pub async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(
            start.elapsed() < WAIT,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// `{"items": [{"sku_id": .., "quantity": ..}, ..]}`.
pub fn cart(items: &[(&str, i64)]) -> String {
    let items: Vec<Value> = items
        .iter()
        .map(|(sku, quantity)| json!({"sku_id": sku, "quantity": quantity}))
        .collect();
    json!({ "items": items }).to_string()
}

// ---- HTTP ------------------------------------------------------------------------------------

/// A function's answer, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("read the body").to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The `code` of an error body.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// Asserts an error answer: status, `{"code", "message"}` and nothing else.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code().as_str()),
            (status, code),
            "{}",
            self.text()
        );
        let body = self.json();
        let object = body.as_object().expect("error body is an object");
        assert_eq!(object.len(), 2, "only code and message: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
}

/// A function's environment under a (fake) Lambda runtime API at `runtime_api`, as Lambda
/// sets it; no debug identity.
pub fn lambda_env(
    backend: &Backend,
    notify_url: Option<&str>,
    runtime_api: std::net::SocketAddr,
    name: &str,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = backend
        .function_env(notify_url)
        .into_iter()
        .filter(|(k, _)| k != "PORT" && k != "ALLOW_DEBUG_IDENTITY")
        .collect();
    for (k, v) in [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/11/24/[$LATEST]e2e".to_owned(),
        ),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
    ] {
        env.push((k.to_owned(), v));
    }
    env
}

// ---- a slow DynamoDB -------------------------------------------------------------------------

/// A DynamoDB endpoint that answers like `target` but `delay` later: every request is held
/// that long before it is forwarded (a stalling table, a slow network), so a function's time
/// budget can be seen at work. The delay can be changed while it runs.
pub struct SlowDynamo {
    pub url: String,
    delay_ms: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
}

impl SlowDynamo {
    pub async fn start(target: &str, delay: Duration) -> SlowDynamo {
        let delay_ms = Arc::new(AtomicU64::new(delay.as_millis() as u64));
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let (target, held) = (target.to_owned(), delay_ms.clone());
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (client, target, held) = (client.clone(), target.clone(), held.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(held.load(Ordering::SeqCst))).await;
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 16 << 20)
                    .await
                    .unwrap_or_default();
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let mut forward = client.request(parts.method, format!("{target}{path}"));
                for (name, value) in &parts.headers {
                    if name != http::header::HOST {
                        forward = forward.header(name, value);
                    }
                }
                let answer = forward.body(body).send().await.expect("the engine answers");
                let mut response = axum::response::Response::builder().status(answer.status());
                for (name, value) in answer.headers() {
                    response = response.header(name, value);
                }
                let bytes = answer.bytes().await.unwrap_or_default();
                response
                    .body(axum::body::Body::from(bytes))
                    .expect("response")
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SlowDynamo {
            url,
            delay_ms,
            server,
        }
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for SlowDynamo {
    fn drop(&mut self) {
        self.server.abort();
    }
}

// ---- the app ---------------------------------------------------------------------------------

/// [`Backend`] plus both functions running as HTTP servers.
pub struct TestApp {
    pub backend: Backend,
    pub place_order: FunctionProcess,
    pub callback: FunctionProcess,
    /// `http://127.0.0.1:<port>` of place-order.
    pub place_order_url: String,
    /// `http://127.0.0.1:<port>/notify/wechatpay`: what place-order sends as notify_url.
    pub notify_url: String,
}

impl Deref for TestApp {
    type Target = Backend;
    fn deref(&self) -> &Backend {
        &self.backend
    }
}

/// Starts everything for one test: store, catalog, simulator, keys, and the two binaries
/// (payment-callback first, so its port can be place-order's notify_url).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// [`spawn_app`] with the simulator's configuration adjusted first.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut SimulatorConfig)) -> TestApp {
    let backend = Backend::start_with(tweak).await;
    let mut callback =
        FunctionProcess::spawn(Function::PaymentCallback, &backend.function_env(None));
    let notify_url = format!("{}/notify/wechatpay", callback.wait_http().await);
    let (place_order, place_order_url) = start_place_order(&backend, &notify_url).await;
    TestApp {
        backend,
        place_order,
        callback,
        place_order_url,
        notify_url,
    }
}

async fn start_place_order(backend: &Backend, notify_url: &str) -> (FunctionProcess, String) {
    let mut process = FunctionProcess::spawn(
        Function::PlaceOrder,
        &backend.function_env(Some(notify_url)),
    );
    let url = process.wait_http().await;
    (process, url)
}

impl TestApp {
    /// Kills place-order (SIGKILL) and starts a fresh instance (new port, same environment).
    pub async fn restart_place_order(&mut self) {
        self.place_order.kill();
        let (process, url) = start_place_order(&self.backend, &self.notify_url).await;
        self.place_order = process;
        self.place_order_url = url;
    }

    /// `POST /orders` with the given identity, key and raw body.
    pub async fn post_order(
        &self,
        openid: Option<&str>,
        key: Option<&str>,
        body: impl Into<Vec<u8>>,
    ) -> Reply {
        let mut request = self
            .http
            .post(format!("{}/orders", self.place_order_url))
            .header("content-type", "application/json")
            .body(body.into());
        if let Some(openid) = openid {
            request = request.header("x-debug-openid", openid);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        Reply::read(request.send().await.expect("place-order answers")).await
    }

    /// Places an order that must succeed; returns the 201 reply and its out_trade_no.
    pub async fn place(&self, openid: &str, key: &str, items: &[(&str, i64)]) -> (Reply, String) {
        let reply = self.post_order(Some(openid), Some(key), cart(items)).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        let out_trade_no = reply.json()["out_trade_no"]
            .as_str()
            .expect("out_trade_no")
            .to_owned();
        (reply, out_trade_no)
    }

    /// POSTs a notification straight to payment-callback, as WeChat Pay would.
    pub async fn notify(&self, headers: &HeaderMap, body: &[u8]) -> Reply {
        let response = self
            .http
            .post(&self.notify_url)
            .headers(headers.clone())
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .expect("payment-callback answers");
        Reply::read(response).await
    }
}
