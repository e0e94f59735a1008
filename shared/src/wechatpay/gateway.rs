//! The `PayGateway` port: the WeChat Pay calls the use cases make, in WeChat Pay's own
//! terms. The HTTP implementation lives in `client`; tests and the sandbox may plug in others.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{
    bill::BillLocation,
    notification::{NotificationError, Transaction, VerifiedNotification},
    refund::{RefundRequest, RefundResult},
    sign::PayParams,
    verify::{VerifyError, WechatpayHeaders},
};

/// What a JSAPI order needs from us; `appid`, `mchid` and `notify_url` come from the client's
/// configuration so a use case cannot send the wrong ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepayRequest {
    pub out_trade_no: String,
    pub description: String,
    /// RFC 3339 at `+08:00`, whole seconds (see `timefmt::to_wechat`).
    pub time_expire: String,
    pub attach: Option<String>,
    pub amount_total: i64,
    pub payer_openid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepayResponse {
    pub prepay_id: String,
    /// WeChat Pay's `Request-ID` of the answer (kept with the order).
    #[serde(skip)]
    pub request_id: Option<String>,
}

/// Every way a WeChat Pay call can fail, each saying whether repeating it can help.
#[derive(Debug, thiserror::Error)]
pub enum PayError {
    /// WeChat Pay answered with its error body `{code, message, detail}`.
    #[error("WeChat Pay refused with HTTP {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        detail: Option<serde_json::Value>,
    },
    #[error("could not reach WeChat Pay: {0}")]
    Network(String),
    #[error("WeChat Pay did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("WeChat Pay's 2xx response carried no signature: treated as forged")]
    UnsignedResponse,
    #[error("WeChat Pay's response signature did not verify: {0}")]
    BadResponseSignature(#[from] VerifyError),
    #[error("WeChat Pay's response was not what its API documents: {0}")]
    MalformedResponse(String),
    #[error("platform certificates could not be loaded: {0}")]
    Certificates(String),
    #[error("WeChat Pay client is misconfigured: {0}")]
    Config(String),
    #[error("request not sent: {0}")]
    InvalidRequest(String),
    /// `NO_STATEMENT_EXIST`: WeChat Pay has no bill for that day because nothing was paid or
    /// refunded; an empty day, not a failure (reference `wechatpay-refunds-bills.md` 6.4).
    #[error("WeChat Pay has no bill for that day (NO_STATEMENT_EXIST): no trades")]
    NoStatement,
    /// `STATEMENT_CREATING`: the bill is not generated yet. Bills start at 09:00 Beijing time
    /// the next day; WeChat Pay's advice is to ask after 10:00, then every half hour.
    #[error("WeChat Pay has not generated that day's bill yet (STATEMENT_CREATING)")]
    StatementNotReady,
    /// A bill download larger than the client accepts (bytes).
    #[error("the bill download is larger than {0} bytes")]
    BillTooLarge(u64),
    /// A call this `PayGateway` implementation does not offer.
    #[error("{0} is not supported by this gateway")]
    NotSupported(&'static str),
}

impl PayError {
    /// Whether the same request, sent again unchanged, may succeed: network errors, timeouts,
    /// 5xx and 429 (DESIGN.md section 8). Other 4xx never change on a retry.
    pub fn retryable(&self) -> bool {
        match self {
            PayError::Api { status, .. } => *status >= 500 || *status == 429 || *status == 202,
            PayError::Network(_) | PayError::Timeout(_) => true,
            _ => false,
        }
    }

    /// WeChat Pay's error code, when it sent one (`ORDER_NOT_EXIST`, `OUT_TRADE_NO_USED`...).
    pub fn code(&self) -> Option<&str> {
        match self {
            PayError::Api { code, .. } => Some(code),
            PayError::NoStatement => Some("NO_STATEMENT_EXIST"),
            PayError::StatementNotReady => Some("STATEMENT_CREATING"),
            _ => None,
        }
    }
}

#[async_trait]
pub trait PayGateway: Send + Sync {
    /// `POST /v3/pay/transactions/jsapi`. Repeating it with identical parameters is safe:
    /// WeChat Pay answers with the order's current prepay_id.
    async fn jsapi_prepay(&self, request: &PrepayRequest) -> Result<PrepayResponse, PayError>;

    /// `GET /v3/pay/transactions/out-trade-no/{out_trade_no}?mchid=...`
    async fn query_by_out_trade_no(&self, out_trade_no: &str) -> Result<Transaction, PayError>;

    /// `GET /v3/pay/transactions/id/{transaction_id}?mchid=...`
    async fn query_by_transaction_id(&self, transaction_id: &str) -> Result<Transaction, PayError>;

    /// `POST /v3/pay/transactions/out-trade-no/{out_trade_no}/close` (204 on success); the
    /// answer's `Request-ID`.
    async fn close(&self, out_trade_no: &str) -> Result<Option<String>, PayError>;

    /// `POST /v3/refund/domestic/refunds` with the configured `notify_url`. Repeating it
    /// with the same out_refund_no never refunds twice (WeChat Pay's rule); a timeout or 5xx
    /// may still have been accepted, so the caller queries before giving up on it.
    async fn create_refund(&self, request: &RefundRequest) -> Result<RefundResult, PayError>;

    /// `GET /v3/refund/domestic/refunds/{out_refund_no}`; `404 RESOURCE_NOT_EXISTS` (as
    /// `PayError::Api`) means WeChat Pay accepted no such refund.
    async fn query_refund(&self, out_refund_no: &str) -> Result<RefundResult, PayError>;

    /// `POST /v3/refund/domestic/refunds/{refund_id}/apply-abnormal-refund` with `type`
    /// `MERCHANT_BANK_CARD`: an ABNORMAL refund is paid to the merchant's settlement account
    /// instead (the merchant then owes the user out of band). `USER_BANK_CARD` needs the
    /// user's bank details encrypted with WeChat Pay's key and is not offered.
    async fn apply_abnormal_refund(
        &self,
        refund_id: &str,
        out_refund_no: &str,
    ) -> Result<RefundResult, PayError>;

    /// Verifies a notification's signature over the raw body with the same key map that
    /// verifies responses (so certificate refresh on an unknown serial serves both), then
    /// decrypts its resource with the APIv3 key.
    async fn verify_notification(
        &self,
        headers: &WechatpayHeaders,
        raw_body: &[u8],
        now: i64,
    ) -> Result<VerifiedNotification, NotificationError>;

    /// `GET /v3/bill/tradebill?bill_date=...&bill_type=ALL&tar_type=GZIP`: where the trade
    /// bill of `bill_date` (a Beijing date) can be downloaded, and its SHA-1. A day without
    /// trades is [`PayError::NoStatement`]; a bill not generated yet (before about 10:00
    /// Beijing time the next day) is [`PayError::StatementNotReady`].
    ///
    /// Not offered by default, so gateways written before bills keep compiling.
    async fn trade_bill(&self, bill_date: time::Date) -> Result<BillLocation, PayError> {
        let _ = bill_date;
        Err(PayError::NotSupported("trade_bill"))
    }

    /// The bill file at `location.download_url` (gzip bytes, not decompressed, not checked):
    /// the download is the one WeChat Pay answer that is not signed, so only the SHA-1
    /// (`bill::check_download`) vouches for it. Bounded in size.
    async fn download_bill(&self, location: &BillLocation) -> Result<Vec<u8>, PayError> {
        let _ = location;
        Err(PayError::NotSupported("download_bill"))
    }

    /// The mini-program's `wx.requestPayment` parameters for a prepay_id, signed with the
    /// merchant key at `timestamp`.
    fn pay_params(&self, prepay_id: &str, timestamp: i64) -> Result<PayParams, PayError>;
}
