//! Idempotency-Key records for place-order: the record type and the pure decision about what
//! a request that finds an existing record must do. The store persists these records; this
//! module decides, so the rules are unit-tested without DynamoDB.
//!
//! Powertools' pattern with three fixes: the request hash is always compared (also on the
//! record a failed claim returns), completion and release are fenced by an owner token, and an
//! expired lock resumes the order the record already names instead of creating a second one.

use time::{Duration, OffsetDateTime};

use crate::domain::{IdempotencyKey, Openid, OutTradeNo};

/// How long a record is kept (the table's `ttl`): longer than any client retry horizon.
pub const RECORD_TTL: Duration = Duration::hours(24);

/// Lock length when the caller knows no invocation deadline (local HTTP server).
pub const DEFAULT_LOCK: Duration = Duration::seconds(30);

/// Keys are scoped per caller: two users may use the same `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyScope {
    pub openid: Openid,
    pub key: IdempotencyKey,
}

impl IdempotencyScope {
    pub fn new(openid: Openid, key: IdempotencyKey) -> Self {
        Self { openid, key }
    }
}

/// The response a completed request gave, replayed verbatim to a retry. The record keeps
/// the status it was answered with (`response_status`), so a replay is byte for byte the
/// first answer; use cases speak of it as a [`Completion`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status_code: u16,
    /// The JSON body as sent.
    pub body: String,
}

/// What a completed request did, as the use case says it: the edge answers `Created` with
/// 201 and `Existing` with 200, and a replay keeps the first answer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The request created its resource.
    Created,
    /// The request found its resource already settled (an order paid meanwhile).
    Existing,
}

impl Completion {
    pub fn status_code(self) -> u16 {
        match self {
            Completion::Created => 201,
            Completion::Existing => 200,
        }
    }

    /// The completion a stored status stands for.
    pub fn of_status(status_code: u16) -> Completion {
        if status_code == 201 {
            Completion::Created
        } else {
            Completion::Existing
        }
    }
}

impl StoredResponse {
    pub fn new(completion: Completion, body: String) -> Self {
        StoredResponse {
            status_code: completion.status_code(),
            body,
        }
    }

    pub fn completion(&self) -> Completion {
        Completion::of_status(self.status_code)
    }
}

/// A record is either still owned by a running request or done with its response; the enum
/// makes "COMPLETED without a response" unrepresentable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyState {
    InProgress,
    Completed(StoredResponse),
}

impl IdempotencyState {
    pub fn as_str(&self) -> &'static str {
        match self {
            IdempotencyState::InProgress => "IN_PROGRESS",
            IdempotencyState::Completed(_) => "COMPLETED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub scope: IdempotencyScope,
    pub state: IdempotencyState,
    /// Fingerprint of the request body; a retry with another body is refused.
    pub request_hash: String,
    /// Fencing token of the request that holds (or last held) the record.
    pub owner: String,
    /// Every record names its order from the start, so a crashed request can be resumed.
    pub out_trade_no: OutTradeNo,
    /// The owner's invocation deadline: past it, another request may take the record over.
    pub locked_until: OffsetDateTime,
    pub created_at: OffsetDateTime,
    /// Stored as the table's `ttl` (epoch seconds). DynamoDB deletes lazily (days), so expiry
    /// is checked here, never left to TTL.
    pub expires_at: OffsetDateTime,
}

impl IdempotencyRecord {
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.unix_timestamp() < now.unix_timestamp()
    }

    pub fn lock_expired(&self, now: OffsetDateTime) -> bool {
        self.locked_until < now
    }
}

/// What `create_order` writes when it claims a key for a new request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIdempotencyClaim {
    pub scope: IdempotencyScope,
    pub request_hash: String,
    pub owner: String,
    pub locked_until: OffsetDateTime,
    /// The claim may overwrite a record whose `ttl` is before `now`.
    pub now: OffsetDateTime,
}

impl NewIdempotencyClaim {
    pub fn new(
        scope: IdempotencyScope,
        request_hash: impl Into<String>,
        owner: impl Into<String>,
        now: OffsetDateTime,
        locked_until: OffsetDateTime,
    ) -> Self {
        Self {
            scope,
            request_hash: request_hash.into(),
            owner: owner.into(),
            locked_until,
            now,
        }
    }

    /// The record the claim creates for the order `out_trade_no`, at the precision it is
    /// stored with (milliseconds; whole seconds for the `ttl`), so it equals what is read back.
    pub fn record(&self, out_trade_no: &OutTradeNo) -> IdempotencyRecord {
        let expires = (self.now + RECORD_TTL).unix_timestamp();
        IdempotencyRecord {
            scope: self.scope.clone(),
            state: IdempotencyState::InProgress,
            request_hash: self.request_hash.clone(),
            owner: self.owner.clone(),
            out_trade_no: out_trade_no.clone(),
            locked_until: millis(self.locked_until),
            created_at: millis(self.now),
            expires_at: OffsetDateTime::from_unix_timestamp(expires)
                .unwrap_or(self.now + RECORD_TTL),
        }
    }
}

fn millis(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t)
}

/// The lock lasts until the invocation's deadline (Lambda/SCF know it), else [`DEFAULT_LOCK`].
/// A deadline already past still locks for a second, so a claim is never born expired.
pub fn lock_until(deadline: Option<OffsetDateTime>, now: OffsetDateTime) -> OffsetDateTime {
    match deadline {
        Some(d) if d > now => d,
        Some(_) => now + Duration::seconds(1),
        None => now + DEFAULT_LOCK,
    }
}

/// What a request must do about a record that already holds its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Completed with the same request: answer with the stored response.
    Replay(StoredResponse),
    /// Same key, different request: 422 `IDEMPOTENCY_KEY_REUSED`.
    Reused,
    /// Another request holds the key and may still finish: 409 `IDEMPOTENCY_KEY_IN_USE`.
    InProgress { retry_after_secs: u64 },
    /// Its owner died mid-way: take the record over and resume this order (same out_trade_no).
    TakeOver { out_trade_no: OutTradeNo },
    /// Past its `ttl` but not yet deleted: the key is free, claim it anew.
    Expired,
}

/// Decides from a record read anywhere (a failed claim's ALL_OLD item, a read, a lost
/// take-over). The hash is compared before anything else but expiry: a key reused with another
/// body is an error even while the first request runs.
pub fn decide(existing: &IdempotencyRecord, request_hash: &str, now: OffsetDateTime) -> Decision {
    if existing.is_expired(now) {
        return Decision::Expired;
    }
    if existing.request_hash != request_hash {
        return Decision::Reused;
    }
    match &existing.state {
        IdempotencyState::Completed(response) => Decision::Replay(response.clone()),
        IdempotencyState::InProgress if existing.lock_expired(now) => Decision::TakeOver {
            out_trade_no: existing.out_trade_no.clone(),
        },
        IdempotencyState::InProgress => {
            let left = existing.locked_until - now;
            // Round up: "retry in 0 s" would invite a busy loop.
            let secs = left.whole_seconds() + i64::from(left.subsec_nanoseconds() > 0);
            Decision::InProgress {
                retry_after_secs: secs.max(1).unsigned_abs(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-24 04:00:00 UTC);

    fn record(state: IdempotencyState, locked_until: OffsetDateTime) -> IdempotencyRecord {
        let claim = NewIdempotencyClaim::new(
            IdempotencyScope::new(
                Openid::parse("o_alice").unwrap(),
                IdempotencyKey::parse("k-1").unwrap(),
            ),
            "hash-a",
            "owner-1",
            NOW - Duration::minutes(1),
            locked_until,
        );
        let mut r = claim.record(&OutTradeNo::parse("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P").unwrap());
        r.state = state;
        r
    }

    fn done() -> IdempotencyState {
        IdempotencyState::Completed(StoredResponse {
            status_code: 201,
            body: r#"{"out_trade_no":"x"}"#.into(),
        })
    }

    #[test]
    fn completed_same_hash_replays_the_stored_response() {
        let r = record(done(), NOW - Duration::seconds(30));
        match decide(&r, "hash-a", NOW) {
            Decision::Replay(resp) => {
                assert_eq!(resp.status_code, 201);
                assert_eq!(resp.body, r#"{"out_trade_no":"x"}"#);
            }
            other => panic!("expected replay, got {other:?}"),
        }
    }

    #[test]
    fn another_hash_is_reused_whatever_the_state() {
        let locked = record(IdempotencyState::InProgress, NOW + Duration::seconds(10));
        let stale = record(IdempotencyState::InProgress, NOW - Duration::seconds(10));
        let completed = record(done(), NOW - Duration::seconds(10));
        for r in [locked, stale, completed] {
            assert_eq!(decide(&r, "hash-b", NOW), Decision::Reused, "{:?}", r.state);
        }
    }

    #[test]
    fn live_lock_is_in_progress_with_rounded_up_retry_after() {
        let r = record(
            IdempotencyState::InProgress,
            NOW + Duration::milliseconds(2_100),
        );
        assert_eq!(
            decide(&r, "hash-a", NOW),
            Decision::InProgress {
                retry_after_secs: 3
            }
        );
        // A lock ending exactly now is not yet expired (take-over needs locked_until < now).
        let edge = record(IdempotencyState::InProgress, NOW);
        assert_eq!(
            decide(&edge, "hash-a", NOW),
            Decision::InProgress {
                retry_after_secs: 1
            }
        );
    }

    #[test]
    fn expired_lock_resumes_the_same_order() {
        let r = record(
            IdempotencyState::InProgress,
            NOW - Duration::milliseconds(1),
        );
        assert_eq!(
            decide(&r, "hash-a", NOW),
            Decision::TakeOver {
                out_trade_no: r.out_trade_no.clone()
            }
        );
    }

    #[test]
    fn past_ttl_is_expired_even_with_another_hash() {
        let r = record(done(), NOW - Duration::seconds(30));
        let later = r.expires_at + Duration::seconds(1);
        assert_eq!(decide(&r, "hash-b", later), Decision::Expired);
        assert_eq!(decide(&r, "hash-a", later), Decision::Expired);
        // Still valid in its last second.
        assert!(matches!(
            decide(&r, "hash-a", r.expires_at),
            Decision::Replay(_)
        ));
    }

    #[test]
    fn claim_record_lives_24_hours_and_names_its_order() {
        let r = record(IdempotencyState::InProgress, NOW);
        assert_eq!(r.expires_at - r.created_at, Duration::hours(24));
        assert_eq!(r.state.as_str(), "IN_PROGRESS");
        assert_eq!(done().as_str(), "COMPLETED");
    }

    #[test]
    fn claim_record_has_stored_precision() {
        let now = datetime!(2026-11-24 04:00:00.123456789 UTC);
        let claim = NewIdempotencyClaim::new(
            IdempotencyScope::new(
                Openid::parse("o_alice").unwrap(),
                IdempotencyKey::parse("k-1").unwrap(),
            ),
            "h",
            "o",
            now,
            now + Duration::milliseconds(1500),
        );
        let r = claim.record(&OutTradeNo::parse("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P").unwrap());
        assert_eq!(r.created_at, datetime!(2026-11-24 04:00:00.123 UTC));
        assert_eq!(r.locked_until, datetime!(2026-11-24 04:00:01.623 UTC));
        assert_eq!(r.expires_at, datetime!(2026-11-25 04:00:00 UTC));
    }

    #[test]
    fn lock_follows_the_deadline() {
        let deadline = NOW + Duration::seconds(12);
        assert_eq!(lock_until(Some(deadline), NOW), deadline);
        assert_eq!(lock_until(None, NOW), NOW + DEFAULT_LOCK);
        assert_eq!(
            lock_until(Some(NOW - Duration::seconds(1)), NOW),
            NOW + Duration::seconds(1)
        );
    }
}
