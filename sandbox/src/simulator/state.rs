//! The simulator's memory: every JSAPI order by out_trade_no, every payment by
//! transaction_id, every refund by out_refund_no, queued faults and the notification
//! delivery log. All of it sits behind
//! one mutex held only for plain map updates (never across an await), so each WeChat Pay
//! call is atomic, as it is at WeChat Pay.

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng as _;
use serde::Serialize;
use shared::timefmt::{CHINA, to_wechat};
use shared::wechatpay::{
    NotificationDraft, Payer, RefundAmount, RefundNotice, RefundState, TradeState, Transaction,
    TransactionAmount,
};
use time::OffsetDateTime;

use super::bill::{BillEntry, BillStore, EntryKind, beijing_date};
use super::{ApiError, Fault, PayOutcome, PayRequest};

/// WeChat Pay keeps a prepay_id for 2 hours; an identical prepay after that gets a new one.
const PREPAY_ID_TTL: Duration = Duration::from_secs(2 * 3600);

/// Without `time_expire`, WeChat Pay lets an order be paid for 7 days.
const DEFAULT_PAYABLE_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// A JSAPI order as the simulator keeps it (`GET /sandbox/transactions/{out_trade_no}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimTransaction {
    pub appid: String,
    pub mchid: String,
    pub out_trade_no: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    pub notify_url: String,
    /// The amount of the order, in fen.
    pub amount_total: i64,
    pub currency: String,
    pub payer_openid: String,
    /// As the merchant sent it; absent means WeChat Pay's default of 7 days.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    /// The instant after which the user can no longer pay.
    pub payable_until: String,
    pub prepay_id: String,
    pub created_at: String,
    pub trade_state: TradeState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    /// The amount charged; differs from `amount_total` when a payment overrode it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_total: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
    /// Every transaction_id this order was paid with (more than one only when forced).
    pub transaction_ids: Vec<String>,
}

/// One attempt to deliver a notification (`GET /sandbox/notifications`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryAttempt {
    /// 1, 2, ... across all of the order's notifications, its refunds' included.
    pub attempt: u32,
    pub notification_id: String,
    /// `TRANSACTION.SUCCESS`, or `REFUND.SUCCESS` / `REFUND.CLOSED` / `REFUND.ABNORMAL`.
    pub event_type: String,
    /// 0: the first delivery (with its concurrent copies); n: the n-th retry of the schedule.
    pub round: u32,
    /// When it was sent, RFC 3339 at +08:00 with milliseconds.
    pub at: String,
    /// The merchant's HTTP status; `None` when no answer came (connection error, timeout).
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// Where one notification stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotificationStatus {
    pub notification_id: String,
    /// `TRANSACTION.SUCCESS` or `REFUND.*`.
    pub event_type: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub attempts: u32,
    /// Some attempt got 200 or 204.
    pub acknowledged: bool,
    /// No attempt is in flight or scheduled any more (acknowledged, or the schedule ended).
    pub finished: bool,
}

/// A validated JSAPI prepay request.
#[derive(Debug, Clone)]
pub(crate) struct NewOrder {
    pub(crate) appid: String,
    pub(crate) mchid: String,
    pub(crate) description: String,
    pub(crate) out_trade_no: String,
    pub(crate) time_expire: Option<(String, OffsetDateTime)>,
    pub(crate) attach: Option<String>,
    pub(crate) notify_url: String,
    pub(crate) amount_total: i64,
    pub(crate) currency: String,
    pub(crate) payer_openid: String,
    /// The whole request body: "identical parameters" compares these.
    pub(crate) request: serde_json::Value,
}

/// What it takes to deliver one notification.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryJob {
    pub(crate) out_trade_no: String,
    pub(crate) notification_id: String,
    pub(crate) notify_url: String,
    /// The notification's `create_time`: when the payment succeeded or the refund settled.
    pub(crate) create_time: String,
    /// What to seal into the resource.
    pub(crate) resource: NoticeResource,
    pub(crate) copies: u32,
}

/// The plaintext of a notification and what kind it is.
#[derive(Debug, Clone)]
pub(crate) enum NoticeResource {
    /// A serialized `Transaction`: `TRANSACTION.SUCCESS`.
    Transaction(Vec<u8>),
    /// A serialized `RefundNotice` of a refund that reached `status` (SUCCESS, CLOSED or
    /// ABNORMAL): `REFUND.<status>`.
    Refund {
        status: RefundState,
        notice_json: Vec<u8>,
    },
}

impl DeliveryJob {
    /// The notification to sign and seal; `None` only for a refund status WeChat Pay does not
    /// notify (never queued).
    pub(crate) fn draft(&self) -> Option<NotificationDraft<'_>> {
        match &self.resource {
            NoticeResource::Transaction(json) => Some(NotificationDraft::transaction_success(
                &self.notification_id,
                &self.create_time,
                json,
            )),
            NoticeResource::Refund {
                status,
                notice_json,
            } => NotificationDraft::refund(
                &self.notification_id,
                &self.create_time,
                status,
                notice_json,
            ),
        }
    }

    pub(crate) fn event_type(&self) -> String {
        self.draft()
            .map_or_else(String::new, |d| d.event_type.to_owned())
    }
}

/// A refund as WeChat Pay answers for it (create and query refund, reference
/// `wechatpay-refunds-bills.md` section 1.4); `POST /sandbox/refunds/{out_refund_no}`
/// answers it too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimRefund {
    pub refund_id: String,
    pub out_refund_no: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    pub channel: String,
    pub user_received_account: String,
    /// Only once SUCCESS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    pub create_time: String,
    pub status: RefundState,
    pub funds_account: String,
    pub amount: SimRefundAmount,
}

/// The refund object's `amount`, in fen (no coupons in the simulator: payer = settlement =
/// the whole amount).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimRefundAmount {
    pub total: i64,
    pub refund: i64,
    pub payer_total: i64,
    pub payer_refund: i64,
    pub settlement_total: i64,
    pub settlement_refund: i64,
    pub discount_refund: i64,
    pub currency: String,
}

/// A validated create-refund request.
#[derive(Debug, Clone)]
pub(crate) struct NewRefund {
    pub(crate) out_trade_no: Option<String>,
    pub(crate) transaction_id: Option<String>,
    pub(crate) out_refund_no: String,
    pub(crate) notify_url: Option<String>,
    pub(crate) refund: i64,
    pub(crate) total: i64,
}

/// The refund-related rules that are settings of the simulator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefundRules {
    /// Least time between two accepted refunds of one order (WeChat Pay: 1 minute).
    pub(crate) spacing: Duration,
}

struct Refund {
    view: SimRefund,
    /// The request's, else the order's (standing in for the merchant platform's setting).
    notify_url: String,
    mchid: String,
}

struct Order {
    view: SimTransaction,
    request: serde_json::Value,
    payable_until: OffsetDateTime,
    prepay_issued_at: OffsetDateTime,
    /// The transaction of the latest payment, kept as notified.
    paid: Option<Transaction>,
    /// When the order's latest refund was accepted (WeChat Pay spaces them a minute apart).
    last_refund_at: Option<OffsetDateTime>,
}

#[derive(Default)]
pub(crate) struct Store {
    orders: HashMap<String, Order>,
    /// out_trade_no in creation order.
    created: Vec<String>,
    /// Each payment as WeChat Pay answers for it by transaction_id.
    payments: HashMap<String, Transaction>,
    /// Every accepted refund by out_refund_no (unique per merchant).
    refunds: HashMap<String, Refund>,
    pub(crate) faults: Vec<Fault>,
    attempts: HashMap<String, Vec<DeliveryAttempt>>,
    next_attempt: HashMap<String, u32>,
    notifications: Vec<NotificationStatus>,
    /// Delivery runs in progress per notification id (a redelivery may overlap the first).
    active_deliveries: HashMap<String, u32>,
    /// Trade bills handed out and awaiting their download.
    pub(crate) bills: BillStore,
}

const TRANSACTION_SUCCESS: &str = "TRANSACTION.SUCCESS";

/// `trade_state_desc` of REFUND.
const REFUND_DESC: &str = "转入退款";

/// WeChat Pay's limit of partial refunds per order.
const MAX_REFUNDS_PER_ORDER: usize = 50;

fn order_not_exist() -> ApiError {
    ApiError::new(404, "ORDER_NOT_EXIST", "订单不存在")
}

fn order_paid() -> ApiError {
    ApiError::new(400, "ORDERPAID", "订单已支付")
}

fn order_closed() -> ApiError {
    ApiError::new(400, "ORDER_CLOSED", "订单已关闭")
}

impl Store {
    /// Creates the order, or answers a repeat of it (WeChat Pay's re-entry rules, reference
    /// section 4.1): identical parameters get the current prepay_id, changed ones
    /// OUT_TRADE_NO_USED; a paid or closed order, or one past `time_expire`, cannot be
    /// prepaid again.
    pub(crate) fn prepay(
        &mut self,
        new: NewOrder,
        now: OffsetDateTime,
        min_time_expire_ahead: Duration,
    ) -> Result<String, ApiError> {
        if let Some(order) = self.orders.get_mut(&new.out_trade_no) {
            if order.view.trade_state.is_paid() {
                return Err(ApiError::new(400, "ORDERPAID", "该订单已支付"));
            }
            if order.view.trade_state == TradeState::Closed {
                return Err(ApiError::new(400, "ORDER_CLOSED", "该订单已关闭"));
            }
            if order.request != new.request {
                return Err(ApiError::new(
                    403,
                    "OUT_TRADE_NO_USED",
                    "商户订单号重复: this out_trade_no was ordered with other parameters",
                ));
            }
            if now >= order.payable_until {
                return Err(ApiError::new(
                    403,
                    "TRADE_ERROR",
                    "订单已超过支付结束时间(time_expire), 请使用新的商户订单号",
                ));
            }
            if now - order.prepay_issued_at >= PREPAY_ID_TTL {
                order.view.prepay_id = prepay_id(now);
                order.prepay_issued_at = now;
            }
            return Ok(order.view.prepay_id.clone());
        }

        let payable_until = match &new.time_expire {
            Some((raw, at)) => {
                // Whole seconds, as WeChat Pay writes and compares them: a time_expire of
                // exactly now + the minimum, truncated to the second, is accepted.
                let ahead = i64::try_from(min_time_expire_ahead.as_secs()).unwrap_or(i64::MAX);
                if at.unix_timestamp() < now.unix_timestamp().saturating_add(ahead) {
                    return Err(ApiError::new(
                        400,
                        "PARAM_ERROR",
                        format!(
                            "time_expire must be at least {} s after the order is placed",
                            min_time_expire_ahead.as_secs_f64()
                        ),
                    )
                    .with_detail(serde_json::json!({
                        "field": "/time_expire",
                        "value": raw,
                        "issue": "time_expire is too soon",
                        "location": "body",
                    })));
                }
                *at
            }
            None => now + DEFAULT_PAYABLE_FOR,
        };
        let prepay_id = prepay_id(now);
        let view = SimTransaction {
            appid: new.appid,
            mchid: new.mchid,
            out_trade_no: new.out_trade_no.clone(),
            description: new.description,
            attach: new.attach,
            notify_url: new.notify_url,
            amount_total: new.amount_total,
            currency: new.currency,
            payer_openid: new.payer_openid,
            time_expire: new.time_expire.map(|(raw, _)| raw),
            payable_until: to_wechat(payable_until),
            prepay_id: prepay_id.clone(),
            created_at: to_wechat(now),
            trade_state: TradeState::NotPay,
            transaction_id: None,
            success_time: None,
            paid_total: None,
            closed_at: None,
            transaction_ids: Vec::new(),
        };
        self.created.push(new.out_trade_no.clone());
        self.orders.insert(
            new.out_trade_no,
            Order {
                view,
                request: new.request,
                payable_until,
                prepay_issued_at: now,
                paid: None,
                last_refund_at: None,
            },
        );
        Ok(prepay_id)
    }

    /// Query by out_trade_no: the order as WeChat Pay describes it now.
    pub(crate) fn wechat_view(&self, out_trade_no: &str) -> Option<Transaction> {
        self.orders.get(out_trade_no).map(wechat_view)
    }

    /// What SUCCESS refunds of an order gave back, in fen.
    pub(crate) fn refunded_total(&self, out_trade_no: &str) -> i64 {
        self.refunds
            .values()
            .filter(|r| {
                r.view.out_trade_no == out_trade_no && r.view.status == RefundState::Success
            })
            .map(|r| r.view.amount.refund)
            .sum()
    }

    /// Query by transaction_id: only paid orders have one.
    pub(crate) fn payment(&self, transaction_id: &str) -> Option<Transaction> {
        self.payments.get(transaction_id).cloned()
    }

    /// NOTPAY (or USERPAYING) -> CLOSED; closing a closed order again succeeds too.
    pub(crate) fn close(
        &mut self,
        out_trade_no: &str,
        now: OffsetDateTime,
    ) -> Result<(), ApiError> {
        let order = self
            .orders
            .get_mut(out_trade_no)
            .ok_or_else(order_not_exist)?;
        match &order.view.trade_state {
            TradeState::NotPay => {
                order.view.trade_state = TradeState::Closed;
                order.view.closed_at = Some(to_wechat(now));
                Ok(())
            }
            TradeState::Closed => Ok(()),
            // Closing while the user is entering the password collides with the payment:
            // WeChat Pay answers "too frequent" (reference section 6); query again later.
            TradeState::UserPaying => Err(ApiError::new(
                429,
                "FREQUENCY_LIMITED",
                "你的操作过于频繁，请稍后再试: the user is paying this order",
            )),
            state if state.is_paid() => Err(order_paid()),
            other => Err(ApiError::new(
                400,
                "INVALID_REQUEST",
                format!("an order in state {other} cannot be closed"),
            )),
        }
    }

    /// NOTPAY -> USERPAYING; repeating it is harmless.
    pub(crate) fn set_user_paying(
        &mut self,
        out_trade_no: &str,
    ) -> Result<SimTransaction, ApiError> {
        let order = self
            .orders
            .get_mut(out_trade_no)
            .ok_or_else(order_not_exist)?;
        match &order.view.trade_state {
            TradeState::NotPay | TradeState::UserPaying => {
                order.view.trade_state = TradeState::UserPaying;
                Ok(order.view.clone())
            }
            TradeState::Closed => Err(order_closed()),
            state if state.is_paid() => Err(order_paid()),
            other => Err(ApiError::new(
                400,
                "INVALID_REQUEST",
                format!("an order in state {other} cannot start paying"),
            )),
        }
    }

    /// The user pays: a new transaction_id, SUCCESS, and the notification to deliver.
    pub(crate) fn pay(
        &mut self,
        request: &PayRequest,
        now: OffsetDateTime,
    ) -> Result<(PayOutcome, DeliveryJob), ApiError> {
        let Store {
            orders, payments, ..
        } = self;
        let order = orders
            .get_mut(&request.out_trade_no)
            .ok_or_else(order_not_exist)?;
        if !request.force {
            match &order.view.trade_state {
                TradeState::NotPay | TradeState::UserPaying => {}
                TradeState::Closed => return Err(order_closed()),
                state if state.is_paid() => return Err(order_paid()),
                other => {
                    return Err(ApiError::new(
                        400,
                        "INVALID_REQUEST",
                        format!("an order in state {other} cannot be paid"),
                    ));
                }
            }
            if now >= order.payable_until {
                return Err(ApiError::new(
                    400,
                    "ORDER_EXPIRED",
                    format!(
                        "time_expire {} has passed: the user can no longer pay (send \"force\": true to simulate a payment racing the expiry)",
                        order.view.payable_until
                    ),
                ));
            }
        }
        let amount = request.amount_total.unwrap_or(order.view.amount_total);
        if amount < 1 {
            return Err(ApiError::new(
                400,
                "INVALID_REQUEST",
                "amount_total must be at least 1 (fen)",
            ));
        }

        let transaction_id = loop {
            let id = transaction_id(now);
            if !payments.contains_key(&id) {
                break id;
            }
        };
        let success_time = to_wechat(now);
        order.view.trade_state = TradeState::Success;
        order.view.transaction_id = Some(transaction_id.clone());
        order.view.success_time = Some(success_time.clone());
        order.view.paid_total = Some(amount);
        order.view.transaction_ids.push(transaction_id.clone());
        let transaction = wechat_view(order);
        // A struct of strings and integers always serializes.
        let transaction_json = serde_json::to_vec(&transaction).unwrap_or_default();
        order.paid = Some(transaction.clone());
        payments.insert(transaction_id.clone(), transaction);

        let notification_id = notification_id();
        let job = DeliveryJob {
            out_trade_no: request.out_trade_no.clone(),
            notification_id: notification_id.clone(),
            notify_url: order.view.notify_url.clone(),
            create_time: success_time,
            resource: NoticeResource::Transaction(transaction_json),
            copies: request.deliveries,
        };
        Ok((
            PayOutcome {
                out_trade_no: request.out_trade_no.clone(),
                transaction_id,
                trade_state: TradeState::Success.to_string(),
                amount_total: amount,
                notification_id,
                deliveries: request.deliveries,
            },
            job,
        ))
    }

    /// The latest payment's notification again, under its original notification id.
    pub(crate) fn redelivery(
        &self,
        out_trade_no: &str,
        copies: u32,
    ) -> Result<DeliveryJob, ApiError> {
        let order = self.orders.get(out_trade_no).ok_or_else(order_not_exist)?;
        let (Some(transaction), Some(transaction_id)) = (&order.paid, &order.view.transaction_id)
        else {
            return Err(ApiError::new(
                400,
                "ORDER_NOT_PAID",
                "only a paid order has a payment notification to send",
            ));
        };
        let notification_id = self
            .notifications
            .iter()
            .rev()
            .find(|n| {
                n.out_trade_no == out_trade_no
                    && n.transaction_id == *transaction_id
                    && n.event_type == TRANSACTION_SUCCESS
            })
            .map(|n| n.notification_id.clone())
            .unwrap_or_else(notification_id);
        Ok(DeliveryJob {
            out_trade_no: out_trade_no.to_owned(),
            notification_id,
            notify_url: order.view.notify_url.clone(),
            create_time: transaction.success_time.clone().unwrap_or_default(),
            resource: NoticeResource::Transaction(
                serde_json::to_vec(transaction).unwrap_or_default(),
            ),
            copies,
        })
    }

    pub(crate) fn transaction(&self, out_trade_no: &str) -> Option<SimTransaction> {
        self.orders.get(out_trade_no).map(|o| o.view.clone())
    }

    pub(crate) fn transactions(&self) -> Vec<SimTransaction> {
        self.created
            .iter()
            .filter_map(|no| self.orders.get(no))
            .map(|o| o.view.clone())
            .collect()
    }

    /// Accepts a refund by WeChat Pay's rules (reference `wechatpay-refunds-bills.md`
    /// sections 1.2, 1.3 and 2): a paid order, `amount.total` its total, no more refunded
    /// than paid (CLOSED refunds gave their amount back), at most 50 refunds, and one refund
    /// of an order per `rules.spacing`. The same out_refund_no with the same amounts answers
    /// the existing refund (`false`: nothing new); with others, INVALID_REQUEST. An accepted
    /// refund turns the order's trade_state to REFUND.
    pub(crate) fn create_refund(
        &mut self,
        new: NewRefund,
        now: OffsetDateTime,
        rules: RefundRules,
    ) -> Result<(SimRefund, bool), ApiError> {
        if let Some(existing) = self.refunds.get(&new.out_refund_no) {
            let view = &existing.view;
            let same_order = new
                .out_trade_no
                .as_ref()
                .is_none_or(|no| *no == view.out_trade_no)
                && new
                    .transaction_id
                    .as_ref()
                    .is_none_or(|id| *id == view.transaction_id);
            if !same_order || new.refund != view.amount.refund || new.total != view.amount.total {
                return Err(ApiError::new(
                    400,
                    "INVALID_REQUEST",
                    "订单金额或退款金额与之前请求不一致，请核实后再试: this out_refund_no was \
                     requested with another order or amount",
                ));
            }
            return Ok((view.clone(), false));
        }

        let not_paid = || ApiError::new(404, "RESOURCE_NOT_EXISTS", "订单不存在或未支付");
        let out_trade_no = match (&new.transaction_id, &new.out_trade_no) {
            (Some(id), named) => {
                let payment = self.payments.get(id).ok_or_else(not_paid)?;
                if named.as_ref().is_some_and(|no| *no != payment.out_trade_no) {
                    return Err(ApiError::new(
                        400,
                        "INVALID_REQUEST",
                        "您的请求参数与订单信息不一致: transaction_id and out_trade_no name different orders",
                    ));
                }
                payment.out_trade_no.clone()
            }
            (None, Some(no)) => no.clone(),
            (None, None) => return Err(not_paid()),
        };
        let Store {
            orders,
            payments,
            refunds,
            ..
        } = self;
        let order = orders
            .get_mut(&out_trade_no)
            .filter(|o| o.view.trade_state.is_paid())
            .ok_or_else(not_paid)?;
        let transaction_id = new
            .transaction_id
            .clone()
            .or_else(|| order.view.transaction_id.clone())
            .ok_or_else(not_paid)?;
        // WeChat Pay refunds a payment for a year after it succeeded.
        let paid_at = order
            .view
            .success_time
            .as_deref()
            .and_then(|t| shared::timefmt::parse_rfc3339(t).ok());
        if paid_at.is_some_and(|at| now - at > time::Duration::days(365)) {
            return Err(ApiError::new(
                400,
                "INVALID_REQUEST",
                "订单已超过退款期限: the payment is more than a year old",
            ));
        }
        let paid = order.view.paid_total.unwrap_or(order.view.amount_total);
        if new.total != paid {
            return Err(ApiError::new(
                400,
                "INVALID_REQUEST",
                format!(
                    "您的请求参数与订单信息不一致: amount.total {} is not the order's total {paid}",
                    new.total
                ),
            ));
        }
        let of_order: Vec<&Refund> = refunds
            .values()
            .filter(|r| r.view.out_trade_no == out_trade_no)
            .collect();
        let refunded: i64 = of_order
            .iter()
            .filter(|r| r.view.status != RefundState::Closed)
            .map(|r| r.view.amount.refund)
            .sum();
        if refunded + new.refund > paid {
            return Err(ApiError::new(
                400,
                "INVALID_REQUEST",
                format!(
                    "申请退款金额超过订单可退金额: refund {} exceeds the refundable {} fen (paid {paid}, refunded {refunded})",
                    new.refund,
                    paid - refunded
                ),
            ));
        }
        if of_order.len() >= MAX_REFUNDS_PER_ORDER {
            return Err(ApiError::new(
                400,
                "INVALID_REQUEST",
                format!("同一笔订单最多退款{MAX_REFUNDS_PER_ORDER}次"),
            ));
        }
        if let Some(last) = order.last_refund_at
            && now - last < rules.spacing
        {
            return Err(ApiError::new(
                429,
                "FREQUENCY_LIMITED",
                format!(
                    "该笔退款未受理，请降低频率后重试: refunds of one order must be {} s apart",
                    rules.spacing.as_secs_f64()
                ),
            ));
        }

        let refund_id = loop {
            let id = refund_id(now);
            if !refunds.values().any(|r| r.view.refund_id == id) {
                break id;
            }
        };
        let view = SimRefund {
            refund_id,
            out_refund_no: new.out_refund_no.clone(),
            transaction_id: transaction_id.clone(),
            out_trade_no: out_trade_no.clone(),
            channel: "ORIGINAL".into(),
            user_received_account: "支付用户零钱".into(),
            success_time: None,
            create_time: to_wechat(now),
            status: RefundState::Processing,
            funds_account: "AVAILABLE".into(),
            amount: SimRefundAmount {
                total: paid,
                refund: new.refund,
                payer_total: paid,
                payer_refund: new.refund,
                settlement_total: paid,
                settlement_refund: new.refund,
                discount_refund: 0,
                currency: order.view.currency.clone(),
            },
        };
        refunds.insert(
            new.out_refund_no,
            Refund {
                view: view.clone(),
                notify_url: new
                    .notify_url
                    .unwrap_or_else(|| order.view.notify_url.clone()),
                mchid: order.view.mchid.clone(),
            },
        );
        order.last_refund_at = Some(now);
        order.view.trade_state = TradeState::Refund;
        // Query by transaction_id says REFUND too; the payment notification stays as sent.
        if let Some(payment) = payments.get_mut(&transaction_id) {
            payment.trade_state = TradeState::Refund;
            payment.trade_state_desc = Some(REFUND_DESC.to_owned());
        }
        Ok((view, true))
    }

    /// The refund as WeChat Pay answers for it now.
    /// An ABNORMAL refund sent to another account: PROCESSING again, to settle SUCCESS.
    pub(crate) fn apply_abnormal_refund(
        &mut self,
        refund_id: &str,
        out_refund_no: &str,
    ) -> Result<SimRefund, ApiError> {
        let refund = self
            .refunds
            .get_mut(out_refund_no)
            .filter(|r| r.view.refund_id == refund_id)
            .ok_or_else(|| ApiError::new(404, "RESOURCE_NOT_EXISTS", "退款单不存在"))?;
        if refund.view.status != RefundState::Abnormal {
            return Err(ApiError::new(
                400,
                "INVALID_REQUEST",
                "退款单状态不正确: only an ABNORMAL refund can be applied",
            ));
        }
        refund.view.status = RefundState::Processing;
        refund.view.user_received_account = "商户基本账户".to_owned();
        Ok(refund.view.clone())
    }

    pub(crate) fn refund(&self, out_refund_no: &str) -> Option<SimRefund> {
        self.refunds.get(out_refund_no).map(|r| r.view.clone())
    }

    /// The refund reaches `status` (SUCCESS, CLOSED or ABNORMAL) and its `REFUND.<status>`
    /// notification is due, `copies` at once. A SUCCESS or CLOSED refund is final (409).
    /// `Ok(None)`: `only_if_processing` was asked and the refund had already moved on.
    pub(crate) fn settle_refund(
        &mut self,
        out_refund_no: &str,
        status: RefundState,
        now: OffsetDateTime,
        copies: u32,
        only_if_processing: bool,
    ) -> Result<Option<(SimRefund, DeliveryJob)>, ApiError> {
        let refund = self
            .refunds
            .get_mut(out_refund_no)
            .ok_or_else(|| ApiError::new(404, "RESOURCE_NOT_EXISTS", "退款单不存在"))?;
        if matches!(
            refund.view.status,
            RefundState::Success | RefundState::Closed
        ) {
            return Err(ApiError::new(
                409,
                "REFUND_FINAL",
                format!(
                    "the refund is already {}, a final status",
                    refund.view.status
                ),
            ));
        }
        if only_if_processing && refund.view.status != RefundState::Processing {
            return Ok(None);
        }
        if !matches!(
            status,
            RefundState::Success | RefundState::Closed | RefundState::Abnormal
        ) {
            return Err(ApiError::new(
                400,
                "INVALID_REQUEST",
                "status must be SUCCESS, CLOSED or ABNORMAL",
            ));
        }
        let settled_at = to_wechat(now);
        refund.view.status = status.clone();
        refund.view.success_time = (status == RefundState::Success).then(|| settled_at.clone());
        let view = &refund.view;
        let notice = RefundNotice {
            mchid: refund.mchid.clone(),
            out_trade_no: view.out_trade_no.clone(),
            transaction_id: view.transaction_id.clone(),
            out_refund_no: view.out_refund_no.clone(),
            refund_id: view.refund_id.clone(),
            refund_status: status.clone(),
            success_time: view.success_time.clone(),
            user_received_account: Some(view.user_received_account.clone()),
            amount: RefundAmount {
                refund: view.amount.refund,
                total: view.amount.total,
                payer_total: Some(view.amount.payer_total),
                payer_refund: Some(view.amount.payer_refund),
                currency: None,
            },
        };
        let job = DeliveryJob {
            out_trade_no: view.out_trade_no.clone(),
            notification_id: notification_id(),
            notify_url: refund.notify_url.clone(),
            create_time: settled_at,
            resource: NoticeResource::Refund {
                status,
                // A struct of strings and integers always serializes.
                notice_json: serde_json::to_vec(&notice).unwrap_or_default(),
            },
            copies,
        };
        Ok(Some((view.clone(), job)))
    }

    /// The lines of the Beijing day's trade bill: every payment that succeeded that day
    /// (refunded since or not: the row records the payment) and every refund accepted that
    /// day, with its status now.
    pub(crate) fn bill_entries(&self, date: time::Date) -> Vec<BillEntry> {
        let on_date = |t: Option<&str>| {
            t.and_then(|t| shared::timefmt::parse_rfc3339(t).ok())
                .filter(|at| beijing_date(*at) == date)
        };
        let entry = |order: &Order, at, transaction_id: &str, kind| BillEntry {
            at,
            appid: order.view.appid.clone(),
            mchid: order.view.mchid.clone(),
            transaction_id: transaction_id.to_owned(),
            out_trade_no: order.view.out_trade_no.clone(),
            openid: order.view.payer_openid.clone(),
            description: order.view.description.clone(),
            attach: order.view.attach.clone().unwrap_or_default(),
            kind,
        };
        let payments = self.payments.iter().filter_map(|(transaction_id, p)| {
            let at = on_date(p.success_time.as_deref())?;
            let order = self.orders.get(&p.out_trade_no)?;
            let amount = p
                .amount
                .as_ref()
                .map_or(order.view.amount_total, |a| a.total);
            Some(entry(
                order,
                at,
                transaction_id,
                EntryKind::Payment { amount },
            ))
        });
        let refunds = self.refunds.values().filter_map(|r| {
            let at = on_date(Some(&r.view.create_time))?;
            let order = self.orders.get(&r.view.out_trade_no)?;
            Some(entry(
                order,
                at,
                &r.view.transaction_id,
                EntryKind::Refund {
                    refund_id: r.view.refund_id.clone(),
                    out_refund_no: r.view.out_refund_no.clone(),
                    amount: r.view.amount.refund,
                    status: r.view.status.to_string(),
                },
            ))
        });
        payments.chain(refunds).collect()
    }

    /// Takes the first fault matching the request, using one of its `times`.
    pub(crate) fn take_fault(&mut self, method: &str, path: &str) -> Option<Fault> {
        let index = self.faults.iter().position(|f| {
            path.starts_with(&f.path_prefix)
                && f.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
        })?;
        let fault = self.faults.get_mut(index)?;
        fault.times = fault.times.saturating_sub(1);
        let hit = fault.clone();
        if fault.times == 0 {
            self.faults.remove(index);
        }
        Some(hit)
    }

    /// Registers a notification delivery (first send or a redelivery).
    pub(crate) fn notification_started(&mut self, job: &DeliveryJob, transaction_id: &str) {
        *self
            .active_deliveries
            .entry(job.notification_id.clone())
            .or_insert(0) += 1;
        match self
            .notifications
            .iter_mut()
            .find(|n| n.notification_id == job.notification_id)
        {
            Some(existing) => existing.finished = false,
            None => self.notifications.push(NotificationStatus {
                notification_id: job.notification_id.clone(),
                event_type: job.event_type(),
                out_trade_no: job.out_trade_no.clone(),
                transaction_id: transaction_id.to_owned(),
                attempts: 0,
                acknowledged: false,
                finished: false,
            }),
        }
    }

    /// One delivery run of the notification ended; it is finished once none is left.
    pub(crate) fn notification_finished(&mut self, notification_id: &str) {
        let active = self
            .active_deliveries
            .get_mut(notification_id)
            .map_or(0, |n| {
                *n = n.saturating_sub(1);
                *n
            });
        if active > 0 {
            return;
        }
        self.active_deliveries.remove(notification_id);
        if let Some(n) = self
            .notifications
            .iter_mut()
            .find(|n| n.notification_id == notification_id)
        {
            n.finished = true;
        }
    }

    /// The next attempt number of the order's deliveries.
    pub(crate) fn next_attempt(&mut self, out_trade_no: &str) -> u32 {
        let next = self
            .next_attempt
            .entry(out_trade_no.to_owned())
            .or_insert(0);
        *next += 1;
        *next
    }

    pub(crate) fn record_attempt(&mut self, out_trade_no: &str, attempt: DeliveryAttempt) {
        let acknowledged = matches!(attempt.status, Some(200 | 204));
        if let Some(n) = self
            .notifications
            .iter_mut()
            .find(|n| n.notification_id == attempt.notification_id)
        {
            n.attempts += 1;
            n.acknowledged |= acknowledged;
        }
        let list = self.attempts.entry(out_trade_no.to_owned()).or_default();
        let at = list.partition_point(|a| a.attempt < attempt.attempt);
        list.insert(at, attempt);
    }

    pub(crate) fn deliveries(&self, out_trade_no: &str) -> Vec<DeliveryAttempt> {
        self.attempts.get(out_trade_no).cloned().unwrap_or_default()
    }

    pub(crate) fn notifications(&self, out_trade_no: &str) -> Vec<NotificationStatus> {
        self.notifications
            .iter()
            .filter(|n| n.out_trade_no == out_trade_no)
            .cloned()
            .collect()
    }
}

/// The `Transaction` WeChat Pay answers for the order: everything about the payer and the
/// payment only once paid, like WeChat Pay (reference section 5).
fn wechat_view(order: &Order) -> Transaction {
    let view = &order.view;
    let paid = view.trade_state.is_paid();
    let desc = match &view.trade_state {
        TradeState::Success => "支付成功",
        TradeState::NotPay => "订单未支付",
        TradeState::Closed => "订单已关闭",
        TradeState::UserPaying => "用户支付中（需要输入密码）",
        TradeState::Refund => REFUND_DESC,
        _ => "",
    };
    Transaction {
        appid: view.appid.clone(),
        mchid: view.mchid.clone(),
        out_trade_no: view.out_trade_no.clone(),
        transaction_id: view.transaction_id.clone().filter(|_| paid),
        trade_type: paid.then(|| "JSAPI".to_owned()),
        trade_state: view.trade_state.clone(),
        trade_state_desc: Some(desc.to_owned()),
        bank_type: paid.then(|| "OTHERS".to_owned()),
        attach: view.attach.clone().filter(|_| paid),
        success_time: view.success_time.clone().filter(|_| paid),
        payer: paid.then(|| Payer {
            openid: view.payer_openid.clone(),
        }),
        amount: Some(if paid {
            let total = view.paid_total.unwrap_or(view.amount_total);
            TransactionAmount {
                total,
                payer_total: Some(total),
                currency: Some(view.currency.clone()),
                payer_currency: Some(view.currency.clone()),
            }
        } else {
            TransactionAmount {
                total: view.amount_total,
                payer_total: None,
                currency: None,
                payer_currency: Some(view.currency.clone()),
            }
        }),
        scene_info: None,
        promotion_detail: None,
        request_id: None,
    }
}

/// `wx` + the time at +08:00 + 20 random hex digits: 36 characters, like
/// `wx201410272009395522657a690389285100`.
fn prepay_id(now: OffsetDateTime) -> String {
    format!(
        "wx{}{}",
        compact_time(now),
        random_chars(20, b"0123456789abcdef")
    )
}

/// 28 digits like WeChat Pay's: `4200` + 6 random digits + the date at +08:00 + 10 random
/// digits.
fn transaction_id(now: OffsetDateTime) -> String {
    dated_digits("4200", now, 10)
}

/// 29 digits like WeChat Pay's (`50` or `52` first, reference 1.4): `50` + 6 random
/// digits + the date at +08:00 + 13 random digits.
fn refund_id(now: OffsetDateTime) -> String {
    dated_digits("50", now, 13)
}

/// `prefix` + 6 random digits + the date at +08:00 + `tail` random digits.
fn dated_digits(prefix: &str, now: OffsetDateTime, tail: usize) -> String {
    let t = now.to_offset(CHINA);
    format!(
        "{prefix}{}{:04}{:02}{:02}{}",
        random_chars(6, b"0123456789"),
        t.year(),
        u8::from(t.month()),
        t.day(),
        random_chars(tail, b"0123456789")
    )
}

/// A random UUID-shaped id (36 characters, the length of WeChat Pay's `id` field).
pub(crate) fn notification_id() -> String {
    let hex = random_chars(32, b"0123456789abcdef");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn compact_time(now: OffsetDateTime) -> String {
    let t = now.to_offset(CHINA);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn random_chars(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

/// RFC 3339 at +08:00 with milliseconds, for the delivery log.
pub(crate) fn timestamp_millis(t: OffsetDateTime) -> String {
    let t = t.to_offset(CHINA);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}+08:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// WeChat Pay refunds a payment for a year after it succeeded, not after.
    #[test]
    fn refunds_are_refused_after_a_year() {
        let t = datetime!(2026-12-07 04:00:00 UTC);
        let mut store = Store::default();
        store
            .prepay(
                NewOrder {
                    appid: "wx".into(),
                    mchid: "1900000001".into(),
                    description: "d".into(),
                    out_trade_no: "ORDER-YEAR-1".into(),
                    time_expire: None,
                    attach: None,
                    notify_url: "https://example.com/notify".into(),
                    amount_total: 100,
                    currency: "CNY".into(),
                    payer_openid: "o_alice".into(),
                    request: serde_json::json!({}),
                },
                t,
                Duration::ZERO,
            )
            .unwrap();
        store
            .pay(&super::super::PayRequest::new("ORDER-YEAR-1"), t)
            .unwrap();
        let new = |no: &str| NewRefund {
            out_trade_no: Some("ORDER-YEAR-1".into()),
            transaction_id: None,
            out_refund_no: no.into(),
            notify_url: None,
            refund: 10,
            total: 100,
        };
        let rules = RefundRules {
            spacing: Duration::ZERO,
        };
        let late = store
            .create_refund(new("R-late"), t + time::Duration::days(366), rules)
            .unwrap_err();
        assert_eq!((late.status, late.code.as_str()), (400, "INVALID_REQUEST"));
        assert!(
            store
                .create_refund(new("R-in-time"), t + time::Duration::days(364), rules)
                .is_ok()
        );
    }
}
