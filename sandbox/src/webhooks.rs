//! The sandbox's stand-in for the merchant's webhook endpoint (`WEBHOOK_URL` in
//! `sandbox.env`): it checks each delivery as a careful merchant would, with
//! `shared::webhook::verify` on the raw body, and keeps what arrived so a user or a test can
//! see which events came, how often, and what was refused.
//!
//! `--webhook-fail N` answers 500 to the first N deliveries that verify, so the dispatcher's
//! retries can be watched. Deliveries are kept in memory (the newest [`MAX_KEPT`]).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::http::{ApiError, Request, Response, json};
use shared::webhook::{WebhookSecrets, verify};
use time::OffsetDateTime;

/// Deliveries kept; older ones are dropped first, so a long-running sandbox stays small.
pub const MAX_KEPT: usize = 10_000;

/// How the receiver answered a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Signature good, answered 200.
    Accepted,
    /// Signature good, answered 500 on purpose (`--webhook-fail`).
    Refused,
    /// Missing or bad signature headers (401), or a body that is not the event (400).
    Rejected,
}

/// One delivery as it arrived. For a rejected one, `id`, `type` and `out_trade_no` are what
/// the request claimed, not verified.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// `webhook-id`.
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub out_trade_no: Option<String>,
    /// `webhook-timestamp`, as sent (unix seconds).
    pub timestamp: Option<i64>,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    pub verdict: Verdict,
    /// Whether the receiver answered 2xx.
    pub accepted: bool,
    /// An earlier delivery of this `webhook-id` was already accepted (a redelivery, or a
    /// retry after an acknowledgement that got lost).
    pub duplicate: bool,
    /// The status the receiver answered.
    pub status: u16,
    /// Why it was refused or rejected.
    pub error: Option<String>,
    /// The body parsed as JSON (`null` when it is not JSON).
    pub body: Value,
}

struct State {
    fail_left: u32,
    deliveries: VecDeque<Delivery>,
    accepted_ids: HashSet<String>,
}

/// The receiver behind `POST /sandbox/webhooks` and `GET /sandbox/webhooks`.
pub struct WebhookReceiver {
    secrets: WebhookSecrets,
    state: Mutex<State>,
}

/// `GET /sandbox/webhooks` filters; each one given must match.
#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub out_trade_no: Option<String>,
    pub accepted: Option<bool>,
}

impl Filter {
    fn matches(&self, d: &Delivery) -> bool {
        let same = |want: &Option<String>, got: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| w.is_empty() || got.as_ref() == Some(w))
        };
        same(&self.event_type, &d.event_type)
            && same(&self.out_trade_no, &d.out_trade_no)
            && self.accepted.is_none_or(|a| a == d.accepted)
    }
}

fn header<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

fn text_at(body: &Value, pointer: &str) -> Option<String> {
    body.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

impl WebhookReceiver {
    /// Verifies with `secrets`; answers 500 to the first `fail_first` good deliveries.
    pub fn new(secrets: WebhookSecrets, fail_first: u32) -> Self {
        WebhookReceiver {
            secrets,
            state: Mutex::new(State {
                fail_left: fail_first,
                deliveries: VecDeque::new(),
                accepted_ids: HashSet::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves the records usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `POST /sandbox/webhooks`, checked against the clock.
    pub fn receive(&self, request: &Request) -> Response {
        self.receive_at(request, OffsetDateTime::now_utc())
    }

    /// [`receive`](Self::receive) at `now` (tests).
    pub fn receive_at(&self, request: &Request, now: OffsetDateTime) -> Response {
        let id = header(request, "webhook-id");
        let timestamp = header(request, "webhook-timestamp");
        let signature = header(request, "webhook-signature");
        let body: Value = serde_json::from_slice(request.body()).unwrap_or(Value::Null);
        let mut delivery = Delivery {
            id: id.map(str::to_owned),
            event_type: text_at(&body, "/type"),
            out_trade_no: text_at(&body, "/data/out_trade_no"),
            timestamp: timestamp.and_then(|t| t.parse().ok()),
            received_at: now,
            verdict: Verdict::Rejected,
            accepted: false,
            duplicate: false,
            status: 401,
            error: None,
            body,
        };

        let checked = match (id, timestamp, signature) {
            (Some(id), Some(ts), Some(sig)) => verify(
                &self.secrets,
                id,
                ts,
                sig,
                request.body(),
                now.unix_timestamp(),
            )
            .map_err(|e| e.to_string()),
            _ => Err(
                "webhook-id, webhook-timestamp and webhook-signature headers are required".into(),
            ),
        };
        if let Err(message) = checked {
            return self.reject(delivery, 401, "INVALID_SIGNATURE", message);
        }
        // Signed by us, so a body that is not the event is the dispatcher's bug: refusing it
        // keeps it retried and visible instead of silently accepted.
        if !delivery.body.is_object() {
            return self.reject(
                delivery,
                400,
                "INVALID_BODY",
                "the body is not a JSON object".into(),
            );
        }
        if let Some(body_id) = delivery.body.get("id").and_then(Value::as_str)
            && Some(body_id) != id
        {
            return self.reject(
                delivery,
                400,
                "INVALID_BODY",
                "the body's id differs from webhook-id".into(),
            );
        }

        let mut state = self.state();
        if state.fail_left > 0 {
            state.fail_left -= 1;
            let message = format!(
                "refused on purpose (--webhook-fail), {} more to refuse",
                state.fail_left
            );
            delivery.verdict = Verdict::Refused;
            delivery.status = 500;
            delivery.error = Some(message.clone());
            keep(&mut state, delivery);
            return ApiError::new(500, "SANDBOX_WEBHOOK_FAIL", message).into_response();
        }
        let id = delivery.id.clone().unwrap_or_default();
        delivery.duplicate = !state.accepted_ids.insert(id.clone());
        delivery.verdict = Verdict::Accepted;
        delivery.accepted = true;
        delivery.status = 200;
        let duplicate = delivery.duplicate;
        keep(&mut state, delivery);
        json(200, &json!({ "received": id, "duplicate": duplicate }))
    }

    fn reject(
        &self,
        mut delivery: Delivery,
        status: u16,
        code: &'static str,
        message: String,
    ) -> Response {
        delivery.status = status;
        delivery.error = Some(message.clone());
        keep(&mut self.state(), delivery);
        ApiError::new(status, code, message).into_response()
    }

    /// Good deliveries still to be answered 500 (`--webhook-fail`).
    pub fn refusals_left(&self) -> u32 {
        self.state().fail_left
    }

    /// Every delivery kept, oldest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state().deliveries.iter().cloned().collect()
    }

    /// `GET /sandbox/webhooks?type=&out_trade_no=&accepted=`: the matching deliveries, oldest
    /// first, and how many good deliveries are still to be refused.
    pub fn list(&self, request: &Request) -> Response {
        let filter = match axum::extract::Query::<Filter>::try_from_uri(request.uri()) {
            Ok(q) => q.0,
            Err(e) => {
                return ApiError::new(
                    400,
                    "INVALID_REQUEST",
                    format!("filters are type, out_trade_no and accepted=true|false: {e}"),
                )
                .into_response();
            }
        };
        let state = self.state();
        let deliveries: Vec<&Delivery> = state
            .deliveries
            .iter()
            .filter(|d| filter.matches(d))
            .collect();
        json(
            200,
            &json!({ "deliveries": deliveries, "refusals_left": state.fail_left }),
        )
    }
}

fn keep(state: &mut State, delivery: Delivery) {
    if state.deliveries.len() >= MAX_KEPT {
        state.deliveries.pop_front();
    }
    state.deliveries.push_back(delivery);
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::http::Bytes;
    use shared::webhook::{WebhookSecret, sign};

    fn secrets() -> WebhookSecrets {
        WebhookSecrets::one(WebhookSecret::generate())
    }

    fn event(id: &str, kind: &str, out_trade_no: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "id": id,
            "type": kind,
            "created_at": "2026-11-24T12:31:05+08:00",
            "data": { "out_trade_no": out_trade_no, "amount_total": 1980 },
        }))
        .unwrap()
    }

    fn request(id: &str, ts: i64, signature: &str, body: &[u8]) -> Request {
        http::Request::builder()
            .method("POST")
            .uri("/sandbox/webhooks")
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(Bytes::copy_from_slice(body))
            .unwrap()
    }

    fn signed(secrets: &WebhookSecrets, id: &str, body: &[u8], now: OffsetDateTime) -> Request {
        let ts = now.unix_timestamp();
        request(id, ts, &sign(secrets, id, ts, body), body)
    }

    fn list(receiver: &WebhookReceiver, query: &str) -> (u16, Value) {
        let request = http::Request::builder()
            .uri(format!("/sandbox/webhooks{query}"))
            .body(Bytes::new())
            .unwrap();
        let response = receiver.list(&request);
        let body = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        (response.status().as_u16(), body)
    }

    fn body_of(response: &Response) -> Value {
        serde_json::from_slice(response.body()).unwrap_or(Value::Null)
    }

    #[test]
    fn a_good_signature_is_accepted_and_recorded() {
        let s = secrets();
        let receiver = WebhookReceiver::new(s.clone(), 0);
        let now = OffsetDateTime::now_utc();
        let body = event("evt_A1_paid", "order.paid", "A1");
        let response = receiver.receive_at(&signed(&s, "evt_A1_paid", &body, now), now);
        assert_eq!(response.status(), 200);
        assert_eq!(body_of(&response)["duplicate"], false);

        let (status, listed) = list(&receiver, "");
        assert_eq!(status, 200);
        let d = &listed["deliveries"][0];
        assert_eq!(d["id"], "evt_A1_paid");
        assert_eq!(d["type"], "order.paid");
        assert_eq!(d["out_trade_no"], "A1");
        assert_eq!(d["timestamp"], now.unix_timestamp());
        assert!(d["received_at"].is_string());
        assert_eq!(d["accepted"], true);
        assert_eq!(d["verdict"], "accepted");
        assert_eq!(d["duplicate"], false);
        assert_eq!(d["body"]["data"]["amount_total"], 1980);

        // The same event again: accepted, marked a duplicate.
        let again = receiver.receive_at(&signed(&s, "evt_A1_paid", &body, now), now);
        assert_eq!(body_of(&again)["duplicate"], true);
        assert!(receiver.deliveries()[1].duplicate);
    }

    #[test]
    fn an_empty_or_wrong_signature_is_rejected_with_401() {
        let s = secrets();
        let receiver = WebhookReceiver::new(s.clone(), 0);
        let now = OffsetDateTime::now_utc();
        let ts = now.unix_timestamp();
        let body = event("evt_1", "order.paid", "A1");
        let other = sign(&secrets(), "evt_1", ts, &body);
        let stale_ts = ts - 301;
        let stale = request(
            "evt_1",
            stale_ts,
            &sign(&s, "evt_1", stale_ts, &body),
            &body,
        );
        let tampered = {
            let mut r = signed(&s, "evt_1", &body, now);
            *r.body_mut() = Bytes::from(event("evt_1", "order.paid", "B2"));
            r
        };
        let unsigned = http::Request::builder()
            .method("POST")
            .uri("/sandbox/webhooks")
            .body(Bytes::from(body.clone()))
            .unwrap();
        for r in [
            request("evt_1", ts, "v1,", &body),
            request("evt_1", ts, &other, &body),
            stale,
            tampered,
            unsigned,
        ] {
            let response = receiver.receive_at(&r, now);
            assert_eq!(response.status(), 401);
            assert_eq!(body_of(&response)["code"], "INVALID_SIGNATURE");
        }
        let all = receiver.deliveries();
        assert_eq!(all.len(), 5);
        assert!(
            all.iter()
                .all(|d| d.verdict == Verdict::Rejected && !d.accepted && d.status == 401)
        );
        assert!(
            all[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("no v1 signature"))
        );
    }

    #[test]
    fn a_body_that_is_not_the_signed_event_is_rejected_with_400() {
        let s = secrets();
        let receiver = WebhookReceiver::new(s.clone(), 0);
        let now = OffsetDateTime::now_utc();
        for (id, body) in [
            ("evt_1", b"not json".to_vec()),
            ("evt_1", event("evt_2", "order.paid", "A1")),
        ] {
            let response = receiver.receive_at(&signed(&s, id, &body, now), now);
            assert_eq!(response.status(), 400);
            assert_eq!(body_of(&response)["code"], "INVALID_BODY");
        }
    }

    #[test]
    fn webhook_fail_refuses_the_first_good_deliveries_then_accepts() {
        let s = secrets();
        let receiver = WebhookReceiver::new(s.clone(), 2);
        let now = OffsetDateTime::now_utc();
        let body = event("evt_A1_paid", "order.paid", "A1");
        // A bad signature does not use up a refusal.
        let bad = request("evt_A1_paid", now.unix_timestamp(), "v1,", &body);
        assert_eq!(receiver.receive_at(&bad, now).status(), 401);
        let statuses: Vec<u16> = (0..3)
            .map(|_| {
                receiver
                    .receive_at(&signed(&s, "evt_A1_paid", &body, now), now)
                    .status()
                    .as_u16()
            })
            .collect();
        assert_eq!(statuses, [500, 500, 200]);
        let verdicts: Vec<Verdict> = receiver.deliveries().iter().map(|d| d.verdict).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Rejected,
                Verdict::Refused,
                Verdict::Refused,
                Verdict::Accepted
            ]
        );
        // Refused attempts are not "received", so the accepted one is no duplicate.
        assert!(!receiver.deliveries()[3].duplicate);
        assert_eq!(list(&receiver, "").1["refusals_left"], 0);
    }

    #[test]
    fn filters_by_type_order_and_acceptance() {
        let s = secrets();
        let receiver = WebhookReceiver::new(s.clone(), 0);
        let now = OffsetDateTime::now_utc();
        for (id, kind, no) in [
            ("evt_A1_paid", "order.paid", "A1"),
            ("evt_B2_paid", "order.paid", "B2"),
            ("evt_B2_closed", "order.closed", "B2"),
        ] {
            let body = event(id, kind, no);
            assert_eq!(
                receiver
                    .receive_at(&signed(&s, id, &body, now), now)
                    .status(),
                200
            );
        }
        let bad = event("evt_A1_closed", "order.closed", "A1");
        receiver.receive_at(&request("evt_A1_closed", 1, "v1,", &bad), now);

        let ids = |query: &str| -> Vec<String> {
            let (status, listed) = list(&receiver, query);
            assert_eq!(status, 200, "{query}");
            listed["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap_or_default().to_owned())
                .collect()
        };
        assert_eq!(
            ids(""),
            [
                "evt_A1_paid",
                "evt_B2_paid",
                "evt_B2_closed",
                "evt_A1_closed"
            ]
        );
        assert_eq!(ids("?type=order.paid"), ["evt_A1_paid", "evt_B2_paid"]);
        assert_eq!(ids("?out_trade_no=B2"), ["evt_B2_paid", "evt_B2_closed"]);
        assert_eq!(ids("?type=order.closed&out_trade_no=B2"), ["evt_B2_closed"]);
        assert_eq!(ids("?out_trade_no=A1&accepted=false"), ["evt_A1_closed"]);
        assert_eq!(ids("?type=&out_trade_no="), ids(""));
        assert!(ids("?type=refund.succeeded").is_empty());
        assert_eq!(list(&receiver, "?accepted=maybe").0, 400);
    }

    #[test]
    fn only_the_newest_deliveries_are_kept() {
        let receiver = WebhookReceiver::new(secrets(), 0);
        let now = OffsetDateTime::now_utc();
        for i in 0..(MAX_KEPT + 2) {
            let r = request(&format!("evt_{i}"), 1, "v1,", b"{}");
            receiver.receive_at(&r, now);
        }
        let all = receiver.deliveries();
        assert_eq!(all.len(), MAX_KEPT);
        assert_eq!(all[0].id.as_deref(), Some("evt_2"));
    }
}
