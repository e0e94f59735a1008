//! `sandbox serve` (the default command): starts a [`Sandbox`] on the configured ports and
//! data dir, prints what it started (with machine-readable `sandbox: functions on URL` and
//! `sandbox: wechat pay simulator on URL` lines) and a copy-paste walkthrough, then runs
//! until Ctrl-C or SIGTERM and stops everything in order. Never prints a secret.

use std::net::{Ipv4Addr, SocketAddr};

use crate::catalog::Catalog;
use crate::cli::{Options, RouteBlocks};
use crate::envfile::shell_quote;
use crate::server::{Sandbox, SandboxSettings, TABLE_NAME};
use shared::runtime::shutdown_signal;

/// `Ok` after a clean stop; `Err` is the one line to print before exiting non-zero.
pub async fn run(options: Options) -> Result<(), String> {
    let catalog = Catalog::load(options.products.as_deref()).map_err(|e| e.to_string())?;
    let mut sandbox = Sandbox::start(settings(&options, catalog))
        .await
        .map_err(|e| e.to_string())?;
    print_started(&sandbox).await;
    print_walkthrough(&sandbox);
    println!("sandbox: ready (Ctrl-C to stop)");

    let outcome = tokio::select! {
        () = shutdown_signal() => Ok(()),
        message = sandbox.server_stopped() => Err(message),
    };
    println!("sandbox: stopping (Ctrl-C again to stop at once)");
    tokio::spawn(async {
        shutdown_signal().await;
        eprintln!("sandbox: stopped at once");
        std::process::exit(130);
    });
    sandbox.shutdown().await.map_err(|e| e.to_string())?;
    println!("sandbox: stopped");
    outcome
}

/// The settings `options` ask for, on loopback.
pub fn settings(options: &Options, catalog: Catalog) -> SandboxSettings {
    SandboxSettings {
        functions_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, options.port)),
        wechat_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, options.wechat_port)),
        data_dir: options.data_dir.clone(),
        order_ttl: options.order_ttl,
        sweep_every: options.sweep_every,
        retry_scale: options.retry_scale,
        refund_delay: options.refund_delay,
        refund_spacing: options.refund_spacing,
        webhook_fail: options.webhook_fail,
        webhook_url: options.webhook_url.clone(),
        push_url: options.push_url.clone(),
        catalog,
    }
}

/// `1500` -> `15.00`.
pub fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, (fen % 100).abs())
}

async fn print_started(s: &Sandbox) {
    let keys = s.keys();
    println!(
        "sandbox: data dir {} ({} keys in {})",
        s.data_dir().display(),
        if keys.generated() {
            "generated"
        } else {
            "reusing"
        },
        keys.dir().display()
    );
    println!(
        "sandbox: embedded DynamoDB (Dynoxide) on {}, table {TABLE_NAME} in {}",
        s.dynamodb_endpoint(),
        s.database_file().display()
    );
    let seed = s.seed_report();
    println!(
        "sandbox: catalog from {}: {} new, {} refreshed, {} unchanged (reserved/sold counters kept)",
        s.catalog().source_name,
        seed.inserted,
        seed.refreshed,
        seed.unchanged
    );
    println!("sandbox: wechat pay simulator on {}", s.wechat_url());
    println!("sandbox: functions on {}", s.functions_url());
    println!(
        "sandbox: variables for the function binaries in {} (mode 0600: it holds secrets)",
        s.env_file().display()
    );
    let refusals = s.webhooks().refusals_left();
    println!(
        "sandbox: merchant webhook receiver on {} (GET it to list deliveries){}",
        s.webhook_url(),
        if refusals > 0 {
            format!("; answers 500 to the first {refusals} good deliveries (--webhook-fail)")
        } else {
            String::new()
        }
    );
    if s.events_url() != s.webhook_url() {
        println!(
            "sandbox: order events go to {} (--webhook-url; WEBHOOK_URL), signed with WEBHOOK_SECRET",
            s.events_url()
        );
    } else {
        println!("sandbox: order events go to that receiver (WEBHOOK_URL)");
    }
    println!(
        "sandbox: orders expire after {} s; notifications retried at {}x WeChat Pay's schedule (15 s, 15 s, 30 s, 3 m, ...)",
        s.order_ttl().as_secs(),
        s.retry_scale()
    );
    println!(
        "sandbox: timeout-sweeper runs every {} s, closing orders {} s past expire_at (stock returned) and applying payments whose notification was lost; each sweep that finds work prints a line",
        s.sweep_every().as_secs(),
        crate::envfile::SWEEP_GRACE_SECONDS
    );

    println!();
    println!("Catalog (GET {}/sandbox/products):", s.functions_url());
    let counters = s
        .store()
        .get_products(&s.catalog().sku_ids())
        .await
        .unwrap_or_default();
    for entry in &s.catalog().entries {
        let stock = match (entry.stock, counters.get(&entry.sku_id)) {
            (None, _) => "unlimited".to_owned(),
            (Some(stock), Some(p)) if p.is_sharded() => {
                format!(
                    "stock {stock} over {} shards ({} sold)",
                    p.stock_shards, p.sold
                )
            }
            (Some(stock), Some(p)) => {
                format!("stock {stock} ({} reserved, {} sold)", p.reserved, p.sold)
            }
            (Some(stock), None) => format!("stock {stock}"),
        };
        println!(
            "  {:<20} {:>8} CNY  {:<30} {}{}",
            entry.sku_id.as_str(),
            yuan(entry.price.fen()),
            stock,
            entry.name,
            if entry.active { "" } else { "  [inactive]" }
        );
    }
}

fn print_walkthrough(s: &Sandbox) {
    let f = s.functions_url();
    let w = s.wechat_url();
    let sku = s
        .catalog()
        .limited()
        .or_else(|| s.catalog().entries.iter().find(|e| e.active))
        .map_or("sku-1", |e| e.sku_id.as_str());
    let env_file = shell_quote(&s.env_file().display().to_string());
    let routes = RouteBlocks::build();
    println!(
        "
Routes on {f}:
{functions}Simulator on {w}: WeChat Pay's API, WeChat's login (js_code `invalid-code` answers errcode
40029), then its own controls:
{wechat}{controls}
Walkthrough (copy-paste into a POSIX shell; needs curl):
  # 0. log in as the mini-program would after wx.login() (code \"alice\" is always the same user)
  LOGIN=$(curl -s -X POST {f}/sessions -H 'content-type: application/json' -d '{{\"code\":\"alice\"}}'); echo \"$LOGIN\"
  TOKEN=$(printf '%s' \"$LOGIN\" | sed -n 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/p')
  # 1. place an order for 2 x {sku} as that user (the amount comes from the catalog)
  ORDER=$(curl -s -X POST {f}/orders -H \"Authorization: Bearer $TOKEN\" -H \"Idempotency-Key: try-$(date +%s)\" -H 'content-type: application/json' -d '{{\"items\":[{{\"sku_id\":\"{sku}\",\"quantity\":2}}]}}'); echo \"$ORDER\"
  NO=$(printf '%s' \"$ORDER\" | sed -n 's/.*\"out_trade_no\":\"\\([^\"]*\\)\".*/\\1/p'); echo \"$NO\"
  # 2. the user pays in the simulator; WeChat Pay notifies {f}/notify/wechatpay
  curl -s -X POST {w}/sandbox/pay -d \"{{\\\"out_trade_no\\\":\\\"$NO\\\",\\\"deliveries\\\":1}}\"; echo
  # 3. each notification delivery and the status it got (204 = acknowledged)
  sleep 1; curl -s \"{w}/sandbox/notifications?out_trade_no=$NO\"; echo
  # 4. the order is PAID, as its owner sees it (query-order), and as stored (sandbox-only route)
  curl -s {f}/orders/$NO -H \"Authorization: Bearer $TOKEN\"; echo
  curl -s {f}/sandbox/orders/$NO; echo
  #    WeChat Pay's side: trade_state SUCCESS
  curl -s {w}/sandbox/transactions/$NO; echo
  # 5. the same request again (same Idempotency-Key): the same answer, Idempotent-Replayed: true
  #    (repeat step 1 with a fixed key, e.g. -H 'Idempotency-Key: demo-1', twice, with curl -i)
  # 6. no token, or a bad one: 401 UNAUTHENTICATED (the sandbox also accepts X-Debug-Openid: <openid>)
  curl -s -X POST {f}/orders -H 'Authorization: Bearer nope' -H 'Idempotency-Key: x' -d '{{}}'; echo
  # 7. a lost notification: pay with no delivery; query-order asks WeChat Pay and the order is PAID
  NO2=$(curl -s -X POST {f}/orders -H \"Authorization: Bearer $TOKEN\" -H \"Idempotency-Key: lost-$(date +%s)\" -H 'content-type: application/json' -d '{{\"items\":[{{\"sku_id\":\"{sku}\",\"quantity\":1}}]}}' | sed -n 's/.*\"out_trade_no\":\"\\([^\"]*\\)\".*/\\1/p'); echo \"$NO2\"
  curl -s -X POST {w}/sandbox/pay -d \"{{\\\"out_trade_no\\\":\\\"$NO2\\\",\\\"deliveries\\\":0}}\"; echo
  curl -s {f}/orders/$NO2 -H \"Authorization: Bearer $TOKEN\"; echo
  # 8. the caller's orders, newest first (next_cursor pages on: &cursor=...)
  curl -s \"{f}/orders?limit=5\" -H \"Authorization: Bearer $TOKEN\"; echo
  # 9. expiry: leave an order unpaid; the sweeper (every {sweep_every} s) closes it {grace} s after its
  #    expire_at ({ttl} s after it was placed): CLOSED here and at WeChat Pay, stock back in
  #    GET {f}/sandbox/products. To watch it within a minute: --order-ttl 60 --sweep-every 5

Run a real function binary against this sandbox (variables in the file, secrets included):
  set -a; . {env_file}; set +a; PORT=9100 target/debug/place-order
The whole story in one go: cargo run -p sandbox -- demo
",
        sweep_every = s.sweep_every().as_secs(),
        grace = crate::envfile::SWEEP_GRACE_SECONDS,
        ttl = s.order_ttl().as_secs(),
        functions = routes.functions,
        wechat = routes.wechat,
        controls = routes.controls,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_has_two_decimals() {
        assert_eq!(yuan(1500), "15.00");
        assert_eq!(yuan(990), "9.90");
        assert_eq!(yuan(5), "0.05");
    }
}
