//! `sandbox demo`: the whole story against a fresh sandbox (new data dir, free ports), driven
//! over HTTP exactly as a client and WeChat Pay would, printing each step and asserting what
//! it expects. Exit 0 when every step behaved; otherwise one line names the step and what was
//! off, and the data dir is kept for inspection.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::catalog::{Catalog, CatalogEntry, CatalogError};
use crate::cli::Options;
use crate::serve::{settings, yuan};
use crate::server::{Sandbox, SandboxError};

/// How long the demo waits for something asynchronous (a notification to be acknowledged).
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
/// The demo user's `wx.login()` code: the simulator logs it in as `openid_for("alice")`.
const LOGIN_CODE: &str = "alice";
/// Copies of the payment notification WeChat Pay sends at once in step 2.
const DELIVERIES: u32 = 3;

/// Why the demo stopped; its `Display` is the one line printed before exiting 1.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The catalog has no sku the story can run out of.
    #[error("{catalog}: the demo needs an active sku with limited stock")]
    NoLimitedSku { catalog: String },
    #[error("demo: could not start the sandbox: {0}")]
    Start(SandboxError),
    #[error("demo: HTTP client: {0}")]
    Client(reqwest::Error),
    /// A step saw something other than what the story expects.
    #[error("demo: FAILED: {at}: {problem}")]
    Step { at: At, problem: String },
    /// A step's request got no answer, or one it could not read.
    #[error("demo: FAILED: {at}: {request}: {error}")]
    Http {
        at: At,
        /// `METHOD url`, and what was being done with it.
        request: String,
        #[source]
        error: reqwest::Error,
    },
    #[error("demo: FAILED: interrupted (Ctrl-C)")]
    Interrupted,
}

/// The step a failure happened in, as the story printed it: `step [n] title`.
#[derive(Debug, Clone)]
pub struct At {
    pub step: u32,
    pub title: String,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step [{}] {}", self.step, self.title)
    }
}

/// `Ok` when the story completed; `Err` is the one line to print before exiting 1.
pub async fn run(options: Options) -> Result<(), DemoError> {
    let catalog = Catalog::load(options.products.as_deref())?;
    let limited = catalog
        .limited()
        .cloned()
        .ok_or_else(|| DemoError::NoLimitedSku {
            catalog: catalog.source_name.clone(),
        })?;
    let inactive = catalog.inactive().cloned();

    let dir = fresh_dir(&options.data_dir);
    let mut settings = settings(&options, catalog);
    settings.data_dir = dir.clone();
    println!("demo: starting a fresh sandbox in {}", dir.display());
    let sandbox = match Sandbox::start(settings).await {
        Ok(s) => s,
        Err(e) => {
            remove_dir(&dir);
            return Err(DemoError::Start(e));
        }
    };
    println!(
        "demo: functions on {}, wechat pay simulator on {}, orders expire after {} s",
        sandbox.functions_url(),
        sandbox.wechat_url(),
        sandbox.order_ttl().as_secs()
    );

    let story = Story::new(&sandbox, limited, inactive)?;
    let outcome = tokio::select! {
        outcome = story.run() => outcome,
        _ = tokio::signal::ctrl_c() => Err(DemoError::Interrupted),
    };
    if let Err(e) = sandbox.shutdown().await {
        println!("demo: warning: stopping the sandbox: {e}");
    }
    match outcome {
        Ok(steps) => {
            if options.keep {
                println!("demo: data kept in {}", dir.display());
            } else {
                remove_dir(&dir);
            }
            println!("\ndemo: OK: the story completed ({steps} steps).");
            Ok(())
        }
        Err(e) => {
            println!("demo: data kept for inspection in {}", dir.display());
            Err(e)
        }
    }
}

/// `<data-dir>/demo-<unix ms>-<pid>`: never an existing sandbox's data.
fn fresh_dir(data_dir: &Path) -> PathBuf {
    let ms = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    data_dir.join(format!("demo-{ms}-{}", std::process::id()))
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        println!("demo: warning: could not delete {}: {e}", dir.display());
    }
}

/// An HTTP answer, body as text and (when it is JSON) parsed.
struct Reply {
    status: u16,
    headers: http::HeaderMap,
    text: String,
    json: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or("")
    }

    fn short(&self) -> String {
        let mut t = self.text.replace('\n', " ");
        if t.len() > 200 {
            let mut cut = 200;
            while !t.is_char_boundary(cut) {
                cut -= 1;
            }
            t.truncate(cut);
            t.push_str("...");
        }
        format!("HTTP {} {t}", self.status)
    }
}

struct Story {
    http: reqwest::Client,
    functions: String,
    wechat: String,
    order_ttl: Duration,
    sweep_every: Duration,
    refund_spacing: Duration,
    sku: CatalogEntry,
    inactive: Option<CatalogEntry>,
    step: u32,
    title: String,
    /// The demo user's session token and openid, from the first step's login.
    token: String,
    openid: String,
    /// merchant-api's bearer token (`MERCHANT_API_TOKEN` of `sandbox.env`).
    merchant_token: String,
}

/// The first order: most later steps come back to it.
struct FirstOrder {
    /// Its `Idempotency-Key` and body.
    key: &'static str,
    body: Value,
    /// place-order's answer.
    placed: Reply,
    no: String,
    amount: i64,
    /// The sku's `reserved` and `sold` before it was placed.
    reserved0: i64,
    sold0: i64,
}

impl Story {
    fn new(
        sandbox: &Sandbox,
        sku: CatalogEntry,
        inactive: Option<CatalogEntry>,
    ) -> Result<Story, DemoError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(DemoError::Client)?;
        Ok(Story {
            http,
            functions: sandbox.functions_url().to_owned(),
            wechat: sandbox.wechat_url(),
            order_ttl: sandbox.order_ttl(),
            sweep_every: sandbox.sweep_every(),
            refund_spacing: sandbox.refund_spacing(),
            sku,
            inactive,
            step: 0,
            title: String::new(),
            token: String::new(),
            openid: String::new(),
            merchant_token: sandbox.keys().merchant_api_token().to_owned(),
        })
    }

    /// Runs every step, in the story's order; the number of steps on success.
    async fn run(mut self) -> Result<u32, DemoError> {
        self.log_in().await?;
        let order = self.place_order().await?;
        let transaction_id = self.pay(&order.no).await?;
        let notifications = self.notification_acknowledged(&order.no).await?;
        let stock = self
            .paid_exactly_once(&order, &transaction_id, notifications)
            .await?;
        self.replayed(&order, stock).await?;
        self.key_reused(&order).await?;
        self.out_of_stock(stock).await?;
        self.not_for_sale().await?;
        self.lost_notification(&order.no).await?;
        self.left_unpaid(stock).await?;
        self.refunded(&order).await?;
        self.merchant_told(&order.no, notifications).await?;
        self.shipped_and_settled().await?;
        Ok(self.step)
    }

    fn begin(&mut self, title: impl Into<String>) {
        self.step += 1;
        self.title = title.into();
        println!("\n[{}] {}", self.step, self.title);
    }

    /// The step under way.
    fn at(&self) -> At {
        At {
            step: self.step,
            title: self.title.clone(),
        }
    }

    /// The failure of the current step.
    fn fail(&self, problem: impl std::fmt::Display) -> DemoError {
        DemoError::Step {
            at: self.at(),
            problem: problem.to_string(),
        }
    }

    fn check(&self, ok: bool, what: impl FnOnce() -> String) -> Result<(), DemoError> {
        if ok { Ok(()) } else { Err(self.fail(what())) }
    }

    async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Reply, DemoError> {
        let mut request = self.http.request(method.clone(), url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let failed = |request: String, error| DemoError::Http {
            at: self.at(),
            request,
            error,
        };
        let response = request
            .send()
            .await
            .map_err(|e| failed(format!("{method} {url}"), e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .map_err(|e| failed(format!("{method} {url}: reading the answer"), e))?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            headers,
            text,
            json,
        })
    }

    async fn place(&self, key: &str, body: &Value) -> Result<Reply, DemoError> {
        self.send(
            http::Method::POST,
            &format!("{}/orders", self.functions),
            &[
                ("authorization", &format!("Bearer {}", self.token)),
                ("idempotency-key", key),
            ],
            Some(body),
        )
        .await
    }

    /// `GET url`, which must answer 200: its JSON.
    async fn get_ok(&self, url: &str) -> Result<Value, DemoError> {
        let r = self.send(http::Method::GET, url, &[], None).await?;
        self.check(r.status == 200, || format!("GET {url}: {}", r.short()))?;
        Ok(r.json)
    }

    async fn order(&self, no: &str) -> Result<Value, DemoError> {
        self.get_ok(&format!("{}/sandbox/orders/{no}", self.functions))
            .await
    }

    /// `GET {path_and_query}` on query-order, as the demo user.
    async fn query(&self, path_and_query: &str) -> Result<Reply, DemoError> {
        self.send(
            http::Method::GET,
            &format!("{}{path_and_query}", self.functions),
            &[("authorization", &format!("Bearer {}", self.token))],
            None,
        )
        .await
    }

    /// The simulator's `POST /sandbox/pay`: the user pays `no`, and WeChat Pay sends its
    /// notification `deliveries` times at once.
    async fn sandbox_pay(&self, no: &str, deliveries: u32) -> Result<Reply, DemoError> {
        self.send(
            http::Method::POST,
            &format!("{}/sandbox/pay", self.wechat),
            &[],
            Some(&json!({"out_trade_no": no, "deliveries": deliveries})),
        )
        .await
    }

    /// WeChat Pay's side of an order: the simulator's `trade_state`.
    async fn trade_state(&self, no: &str) -> Result<String, DemoError> {
        let transaction = self
            .get_ok(&format!("{}/sandbox/transactions/{no}", self.wechat))
            .await?;
        Ok(transaction["trade_state"]
            .as_str()
            .unwrap_or("?")
            .to_owned())
    }

    /// Polls the stored order until it leaves PENDING (the timeout-sweeper's work).
    async fn settled(&self, no: &str) -> Result<Value, DemoError> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let view = self.order(no).await?;
            if view["order"]["status"] != "PENDING" {
                return Ok(view);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.fail(format!(
                    "still PENDING {} s later: no sweep settled it",
                    WAIT.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `(reserved, sold, available)` of the demo's sku.
    async fn stock(&self) -> Result<(i64, i64, i64), DemoError> {
        let products = self
            .get_ok(&format!("{}/sandbox/products", self.functions))
            .await?;
        let product = products["products"]
            .as_array()
            .and_then(|list| {
                list.iter()
                    .find(|p| p["sku_id"] == self.sku.sku_id.as_str())
            })
            .ok_or_else(|| self.fail(format!("{} is not in the store", self.sku.sku_id)))?;
        let n = |field: &str| product[field].as_i64().unwrap_or(-1);
        Ok((n("reserved"), n("sold"), n("available")))
    }

    /// The counters once the event-dispatcher has counted a sale: PAID touches no product
    /// item (DESIGN 5), its `order.paid` is projected a moment later (the sandbox's
    /// dispatcher runs every second). Waits up to 5 s for `settled`, then answers as read.
    async fn stock_once(
        &self,
        settled: impl Fn((i64, i64, i64)) -> bool,
    ) -> Result<(i64, i64, i64), DemoError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = self.stock().await?;
            if settled(now) || tokio::time::Instant::now() >= deadline {
                return Ok(now);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// merchant-api's refund of `amount` fen of `no` (restocking `restock` units).
    async fn refund(
        &self,
        no: &str,
        key: &str,
        amount: i64,
        restock: i64,
    ) -> Result<Reply, DemoError> {
        let mut body = json!({"amount": amount, "reason": "demo refund"});
        if restock > 0 {
            body["restock"] = json!([{"sku_id": self.sku.sku_id.as_str(), "quantity": restock}]);
        }
        println!("    POST /merchant/orders/{no}/refunds  Idempotency-Key: {key}  {body}");
        self.send(
            http::Method::POST,
            &format!("{}/merchant/orders/{no}/refunds", self.functions),
            &[
                ("authorization", &format!("Bearer {}", self.merchant_token)),
                ("idempotency-key", key),
            ],
            Some(&body),
        )
        .await
    }

    /// Polls the stored order until its status is `status` (a refund WeChat Pay settles
    /// and notifies).
    async fn reaches(&self, no: &str, status: &str) -> Result<Value, DemoError> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let view = self.order(no).await?;
            if view["order"]["status"] == status {
                return Ok(view);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.fail(format!(
                    "still {} {} s later, expected {status}",
                    view["order"]["status"],
                    WAIT.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn items(&self, quantity: i64) -> Value {
        json!({"items": [{"sku_id": self.sku.sku_id.as_str(), "quantity": quantity}]})
    }

    /// The mini-program's login: a `wx.login()` code for a session token, and a used-up code
    /// refused.
    async fn log_in(&mut self) -> Result<(), DemoError> {
        self.begin(format!(
            "log in: wx.login() code {LOGIN_CODE:?} -> POST /sessions -> a session token"
        ));
        let url = format!("{}/sessions", self.functions);
        let login = self
            .send(
                http::Method::POST,
                &url,
                &[],
                Some(&json!({ "code": LOGIN_CODE })),
            )
            .await?;
        self.check(login.status == 200, || {
            format!("expected 200, got {}", login.short())
        })?;
        self.token = login.json["token"].as_str().unwrap_or_default().to_owned();
        self.openid = login.json["openid"].as_str().unwrap_or_default().to_owned();
        let expected = crate::simulator::login::openid_for(LOGIN_CODE);
        self.check(!self.token.is_empty() && self.openid == expected, || {
            format!("expected a token for {expected}: {}", login.short())
        })?;
        println!(
            "    -> 200 openid {}, token expires_at {} (send it as Authorization: Bearer)",
            self.openid,
            login.json["expires_at"].as_str().unwrap_or("?")
        );
        let refused = self
            .send(
                http::Method::POST,
                &url,
                &[],
                Some(&json!({"code": "invalid-code"})),
            )
            .await?;
        self.check(
            refused.status == 401 && refused.code() == "INVALID_CODE",
            || format!("expected 401 INVALID_CODE, got {}", refused.short()),
        )?;
        println!("    ok: a bad or used code is refused: 401 INVALID_CODE");
        Ok(())
    }

    /// An order: 2 of the sku, its amount from the catalog, its stock reserved.
    async fn place_order(&mut self) -> Result<FirstOrder, DemoError> {
        let sku = self.sku.sku_id.as_str().to_owned();
        let price = self.sku.price.fen();
        let stock = self.sku.stock.unwrap_or(0);
        self.begin(format!(
            "place an order: 2 x {sku} ({}, {} CNY each, {stock} in stock) as {}",
            self.sku.name,
            yuan(price),
            self.openid
        ));
        let (reserved0, sold0, _) = self.stock().await?;
        let key = "demo-order-1";
        let body = self.items(2);
        println!("    POST /orders  Idempotency-Key: {key}  {body}");
        let placed = self.place(key, &body).await?;
        self.check(placed.status == 201, || {
            format!("expected 201, got {}", placed.short())
        })?;
        let no = placed.json["out_trade_no"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let amount = placed.json["amount_total"].as_i64().unwrap_or(-1);
        println!(
            "    -> 201 out_trade_no {no}, status {}, amount_total {amount} fen, expire_at {}",
            placed.json["status"].as_str().unwrap_or("?"),
            placed.json["expire_at"].as_str().unwrap_or("?")
        );
        self.check(!no.is_empty(), || "no out_trade_no in the answer".into())?;
        self.check(placed.json["status"] == "PENDING", || {
            format!("expected status PENDING: {}", placed.short())
        })?;
        self.check(amount == 2 * price, || {
            format!("amount_total {amount}, expected 2 x {price} from the catalog")
        })?;
        let package = placed.json["pay_params"]["package"].as_str().unwrap_or("");
        self.check(
            package.starts_with("prepay_id=") && placed.json["pay_params"]["paySign"].is_string(),
            || format!("pay_params incomplete: {}", placed.json["pay_params"]),
        )?;
        println!("    ok: pay_params for wx.requestPayment ({package}, signType RSA, paySign)");
        let (reserved, sold, available) = self.stock().await?;
        self.check(reserved == reserved0 + 2 && sold == sold0, || {
            format!("stock counters: reserved {reserved}, sold {sold}; expected 2 more reserved")
        })?;
        println!(
            "    ok: stock reserved in the same transaction: reserved {reserved}, sold {sold}, available {available}"
        );
        Ok(FirstOrder {
            key,
            body,
            placed,
            no,
            amount,
            reserved0,
            sold0,
        })
    }

    /// The user pays; WeChat Pay notifies several times at once. Its transaction_id.
    async fn pay(&mut self, no: &str) -> Result<String, DemoError> {
        self.begin(format!(
            "the user pays; WeChat Pay sends the notification {DELIVERIES} times, concurrently"
        ));
        let pay = self.sandbox_pay(no, DELIVERIES).await?;
        self.check(
            pay.status == 200 && pay.json["trade_state"] == "SUCCESS",
            || format!("POST /sandbox/pay: {}", pay.short()),
        )?;
        let transaction_id = pay.json["transaction_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        println!(
            "    POST {}/sandbox/pay -> SUCCESS, transaction_id {transaction_id}",
            self.wechat
        );
        Ok(transaction_id)
    }

    /// Every copy of the notification answered, none refused. How many deliveries there were.
    async fn notification_acknowledged(&mut self, no: &str) -> Result<usize, DemoError> {
        self.begin("wait until WeChat Pay's notification is acknowledged");
        let attempts = self.acknowledged(no).await?;
        for a in &attempts {
            let when = match a["round"].as_u64() {
                Some(0) => "at once".to_owned(),
                Some(n) => format!("retry {n}"),
                None => "?".to_owned(),
            };
            let answer = match a["status"].as_u64() {
                Some(s) => s.to_string(),
                None => format!("no answer ({})", a["error"].as_str().unwrap_or("?")),
            };
            println!("    delivery {} ({when}): {answer}", a["attempt"]);
        }
        let refused: Vec<&Value> = attempts
            .iter()
            .filter(|a| {
                a["status"]
                    .as_u64()
                    .is_some_and(|s| (400..500).contains(&s))
            })
            .collect();
        self.check(refused.is_empty(), || {
            format!("payment-callback refused a genuine notification: {refused:?}")
        })?;
        println!(
            "    ok: acknowledged (204); duplicates are acknowledged too, never applied twice"
        );
        Ok(attempts.len())
    }

    /// The first order is PAID exactly once, its stock sold once. The sku's
    /// `(reserved, sold, available)` then.
    async fn paid_exactly_once(
        &mut self,
        first: &FirstOrder,
        transaction_id: &str,
        notifications: usize,
    ) -> Result<(i64, i64, i64), DemoError> {
        let (no, amount) = (first.no.as_str(), first.amount);
        let (reserved0, sold0) = (first.reserved0, first.sold0);
        self.begin("the order is PAID exactly once");
        let view = self.order(no).await?;
        let order = &view["order"];
        self.check(order["status"] == "PAID", || {
            format!("status {}, expected PAID", order["status"])
        })?;
        self.check(order["transaction_id"] == transaction_id, || {
            format!(
                "transaction_id {}, expected {transaction_id}",
                order["transaction_id"]
            )
        })?;
        let paid_transitions = order["history"]
            .as_array()
            .map_or(0, |h| h.iter().filter(|e| e["to"] == "PAID").count());
        self.check(paid_transitions == 1, || {
            format!("{paid_transitions} transitions to PAID in the history, expected 1")
        })?;
        let payment = &view["payment"];
        self.check(
            payment["transaction_id"] == transaction_id && payment["amount"] == amount,
            || format!("payment item {payment}, expected {transaction_id} for {amount} fen"),
        )?;
        let anomalies = view["anomalies"].as_array().map_or(0, Vec::len);
        self.check(anomalies == 0, || {
            format!("anomalies recorded: {}", view["anomalies"])
        })?;
        let (reserved, sold, available) = self.stock_once(|(_, s, _)| s == sold0 + 2).await?;
        self.check(reserved == reserved0 && sold == sold0 + 2, || {
            format!(
                "stock counters: reserved {reserved}, sold {sold}; expected reserved {reserved0}, sold {}",
                sold0 + 2
            )
        })?;
        let sim = self
            .send(
                http::Method::GET,
                &format!("{}/sandbox/transactions/{no}", self.wechat),
                &[],
                None,
            )
            .await?;
        self.check(sim.json["trade_state"] == "SUCCESS", || {
            format!("the simulator's transaction: {}", sim.short())
        })?;
        println!(
            "    ok: PAID exactly once: one PENDING -> PAID transition, one payment item \
             ({transaction_id}, {amount} fen), no anomalies, {notifications} notifications"
        );
        println!(
            "    ok: sold raised once: {sold0} -> {sold}; reserved {reserved}; available {available} of {}",
            self.sku.stock.unwrap_or(0)
        );
        Ok((reserved, sold, available))
    }

    /// The client retries with the same Idempotency-Key and body: the stored answer again.
    async fn replayed(
        &mut self,
        first: &FirstOrder,
        (_, sold, _): (i64, i64, i64),
    ) -> Result<(), DemoError> {
        self.begin("the client retries with the same Idempotency-Key and body");
        let again = self.place(first.key, &first.body).await?;
        let replayed = again
            .headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        self.check(again.status == 201, || {
            format!("expected 201, got {}", again.short())
        })?;
        self.check(again.text == first.placed.text, || {
            format!(
                "a different answer: {} instead of {}",
                again.short(),
                first.placed.short()
            )
        })?;
        self.check(replayed == "true", || {
            format!("Idempotent-Replayed is {replayed:?}, expected \"true\"")
        })?;
        let (_, sold_after, _) = self.stock().await?;
        self.check(sold_after == sold, || "the replay changed the stock".into())?;
        println!(
            "    ok: 201, the same answer (out_trade_no {}), Idempotent-Replayed: true, no new order",
            first.no
        );
        Ok(())
    }

    /// The same Idempotency-Key with another body is refused.
    async fn key_reused(&mut self, first: &FirstOrder) -> Result<(), DemoError> {
        self.begin("the same Idempotency-Key with another body");
        let reused = self.place(first.key, &self.items(1)).await?;
        self.check(
            reused.status == 422 && reused.code() == "IDEMPOTENCY_KEY_REUSED",
            || {
                format!(
                    "expected 422 IDEMPOTENCY_KEY_REUSED, got {}",
                    reused.short()
                )
            },
        )?;
        println!(
            "    ok: 422 IDEMPOTENCY_KEY_REUSED: {}",
            reused.json["message"]
        );
        Ok(())
    }

    /// More than what is left is refused, and nothing is reserved.
    async fn out_of_stock(
        &mut self,
        (reserved, sold, available): (i64, i64, i64),
    ) -> Result<(), DemoError> {
        let sku = self.sku.sku_id.as_str().to_owned();
        let too_many = available + 1;
        self.begin(format!(
            "more than what is left: {too_many} x {sku} ({available} available)"
        ));
        let oos = self.place("demo-order-2", &self.items(too_many)).await?;
        self.check(oos.status == 409 && oos.code() == "OUT_OF_STOCK", || {
            format!("expected 409 OUT_OF_STOCK, got {}", oos.short())
        })?;
        let (r, s, a) = self.stock().await?;
        self.check((r, s, a) == (reserved, sold, available), || {
            format!("stock changed: reserved {r}, sold {s}, available {a}")
        })?;
        println!(
            "    ok: 409 OUT_OF_STOCK: {}; nothing reserved",
            oos.json["message"]
        );
        Ok(())
    }

    /// A sku that is not for sale is refused (when the catalog has one).
    async fn not_for_sale(&mut self) -> Result<(), DemoError> {
        let Some(inactive) = self.inactive.clone() else {
            return Ok(());
        };
        self.begin(format!("a sku that is not for sale: {}", inactive.sku_id));
        let body = json!({"items": [{"sku_id": inactive.sku_id.as_str(), "quantity": 1}]});
        let unknown = self.place("demo-order-3", &body).await?;
        self.check(
            unknown.status == 422 && unknown.code() == "UNKNOWN_SKU",
            || format!("expected 422 UNKNOWN_SKU, got {}", unknown.short()),
        )?;
        println!("    ok: 422 UNKNOWN_SKU: {}", unknown.json["message"]);
        Ok(())
    }

    /// A payment whose notification never arrives: query-order asks WeChat Pay and applies
    /// it; the user's orders list; anyone else is told nothing.
    async fn lost_notification(&mut self, no: &str) -> Result<(), DemoError> {
        let sku = self.sku.sku_id.as_str().to_owned();
        self.begin(format!(
            "a payment whose notification is lost: 1 x {sku}, paid with no notification; \
             query-order asks WeChat Pay"
        ));
        let (reserved_l, sold_l, _) = self.stock().await?;
        let lost = self.place("demo-order-5", &self.items(1)).await?;
        self.check(lost.status == 201, || {
            format!("expected 201, got {}", lost.short())
        })?;
        let no3 = lost.json["out_trade_no"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let pay = self.sandbox_pay(&no3, 0).await?;
        self.check(
            pay.status == 200 && pay.json["trade_state"] == "SUCCESS",
            || format!("POST /sandbox/pay: {}", pay.short()),
        )?;
        let txn3 = pay.json["transaction_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let stored = self.order(&no3).await?;
        self.check(stored["order"]["status"] == "PENDING", || {
            format!(
                "status {}, expected PENDING: no notification was sent",
                stored["order"]["status"]
            )
        })?;
        println!(
            "    -> 201 out_trade_no {no3}; paid at WeChat Pay ({txn3}) with \"deliveries\": 0; \
             the backend still has it PENDING"
        );
        let viewed = self.query(&format!("/orders/{no3}")).await?;
        self.check(
            viewed.status == 200
                && viewed.json["status"] == "PAID"
                && viewed.json["synced"] == true
                && viewed.json["transaction_id"] == txn3.as_str(),
            || {
                format!(
                    "GET /orders/{no3}: expected 200 PAID, synced, {txn3}; got {}",
                    viewed.short()
                )
            },
        )?;
        println!("    GET /orders/{no3} -> 200 status PAID, synced true, transaction_id {txn3}");
        let stored = self.order(&no3).await?;
        let (r, s, _) = self.stock_once(|(_, s, _)| s == sold_l + 1).await?;
        self.check(
            stored["order"]["status"] == "PAID"
                && stored["payment"]["transaction_id"] == txn3.as_str()
                && (r, s) == (reserved_l, sold_l + 1),
            || {
                format!(
                    "stored {}, payment {}, reserved {r}, sold {s}; expected PAID with its \
                     payment, reserved {reserved_l}, sold {}",
                    stored["order"]["status"],
                    stored["payment"],
                    sold_l + 1
                )
            },
        )?;
        println!(
            "    ok: PAID through query-order, the callback's own code path: payment item stored, \
             sold {sold_l} -> {s}"
        );
        let listed = self.query("/orders?limit=2").await?;
        let listed_nos: Vec<&str> = listed.json["orders"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|o| o["out_trade_no"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        self.check(
            listed.status == 200 && listed_nos == [no3.as_str(), no],
            || {
                format!(
                    "GET /orders?limit=2: expected [{no3}, {no}], got {}",
                    listed.short()
                )
            },
        )?;
        println!("    ok: GET /orders?limit=2 lists the user's orders newest first: {no3}, {no}");
        let other = self
            .send(
                http::Method::GET,
                &format!("{}/orders/{no3}", self.functions),
                &[("x-debug-openid", "o_demo_mallory")],
                None,
            )
            .await?;
        self.check(
            other.status == 404 && other.code() == "ORDER_NOT_FOUND",
            || {
                format!(
                    "another user's GET /orders/{no3}: expected 404, got {}",
                    other.short()
                )
            },
        )?;
        println!("    ok: anyone else gets 404 ORDER_NOT_FOUND, no hint that it exists");
        Ok(())
    }

    /// An order left unpaid: past expire_at WeChat Pay refuses the payment, and the
    /// timeout-sweeper closes it there and here, returning its stock.
    /// The merchant refunds part of the first order (one unit back in stock), then the rest:
    /// each reserved before WeChat Pay is asked, settled by its notification, applied once.
    async fn refunded(&mut self, first: &FirstOrder) -> Result<(), DemoError> {
        let no = first.no.as_str();
        let price = self.sku.price.fen();
        self.begin(format!(
            "the merchant refunds one unit of the first order ({} CNY), then the rest, through merchant-api",
            yuan(price)
        ));
        let (_, sold0, available0) = self.stock().await?;
        let part = self.refund(no, "demo-refund-1", price, 1).await?;
        self.check(
            part.status == 201 && part.json["status"] == "PROCESSING",
            || format!("expected 201 PROCESSING, got {}", part.short()),
        )?;
        println!(
            "    -> 201 PROCESSING, out_refund_no {}",
            part.json["out_refund_no"].as_str().unwrap_or("?")
        );
        let view = self.reaches(no, "PARTIALLY_REFUNDED").await?;
        let (_, sold1, available1) = self.stock().await?;
        self.check(
            view["order"]["refunded_total"] == price && sold1 == sold0 - 1 && available1 == available0 + 1,
            || format!("after the partial refund: {} (sold {sold0} -> {sold1}, available {available0} -> {available1})", view["order"]),
        )?;
        println!(
            "    ok: REFUND.SUCCESS notified: PARTIALLY_REFUNDED, refunded_total {price}; one unit restocked: sold {sold0} -> {sold1}, available {available0} -> {available1}"
        );
        let rest = first.amount - price;
        // WeChat Pay wants refunds of one order apart (`--refund-spacing`).
        tokio::time::sleep(self.refund_spacing).await;
        let full = self.refund(no, "demo-refund-2", rest, 0).await?;
        self.check(full.status == 201, || {
            format!("expected 201, got {}", full.short())
        })?;
        let view = self.reaches(no, "REFUNDED").await?;
        self.check(view["order"]["refunded_total"] == first.amount, || {
            format!("after the full refund: {}", view["order"])
        })?;
        let more = self.refund(no, "demo-refund-3", 1, 0).await?;
        self.check(
            more.status == 422 && more.json["code"] == "REFUND_EXCEEDS_PAID",
            || format!("a refund past what was paid: {}", more.short()),
        )?;
        println!(
            "    ok: REFUNDED, refunded_total {} of {}; one more fen: 422 REFUND_EXCEEDS_PAID",
            first.amount, first.amount
        );
        Ok(())
    }

    /// WeChat's trade management: a paid order shipped (uploaded once WeChat has indexed the
    /// payment), settled at WeChat, its push received by mp-push: COMPLETED.
    async fn shipped_and_settled(&mut self) -> Result<(), DemoError> {
        self.begin(
            "the merchant ships a paid order; WeChat settles it and pushes the settlement: COMPLETED",
        );
        let placed = self.place("demo-order-ship", &self.items(1)).await?;
        self.check(placed.status == 201, || {
            format!("expected 201, got {}", placed.short())
        })?;
        let no = placed.json["out_trade_no"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let paid = self.sandbox_pay(&no, 1).await?;
        self.check(paid.status == 200, || format!("pay: {}", paid.short()))?;
        self.reaches(&no, "PAID").await?;
        // WeChat's trade management indexes a payment a few seconds after it (10060001
        // before): shipped then, the upload goes through at once.
        tokio::time::sleep(crate::simulator::DEFAULT_SHIPPING_INDEX_LAG).await;
        let body = json!({"logistics_type": "express", "packages": [
            {"tracking_no": "YT1234567890", "express_company": "YTO", "item_desc": "demo x1"}]});
        println!("    POST /merchant/orders/{no}/shipments  Idempotency-Key: demo-ship-1  {body}");
        let shipped = self
            .send(
                http::Method::POST,
                &format!("{}/merchant/orders/{no}/shipments", self.functions),
                &[
                    ("authorization", &format!("Bearer {}", self.merchant_token)),
                    ("idempotency-key", "demo-ship-1"),
                ],
                Some(&body),
            )
            .await?;
        self.check(
            shipped.status == 201 && shipped.json["shipping"]["upload_state"] == "UPLOADED",
            || format!("expected 201 UPLOADED, got {}", shipped.short()),
        )?;
        let transaction_id = shipped.json["transaction_id"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        println!("    -> 201 SHIPPED, uploaded to WeChat (transaction {transaction_id})");
        let settle = self
            .send(
                http::Method::POST,
                &format!("{}/sandbox/shipping/{transaction_id}/settle", self.wechat),
                &[],
                Some(&json!({"deliveries": 1})),
            )
            .await?;
        self.check(settle.status == 200, || {
            format!("settle: {}", settle.short())
        })?;
        let view = self.reaches(&no, "COMPLETED").await?;
        println!(
            "    ok: the buyer confirmed, WeChat settled and pushed: COMPLETED ({})",
            view["order"]["history"]
                .as_array()
                .and_then(|h| h.last())
                .map_or("", |h| h["cause"].as_str().unwrap_or(""))
        );
        Ok(())
    }

    /// The merchant's webhook (the sandbox's receiver) got each of the first order's events
    /// once, signed: one `order.paid` however many notifications, and each refund's.
    async fn merchant_told(&mut self, no: &str, notifications: usize) -> Result<(), DemoError> {
        self.begin("the merchant's webhook learns each transition once (signed order events)");
        let url = format!(
            "{}/sandbox/webhooks?out_trade_no={no}&accepted=true",
            self.functions
        );
        let wanted = ["order.paid", "refund.succeeded", "refund.succeeded"];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let deliveries = loop {
            let got = self.get_ok(&url).await?;
            let deliveries = got["deliveries"].as_array().cloned().unwrap_or_default();
            if deliveries.len() >= wanted.len() || tokio::time::Instant::now() >= deadline {
                break deliveries;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut types: Vec<&str> = deliveries
            .iter()
            .map(|d| d["type"].as_str().unwrap_or("?"))
            .collect();
        for d in &deliveries {
            println!(
                "    {} {} (webhook-id {}){}",
                d["type"].as_str().unwrap_or("?"),
                d["body"]["data"]["status"]
                    .as_str()
                    .or(d["body"]["data"]["refund"]["status"].as_str())
                    .unwrap_or(""),
                d["id"].as_str().unwrap_or("?"),
                if d["duplicate"] == true {
                    ", a duplicate"
                } else {
                    ""
                }
            );
        }
        types.sort_unstable();
        let mut expected = wanted.to_vec();
        expected.sort_unstable();
        self.check(types == expected, || {
            format!("events received for {no}: {types:?}, expected {expected:?}")
        })?;
        println!(
            "    ok: one order.paid for {notifications} notifications, one refund.succeeded per refund; each signature verified (Standard Webhooks)"
        );
        Ok(())
    }

    async fn left_unpaid(&mut self, (reserved, _, _): (i64, i64, i64)) -> Result<(), DemoError> {
        let sku = self.sku.sku_id.as_str().to_owned();
        self.begin(format!(
            "an order left unpaid: 1 x {sku}, expiring after {} s; the timeout-sweeper closes it",
            self.order_ttl.as_secs()
        ));
        let unpaid = self.place("demo-order-4", &self.items(1)).await?;
        self.check(unpaid.status == 201, || {
            format!("expected 201, got {}", unpaid.short())
        })?;
        let no2 = unpaid.json["out_trade_no"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let expire_at = unpaid.json["expire_at"].as_str().unwrap_or_default();
        let expires = OffsetDateTime::parse(expire_at, &Rfc3339)
            .map_err(|e| self.fail(format!("expire_at {expire_at:?}: {e}")))?;
        let (reserved2, _, _) = self.stock().await?;
        self.check(reserved2 == reserved + 1, || {
            format!("reserved {reserved2}, expected {}", reserved + 1)
        })?;
        println!("    -> 201 out_trade_no {no2}, PENDING, expire_at {expire_at}; 1 more reserved");
        let wait = expires - OffsetDateTime::now_utc() + time::Duration::milliseconds(200);
        if wait.is_positive() {
            println!(
                "    waiting {:.1} s for expire_at ...",
                wait.as_seconds_f64()
            );
            tokio::time::sleep(wait.unsigned_abs()).await;
        }
        let late = self.sandbox_pay(&no2, 1).await?;
        // ORDER_CLOSED only if a (very late) sweep got there first.
        self.check(
            late.status == 400 && matches!(late.code(), "ORDER_EXPIRED" | "ORDER_CLOSED"),
            || {
                format!(
                    "paying after expire_at: expected 400 ORDER_EXPIRED, got {}",
                    late.short()
                )
            },
        )?;
        println!(
            "    ok: past expire_at WeChat Pay no longer takes the payment: 400 {}",
            late.code()
        );
        println!(
            "    waiting for the timeout-sweeper (every {} s, {} s after expire_at) ...",
            self.sweep_every.as_secs(),
            crate::envfile::SWEEP_GRACE_SECONDS
        );
        let view = self.settled(&no2).await?;
        let order = &view["order"];
        let closed_by = order["history"]
            .as_array()
            .and_then(|h| h.iter().rev().find(|e| e["to"] == "CLOSED"))
            .map(|e| e["cause"].as_str().unwrap_or("?").to_owned());
        self.check(order["status"] == "CLOSED" && closed_by.is_some(), || {
            format!(
                "status {}, expected CLOSED with a transition to it: {order}",
                order["status"]
            )
        })?;
        let viewed = self.query(&format!("/orders/{no2}")).await?;
        self.check(
            viewed.status == 200 && viewed.json["status"] == "CLOSED",
            || {
                format!(
                    "GET /orders/{no2}: expected 200 CLOSED, got {}",
                    viewed.short()
                )
            },
        )?;
        let at_wechat = self.trade_state(&no2).await?;
        self.check(at_wechat == "CLOSED", || {
            format!("WeChat Pay's trade_state is {at_wechat}, expected CLOSED")
        })?;
        println!(
            "    ok: closed by the timeout-sweeper (\"{}\"): trade_state CLOSED at WeChat Pay, \
             then CLOSED here (GET /orders/{no2}: CLOSED)",
            closed_by.unwrap_or_default()
        );
        let (r, s, a) = self.stock().await?;
        self.check(r == reserved2 - 1, || {
            format!("reserved {r}, expected {} (the stock back)", reserved2 - 1)
        })?;
        println!(
            "    ok: stock returned in the same transaction: reserved {reserved2} -> {r}; sold {s}, available {a}"
        );
        Ok(())
    }

    /// Polls the simulator's delivery log until the round-0 copies have all been answered and
    /// one of the attempts was acknowledged; returns the attempts.
    async fn acknowledged(&self, no: &str) -> Result<Vec<Value>, DemoError> {
        let url = format!("{}/sandbox/notifications?out_trade_no={no}", self.wechat);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = self.send(http::Method::GET, &url, &[], None).await?;
            let attempts = r.json.as_array().cloned().unwrap_or_default();
            let first_round = attempts.iter().filter(|a| a["round"] == 0).count();
            let acked = attempts
                .iter()
                .any(|a| matches!(a["status"].as_u64(), Some(200 | 204)));
            if acked && first_round >= DELIVERIES as usize {
                return Ok(attempts);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.fail(format!(
                    "not acknowledged within {} s; deliveries so far: {}",
                    WAIT.as_secs(),
                    r.short()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one line printed on failure names the step and what was off.
    #[test]
    fn a_failure_names_its_step_and_the_problem() {
        let at = At {
            step: 4,
            title: "the order is PAID exactly once".into(),
        };
        let failed = DemoError::Step {
            at,
            problem: "status \"PENDING\", expected PAID".into(),
        };
        assert_eq!(
            failed.to_string(),
            "demo: FAILED: step [4] the order is PAID exactly once: status \"PENDING\", expected PAID"
        );
        assert_eq!(
            DemoError::Interrupted.to_string(),
            "demo: FAILED: interrupted (Ctrl-C)"
        );
    }
}
