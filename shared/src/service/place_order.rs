//! place-order: price the cart from the catalog, reserve stock, create the order and its
//! JSAPI prepay, and answer with the mini-program's pay params, exactly once per
//! `Idempotency-Key` however the client retries (DESIGN.md section 3).
//!
//! DynamoDB calls on the happy path: read the catalog, one transaction (key + order +
//! stock), one transaction (prepay_id + completed key): three, plus one WeChat Pay call.
//! A sharded sku (issue 17) is priced from the catalog cache (no read while it is fresh)
//! and reserved on one of its stock shards, moving to another when that one is short.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Deps;
use crate::{
    domain::{
        IdempotencyKey, Money, Openid, Order, OrderLine, OrderStatus, OutTradeNo, Quantity, SkuId,
        first_shard,
    },
    idempotency::{
        self, Completion, Decision, IdempotencyScope, NewIdempotencyClaim, StoredResponse,
        lock_until,
    },
    store::{CompleteOrderOutcome, CreateOrderOutcome, StoreError, TakeOverOutcome},
    timefmt::to_wechat,
    wechatpay::{
        PayParams,
        gateway::{PayError, PrepayRequest},
    },
};

pub const MAX_LINES: usize = 50;
pub const MAX_DESCRIPTION_BYTES: usize = 127;
pub const MAX_ATTACH_BYTES: usize = 128;

/// A validated cart: what the client may decide (never the price).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlaceOrderInput {
    pub items: Vec<(SkuId, Quantity)>,
    pub description: Option<String>,
    pub attach: Option<String>,
}

#[derive(Deserialize)]
struct Body {
    items: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    attach: Option<String>,
}

impl PlaceOrderInput {
    /// Parses the request body (DESIGN.md section 3's 400 rules). Unknown fields, such as a
    /// client's `amount`, are ignored: the amount comes from the catalog.
    pub fn parse(body: &[u8]) -> Result<Self, PlaceOrderError> {
        let invalid = |m: String| PlaceOrderError::InvalidRequest(m);
        let body: Body = serde_json::from_slice(body)
            .map_err(|e| invalid(format!("body is not the expected JSON: {e}")))?;
        let raw_items = body
            .items
            .ok_or_else(|| invalid("`items` is required".into()))?;
        if raw_items.is_empty() {
            return Err(invalid("`items` must hold at least one line".into()));
        }
        if raw_items.len() > MAX_LINES {
            return Err(invalid(format!(
                "at most {MAX_LINES} lines per order (got {})",
                raw_items.len()
            )));
        }
        let mut seen = HashSet::new();
        let mut items = Vec::with_capacity(raw_items.len());
        for (i, item) in raw_items.iter().enumerate() {
            let sku = item
                .get("sku_id")
                .and_then(|v| v.as_str())
                .ok_or_else(|| invalid(format!("items[{i}].sku_id must be a string")))?;
            let sku_id =
                SkuId::parse(sku).map_err(|e| invalid(format!("items[{i}].sku_id: {e}")))?;
            let quantity = item
                .get("quantity")
                .and_then(|v| v.as_i64())
                .ok_or_else(|| invalid(format!("items[{i}].quantity must be a whole number")))?;
            let quantity =
                Quantity::new(quantity).map_err(|e| invalid(format!("items[{i}].{e}")))?;
            if !seen.insert(sku_id.clone()) {
                return Err(invalid(format!(
                    "sku {sku_id} appears on more than one line"
                )));
            }
            items.push((sku_id, quantity));
        }
        if let Some(d) = &body.description
            && (d.is_empty() || d.len() > MAX_DESCRIPTION_BYTES)
        {
            return Err(invalid(format!(
                "description must be 1-{MAX_DESCRIPTION_BYTES} bytes (got {})",
                d.len()
            )));
        }
        if let Some(a) = &body.attach
            && a.len() > MAX_ATTACH_BYTES
        {
            return Err(invalid(format!(
                "attach must be at most {MAX_ATTACH_BYTES} bytes (got {})",
                a.len()
            )));
        }
        Ok(PlaceOrderInput {
            items,
            description: body.description,
            attach: body.attach,
        })
    }

    /// Fingerprint of the request's meaning (not its bytes): the same cart sent with other
    /// whitespace or an ignored field is the same request.
    pub fn request_hash(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        crate::wechatpay::sha256_hex(&canonical)
    }
}

#[derive(Debug, Clone)]
pub struct PlaceOrderRequest {
    pub openid: Openid,
    pub idempotency_key: IdempotencyKey,
    pub input: PlaceOrderInput,
    /// The invocation deadline: the idempotency lock lasts until then.
    pub deadline: Option<OffsetDateTime>,
}

/// The 201 body of DESIGN.md section 3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedOrder {
    pub out_trade_no: String,
    pub status: OrderStatus,
    pub amount_total: i64,
    pub currency: String,
    pub expire_at: String,
    pub pay_params: PayParams,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceOrderReply {
    /// Created now (or by the first request with this key), or found paid already.
    pub completion: Completion,
    /// The JSON body, byte for byte what a replay returns.
    pub body: String,
    /// True when this is a stored answer to an earlier request with the same key.
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceOrderError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("Idempotency-Key is still being processed by another request")]
    KeyInUse { retry_after_secs: u64 },
    #[error("Idempotency-Key was used with a different request")]
    KeyReused,
    #[error("sku {0} is not in the catalog or not on sale")]
    UnknownSku(SkuId),
    #[error("not enough stock for sku {0}")]
    OutOfStock(SkuId),
    #[error("WeChat Pay: {0}")]
    PaymentProvider(#[from] PayError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

/// Places the order, or resumes/replays the one this key already names.
pub async fn place_order(
    deps: &Deps,
    request: PlaceOrderRequest,
) -> Result<PlaceOrderReply, PlaceOrderError> {
    let now = deps.now();
    let scope = IdempotencyScope::new(request.openid.clone(), request.idempotency_key.clone());
    let request_hash = request.input.request_hash();
    let owner = ulid::Ulid::new().to_string();
    let locked_until = lock_until(request.deadline, now);

    let (mut order, shard_counts) = price(deps, &request, &scope, now).await?;
    // Two rounds at most: a record that expired or vanished between our claim and our look
    // at it frees the key, and the second claim settles it.
    for _ in 0..2 {
        let claim =
            NewIdempotencyClaim::new(scope.clone(), &request_hash, &owner, now, locked_until);
        let record = match create_on_shards(deps, &claim, &mut order, &shard_counts).await? {
            CreateOrderOutcome::Created => {
                return prepay_and_complete(deps, &scope, &owner, order).await;
            }
            CreateOrderOutcome::IdempotencyConflict(record) => record,
            CreateOrderOutcome::OutOfStock { sku_id }
            | CreateOrderOutcome::ShardShort { sku_id, .. } => {
                return Err(PlaceOrderError::OutOfStock(sku_id));
            }
            CreateOrderOutcome::UnknownSku { sku_id } => {
                return Err(PlaceOrderError::UnknownSku(sku_id));
            }
            CreateOrderOutcome::DuplicateOutTradeNo(_) => {
                return Err(PlaceOrderError::Internal(
                    "generated out_trade_no already exists; retry".into(),
                ));
            }
        };
        match idempotency::decide(&record, &request_hash, now) {
            Decision::Replay(stored) => return Ok(replay(stored)),
            Decision::Reused => return Err(PlaceOrderError::KeyReused),
            Decision::InProgress { retry_after_secs } => {
                return Err(PlaceOrderError::KeyInUse { retry_after_secs });
            }
            Decision::Expired => continue,
            Decision::TakeOver { out_trade_no } => {
                match take_over(
                    deps,
                    &scope,
                    &request_hash,
                    &owner,
                    locked_until,
                    now,
                    &out_trade_no,
                )
                .await?
                {
                    Resumed::Order(o) if o.status == OrderStatus::Pending => {
                        return prepay_and_complete(deps, &scope, &owner, *o).await;
                    }
                    // Paid meanwhile: the paid order is the answer, never a second order.
                    Resumed::Order(o) if o.status.is_paid() => {
                        return answer_paid(deps, &scope, &owner, &o).await;
                    }
                    // Closed before anyone got its pay params (its prepay failed, and the
                    // key could not be released then): nobody can pay it, so the key is
                    // freed now and this request places its order afresh.
                    Resumed::Order(o) => {
                        tracing::info!(out_trade_no = %o.out_trade_no, status = o.status.as_str(), outcome = "released", "the key named an order closed unpaid; placing anew");
                        deps.store.release_idempotency(&scope, &owner).await?;
                        continue;
                    }
                    Resumed::Decided(reply) => return reply,
                    Resumed::Gone => continue,
                }
            }
        }
    }
    Err(PlaceOrderError::KeyInUse {
        retry_after_secs: 1,
    })
}

enum Resumed {
    Order(Box<Order>),
    Decided(Result<PlaceOrderReply, PlaceOrderError>),
    /// The record disappeared (released or expired): claim the key anew.
    Gone,
}

/// A request crashed or timed out after creating its order: take its record over and resume
/// the same out_trade_no (a repeated prepay with identical parameters is accepted).
#[allow(clippy::too_many_arguments)]
async fn take_over(
    deps: &Deps,
    scope: &IdempotencyScope,
    request_hash: &str,
    owner: &str,
    locked_until: OffsetDateTime,
    now: OffsetDateTime,
    out_trade_no: &OutTradeNo,
) -> Result<Resumed, PlaceOrderError> {
    match deps
        .store
        .take_over_idempotency(scope, request_hash, owner, locked_until, now)
        .await?
    {
        TakeOverOutcome::Claimed(_) => {}
        TakeOverOutcome::Conflict(record) => {
            // Someone else moved first; their record now decides, never a second takeover.
            let reply = match idempotency::decide(&record, request_hash, now) {
                Decision::Replay(stored) => Ok(replay(stored)),
                Decision::Reused => Err(PlaceOrderError::KeyReused),
                Decision::InProgress { retry_after_secs } => {
                    Err(PlaceOrderError::KeyInUse { retry_after_secs })
                }
                Decision::TakeOver { .. } => Err(PlaceOrderError::KeyInUse {
                    retry_after_secs: 1,
                }),
                Decision::Expired => return Ok(Resumed::Gone),
            };
            return Ok(Resumed::Decided(reply));
        }
        TakeOverOutcome::Missing => return Ok(Resumed::Gone),
    }
    let order = deps.store.get_order(out_trade_no).await?.ok_or_else(|| {
        PlaceOrderError::Internal(format!(
            "idempotency record names missing order {out_trade_no}"
        ))
    })?;
    tracing::info!(out_trade_no = %order.out_trade_no, outcome = "resumed", "resuming an interrupted order");
    Ok(Resumed::Order(Box::new(order)))
}

/// Builds the PENDING order from catalog prices (never the client's), with each line's
/// stock shard count (1: the single counter); a sharded line starts on the shard its
/// request hashes to, so a retry of the same request lands there too.
async fn price(
    deps: &Deps,
    request: &PlaceOrderRequest,
    scope: &IdempotencyScope,
    now: OffsetDateTime,
) -> Result<(Order, Vec<u32>), PlaceOrderError> {
    let skus: Vec<SkuId> = request.input.items.iter().map(|(s, _)| s.clone()).collect();
    let catalog = deps
        .catalog
        .products(deps.store.as_ref(), &skus, now)
        .await?;
    let mut lines = Vec::with_capacity(skus.len());
    let mut shard_counts = Vec::with_capacity(skus.len());
    let scope_key = format!("{}#{}", scope.openid, scope.key);
    for (sku_id, quantity) in &request.input.items {
        let product = catalog
            .get(sku_id)
            .filter(|p| p.active)
            .ok_or_else(|| PlaceOrderError::UnknownSku(sku_id.clone()))?;
        let sharded = product.is_sharded();
        shard_counts.push(if sharded { product.stock_shards } else { 1 });
        lines.push(OrderLine {
            sku_id: sku_id.clone(),
            name: product.name.clone(),
            unit_price: product.price,
            quantity: *quantity,
            stock_shard: sharded.then(|| first_shard(&scope_key, sku_id, product.stock_shards)),
        });
    }
    let description = request
        .input
        .description
        .clone()
        .unwrap_or_else(|| default_description(&lines));
    let order = Order::new_pending(
        OutTradeNo::generate(now),
        request.openid.clone(),
        lines,
        description,
        request.input.attach.clone(),
        now,
        now + deps.settings.order_ttl,
    )
    .map_err(|e| PlaceOrderError::InvalidRequest(format!("order total: {e}")))?;
    if order.amount_total == Money::ZERO {
        return Err(PlaceOrderError::InvalidRequest(
            "order total is 0 fen; WeChat Pay needs at least 1".into(),
        ));
    }
    Ok((order, shard_counts))
}

/// Attempts at creating one order while its sharded lines look for stock: a bound that
/// only a storm at the sale's very end could reach (every round one shard is read empty
/// or some other order took what the check saw).
const SHARD_ATTEMPTS: usize = 32;
/// Short shards a line tries at random before it reads every shard to pick one that can
/// serve it.
const SHARD_GUESSES: usize = 2;
/// Transaction conflicts (another transaction on the same shard) retried on other shards.
const CONFLICT_RETRIES: usize = 6;

/// `create_order`, moving a sharded line whose shard is short (or whose transaction lost a
/// conflict) to another shard, after a jittered pause; a line is OUT_OF_STOCK only when a
/// strongly consistent read of all its shards finds none that can serve it. Every attempt
/// is the whole order transaction, so nothing is written unless every line is reserved.
async fn create_on_shards(
    deps: &Deps,
    claim: &NewIdempotencyClaim,
    order: &mut Order,
    shard_counts: &[u32],
) -> Result<CreateOrderOutcome, PlaceOrderError> {
    let mut short: HashMap<usize, HashSet<u32>> = HashMap::new();
    let mut conflicts = 0;
    for attempt in 0..SHARD_ATTEMPTS {
        if attempt > 0 {
            jitter(conflicts).await;
        }
        let outcome = match deps.store.create_order(claim, order).await {
            Err(StoreError::TransactionConflict { op, message })
                if shard_counts.iter().any(|n| *n > 1) =>
            {
                conflicts += 1;
                if conflicts > CONFLICT_RETRIES {
                    return Err(StoreError::TransactionConflict { op, message }.into());
                }
                // Which item conflicted is not said: every sharded line moves.
                for (i, line) in order.lines.iter_mut().enumerate() {
                    if let Some(shard) = line.stock_shard {
                        line.stock_shard =
                            Some(random_other(shard, shard_counts[i], &HashSet::new()));
                    }
                }
                continue;
            }
            other => other?,
        };
        let CreateOrderOutcome::ShardShort { sku_id, shard } = &outcome else {
            return Ok(outcome);
        };
        let Some(i) = order.lines.iter().position(|l| &l.sku_id == sku_id) else {
            return Ok(outcome);
        };
        let n = shard_counts[i];
        let tried = short.entry(i).or_default();
        tried.insert(*shard);
        let next = if tried.len() <= SHARD_GUESSES && (tried.len() as u32) < n {
            Some(random_other(*shard, n, tried))
        } else {
            able_shard(deps, &order.lines[i], n).await?
        };
        match next {
            Some(next) => order.lines[i].stock_shard = Some(next),
            None => {
                tracing::info!(out_trade_no = %order.out_trade_no, %sku_id, shards = n, outcome = "rejected:out_of_stock", "no stock shard can serve the line");
                return Ok(CreateOrderOutcome::OutOfStock {
                    sku_id: sku_id.clone(),
                });
            }
        }
    }
    Err(StoreError::TransactionConflict {
        op: "TransactWriteItems",
        message: format!(
            "order {} found no stock shard after {SHARD_ATTEMPTS} attempts",
            order.out_trade_no
        ),
    }
    .into())
}

/// A shard of the line's sku that has its quantity now (read strongly consistent), picked
/// at random among those that do; `None`: none does.
async fn able_shard(
    deps: &Deps,
    line: &OrderLine,
    shards: u32,
) -> Result<Option<u32>, PlaceOrderError> {
    let q = i64::from(line.quantity.get());
    let able: Vec<u32> = deps
        .store
        .stock_shards(&line.sku_id, shards)
        .await?
        .into_iter()
        .filter(|s| s.available >= q)
        .map(|s| s.shard)
        .collect();
    Ok(able.get(rand::random_range(0..able.len().max(1))).copied())
}

/// A shard of `0..shards` other than `shard` and the `tried` ones (any other, once all
/// were tried).
fn random_other(shard: u32, shards: u32, tried: &HashSet<u32>) -> u32 {
    let fresh: Vec<u32> = (0..shards)
        .filter(|k| *k != shard && !tried.contains(k))
        .collect();
    match fresh.len() {
        0 => (shard + 1 + rand::random_range(0..shards.max(2) - 1)) % shards.max(1),
        len => fresh[rand::random_range(0..len)],
    }
}

/// A pause before the next attempt: 0-5 ms after a short shard, 5-50 ms once transactions
/// conflicted, so racing orders spread out instead of meeting again.
async fn jitter(conflicts: usize) {
    let ms = if conflicts == 0 {
        rand::random_range(0..=5)
    } else {
        rand::random_range(5..=50)
    };
    if ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// "Name" or "Name 等3件" (WeChat Pay shows it to the payer), cut to 127 bytes on a char boundary.
fn default_description(lines: &[OrderLine]) -> String {
    let first = lines.first().map(|l| l.name.as_str()).unwrap_or("order");
    let mut d = if lines.len() > 1 {
        format!("{first} 等{}件", lines.len())
    } else {
        first.to_owned()
    };
    if d.len() > MAX_DESCRIPTION_BYTES {
        let mut cut = MAX_DESCRIPTION_BYTES;
        while !d.is_char_boundary(cut) {
            cut -= 1;
        }
        d.truncate(cut);
    }
    if d.is_empty() { "order".to_owned() } else { d }
}

fn replay(stored: StoredResponse) -> PlaceOrderReply {
    PlaceOrderReply {
        completion: stored.completion(),
        body: stored.body,
        replayed: true,
    }
}

async fn prepay_and_complete(
    deps: &Deps,
    scope: &IdempotencyScope,
    owner: &str,
    order: Order,
) -> Result<PlaceOrderReply, PlaceOrderError> {
    let prepay = deps
        .gateway
        .jsapi_prepay(&PrepayRequest {
            out_trade_no: order.out_trade_no.to_string(),
            description: order.description.clone(),
            time_expire: to_wechat(order.expire_at),
            attach: order.attach.clone(),
            amount_total: order.amount_total.fen(),
            payer_openid: order.openid.to_string(),
        })
        .await;
    let (prepay_id, prepay_request_id) = match prepay {
        Ok(p) => (p.prepay_id, p.request_id),
        Err(e) => {
            // The client never got pay params, so nobody can pay this out_trade_no: close it,
            // return its stock and free the key so the client can simply try again.
            release_after_refusal(deps, scope, owner, &order, &e).await;
            return Err(PlaceOrderError::PaymentProvider(e));
        }
    };
    let now = deps.now();
    let pay_params = deps.gateway.pay_params(&prepay_id, now.unix_timestamp())?;
    let body = serde_json::to_string(&PlacedOrder {
        out_trade_no: order.out_trade_no.to_string(),
        status: OrderStatus::Pending,
        amount_total: order.amount_total.fen(),
        currency: order.currency.clone(),
        expire_at: to_wechat(order.expire_at),
        pay_params,
    })
    .map_err(|e| PlaceOrderError::Internal(format!("response: {e}")))?;
    let response = StoredResponse::new(Completion::Created, body);
    match deps
        .store
        .complete_order(
            scope,
            owner,
            &order.out_trade_no,
            &prepay_id,
            prepay_request_id.as_deref(),
            &response,
        )
        .await?
    {
        CompleteOrderOutcome::Completed => {}
        // A slower twin took the key over meanwhile; it resumes the same order and prepay_id,
        // so this answer is still right.
        CompleteOrderOutcome::NotOwner => {
            tracing::warn!(out_trade_no = %order.out_trade_no, "idempotency record taken over before completion");
        }
        CompleteOrderOutcome::OrderNotPending(status) if status.is_paid() => {
            let paid = deps.store.get_order(&order.out_trade_no).await?;
            return answer_paid(deps, scope, owner, paid.as_ref().unwrap_or(&order)).await;
        }
        CompleteOrderOutcome::OrderNotPending(status) => {
            return Err(PlaceOrderError::Internal(format!(
                "order {} is {status} before its prepay was recorded",
                order.out_trade_no
            )));
        }
        CompleteOrderOutcome::OrderNotFound => {
            return Err(PlaceOrderError::Internal(format!(
                "order {} vanished before its prepay was recorded",
                order.out_trade_no
            )));
        }
    }
    tracing::info!(
        out_trade_no = %order.out_trade_no,
        amount_total = order.amount_total.fen(),
        outcome = "created",
        "order placed"
    );
    Ok(PlaceOrderReply {
        completion: response.completion(),
        body: response.body,
        replayed: false,
    })
}

/// The answer to a key whose order was paid before this request could answer it: the paid
/// order (200, no pay params: there is nothing left to pay), stored as the key's response so
/// every later retry gets the same.
async fn answer_paid(
    deps: &Deps,
    scope: &IdempotencyScope,
    owner: &str,
    order: &Order,
) -> Result<PlaceOrderReply, PlaceOrderError> {
    let body = serde_json::to_string(&PaidOrder {
        out_trade_no: order.out_trade_no.to_string(),
        status: order.status,
        amount_total: order.amount_total.fen(),
        currency: order.currency.clone(),
        expire_at: to_wechat(order.expire_at),
        transaction_id: order.transaction_id.clone(),
    })
    .map_err(|e| PlaceOrderError::Internal(format!("response: {e}")))?;
    let response = StoredResponse::new(Completion::Existing, body);
    if let crate::store::FencedOutcome::NotOwner(_) = deps
        .store
        .complete_idempotency(scope, owner, &response)
        .await?
    {
        tracing::warn!(out_trade_no = %order.out_trade_no, "idempotency record taken over before completion");
    }
    tracing::info!(out_trade_no = %order.out_trade_no, outcome = "already_paid", "the key's order was paid meanwhile");
    Ok(PlaceOrderReply {
        completion: response.completion(),
        body: response.body,
        replayed: false,
    })
}

/// The body for a key whose order is already paid.
#[derive(Serialize)]
struct PaidOrder {
    out_trade_no: String,
    status: OrderStatus,
    amount_total: i64,
    currency: String,
    expire_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<String>,
}

async fn release_after_refusal(
    deps: &Deps,
    scope: &IdempotencyScope,
    owner: &str,
    order: &Order,
    error: &PayError,
) {
    tracing::warn!(out_trade_no = %order.out_trade_no, error = %error, outcome = "rejected:prepay", "WeChat Pay refused the prepay; releasing the order");
    let now = deps.now();
    if let Err(e) = deps
        .store
        .close(order, "prepay refused by WeChat Pay", now)
        .await
    {
        // The sweeper closes it when it expires; nothing is lost, stock is held until then.
        tracing::error!(out_trade_no = %order.out_trade_no, error = %e, "could not close order after prepay failure");
        return;
    }
    if let Err(e) = deps.store.release_idempotency(scope, owner).await {
        tracing::error!(out_trade_no = %order.out_trade_no, error = %e, "could not release idempotency key");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        match PlaceOrderInput::parse(body.as_bytes()) {
            Err(PlaceOrderError::InvalidRequest(m)) => m,
            other => panic!("expected InvalidRequest for {body}, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_cart_and_ignores_a_client_amount() {
        let i = PlaceOrderInput::parse(
            br#"{"items":[{"sku_id":"sku-1","quantity":2}],"amount":1,"description":"x"}"#,
        )
        .unwrap();
        assert_eq!(i.items.len(), 1);
        assert_eq!(i.items[0].1.get(), 2);
        assert_eq!(i.description.as_deref(), Some("x"));
    }

    #[test]
    fn the_400_rules() {
        assert!(err("not json").contains("JSON"));
        assert!(err("{}").contains("items"));
        assert!(err(r#"{"items":[]}"#).contains("at least one"));
        assert!(err(r#"{"items":[{"sku_id":"a","quantity":0}]}"#).contains("quantity"));
        assert!(err(r#"{"items":[{"sku_id":"a","quantity":1000}]}"#).contains("quantity"));
        assert!(err(r#"{"items":[{"sku_id":"a","quantity":1.5}]}"#).contains("quantity"));
        assert!(err(r#"{"items":[{"sku_id":"a","quantity":"2"}]}"#).contains("quantity"));
        assert!(err(r#"{"items":[{"quantity":1}]}"#).contains("sku_id"));
        assert!(err(r#"{"items":[{"sku_id":"a b","quantity":1}]}"#).contains("sku_id"));
        assert!(
            err(r#"{"items":[{"sku_id":"a","quantity":1},{"sku_id":"a","quantity":2}]}"#)
                .contains("more than one line")
        );
        let many: Vec<String> = (0..51)
            .map(|i| format!(r#"{{"sku_id":"s{i}","quantity":1}}"#))
            .collect();
        assert!(err(&format!(r#"{{"items":[{}]}}"#, many.join(","))).contains("at most 50"));
        let long = "x".repeat(128);
        assert!(
            err(&format!(
                r#"{{"items":[{{"sku_id":"a","quantity":1}}],"description":"{long}"}}"#
            ))
            .contains("description")
        );
        let long = "x".repeat(129);
        assert!(
            err(&format!(
                r#"{{"items":[{{"sku_id":"a","quantity":1}}],"attach":"{long}"}}"#
            ))
            .contains("attach")
        );
    }

    #[test]
    fn request_hash_follows_meaning_not_bytes() {
        let a = PlaceOrderInput::parse(br#"{"items":[{"sku_id":"a","quantity":1}]}"#).unwrap();
        let b = PlaceOrderInput::parse(
            br#"{ "items" : [ {"quantity":1, "sku_id":"a"} ], "amount": 99 }"#,
        )
        .unwrap();
        let c = PlaceOrderInput::parse(br#"{"items":[{"sku_id":"a","quantity":2}]}"#).unwrap();
        assert_eq!(a.request_hash(), b.request_hash());
        assert_ne!(a.request_hash(), c.request_hash());
        assert_eq!(a.request_hash().len(), 64);
    }

    #[test]
    fn default_description_fits_wechat_limits() {
        let line = |name: &str| OrderLine {
            sku_id: SkuId::parse("a").unwrap(),
            name: name.to_owned(),
            unit_price: Money::from_fen(1).unwrap(),
            quantity: Quantity::new(1).unwrap(),
            stock_shard: None,
        };
        assert_eq!(default_description(&[line("Tea")]), "Tea");
        assert_eq!(
            default_description(&[line("Tea"), line("Cup")]),
            "Tea 等2件"
        );
        let long = default_description(&[line(&"茶".repeat(100))]);
        assert!(long.len() <= 127 && long.starts_with('茶'));
    }
}
