//! sign-notification: prints one valid, signed `TRANSACTION.SUCCESS` notification for an order
//! placed against a running sandbox, as JSON `{"headers": {...}, "body": "..."}`, so a load
//! generator can POST it to payment-callback (`scripts/bench-load.sh`).
//!
//! ```sh
//! sign-notification --data-dir DIR --out-trade-no NO --amount FEN [--openid OPENID]
//! ```
//!
//! The keys are the sandbox's (`SandboxKeys::load_or_generate(DIR)`), appid and mchid are read
//! from `DIR/sandbox.env`, and the signature timestamp is now: WeChat Pay signatures are only
//! accepted within 300 s of it, so sign just before use.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use sandbox::SandboxKeys;
use serde_json::json;
use shared::timefmt::to_wechat;
use shared::wechatpay::{
    NotificationDraft, Payer, TradeState, Transaction, TransactionAmount, build_notification,
};
use time::OffsetDateTime;

struct Args {
    data_dir: PathBuf,
    out_trade_no: String,
    amount: i64,
    openid: String,
}

const USAGE: &str =
    "usage: sign-notification --data-dir DIR --out-trade-no NO --amount FEN [--openid OPENID]";

fn parse_args() -> Result<Args, String> {
    let mut data_dir = None;
    let mut out_trade_no = None;
    let mut amount = None;
    let mut openid = "o_bench".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
            "--out-trade-no" => out_trade_no = Some(value()?),
            "--amount" => {
                let v = value()?;
                amount = Some(
                    v.parse::<i64>()
                        .map_err(|e| format!("--amount {v:?}: {e}"))?,
                );
            }
            "--openid" => openid = value()?,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Args {
        data_dir: data_dir.ok_or("--data-dir is required")?,
        out_trade_no: out_trade_no.ok_or("--out-trade-no is required")?,
        amount: amount.ok_or("--amount is required")?,
        openid,
    })
}

/// `NAME=value` of `DIR/sandbox.env` (values the sandbox writes are plain or single-quoted).
fn env_value(env_file: &str, name: &str) -> Option<String> {
    env_file.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix('=')?;
        let value = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .unwrap_or(value);
        Some(value.replace(r"'\''", "'"))
    })
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let keys = SandboxKeys::load_or_generate(&args.data_dir).map_err(|e| e.to_string())?;
    let env_path = args.data_dir.join("sandbox.env");
    let env_file = std::fs::read_to_string(&env_path)
        .map_err(|e| format!("{}: {e} (start the sandbox first)", env_path.display()))?;
    let appid = env_value(&env_file, "WXPAY_APPID").ok_or("sandbox.env has no WXPAY_APPID")?;
    let mchid = env_value(&env_file, "WXPAY_MCHID").ok_or("sandbox.env has no WXPAY_MCHID")?;

    let now = OffsetDateTime::now_utc();
    let txn = Transaction {
        appid,
        mchid,
        out_trade_no: args.out_trade_no.clone(),
        transaction_id: Some(format!("4200{}", now.unix_timestamp_nanos() / 1000)),
        trade_type: Some("JSAPI".to_owned()),
        trade_state: TradeState::Success,
        trade_state_desc: Some("支付成功".to_owned()),
        bank_type: Some("OTHERS".to_owned()),
        attach: None,
        success_time: Some(to_wechat(now)),
        payer: Some(Payer {
            openid: args.openid,
        }),
        amount: Some(TransactionAmount {
            total: args.amount,
            payer_total: Some(args.amount),
            currency: Some("CNY".to_owned()),
            payer_currency: Some("CNY".to_owned()),
        }),
        scene_info: None,
        promotion_detail: None,
        request_id: None,
    };
    let transaction_json = serde_json::to_vec(&txn).map_err(|e| e.to_string())?;
    let notification_id = format!("bench-{}", now.unix_timestamp_nanos());
    let create_time = to_wechat(now);
    let draft =
        NotificationDraft::transaction_success(&notification_id, &create_time, &transaction_json);
    let (headers, body) = build_notification(
        keys.wechatpay_key(),
        keys.wechatpay_public_key_id(),
        keys.apiv3_key(),
        &draft,
        now.unix_timestamp(),
    );
    let headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let body = String::from_utf8(body).map_err(|e| e.to_string())?;
    println!("{}", json!({ "headers": headers, "body": body }));
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sign-notification: {e}");
            ExitCode::FAILURE
        }
    }
}
