//! Shipping and settlement under WeChat's trade management (DESIGN.md section 12): the
//! shipment a merchant records, checked against WeChat's upload rules before anything is
//! stored, and the transitions it drives (PAID -> SHIPPED, the upload's progress, SHIPPED ->
//! COMPLETED). The upload's wire bytes are made at the edge and kept here opaque, so every
//! resend is the same request.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::{
    Anomaly, AnomalyKind, EventType, LifecycleError, Order, OrderEvent, OrderStatus, Plan, Record,
};

/// WeChat's `logistics_type` (1 express, 2 same-city, 3 virtual, 4 pick-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogisticsType {
    Express,
    SameCity,
    Virtual,
    Pickup,
}

impl LogisticsType {
    pub fn parse(s: &str) -> Result<Self, ShipmentError> {
        match s {
            "express" => Ok(LogisticsType::Express),
            "same_city" => Ok(LogisticsType::SameCity),
            "virtual" => Ok(LogisticsType::Virtual),
            "pickup" => Ok(LogisticsType::Pickup),
            other => Err(ShipmentError(format!(
                "logistics_type must be express, same_city, virtual or pickup (got {other:?})"
            ))),
        }
    }

    /// WeChat's number for it (a string there is refused with 268485224).
    pub fn code(self) -> u8 {
        match self {
            LogisticsType::Express => 1,
            LogisticsType::SameCity => 2,
            LogisticsType::Virtual => 3,
            LogisticsType::Pickup => 4,
        }
    }
}

/// WeChat's `delivery_mode`: one package (UNIFIED) or several (SPLIT, express only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    Unified,
    Split,
}

impl DeliveryMode {
    pub fn code(self) -> u8 {
        match self {
            DeliveryMode::Unified => 1,
            DeliveryMode::Split => 2,
        }
    }
}

/// One package as WeChat's `shipping_list[]` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub express_company: Option<String>,
    pub item_desc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver_contact: Option<String>,
}

/// A shipment that passes every rule WeChat's `upload_shipping_info` checks on its own
/// (reference 3.1), so WeChat refuses it only for what it alone knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    pub logistics_type: LogisticsType,
    pub delivery_mode: DeliveryMode,
    pub is_all_delivered: bool,
    pub packages: Vec<Package>,
}

/// Why a shipment cannot be uploaded as asked: names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShipmentError(pub String);

/// WeChat's limits (reference 3.1).
pub const MAX_PACKAGES: usize = 15;
pub const MAX_ITEM_DESC_CHARS: usize = 120;
const MAX_TRACKING_BYTES: usize = 128;
const MAX_CONTACT_BYTES: usize = 1024;

impl Shipment {
    /// The shipment as asked, or the first rule it breaks. More than one package is a SPLIT
    /// delivery (express only) and must name every package at once: a split announced as
    /// not all delivered would spend WeChat's one re-ship on the rest.
    pub fn parse(
        logistics_type: &str,
        packages: Vec<Package>,
        is_all_delivered: bool,
    ) -> Result<Shipment, ShipmentError> {
        let logistics_type = LogisticsType::parse(logistics_type)?;
        let bad = |m: String| Err(ShipmentError(m));
        if packages.is_empty() || packages.len() > MAX_PACKAGES {
            return bad(format!(
                "packages must list 1-{MAX_PACKAGES} packages (got {})",
                packages.len()
            ));
        }
        let delivery_mode = if packages.len() == 1 {
            DeliveryMode::Unified
        } else {
            DeliveryMode::Split
        };
        if delivery_mode == DeliveryMode::Split && logistics_type != LogisticsType::Express {
            return bad("only an express shipment may have more than one package".into());
        }
        if !is_all_delivered {
            return bad(
                "is_all_delivered must be true: record every package of the shipment at once"
                    .into(),
            );
        }
        for (i, p) in packages.iter().enumerate() {
            let at = format!("packages[{i}]");
            let desc = p.item_desc.trim();
            if desc.is_empty() || p.item_desc.chars().count() > MAX_ITEM_DESC_CHARS {
                return bad(format!(
                    "{at}.item_desc must be 1-{MAX_ITEM_DESC_CHARS} characters"
                ));
            }
            // Stored, uploaded and sent in webhooks: never a whole phone number.
            if let Some(c) = &p.receiver_contact
                && (c.len() > MAX_CONTACT_BYTES || !is_masked_contact(c))
            {
                return bad(format!(
                    "{at}.receiver_contact must be masked but for its last 4 digits (e.g. 189****1234)"
                ));
            }
            if logistics_type != LogisticsType::Express {
                if p.tracking_no.is_some() || p.express_company.is_some() {
                    return bad(format!(
                        "{at}: tracking_no and express_company are for express shipments only"
                    ));
                }
                continue;
            }
            match &p.tracking_no {
                Some(t) if !t.is_empty() && t.len() <= MAX_TRACKING_BYTES && is_code(t) => {}
                _ => {
                    return bad(format!(
                        "{at}.tracking_no is required for express: 1-{MAX_TRACKING_BYTES} letters, digits, '-' or '_'"
                    ));
                }
            }
            let company = match &p.express_company {
                Some(c) if !c.is_empty() && c.len() <= MAX_TRACKING_BYTES && is_code(c) => c,
                _ => {
                    return bad(format!(
                        "{at}.express_company is required for express: the carrier's delivery_id (e.g. SF, YTO, ZTO)"
                    ));
                }
            };
            // SF Express asks for the receiver's (or sender's) phone, masked but for its
            // last four digits (WeChat's 268485227 family otherwise).
            if company.eq_ignore_ascii_case("SF") {
                match &p.receiver_contact {
                    Some(c) if is_masked_contact(c) => {}
                    _ => {
                        return bad(format!(
                            "{at}.receiver_contact is required for SF Express, masked but for its last 4 digits (e.g. 189****1234)"
                        ));
                    }
                }
            }
        }
        Ok(Shipment {
            logistics_type,
            delivery_mode,
            is_all_delivered,
            packages,
        })
    }
}

fn is_code(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `189****1234`, `021-****1234`, `****1234`: masked somewhere, its last four digits clear.
fn is_masked_contact(c: &str) -> bool {
    let digits: Vec<u8> = c.bytes().filter(|&b| b != b'-').collect();
    c.contains('*')
        && digits.len() >= 5
        && digits[digits.len() - 4..].iter().all(u8::is_ascii_digit)
        && c.bytes()
            .all(|b| b.is_ascii_digit() || b == b'*' || b == b'-')
}

/// Where the upload of a shipment to WeChat stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UploadState {
    /// Not accepted yet: the sweeper sends it again at `next_attempt_at`.
    Pending,
    /// WeChat has the shipping info.
    Uploaded,
    /// WeChat refused it for good (or kept refusing past the retry window): an anomaly
    /// tells the merchant, who fixes it in the mini-program console.
    Failed,
}

impl UploadState {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadState::Pending => "PENDING",
            UploadState::Uploaded => "UPLOADED",
            UploadState::Failed => "FAILED",
        }
    }
}

/// The upload of one shipment: the exact request body, sent byte for byte on every attempt
/// (a changed body would count as WeChat's one re-ship).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    pub body: String,
    pub state: UploadState,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_errcode: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The last attempt got no certain answer (a timeout, a 5xx): ask WeChat's `get_order`
    /// before sending again.
    #[serde(default)]
    pub ambiguous: bool,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub uploaded_at: Option<OffsetDateTime>,
}

/// What one upload attempt learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadResult {
    /// Accepted (or WeChat already holds exactly this shipment).
    Uploaded,
    /// Not now: WeChat has not indexed the payment yet (10060001), is busy, rate-limits,
    /// or gave no certain answer (`ambiguous`).
    Retry {
        errcode: Option<i64>,
        error: String,
        ambiguous: bool,
    },
    /// Refused for good: a rule only WeChat knows, the order refunded there, the re-ship
    /// spent.
    Refused { errcode: i64, error: String },
}

/// How long an upload keeps being retried before it is given up as an anomaly.
pub const UPLOAD_RETRY_WINDOW: Duration = Duration::hours(24);

/// The wait before the `attempts`+1th attempt: 15 s, 1 min, 5 min, 30 min, then hourly
/// (reference 7.3); WeChat indexes a payment within seconds to a minute.
pub fn upload_backoff(attempts: u32) -> Duration {
    match attempts {
        0 | 1 => Duration::seconds(15),
        2 => Duration::minutes(1),
        3 => Duration::minutes(5),
        4 => Duration::minutes(30),
        _ => Duration::hours(1),
    }
}

/// The order's shipment and WeChat's view of it: kept on the order, written by the order's
/// own transitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipping {
    pub shipment: Shipment,
    #[serde(with = "time::serde::rfc3339")]
    pub shipped_at: OffsetDateTime,
    /// The merchant's Idempotency-Key and the hash of its request: the same request again is
    /// answered from here, another one with that key refused.
    pub request_key: String,
    pub request_hash: String,
    /// `None` when the mini-program is not under trade management: nothing to upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<Upload>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub settled_at: Option<OffsetDateTime>,
    /// WeChat's own estimate, from its ship-time push.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub estimated_settlement_at: Option<OffsetDateTime>,
    /// When the sweeper asks `get_order` whether a shipped order settled (pushes can be
    /// lost): WeChat's estimate plus an hour, else its default delay, then daily.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub settle_check_at: Option<OffsetDateTime>,
}

/// WeChat settles a shipment the buyer does not confirm after 10 days (express) or 2 days
/// (same-city, virtual, pick-up), counted from the shipment (reference section 1).
pub fn default_settlement_delay(logistics_type: LogisticsType) -> Duration {
    match logistics_type {
        LogisticsType::Express => Duration::days(10),
        _ => Duration::days(2),
    }
}

/// How long after WeChat's estimate, and then between checks, the sweeper asks again.
pub const SETTLE_CHECK_AFTER_ESTIMATE: Duration = Duration::hours(1);
pub const SETTLE_CHECK_INTERVAL: Duration = Duration::days(1);

impl Shipping {
    /// When the sweeper should look at this shipment of an order in `status` again: its
    /// upload to resend, or (SHIPPED, not settled) its settlement to ask about.
    /// Only a SHIPPED order is looked at: once settled or refunded, WeChat would refuse an
    /// upload (10060002, 10060004) and there is nothing left to settle.
    pub fn next_check_at(&self, status: OrderStatus) -> Option<OffsetDateTime> {
        if status != OrderStatus::Shipped {
            return None;
        }
        let upload = self
            .upload
            .as_ref()
            .filter(|u| u.state == UploadState::Pending)
            .and_then(|u| u.next_attempt_at);
        // Nothing uploaded (not under trade management): WeChat has nothing to settle.
        let settle = self
            .settle_check_at
            .filter(|_| self.upload.is_some() && self.settled_at.is_none());
        match (upload, settle) {
            (Some(u), Some(s)) => Some(u.min(s)),
            (u, s) => u.or(s),
        }
    }
}

impl Order {
    /// PAID or PARTIALLY_REFUNDED -> SHIPPED with its shipment (its upload PENDING and due
    /// now, when there is one), `order.shipped`. An order whose whole amount is refunded or
    /// being refunded has nothing left to ship.
    pub fn plan_shipped(
        &self,
        shipping: &Shipping,
        at: OffsetDateTime,
    ) -> Result<Plan, LifecycleError> {
        if let Some(existing) = &self.shipping {
            return Err(LifecycleError::AlreadyShipped(existing.request_key.clone()));
        }
        if self.status.is_refundable() && self.refundable()? == super::Money::ZERO {
            return Err(LifecycleError::NotShippable(OrderStatus::Refunded));
        }
        if !self.status.can_transition(OrderStatus::Shipped) {
            return Err(LifecycleError::NotShippable(self.status));
        }
        let mut next = self.transitioned(
            OrderStatus::Shipped,
            at,
            self.status
                .edge_cause(OrderStatus::Shipped)
                .unwrap_or("transition"),
        )?;
        next.shipping = Some(shipping.clone());
        let event = OrderEvent::of_order(EventType::OrderShipped, &next, at);
        Ok(self.with_records(next, vec![Record::Event(Box::new(event))]))
    }

    /// One upload attempt's result on a shipped order: no status change; a refusal for good
    /// (or retries past [`UPLOAD_RETRY_WINDOW`]) records a `SHIPPING_UPLOAD_FAILED` anomaly
    /// with it. An order refunded since keeps the result, but is never retried.
    pub fn plan_upload_result(
        &self,
        result: &UploadResult,
        at: OffsetDateTime,
    ) -> Result<Plan, LifecycleError> {
        let mut next = self.clone();
        next.version += 1;
        let shipping = next
            .shipping
            .as_mut()
            .ok_or_else(|| LifecycleError::NotShipped(self.out_trade_no.to_string()))?;
        let shipped_at = shipping.shipped_at;
        let upload = shipping
            .upload
            .as_mut()
            .filter(|u| u.state == UploadState::Pending)
            .ok_or_else(|| LifecycleError::NotShipped(self.out_trade_no.to_string()))?;
        upload.attempts += 1;
        let mut records = Vec::new();
        let mut give_up = |upload: &mut Upload, errcode: Option<i64>, error: &str| {
            upload.state = UploadState::Failed;
            upload.next_attempt_at = None;
            let anomaly = Anomaly {
                kind: AnomalyKind::ShippingUploadFailed,
                out_trade_no: Some(self.out_trade_no.clone()),
                transaction_id: self.transaction_id.clone(),
                notification_id: None,
                plaintext: None,
                cause: self.transaction_id.clone().unwrap_or_default(),
                detail: format!(
                    "WeChat did not take the shipping info after {} attempts: errcode {}: {error}; upload it in the mini-program console",
                    upload.attempts,
                    errcode.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                ),
                at,
            };
            records.push(Record::Event(Box::new(OrderEvent::of_anomaly(
                &anomaly, at,
            ))));
            records.insert(0, Record::Anomaly(Box::new(anomaly)));
        };
        match result {
            UploadResult::Uploaded => {
                upload.state = UploadState::Uploaded;
                upload.uploaded_at = Some(at);
                upload.next_attempt_at = None;
                upload.ambiguous = false;
                upload.last_errcode = None;
                upload.last_error = None;
            }
            UploadResult::Retry {
                errcode,
                error,
                ambiguous,
            } => {
                upload.last_errcode = *errcode;
                upload.last_error = Some(error.clone());
                upload.ambiguous = *ambiguous;
                let refunded = self.status == OrderStatus::Refunded;
                if refunded || at - shipped_at >= UPLOAD_RETRY_WINDOW {
                    give_up(upload, *errcode, error);
                } else {
                    upload.next_attempt_at = Some(at + upload_backoff(upload.attempts));
                }
            }
            UploadResult::Refused { errcode, error } => {
                upload.last_errcode = Some(*errcode);
                upload.last_error = Some(error.clone());
                upload.ambiguous = false;
                give_up(upload, Some(*errcode), error);
            }
        }
        Ok(self.with_records(next, records))
    }

    /// WeChat's ship-time push: its estimate of the settlement kept (the sweeper asks an
    /// hour after it), and a pending upload known taken. No status change.
    pub fn plan_shipped_at_wechat(
        &self,
        estimated_settlement_at: Option<OffsetDateTime>,
        at: OffsetDateTime,
    ) -> Result<Plan, LifecycleError> {
        let mut next = self.clone();
        next.version += 1;
        let shipping = next
            .shipping
            .as_mut()
            .ok_or_else(|| LifecycleError::NotShipped(self.out_trade_no.to_string()))?;
        if let Some(estimate) = estimated_settlement_at {
            shipping.estimated_settlement_at = Some(estimate);
            shipping.settle_check_at = Some(estimate + SETTLE_CHECK_AFTER_ESTIMATE);
        }
        if let Some(upload) = shipping
            .upload
            .as_mut()
            .filter(|u| u.state == UploadState::Pending)
        {
            upload.state = UploadState::Uploaded;
            upload.uploaded_at = Some(at);
            upload.next_attempt_at = None;
            upload.ambiguous = false;
        }
        if next.shipping == self.shipping {
            return Err(LifecycleError::NotShipped(self.out_trade_no.to_string()));
        }
        Ok(self.with_records(next, Vec::new()))
    }

    /// A settlement check that found the order not settled yet: asked again in a day.
    pub fn plan_settle_check_later(&self, at: OffsetDateTime) -> Result<Plan, LifecycleError> {
        if self.status != OrderStatus::Shipped {
            return Err(LifecycleError::NotShipped(self.out_trade_no.to_string()));
        }
        let mut next = self.clone();
        next.version += 1;
        let shipping = next
            .shipping
            .as_mut()
            .ok_or_else(|| LifecycleError::NotShipped(self.out_trade_no.to_string()))?;
        shipping.settle_check_at = Some(at + SETTLE_CHECK_INTERVAL);
        Ok(self.with_records(next, Vec::new()))
    }

    /// SHIPPED -> COMPLETED: WeChat settled the order (its push, or `get_order` state 4) at
    /// `settled_at`; `order.completed`.
    pub fn plan_completed(
        &self,
        settled_at: OffsetDateTime,
        cause: &str,
        at: OffsetDateTime,
    ) -> Result<Plan, LifecycleError> {
        let mut next = self.transitioned(OrderStatus::Completed, at, cause)?;
        let shipping = next
            .shipping
            .as_mut()
            .ok_or_else(|| LifecycleError::NotShipped(self.out_trade_no.to_string()))?;
        shipping.settled_at = Some(settled_at);
        // WeChat settled it: it holds the shipment, whatever our last attempt heard.
        if let Some(upload) = shipping
            .upload
            .as_mut()
            .filter(|u| u.state == UploadState::Pending)
        {
            upload.state = UploadState::Uploaded;
            upload.uploaded_at = Some(at);
            upload.next_attempt_at = None;
        }
        let event = OrderEvent::of_order(EventType::OrderCompleted, &next, at);
        Ok(self.with_records(next, vec![Record::Event(Box::new(event))]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn express(company: &str, contact: Option<&str>) -> Package {
        Package {
            tracking_no: Some("SF1234567890".into()),
            express_company: Some(company.into()),
            item_desc: "微信红包抱枕*1个".into(),
            receiver_contact: contact.map(str::to_owned),
        }
    }

    fn virtual_goods() -> Package {
        Package {
            tracking_no: None,
            express_company: None,
            item_desc: "会员月卡*1".into(),
            receiver_contact: None,
        }
    }

    #[test]
    fn a_shipment_within_wechats_rules_parses_with_its_delivery_mode() {
        let one = Shipment::parse("express", vec![express("YTO", None)], true).unwrap();
        assert_eq!(one.delivery_mode, DeliveryMode::Unified);
        assert_eq!(one.logistics_type.code(), 1);
        let split = Shipment::parse("express", vec![express("ZTO", None); 15], true).unwrap();
        assert_eq!(split.delivery_mode, DeliveryMode::Split);
        assert_eq!(split.delivery_mode.code(), 2);
        let sf = Shipment::parse("express", vec![express("SF", Some("189****1234"))], true);
        assert!(sf.is_ok());
        for contact in ["021-****1234", "****1234", "0**2-******23-10"] {
            assert!(is_masked_contact(contact), "{contact}");
        }
        let v = Shipment::parse("virtual", vec![virtual_goods()], true).unwrap();
        assert_eq!(v.logistics_type.code(), 3);
        assert_eq!(LogisticsType::parse("pickup").unwrap().code(), 4);
        assert_eq!(LogisticsType::parse("same_city").unwrap().code(), 2);
    }

    #[test]
    fn each_of_wechats_rules_is_refused_by_name() {
        let refused =
            |t: &str, p: Vec<Package>, all: bool| Shipment::parse(t, p, all).unwrap_err().0;
        assert!(refused("boat", vec![virtual_goods()], true).contains("logistics_type"));
        assert!(refused("express", vec![], true).contains("1-15"));
        assert!(refused("express", vec![express("YTO", None); 16], true).contains("1-15"));
        assert!(refused("virtual", vec![virtual_goods(); 2], true).contains("only an express"));
        assert!(refused("express", vec![express("YTO", None)], false).contains("is_all_delivered"));
        let mut long = virtual_goods();
        long.item_desc = "字".repeat(121);
        assert!(refused("virtual", vec![long.clone()], true).contains("item_desc"));
        long.item_desc = "字".repeat(120);
        assert!(Shipment::parse("virtual", vec![long], true).is_ok());
        let mut blank = virtual_goods();
        blank.item_desc = "  ".into();
        assert!(refused("virtual", vec![blank], true).contains("item_desc"));
        let mut no_tracking = express("YTO", None);
        no_tracking.tracking_no = None;
        assert!(refused("express", vec![no_tracking], true).contains("tracking_no"));
        let mut no_company = express("YTO", None);
        no_company.express_company = Some("Y T O".into());
        assert!(refused("express", vec![no_company], true).contains("express_company"));
        assert!(refused("express", vec![express("SF", None)], true).contains("SF Express"));
        assert!(
            refused("express", vec![express("SF", Some("18912341234"))], true).contains("masked")
        );
        assert!(
            refused("express", vec![express("SF", Some("189****12**"))], true).contains("masked")
        );
        // Any contact is stored and sent on: never a whole number, whatever the carrier.
        assert!(
            refused("express", vec![express("YTO", Some("18912341234"))], true).contains("masked")
        );
        let mut tracked_virtual = virtual_goods();
        tracked_virtual.tracking_no = Some("X1".into());
        assert!(refused("virtual", vec![tracked_virtual], true).contains("express shipments only"));
    }

    #[test]
    fn retries_back_off_to_hourly() {
        let waits: Vec<i64> = (1..=7).map(|a| upload_backoff(a).whole_seconds()).collect();
        assert_eq!(waits, [15, 60, 300, 1800, 3600, 3600, 3600]);
    }
}
