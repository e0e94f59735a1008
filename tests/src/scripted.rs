//! A scripted `PayGateway` for use-case tests on a real store: WeChat Pay answers queued per
//! call kind (the ones the simulator cannot be made to give on cue), every call recorded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::json;
use shared::domain::Order;
use shared::service::{Deps, ServiceSettings, system_clock};
use shared::wechatpay::gateway::{PayError, PayGateway, PrepayRequest, PrepayResponse};
use shared::wechatpay::notification::{NotificationError, Transaction, VerifiedNotification};
use shared::wechatpay::refund::{RefundRequest, RefundResult};
use shared::wechatpay::sign::PayParams;
use shared::wechatpay::verify::WechatpayHeaders;
use time::Duration;

use crate::StoreCtx;

/// The `Request-ID` every scripted answer carries.
pub const SCRIPTED_REQUEST_ID: &str = "SCRIPTED-REQUEST-ID";

pub const APPID: &str = "wx-recon";
pub const MCHID: &str = "1900000001";

/// Answers queued per call kind, in order; every call is recorded.
#[derive(Default)]
pub struct Scripted {
    prepays: Mutex<VecDeque<Result<PrepayResponse, PayError>>>,
    queries: Mutex<VecDeque<Result<Transaction, PayError>>>,
    closes: Mutex<VecDeque<Result<(), PayError>>>,
    refunds: Mutex<VecDeque<Result<RefundResult, PayError>>>,
    refund_queries: Mutex<VecDeque<Result<RefundResult, PayError>>>,
    abnormal_refunds: Mutex<VecDeque<Result<RefundResult, PayError>>>,
    calls: Mutex<Vec<String>>,
}

impl Scripted {
    pub fn prepay(&self, answer: Result<PrepayResponse, PayError>) -> &Self {
        self.prepays.lock().unwrap().push_back(answer);
        self
    }
    pub fn query(&self, answer: Result<Transaction, PayError>) -> &Self {
        self.queries.lock().unwrap().push_back(answer);
        self
    }
    pub fn close(&self, answer: Result<(), PayError>) -> &Self {
        self.closes.lock().unwrap().push_back(answer);
        self
    }
    pub fn refund(&self, answer: Result<RefundResult, PayError>) -> &Self {
        self.refunds.lock().unwrap().push_back(answer);
        self
    }
    pub fn refund_query(&self, answer: Result<RefundResult, PayError>) -> &Self {
        self.refund_queries.lock().unwrap().push_back(answer);
        self
    }
    pub fn abnormal_refund(&self, answer: Result<RefundResult, PayError>) -> &Self {
        self.abnormal_refunds.lock().unwrap().push_back(answer);
        self
    }
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    /// How many calls of one kind ("query", "close") were made.
    pub fn count(&self, kind: &str) -> usize {
        self.calls().iter().filter(|c| c.starts_with(kind)).count()
    }
}

#[async_trait]
impl PayGateway for Scripted {
    async fn jsapi_prepay(&self, request: &PrepayRequest) -> Result<PrepayResponse, PayError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("prepay {}", request.out_trade_no));
        self.prepays
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Err(PayError::InvalidRequest("not scripted".into())))
    }
    async fn query_by_out_trade_no(&self, out_trade_no: &str) -> Result<Transaction, PayError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("query {out_trade_no}"));
        // A little latency, so concurrent callers really overlap.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        self.queries
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Err(PayError::Network("no scripted answer".into())))
            .map(|txn| Transaction {
                request_id: Some(SCRIPTED_REQUEST_ID.to_owned()),
                ..txn
            })
    }
    async fn query_by_transaction_id(&self, _: &str) -> Result<Transaction, PayError> {
        Err(PayError::InvalidRequest("not scripted".into()))
    }
    async fn close(&self, out_trade_no: &str) -> Result<Option<String>, PayError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("close {out_trade_no}"));
        self.closes
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Err(PayError::Network("no scripted answer".into())))
            .map(|()| Some(SCRIPTED_REQUEST_ID.to_owned()))
    }
    async fn create_refund(&self, request: &RefundRequest) -> Result<RefundResult, PayError> {
        self.calls.lock().unwrap().push(format!(
            "refund {} {} {}",
            request.out_refund_no, request.refund, request.total
        ));
        self.refunds
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Err(PayError::Network("no scripted answer".into())))
    }
    async fn query_refund(&self, out_refund_no: &str) -> Result<RefundResult, PayError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("refund-query {out_refund_no}"));
        self.refund_queries
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Err(PayError::Network("no scripted answer".into())))
    }
    async fn apply_abnormal_refund(
        &self,
        refund_id: &str,
        out_refund_no: &str,
    ) -> Result<RefundResult, PayError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("abnormal-refund {refund_id} {out_refund_no}"));
        self.abnormal_refunds
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Err(PayError::Network("no scripted answer".into())))
    }
    async fn verify_notification(
        &self,
        _: &WechatpayHeaders,
        _: &[u8],
        _: i64,
    ) -> Result<VerifiedNotification, NotificationError> {
        unreachable!("no notifications here")
    }
    fn pay_params(&self, prepay_id: &str, timestamp: i64) -> Result<PayParams, PayError> {
        Ok(PayParams {
            app_id: APPID.into(),
            time_stamp: timestamp.to_string(),
            nonce_str: "n".into(),
            package: format!("prepay_id={prepay_id}"),
            sign_type: "RSA".into(),
            pay_sign: "scripted".into(),
        })
    }
}

pub fn txn(order: &Order, trade_state: &str) -> Transaction {
    let mut v = json!({
        "appid": APPID, "mchid": MCHID, "out_trade_no": order.out_trade_no.as_str(),
        "trade_state": trade_state, "trade_state_desc": "scripted",
    });
    if trade_state == "SUCCESS" || trade_state == "REFUND" {
        v["transaction_id"] = json!(format!("42000{}", &order.out_trade_no.as_str()[..10]));
        v["success_time"] = json!("2026-11-24T12:00:00+08:00");
        v["amount"] = json!({"total": order.amount_total.fen(), "payer_total": order.amount_total.fen(), "currency": "CNY"});
    }
    serde_json::from_value(v).expect("a transaction")
}

/// WeChat Pay's refund object for `out_refund_no` of `order` in `status`.
pub fn refund_result(
    order: &Order,
    out_refund_no: &str,
    refund: i64,
    status: &str,
) -> RefundResult {
    let mut v = json!({
        "refund_id": format!("503{}", &out_refund_no[..out_refund_no.len().min(20)]),
        "out_refund_no": out_refund_no,
        "out_trade_no": order.out_trade_no.as_str(),
        "transaction_id": format!("42000{}", &order.out_trade_no.as_str()[..10]),
        "status": status,
        "create_time": "2026-11-24T12:05:00+08:00",
        "amount": {"refund": refund, "total": order.amount_total.fen(), "currency": "CNY"},
    });
    if status == "SUCCESS" {
        v["success_time"] = json!("2026-11-24T12:06:00+08:00");
    }
    RefundResult {
        request_id: Some(SCRIPTED_REQUEST_ID.to_owned()),
        ..serde_json::from_value(v).expect("a refund")
    }
}

pub fn api_error(status: u16, code: &str) -> PayError {
    PayError::Api {
        status,
        code: code.into(),
        message: "scripted".into(),
        detail: None,
    }
}

/// The use cases' ports over `ctx`'s store and `gateway`, with this module's appid/mchid.
pub fn scripted_deps(ctx: &StoreCtx, gateway: Arc<Scripted>) -> Deps {
    Deps {
        store: Arc::new(ctx.store.clone()),
        gateway,
        clock: system_clock(),
        settings: ServiceSettings {
            appid: APPID.into(),
            mchid: MCHID.into(),
            order_ttl: Duration::minutes(30),
        },
        catalog: Default::default(),
    }
}
