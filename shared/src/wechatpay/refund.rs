//! WeChat Pay's refund API in its own terms (`reference/wechatpay-refunds-bills.md`
//! sections 1 to 4): the create request, the refund object every refund call answers with,
//! and the decrypted `REFUND.*` notification. Only ids, status and amounts are required when
//! reading; everything else WeChat Pay may add is optional.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `POST /v3/refund/domestic/refunds`. `notify_url` and the currency come from the client's
/// configuration; a direct merchant sends no appid or mchid (WeChat Pay refuses them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub reason: Option<String>,
    /// `amount.refund`: this refund, in fen.
    pub refund: i64,
    /// `amount.total`: the order's original total (not what is left).
    pub total: i64,
}

/// A refund's `status` (API object) or `refund_status` (notification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundState {
    Processing,
    Success,
    Closed,
    Abnormal,
    /// A value this version does not know: kept, never acted on.
    Other(String),
}

impl RefundState {
    pub fn as_str(&self) -> &str {
        match self {
            RefundState::Processing => "PROCESSING",
            RefundState::Success => "SUCCESS",
            RefundState::Closed => "CLOSED",
            RefundState::Abnormal => "ABNORMAL",
            RefundState::Other(s) => s,
        }
    }
}

impl From<&str> for RefundState {
    fn from(s: &str) -> Self {
        match s {
            "PROCESSING" => RefundState::Processing,
            "SUCCESS" => RefundState::Success,
            "CLOSED" => RefundState::Closed,
            "ABNORMAL" => RefundState::Abnormal,
            other => RefundState::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for RefundState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RefundState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RefundState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(RefundState::from(s.as_str()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAmount {
    /// This refund, in fen.
    pub refund: i64,
    /// The order's total, in fen.
    pub total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_refund: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// The refund object: the answer of create, query and abnormal-refund alike (section 1.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundResult {
    pub refund_id: String,
    pub out_refund_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    pub status: RefundState,
    /// RFC 3339; only when `status` is SUCCESS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    pub amount: RefundAmount,
    /// WeChat Pay's `Request-ID` of the answer.
    #[serde(skip)]
    pub request_id: Option<String>,
}

/// The decrypted resource of a `REFUND.SUCCESS` / `REFUND.CLOSED` / `REFUND.ABNORMAL`
/// notification (section 4.2): note `refund_status`, not `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundNotice {
    pub mchid: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub out_refund_no: String,
    pub refund_id: String,
    pub refund_status: RefundState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    pub amount: RefundAmount,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The official sample of section 4.2 (plaintext of a REFUND.SUCCESS notification).
    #[test]
    fn parses_the_documented_refund_notice_and_refund_object() {
        let notice: RefundNotice = serde_json::from_str(
            r#"{"mchid":"1900000100","transaction_id":"1008450740201411110005820873",
            "out_trade_no":"20150806125346","refund_id":"50200207182018070300011301001",
            "out_refund_no":"7752501201407033233368018","refund_status":"SUCCESS",
            "success_time":"2018-06-08T10:34:56+08:00","user_received_account":"招商银行信用卡0403",
            "amount":{"total":999,"refund":999,"payer_total":999,"payer_refund":999}}"#,
        )
        .unwrap();
        assert_eq!(notice.refund_status, RefundState::Success);
        assert_eq!((notice.amount.refund, notice.amount.total), (999, 999));

        let created: RefundResult = serde_json::from_str(
            r#"{"refund_id":"50000000382019052709732678859","out_refund_no":"1217752501201407033233368018",
            "transaction_id":"1217752501201407033233368018","out_trade_no":"1217752501201407033233368018",
            "channel":"ORIGINAL","user_received_account":"支付用户零钱","create_time":"2020-12-01T16:18:12+08:00",
            "status":"PROCESSING","funds_account":"UNAVAILABLE",
            "amount":{"total":1,"refund":1,"payer_total":1,"payer_refund":1,"settlement_refund":1,
            "settlement_total":1,"discount_refund":0,"currency":"CNY"}}"#,
        )
        .unwrap();
        assert_eq!(created.status, RefundState::Processing);
        assert_eq!(created.success_time, None);
        let unknown: RefundState = serde_json::from_str(r#""SOMETHING_NEW""#).unwrap();
        assert_eq!(unknown, RefundState::Other("SOMETHING_NEW".into()));
        assert_eq!(
            serde_json::to_string(&unknown).unwrap(),
            r#""SOMETHING_NEW""#
        );
    }
}
