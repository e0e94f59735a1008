//! `sandbox serve` as a user runs it: the built binary on free ports and a temporary data dir,
//! an order placed and paid over HTTP, `sandbox.env` checked, then Ctrl-C (SIGINT) and a
//! restart on the same data dir to show the keys and the order survive. Also the command
//! line's exit codes.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const START_TIMEOUT: Duration = Duration::from_secs(180);

/// A directory under cargo's per-target temporary dir, removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "sandbox-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `sandbox serve`; killed if the test ends before it stopped.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Everything it printed on stdout and stderr so far.
    output: Arc<Mutex<String>>,
    functions: String,
    wechat: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn start(data_dir: &Path) -> Running {
        Running::start_with(data_dir, &[])
    }

    /// [`Running::start`] with more flags (`--order-ttl`, `--sweep-every`, ...).
    fn start_with(data_dir: &Path, flags: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sandbox"))
            .args([
                "serve",
                "--port",
                "0",
                "--wechat-port",
                "0",
                "--retry-scale",
                "0.01",
            ])
            .args(flags)
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sandbox binary starts");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let sink = output.clone();
        // Drain stdout for the whole life of the process, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            sink.lock().unwrap().push_str(&s);
        });
        let mut running = Running {
            child,
            lines,
            output,
            functions: String::new(),
            wechat: String::new(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while running.functions.is_empty() || running.wechat.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match running.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => panic!(
                    "the sandbox did not print its URLs in time:\n{}",
                    running.output()
                ),
            };
            if let Some(url) = line.strip_prefix("sandbox: functions on ") {
                running.functions = url.trim().to_owned();
            }
            if let Some(url) = line.strip_prefix("sandbox: wechat pay simulator on ") {
                running.wechat = url.trim().to_owned();
            }
        }
        running.wait_for_line("sandbox: ready");
        running
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    fn wait_for_line(&self, prefix: &str) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return,
                Ok(_) => {}
                Err(_) => panic!("no line {prefix:?} in time:\n{}", self.output()),
            }
        }
    }

    /// Ctrl-C, then waits for a clean exit.
    fn interrupt(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the sandbox did not stop after SIGINT:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn get_json(http: &reqwest::Client, url: &str) -> (u16, Value) {
    get_json_with(http, url, &[]).await
}

/// `GET url` as `openid` (the sandbox's debug identity).
async fn get_json_as(http: &reqwest::Client, url: &str, openid: &str) -> (u16, Value) {
    get_json_with(http, url, &[("x-debug-openid", openid)]).await
}

async fn get_json_with(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = http.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `POST /orders` of `quantity` x `sku` under `key`, the caller named by `identity`
/// (`("x-debug-openid", openid)` or `("authorization", "Bearer ...")`).
/// The flash-sale sku as `GET /sandbox/products` shows it.
async fn flash_product(http: &reqwest::Client, functions: &str) -> Value {
    let (status, products) = get_json(http, &format!("{functions}/sandbox/products")).await;
    assert_eq!(status, 200, "{products}");
    products["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["sku_id"] == "flash-mooncake")
        .unwrap_or_else(|| panic!("no flash-mooncake in {products}"))
        .clone()
}

async fn post_order(
    http: &reqwest::Client,
    functions: &str,
    identity: (&str, &str),
    key: &str,
    sku: &str,
    quantity: u32,
) -> (u16, Value) {
    post_json(
        http,
        &format!("{functions}/orders"),
        &[identity, ("idempotency-key", key)],
        &json!({"items": [{"sku_id": sku, "quantity": quantity}]}),
    )
    .await
}

async fn post_json(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, Value) {
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(json!({ "raw": text })),
    )
}

/// `NAME=value` lines of sandbox.env (values are plain in a temporary dir without spaces).
fn env_file(path: &Path) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_places_and_pays_an_order_and_survives_a_restart() {
    let dir = TempDir::new("serve");
    let http = client();

    let mut sandbox = Running::start(&dir.0);
    let (status, info) = get_json(&http, &format!("{}/sandbox/info", sandbox.wechat)).await;
    assert_eq!(status, 200, "{info}");
    let serial = info["merchant_serial_no"].as_str().unwrap().to_owned();
    let merchant_key = std::fs::read(dir.0.join("keys/merchant_key.pem")).unwrap();

    // An order, placed as a client would.
    let (status, placed) = post_order(
        &http,
        &sandbox.functions,
        ("x-debug-openid", "o_serve_test"),
        "serve-1",
        "milk-tea",
        2,
    )
    .await;
    assert_eq!(status, 201, "{placed}\n{}", sandbox.output());
    assert_eq!(placed["status"], "PENDING");
    assert_eq!(placed["amount_total"], 3000);
    let no = placed["out_trade_no"].as_str().unwrap().to_owned();

    // The flash-sale sku (200 units over 8 stock shards): 3 reserved on one shard, and
    // the catalog shows what the shards have left.
    let (status, flash_order) = post_order(
        &http,
        &sandbox.functions,
        ("x-debug-openid", "o_flash_buyer"),
        "serve-flash",
        "flash-mooncake",
        3,
    )
    .await;
    assert_eq!(status, 201, "{flash_order}");
    let flash = flash_product(&http, &sandbox.functions).await;
    assert_eq!(
        (flash["stock_shards"].clone(), flash["available"].clone()),
        (json!(8), json!(197)),
        "{flash}"
    );

    // The user pays; the notification comes back to the sandbox's payment-callback.
    let (status, paid) = post_json(
        &http,
        &format!("{}/sandbox/pay", sandbox.wechat),
        &[],
        &json!({"out_trade_no": no, "deliveries": 2}),
    )
    .await;
    assert_eq!(status, 200, "{paid}");
    let transaction_id = paid["transaction_id"].as_str().unwrap().to_owned();
    let order_url = format!("{}/sandbox/orders/{no}", sandbox.functions);
    let deadline = Instant::now() + Duration::from_secs(30);
    let view = loop {
        let (status, view) = get_json(&http, &order_url).await;
        assert_eq!(status, 200, "{view}");
        if view["order"]["status"] == "PAID" {
            break view;
        }
        assert!(
            Instant::now() < deadline,
            "not PAID in time: {view}\n{}",
            sandbox.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view["order"]["transaction_id"], transaction_id.as_str());
    assert_eq!(view["payment"]["amount"], 3000);
    assert_eq!(view["anomalies"], json!([]));
    assert!(view["sandbox_only"].is_string());

    // The mini-program's login: a code for a session token, which places orders as that user.
    let (status, login) = post_json(
        &http,
        &format!("{}/sessions", sandbox.functions),
        &[],
        &json!({"code": "serve-user"}),
    )
    .await;
    assert_eq!(status, 200, "{login}\n{}", sandbox.output());
    let token = login["token"].as_str().unwrap().to_owned();
    let openid = sandbox::simulator::login::openid_for("serve-user");
    assert_eq!(login["openid"], openid.as_str());
    let bearer = format!("Bearer {token}");
    let (_, jwks) = get_json(
        &http,
        &format!("{}/.well-known/jwks.json", sandbox.functions),
    )
    .await;
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
    let (status, by_token) = post_order(
        &http,
        &sandbox.functions,
        ("authorization", &bearer),
        "serve-token-1",
        "latte",
        1,
    )
    .await;
    assert_eq!(status, 201, "{by_token}");
    let token_order = by_token["out_trade_no"].as_str().unwrap().to_owned();
    let (_, view) = get_json(
        &http,
        &format!("{}/sandbox/orders/{token_order}", sandbox.functions),
    )
    .await;
    assert_eq!(view["order"]["openid"], openid.as_str());
    let (status, refused) = post_json(
        &http,
        &format!("{}/sessions", sandbox.functions),
        &[],
        &json!({"code": "invalid-code"}),
    )
    .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (401, Some("INVALID_CODE"))
    );
    let (status, _) = post_order(
        &http,
        &sandbox.functions,
        ("authorization", "Bearer forged"),
        "serve-forged",
        "latte",
        1,
    )
    .await;
    assert_eq!(status, 401);

    // Query-order: the owner sees the order PAID; anyone else gets 404; the listing has it.
    let (status, body) = get_json_as(
        &http,
        &format!("{}/orders/{no}", sandbox.functions),
        "o_serve_test",
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", sandbox.output());
    assert_eq!(body["status"], "PAID", "{body}");
    assert_eq!(body["transaction_id"], transaction_id.as_str());
    assert_eq!(body["synced"], true);
    let (status, body) = get_json_as(
        &http,
        &format!("{}/orders/{no}", sandbox.functions),
        "o_someone",
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, list) = get_json_as(
        &http,
        &format!("{}/orders?limit=5", sandbox.functions),
        "o_serve_test",
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["orders"][0]["out_trade_no"], no.as_str(), "{list}");
    assert!(
        sandbox
            .output()
            .contains("sandbox: timeout-sweeper runs every 60 s"),
        "{}",
        sandbox.output()
    );

    // sandbox.env: every variable, private, pointing at this sandbox.
    let env_path = dir.0.join("sandbox.env");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&env_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "sandbox.env mode {mode:o}");
    }
    let vars = env_file(&env_path);
    for name in [
        "WXPAY_APPID",
        "WXPAY_MCHID",
        "WXPAY_MCH_SERIAL_NO",
        "WXPAY_MCH_PRIVATE_KEY_FILE",
        "WXPAY_APIV3_KEY",
        "WXPAY_PUBLIC_KEY_FILE",
        "WXPAY_PUBLIC_KEY_ID",
        "WXPAY_NOTIFY_URL",
        "WXPAY_API_BASE",
        "ORDERS_TABLE",
        "DYNAMODB_ENDPOINT",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "ORDER_TTL_SECONDS",
        "ALLOW_DEBUG_IDENTITY",
        "AUTH_MODE",
        "WX_APP_SECRET",
        "WX_API_BASE",
        "SESSION_SIGNING_KEY_FILE",
        "SESSION_PUBLIC_KEYS_FILE",
        "SESSION_ISSUER",
        "WEBHOOK_URL",
        "WEBHOOK_SECRET",
    ] {
        assert!(vars.contains_key(name), "{name} missing from sandbox.env");
    }
    assert_eq!(
        vars["WXPAY_NOTIFY_URL"],
        format!("{}/notify/wechatpay", sandbox.functions)
    );
    assert_eq!(vars["WXPAY_API_BASE"], sandbox.wechat);
    assert_eq!(vars["WXPAY_MCH_SERIAL_NO"], serial);
    assert_eq!(vars["ALLOW_DEBUG_IDENTITY"], "1");
    assert_eq!(vars["AUTH_MODE"], "token");
    assert_eq!(vars["SESSION_ISSUER"], sandbox.functions);
    assert_eq!(vars["WX_API_BASE"], sandbox.wechat);
    assert_eq!(vars["ORDER_TTL_SECONDS"], "1800");
    assert_eq!(vars["SWEEP_GRACE_SECONDS"], "1");
    assert_eq!(
        vars["WEBHOOK_URL"],
        format!("{}/sandbox/webhooks", sandbox.functions)
    );
    assert!(vars["WEBHOOK_SECRET"].starts_with("whsec_"));
    assert!(Path::new(&vars["WXPAY_MCH_PRIVATE_KEY_FILE"]).is_file());
    assert!(Path::new(&vars["WXPAY_PUBLIC_KEY_FILE"]).is_file());

    // Ctrl-C stops everything cleanly.
    let status = sandbox.interrupt();
    assert!(status.success(), "{status}\n{}", sandbox.output());
    let first_output = sandbox.output();
    assert!(first_output.contains("sandbox: stopped"), "{first_output}");
    // Secrets never reach the terminal.
    let apiv3 = vars["WXPAY_APIV3_KEY"].clone();
    assert!(!first_output.contains(&apiv3), "the APIv3 key was printed");
    let app_secret = vars["WX_APP_SECRET"].clone();
    assert!(
        !first_output.contains(&app_secret),
        "the AppSecret was printed"
    );
    assert!(
        !first_output.contains("PRIVATE KEY"),
        "a private key was printed"
    );
    assert!(
        !first_output.contains(&vars["WEBHOOK_SECRET"]["whsec_".len()..]),
        "the webhook secret was printed"
    );
    drop(sandbox);

    // Restart on the same data dir: same keys, the order is still there.
    let mut sandbox = Running::start(&dir.0);
    assert!(
        sandbox.output().contains("reusing keys"),
        "{}",
        sandbox.output()
    );
    assert_eq!(
        std::fs::read(dir.0.join("keys/merchant_key.pem")).unwrap(),
        merchant_key
    );
    let (_, info) = get_json(&http, &format!("{}/sandbox/info", sandbox.wechat)).await;
    assert_eq!(info["merchant_serial_no"], serial.as_str());
    let (status, view) =
        get_json(&http, &format!("{}/sandbox/orders/{no}", sandbox.functions)).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["order"]["status"], "PAID");
    assert_eq!(view["order"]["transaction_id"], transaction_id.as_str());
    // The sale is counted when the sandbox's event-dispatcher projects `order.paid` (it
    // runs every second; PAID itself touches no product item), before or after the restart.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let tea = loop {
        let (_, products) =
            get_json(&http, &format!("{}/sandbox/products", sandbox.functions)).await;
        let tea = products["products"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["sku_id"] == "milk-tea")
            .unwrap()
            .clone();
        if tea["sold"] == json!(2) || std::time::Instant::now() > deadline {
            break tea;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        (tea["sold"].clone(), tea["reserved"].clone()),
        (json!(2), json!(0)),
        "{tea}"
    );
    // Re-seeding on restart never restages the shards: the reservation is still held.
    let flash = flash_product(&http, &sandbox.functions).await;
    assert_eq!(flash["available"], json!(197), "{flash}");

    // The restarted sandbox still takes orders: the same key replays, a new one creates.
    let (status, replay) = post_order(
        &http,
        &sandbox.functions,
        ("x-debug-openid", "o_serve_test"),
        "serve-1",
        "milk-tea",
        2,
    )
    .await;
    assert_eq!(status, 201, "{replay}");
    assert_eq!(replay["out_trade_no"], no.as_str());
    let (status, second) = post_order(
        &http,
        &sandbox.functions,
        ("x-debug-openid", "o_serve_test"),
        "serve-2",
        "latte",
        1,
    )
    .await;
    assert_eq!(status, 201, "{second}\n{}", sandbox.output());
    // The session key was reused (same kid); the issuer is the functions' URL, which moved
    // to another port here, so the old token names another issuer and a new login is needed.
    let (_, jwks_after) = get_json(
        &http,
        &format!("{}/.well-known/jwks.json", sandbox.functions),
    )
    .await;
    assert_eq!(jwks_after["keys"][0]["kid"], kid);
    let (status, login) = post_json(
        &http,
        &format!("{}/sessions", sandbox.functions),
        &[],
        &json!({"code": "serve-user"}),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(
        login["openid"],
        openid.as_str(),
        "the same code, the same user"
    );
    let bearer = format!("Bearer {}", login["token"].as_str().unwrap());
    let (status, again) = post_order(
        &http,
        &sandbox.functions,
        ("authorization", &bearer),
        "serve-token-2",
        "latte",
        1,
    )
    .await;
    assert_eq!(status, 201, "{again}\n{}", sandbox.output());

    let status = sandbox.interrupt();
    assert!(status.success(), "{status}\n{}", sandbox.output());
}

/// `--order-ttl 2 --sweep-every 1`: an unpaid order is closed by the in-process sweeper at
/// WeChat Pay and locally, its stock comes back, and the sweep prints its summary line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sweeps_expired_orders_on_its_interval() {
    let dir = TempDir::new("sweep");
    let http = client();
    let mut sandbox = Running::start_with(&dir.0, &["--order-ttl", "2", "--sweep-every", "1"]);
    assert!(
        sandbox
            .output()
            .contains("sandbox: timeout-sweeper runs every 1 s"),
        "{}",
        sandbox.output()
    );
    let milk_tea = |products: &Value| {
        let p = products["products"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["sku_id"] == "milk-tea")
            .unwrap()
            .clone();
        (
            p["reserved"].as_i64().unwrap(),
            p["available"].as_i64().unwrap(),
        )
    };
    let products_url = format!("{}/sandbox/products", sandbox.functions);
    let (_, before) = get_json(&http, &products_url).await;
    let (status, placed) = post_order(
        &http,
        &sandbox.functions,
        ("x-debug-openid", "o_sweep_test"),
        "sweep-1",
        "milk-tea",
        2,
    )
    .await;
    assert_eq!(status, 201, "{placed}\n{}", sandbox.output());
    let no = placed["out_trade_no"].as_str().unwrap().to_owned();
    let (_, reserved) = get_json(&http, &products_url).await;
    assert_eq!(milk_tea(&reserved).0, milk_tea(&before).0 + 2);

    let order_url = format!("{}/sandbox/orders/{no}", sandbox.functions);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, view) = get_json(&http, &order_url).await;
        if view["order"]["status"] == "CLOSED" {
            break;
        }
        assert_eq!(view["order"]["status"], "PENDING", "{view}");
        assert!(
            Instant::now() < deadline,
            "not closed in time: {view}\n{}",
            sandbox.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, at_wechat) = get_json(
        &http,
        &format!("{}/sandbox/transactions/{no}", sandbox.wechat),
    )
    .await;
    assert_eq!(at_wechat["trade_state"], "CLOSED", "{at_wechat}");
    let (_, after) = get_json(&http, &products_url).await;
    assert_eq!(milk_tea(&after), milk_tea(&before), "{after}");
    let (status, viewed) = get_json_as(
        &http,
        &format!("{}/orders/{no}", sandbox.functions),
        "o_sweep_test",
    )
    .await;
    assert_eq!(
        (status, &viewed["status"]),
        (200, &json!("CLOSED")),
        "{viewed}"
    );
    // The summary line comes right after the sweep's writes: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sandbox
        .output()
        .contains("sandbox: timeout-sweeper: 1 due: 1 closed, 0 paid, 0 skipped, 0 failed")
    {
        assert!(
            Instant::now() < deadline,
            "no sweep summary line:\n{}",
            sandbox.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let status = sandbox.interrupt();
    assert!(status.success(), "{status}\n{}", sandbox.output());
}

fn run_cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_exits_0_and_a_bad_command_line_exits_2_naming_the_problem() {
    let (code, stdout, _) = run_cli(&["--help"]);
    assert_eq!(code, Some(0));
    for flag in [
        "--port",
        "--wechat-port",
        "--data-dir",
        "--order-ttl",
        "--sweep-every",
        "--retry-scale",
        "demo",
    ] {
        assert!(stdout.contains(flag), "{flag} not in the usage:\n{stdout}");
    }
    for (args, named) in [
        (&["--bogus"][..], "--bogus"),
        (&["serve", "--port", "x"][..], "--port"),
        (&["--order-ttl"][..], "--order-ttl"),
        (&["launch"][..], "launch"),
    ] {
        let (code, stdout, stderr) = run_cli(args);
        assert_eq!(code, Some(2), "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            2,
            "one line plus the hint: {stderr}"
        );
    }
}

#[test]
fn a_taken_port_or_an_unusable_catalog_fails_with_one_line_and_exit_1() {
    let dir = TempDir::new("fail");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let data_dir = dir.0.join("data");
    let data_dir = data_dir.to_str().unwrap();
    let (code, stdout, stderr) = run_cli(&[
        "serve",
        "--port",
        &port,
        "--wechat-port",
        "0",
        "--data-dir",
        data_dir,
    ]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")) && stderr.contains("--port"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let catalog = dir.0.join("products.json");
    std::fs::write(
        &catalog,
        r#"{"products": [{"sku_id": "tea", "name": "茶", "price": 100}]}"#,
    )
    .unwrap();
    let (code, stdout, stderr) = run_cli(&[
        "demo",
        "--data-dir",
        data_dir,
        "--products",
        catalog.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("limited stock"), "{stderr}");
}

/// DESIGN 9: `--webhook-url` sends the order events to the merchant's own receiver (here an
/// axum server on loopback) instead of the sandbox's, signed with `sandbox.env`'s
/// `WEBHOOK_SECRET`; `sandbox.env` names that URL, and the sandbox's receiver gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_url_sends_the_events_to_the_merchant_s_own_receiver() {
    type Got = Arc<Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;
    let got: Got = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hooks",
            axum::routing::post(
                |axum::extract::State(got): axum::extract::State<Got>,
                 headers: axum::http::HeaderMap,
                 body: axum::body::Bytes| async move {
                    got.lock().unwrap().push((headers, body.to_vec()));
                    axum::http::StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = TempDir::new("webhook-url");
    let http = client();
    let sandbox = Running::start_with(&dir.0, &["--webhook-url", &url]);
    assert!(
        sandbox
            .output()
            .contains(&format!("order events go to {url} (--webhook-url")),
        "{}",
        sandbox.output()
    );
    let vars = env_file(&dir.0.join("sandbox.env"));
    assert_eq!(vars["WEBHOOK_URL"], url);
    let secrets = shared::webhook::WebhookSecrets::parse(&vars["WEBHOOK_SECRET"]).unwrap();

    let (status, placed) = post_order(
        &http,
        &sandbox.functions,
        ("x-debug-openid", "o_hook_test"),
        "hook-1",
        "milk-tea",
        1,
    )
    .await;
    assert_eq!(status, 201, "{placed}\n{}", sandbox.output());
    let no = placed["out_trade_no"].as_str().unwrap().to_owned();
    let (status, paid) = post_json(
        &http,
        &format!("{}/sandbox/pay", sandbox.wechat),
        &[],
        &json!({"out_trade_no": no, "deliveries": 3}),
    )
    .await;
    assert_eq!(status, 200, "{paid}");

    let deadline = Instant::now() + Duration::from_secs(30);
    let (headers, body) = loop {
        if let Some(first) = got.lock().unwrap().first().cloned() {
            break first;
        }
        assert!(
            Instant::now() < deadline,
            "no event reached {url}\n{}",
            sandbox.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let h = |name: &str| headers[name].to_str().unwrap().to_owned();
    shared::webhook::verify(
        &secrets,
        &h("webhook-id"),
        &h("webhook-timestamp"),
        &h("webhook-signature"),
        &body,
        time::OffsetDateTime::now_utc().unix_timestamp(),
    )
    .expect("signed with sandbox.env's WEBHOOK_SECRET");
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["type"], "order.paid");
    assert_eq!(event["data"]["out_trade_no"], no.as_str());
    assert_eq!(event["id"], h("webhook-id").as_str());
    // Three notifications, one order.paid; the sandbox's own receiver saw none of it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let paid_events = got
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, b)| serde_json::from_slice::<Value>(b).unwrap()["type"] == "order.paid")
        .count();
    assert_eq!(paid_events, 1);
    let (status, listed) =
        get_json(&http, &format!("{}/sandbox/webhooks", sandbox.functions)).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["deliveries"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
}

/// `sandbox reconcile` against a running sandbox: a payment whose notification was lost is
/// applied from the simulator's bill of today, and the report is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_applies_a_lost_payment_from_todays_bill() {
    let dir = TempDir::new("reconcile");
    let mut sandbox = Running::start(&dir.0);
    let http = client();
    let (status, placed) = post_order(
        &http,
        &sandbox.functions,
        ("x-debug-openid", "o_bill"),
        "bill-1",
        "milk-tea",
        1,
    )
    .await;
    assert_eq!(status, 201, "{placed}");
    let no = placed["out_trade_no"].as_str().unwrap().to_owned();
    let (status, _) = post_json(
        &http,
        &format!("{}/sandbox/pay", sandbox.wechat),
        &[],
        &json!({"out_trade_no": no, "deliveries": 0}),
    )
    .await;
    assert_eq!(status, 200);

    let port = sandbox.functions.rsplit(':').next().unwrap().to_owned();
    let data_dir = dir.0.to_string_lossy().into_owned();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run_cli(&["reconcile", "--port", &port, "--data-dir", &data_dir])
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["rows"], 1, "{report}");
    assert_eq!(report["recovered"], 1, "{report}");
    let (_, order) = get_json_as(
        &http,
        &format!("{}/orders/{no}", sandbox.functions),
        "o_bill",
    )
    .await;
    assert_eq!(order["status"], "PAID", "{order}");

    let status = sandbox.interrupt();
    assert!(status.success(), "{status}\n{}", sandbox.output());
}
