//! One port for every function: a `Handler` that dispatches by path to the handlers
//! `shared::app::build` made (as API Gateway does in front of the deployed functions), plus
//! the sandbox-only inspection routes under `/sandbox/`, which read the store directly and
//! are not part of the product API, and the merchant's webhook receiver (`crate::webhooks`),
//! which stands in for the merchant's own server. Dispatch follows one list, [`ENDPOINTS`],
//! which the help and `GET /` print.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};
use shared::domain::{OutTradeNo, Product};
use shared::http::{ApiError, Handler, Request, Response, json};
use shared::store::{Anomaly, Payment, StoreSupport};

use crate::catalog::Catalog;
use crate::webhooks::WebhookReceiver;

/// Says on every inspection answer what it is.
pub const SANDBOX_ONLY: &str =
    "sandbox-only inspection route: reads the store directly; not part of the product API";

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /orders` (other verbs on `/orders` except GET: place-order answers 405).
    PlaceOrder,
    /// `/notify/wechatpay`.
    PaymentCallback,
    /// `GET /orders`, `/orders/{out_trade_no}`, `POST /orders/{out_trade_no}/close`: the
    /// query-order function.
    QueryOrder,
    /// `/sessions` and the two `/.well-known/` documents: the session function.
    Session,
    /// `/merchant/...`: merchant-api (the bearer token of `sandbox.env`).
    MerchantApi,
    /// `/notify/wechat-mp`: mp-push, the mini-program's message push.
    MpPush,
    /// `GET /sandbox/orders/{out_trade_no}`.
    InspectOrder(String),
    /// `GET /sandbox/products`.
    InspectProducts,
    /// `POST /sandbox/webhooks`: a webhook delivery to the sandbox's receiver.
    ReceiveWebhook,
    /// `GET /sandbox/webhooks`: the deliveries it received.
    ListWebhooks,
    /// `GET /` and `GET /sandbox`: what is served here.
    Index,
    NotFound,
}

/// One route of the functions port. [`route`] matches requests against [`ENDPOINTS`], and
/// `sandbox --help`, `serve`'s start-up text and `GET /` print the same list, so what they say
/// is what is served.
pub struct Endpoint {
    pub method: &'static str,
    /// Literal segments, and `{name}` for one non-empty segment.
    pub path: &'static str,
    /// Other methods on this path go to the same function too, which refuses them itself
    /// (405) rather than the router answering 404.
    other_methods: bool,
    pub what: &'static str,
    /// The route, given the `{name}` segment (empty when the path has none).
    to: fn(&str) -> Route,
}

/// Every route of the functions port. The timeout-sweeper has none: the sandbox runs it on
/// an interval (`server.rs`).
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: "POST",
        path: "/sessions",
        other_methods: true,
        what: "session: {\"code\": \"...\"} -> a session token",
        to: |_| Route::Session,
    },
    Endpoint {
        method: "GET",
        path: "/.well-known/jwks.json",
        other_methods: true,
        what: "session: the keys that verify session tokens",
        to: |_| Route::Session,
    },
    Endpoint {
        method: "GET",
        path: "/.well-known/openid-configuration",
        other_methods: true,
        what: "session: the issuer's OpenID metadata",
        to: |_| Route::Session,
    },
    Endpoint {
        method: "POST",
        path: "/orders",
        other_methods: true,
        what: "place-order (needs an Idempotency-Key)",
        to: |_| Route::PlaceOrder,
    },
    Endpoint {
        method: "GET",
        path: "/orders",
        other_methods: false,
        what: "query-order: the caller's orders (?limit=&cursor=)",
        to: |_| Route::QueryOrder,
    },
    Endpoint {
        method: "GET",
        path: "/orders/{out_trade_no}",
        other_methods: true,
        what: "query-order: one order (asks WeChat Pay if PENDING; closes it if expired)",
        to: |_| Route::QueryOrder,
    },
    Endpoint {
        method: "POST",
        path: "/orders/{out_trade_no}/close",
        other_methods: true,
        what: "query-order: the owner gives up an unpaid order",
        to: |_| Route::QueryOrder,
    },
    Endpoint {
        method: "POST",
        path: "/notify/wechatpay",
        other_methods: true,
        what: "payment-callback: WeChat Pay's notifications",
        to: |_| Route::PaymentCallback,
    },
    Endpoint {
        method: "POST",
        path: "/notify/wechat-mp",
        other_methods: true,
        what: "mp-push: the mini-program's message push (settlements; GET verifies the URL)",
        to: |_| Route::MpPush,
    },
    Endpoint {
        method: "POST",
        path: "/merchant/orders/{out_trade_no}/shipments",
        other_methods: true,
        what: "merchant-api: record a shipment and upload it to WeChat (Idempotency-Key)",
        to: |_| Route::MerchantApi,
    },
    Endpoint {
        method: "GET",
        path: "/merchant/orders",
        other_methods: false,
        what: "merchant-api: the order of a WeChat Pay transaction (?transaction_id=)",
        to: |_| Route::MerchantApi,
    },
    Endpoint {
        method: "GET",
        path: "/merchant/orders/{out_trade_no}",
        other_methods: true,
        what: "merchant-api: any order, whole (history, payment, anomalies)",
        to: |_| Route::MerchantApi,
    },
    Endpoint {
        method: "POST",
        path: "/merchant/orders/{out_trade_no}/refunds",
        other_methods: true,
        what: "merchant-api: refund (part of) a paid order (Idempotency-Key)",
        to: |_| Route::MerchantApi,
    },
    Endpoint {
        method: "POST",
        path: "/merchant/orders/{out_trade_no}/close",
        other_methods: true,
        what: "merchant-api: close an unpaid order",
        to: |_| Route::MerchantApi,
    },
    Endpoint {
        method: "POST",
        path: "/merchant/refunds/{out_refund_no}/abnormal-refund",
        other_methods: true,
        what: "merchant-api: an ABNORMAL refund paid to the merchant's bank account instead",
        to: |_| Route::MerchantApi,
    },
    Endpoint {
        method: "GET",
        path: "/merchant/anomalies",
        other_methods: true,
        what: "merchant-api: every anomaly, newest first (?limit=&cursor=)",
        to: |_| Route::MerchantApi,
    },
    Endpoint {
        method: "GET",
        path: "/merchant/refunds/{out_refund_no}",
        other_methods: true,
        what: "merchant-api: one refund (synced with WeChat Pay while processing)",
        to: |_| Route::MerchantApi,
    },
    Endpoint {
        method: "POST",
        path: "/merchant/events/{event_id}/redeliver",
        other_methods: true,
        what: "merchant-api: send an order event to the webhook again (same webhook-id)",
        to: |_| Route::MerchantApi,
    },
    Endpoint {
        method: "POST",
        path: "/merchant/bills/{date}/reconcile",
        other_methods: true,
        what: "merchant-api: reconcile WeChat Pay's trade bill of a Beijing date now; its report",
        to: |_| Route::MerchantApi,
    },
    Endpoint {
        method: "GET",
        path: "/merchant/bills/{date}",
        other_methods: true,
        what: "merchant-api: the stored bill report of a date",
        to: |_| Route::MerchantApi,
    },
    Endpoint {
        method: "GET",
        path: "/sandbox/orders/{out_trade_no}",
        other_methods: false,
        what: "sandbox-only: the stored order, payment, anomalies",
        to: |no| Route::InspectOrder(no.to_owned()),
    },
    Endpoint {
        method: "GET",
        path: "/sandbox/products",
        other_methods: false,
        what: "sandbox-only: the catalog with stock counters",
        to: |_| Route::InspectProducts,
    },
    Endpoint {
        method: "POST",
        path: "/sandbox/webhooks",
        other_methods: false,
        what: "sandbox-only: the merchant's webhook receiver (WEBHOOK_URL; checks the signature)",
        to: |_| Route::ReceiveWebhook,
    },
    Endpoint {
        method: "GET",
        path: "/sandbox/webhooks",
        other_methods: false,
        what: "sandbox-only: webhook deliveries received (?type=&out_trade_no=&accepted=)",
        to: |_| Route::ListWebhooks,
    },
    Endpoint {
        method: "GET",
        path: "/",
        other_methods: false,
        what: "these routes, as JSON",
        to: |_| Route::Index,
    },
    Endpoint {
        method: "GET",
        path: "/sandbox",
        other_methods: false,
        what: "these routes, as JSON",
        to: |_| Route::Index,
    },
];

impl Endpoint {
    /// `Some(segment)` when `path` has this endpoint's shape (the `{name}` segment, or "").
    fn matches<'p>(&self, path: &'p str) -> Option<&'p str> {
        let mut captured = "";
        let mut want = self.path.split('/');
        let mut got = path.split('/');
        loop {
            match (want.next(), got.next()) {
                (None, None) => return Some(captured),
                (Some(w), Some(g)) if w.starts_with('{') && !g.is_empty() => captured = g,
                (Some(w), Some(g)) if w == g => {}
                _ => return None,
            }
        }
    }
}

/// The route of `method path` (trailing slashes ignored, as the handlers ignore them): the
/// endpoint with this method and path, else the function that owns the path for other
/// methods, else [`Route::NotFound`].
pub fn route(method: &http::Method, path: &str) -> Route {
    let path = match path.trim_end_matches('/') {
        "" => "/",
        p => p,
    };
    let find = |accepts: &dyn Fn(&Endpoint) -> bool| {
        ENDPOINTS
            .iter()
            .filter(|e| accepts(e))
            .find_map(|e| e.matches(path).map(e.to))
    };
    find(&|e| e.method == method.as_str())
        .or_else(|| find(&|e| e.other_methods))
        .unwrap_or(Route::NotFound)
}

/// The sandbox's functions behind one port.
pub struct SandboxRouter {
    pub place_order: Arc<dyn Handler>,
    pub payment_callback: Arc<dyn Handler>,
    /// `GET /orders`, `GET /orders/{out_trade_no}`.
    pub query_order: Arc<dyn Handler>,
    /// `POST /sessions` and the discovery documents.
    pub session: Arc<dyn Handler>,
    /// `/merchant/...`.
    pub merchant_api: Arc<dyn Handler>,
    /// `/notify/wechat-mp`.
    pub mp_push: Arc<dyn Handler>,
    // The timeout-sweeper has no route: the sandbox runs it every `--sweep-every` (see
    // `server.rs`).
    /// The store the inspection routes read (the same table the functions use).
    pub store: Arc<dyn StoreSupport>,
    pub catalog: Catalog,
    /// `POST` and `GET /sandbox/webhooks`.
    pub webhooks: Arc<WebhookReceiver>,
}

#[async_trait]
impl Handler for SandboxRouter {
    async fn handle(&self, request: Request) -> Response {
        match route(request.method(), request.uri().path()) {
            Route::PlaceOrder => self.place_order.handle(request).await,
            Route::PaymentCallback => self.payment_callback.handle(request).await,
            Route::QueryOrder => self.query_order.handle(request).await,
            Route::Session => self.session.handle(request).await,
            Route::MerchantApi => self.merchant_api.handle(request).await,
            Route::MpPush => self.mp_push.handle(request).await,
            Route::InspectOrder(no) => self.inspect_order(&no).await,
            Route::InspectProducts => self.inspect_products().await,
            Route::ReceiveWebhook => self.webhooks.receive(&request),
            Route::ListWebhooks => self.webhooks.list(&request),
            Route::Index => index(),
            Route::NotFound => ApiError::not_found().into_response(),
        }
    }
}

fn store_unavailable(e: &shared::store::StoreError) -> Response {
    tracing::warn!(error = %e, "sandbox inspection: store error");
    ApiError::new(503, "STORE_UNAVAILABLE", format!("store error: {e}")).into_response()
}

fn index() -> Response {
    let mut routes: serde_json::Map<String, Value> = ENDPOINTS
        .iter()
        .map(|e| (format!("{} {}", e.method, e.path), Value::from(e.what)))
        .collect();
    routes.insert("timeout-sweeper".into(), Value::from(SWEEPER));
    json(
        200,
        &json!({ "service": "wxpay-orders sandbox", "routes": routes }),
    )
}

/// Where the timeout-sweeper is, since it has no route.
pub const SWEEPER: &str = "no route: runs in-process every --sweep-every seconds, closing expired orders (stock returned) and applying payments whose notification was lost";

impl SandboxRouter {
    async fn inspect_order(&self, out_trade_no: &str) -> Response {
        let not_found = || {
            ApiError::new(
                404,
                "ORDER_NOT_FOUND",
                format!("no order {out_trade_no} in the sandbox's store"),
            )
            .into_response()
        };
        let Ok(no) = OutTradeNo::parse(out_trade_no) else {
            return not_found();
        };
        let order = match self.store.get_order(&no).await {
            Ok(Some(order)) => order,
            Ok(None) => return not_found(),
            Err(e) => return store_unavailable(&e),
        };
        let payment = match &order.transaction_id {
            Some(id) => match self.store.get_payment(id).await {
                Ok(p) => p.map(|p| payment_json(&p)),
                Err(e) => return store_unavailable(&e),
            },
            None => None,
        };
        let anomalies = match self.store.list_anomalies(&no).await {
            Ok(list) => list.iter().map(anomaly_json).collect::<Vec<_>>(),
            Err(e) => return store_unavailable(&e),
        };
        let order = serde_json::to_value(&order).unwrap_or(Value::Null);
        json(
            200,
            &json!({
                "sandbox_only": SANDBOX_ONLY,
                "order": order,
                "payment": payment,
                "anomalies": anomalies,
            }),
        )
    }

    async fn inspect_products(&self) -> Response {
        let products = match self.store.get_products(&self.catalog.sku_ids()).await {
            Ok(p) => p,
            Err(e) => return store_unavailable(&e),
        };
        let in_file_order: Vec<&Product> = self
            .catalog
            .entries
            .iter()
            .filter_map(|e| products.get(&e.sku_id))
            .collect();
        let mut list = Vec::with_capacity(in_file_order.len());
        for p in in_file_order {
            // A sharded sku's units left are its shards' (a display-only sum).
            let shards_left = if p.is_sharded() {
                match self.store.stock_shards(&p.sku_id, p.stock_shards).await {
                    Ok(shards) => Some(shared::domain::available_total(&shards)),
                    Err(e) => return store_unavailable(&e),
                }
            } else {
                None
            };
            list.push(product_json(p, shards_left));
        }
        json(
            200,
            &json!({ "sandbox_only": SANDBOX_ONLY, "products": list }),
        )
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    shared::timefmt::to_wechat(t)
}

fn payment_json(p: &Payment) -> Value {
    json!({
        "transaction_id": p.transaction_id,
        "out_trade_no": p.out_trade_no.as_str(),
        "amount": p.amount.fen(),
        "payer_total": p.payer_total.fen(),
        "success_time": rfc3339(p.success_time),
        "notification_id": p.notification_id,
    })
}

fn anomaly_json(a: &Anomaly) -> Value {
    json!({
        "kind": a.kind.as_str(),
        "at": rfc3339(a.at),
        "transaction_id": a.transaction_id,
        "notification_id": a.notification_id,
        "detail": a.detail,
    })
}

/// A product with its counters; `available` is absent for unlimited stock, and for a
/// sharded sku is `shards_left`, what its shards have left.
pub fn product_json(p: &Product, shards_left: Option<i64>) -> Value {
    let mut v = json!({
        "sku_id": p.sku_id.as_str(),
        "name": p.name,
        "price": p.price.fen(),
        "stock": p.stock,
        "reserved": p.reserved,
        "sold": p.sold,
        "available": shards_left.or(p.available()),
        "active": p.active,
    });
    if p.is_sharded() {
        v["stock_shards"] = json!(p.stock_shards);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn routes() {
        assert_eq!(route(&Method::POST, "/orders"), Route::PlaceOrder);
        assert_eq!(route(&Method::POST, "/orders/"), Route::PlaceOrder);
        assert_eq!(route(&Method::PUT, "/orders"), Route::PlaceOrder);
        assert_eq!(route(&Method::GET, "/orders"), Route::QueryOrder);
        assert_eq!(route(&Method::GET, "/orders/01J"), Route::QueryOrder);
        assert_eq!(
            route(&Method::POST, "/notify/wechatpay"),
            Route::PaymentCallback
        );
        assert_eq!(route(&Method::POST, "/sessions"), Route::Session);
        assert_eq!(
            route(&Method::GET, "/.well-known/jwks.json"),
            Route::Session
        );
        assert_eq!(
            route(&Method::GET, "/sandbox/orders/01J"),
            Route::InspectOrder("01J".into())
        );
        assert_eq!(route(&Method::GET, "/sandbox/orders/"), Route::NotFound);
        assert_eq!(route(&Method::GET, "/sandbox/orders/a/b"), Route::NotFound);
        assert_eq!(route(&Method::POST, "/sandbox/orders/01J"), Route::NotFound);
        assert_eq!(
            route(&Method::GET, "/sandbox/products"),
            Route::InspectProducts
        );
        assert_eq!(
            route(&Method::POST, "/sandbox/webhooks"),
            Route::ReceiveWebhook
        );
        assert_eq!(
            route(&Method::GET, "/sandbox/webhooks"),
            Route::ListWebhooks
        );
        assert_eq!(route(&Method::PUT, "/sandbox/webhooks"), Route::NotFound);
        assert_eq!(route(&Method::GET, "/"), Route::Index);
        assert_eq!(route(&Method::GET, "/ordersx"), Route::NotFound);
        assert_eq!(route(&Method::GET, "/orders/a/b"), Route::NotFound);
        assert_eq!(route(&Method::GET, "/.well-known/other"), Route::NotFound);
        assert_eq!(
            route(&Method::HEAD, "/.well-known/jwks.json"),
            Route::Session
        );
        assert_eq!(route(&Method::DELETE, "/orders/01J"), Route::QueryOrder);
        assert_eq!(
            route(&Method::POST, "/merchant/bills/2026-12-06/reconcile"),
            Route::MerchantApi
        );
        assert_eq!(
            route(&Method::GET, "/merchant/bills/2026-12-06"),
            Route::MerchantApi
        );
        assert_eq!(route(&Method::HEAD, "/sandbox/products"), Route::NotFound);
    }

    /// What the help and `GET /` list is what `route` serves: each endpoint, with a value in
    /// its `{name}` segment, reaches its own function, and no two endpoints are the same.
    #[test]
    fn every_listed_endpoint_is_routed_to_its_function() {
        let mut seen = std::collections::HashSet::new();
        for e in ENDPOINTS {
            assert!(
                seen.insert((e.method, e.path)),
                "{} {} twice",
                e.method,
                e.path
            );
            let path = e
                .path
                .split('/')
                .map(|s| if s.starts_with('{') { "01J" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let captured = if e.path.contains('{') { "01J" } else { "" };
            let method = Method::from_bytes(e.method.as_bytes()).unwrap();
            let got = route(&method, &path);
            assert_ne!(got, Route::NotFound, "{} {path}", e.method);
            assert_eq!(got, (e.to)(captured), "{} {path}", e.method);
        }
    }
}
