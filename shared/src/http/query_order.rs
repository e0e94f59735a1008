//! `GET /orders/{out_trade_no}`, `GET /orders` and `POST /orders/{out_trade_no}/close` at
//! the edge: who is calling, the path and query string, the order as its owner sees it, and
//! the one mapping of query-order's errors.

use async_trait::async_trait;
use serde::Serialize;

use super::{
    ApiError, Handler, Request, Response,
    identity::{IdentitySettings, caller},
    json,
};
use crate::{
    domain::{Order, OrderLine, OrderStatus, OutTradeNo},
    service::{
        CloseError, DEFAULT_LIST_LIMIT, Deps, MAX_LIST_LIMIT, OrderView, QueryError, close_order,
        list_orders, query_order,
    },
    store::Cursor,
    timefmt::to_wechat,
    wechatpay::sign::PayParams,
};

pub struct QueryOrderHandler {
    pub deps: Deps,
    pub identity: IdentitySettings,
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        match e {
            QueryError::NotFound => ApiError::new(404, "ORDER_NOT_FOUND", "no such order"),
            QueryError::BadCursor(_) => ApiError::new(
                400,
                "INVALID_REQUEST",
                "cursor is not one this listing returned",
            ),
            QueryError::Store(ref s) if s.retryable() => ApiError::new(
                503,
                "STORE_UNAVAILABLE",
                "the order store is unavailable; retry",
            ),
            QueryError::Store(_) => ApiError::new(500, "INTERNAL", "internal error"),
        }
    }
}

/// An order in a response: times at `+08:00` like place-order's `expire_at`.
#[derive(Debug, Serialize)]
pub struct OrderBody<'a> {
    pub out_trade_no: &'a str,
    pub status: OrderStatus,
    pub amount_total: i64,
    pub currency: &'a str,
    pub description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach: Option<&'a str>,
    pub lines: &'a [OrderLine],
    pub created_at: String,
    pub expire_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<&'a str>,
    /// What refunds gave back, in fen (absent while nothing is refunded).
    #[serde(skip_serializing_if = "is_zero")]
    pub refunded_total: i64,
}

fn is_zero(fen: &i64) -> bool {
    *fen == 0
}

impl<'a> From<&'a Order> for OrderBody<'a> {
    fn from(o: &'a Order) -> Self {
        OrderBody {
            out_trade_no: o.out_trade_no.as_str(),
            status: o.status,
            amount_total: o.amount_total.fen(),
            currency: &o.currency,
            description: &o.description,
            attach: o.attach.as_deref(),
            lines: &o.lines,
            created_at: to_wechat(o.created_at),
            expire_at: to_wechat(o.expire_at),
            paid_at: o.paid_at.map(to_wechat),
            transaction_id: o.transaction_id.as_deref(),
            refunded_total: o.refunded_total.fen(),
        }
    }
}

#[derive(Serialize)]
struct ViewBody<'a> {
    #[serde(flatten)]
    order: OrderBody<'a>,
    synced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pay_params: Option<&'a PayParams>,
}

#[derive(Serialize)]
struct ListBody<'a> {
    orders: Vec<OrderBody<'a>>,
    next_cursor: Option<&'a str>,
}

/// `limit` and `cursor` of `GET /orders`; anything else in the query string is ignored.
pub(crate) fn list_params(query: Option<&str>) -> Result<(u32, Option<Cursor>), ApiError> {
    let mut limit = DEFAULT_LIST_LIMIT;
    let mut cursor = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "limit" => {
                limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::new(
                            400,
                            "INVALID_REQUEST",
                            format!("limit must be a number from 1 to {MAX_LIST_LIMIT}"),
                        )
                    })?;
            }
            "cursor" if !value.is_empty() => cursor = Some(Cursor::new(value)),
            _ => {}
        }
    }
    Ok((limit, cursor))
}

impl From<CloseError> for ApiError {
    fn from(e: CloseError) -> ApiError {
        match e {
            CloseError::NotFound => QueryError::NotFound.into(),
            CloseError::Paid(_) => ApiError::new(409, "ORDER_PAID", "the order is paid"),
            CloseError::UserPaying => ApiError::new(
                409,
                "ORDER_PAYING",
                "the user is paying this order at WeChat Pay; try again shortly",
            )
            .with_header("retry-after", "5"),
            CloseError::PaymentProvider(m) => ApiError::new(
                502,
                "PAYMENT_PROVIDER_ERROR",
                format!("WeChat Pay could not close the order: {m}"),
            ),
            CloseError::Store(s) => QueryError::Store(s).into(),
        }
    }
}

impl QueryOrderHandler {
    async fn close(&self, request: &Request, out_trade_no: &str) -> Result<Response, ApiError> {
        let openid = caller(request, &self.identity)?;
        let out_trade_no =
            OutTradeNo::parse(out_trade_no).map_err(|_| ApiError::from(QueryError::NotFound))?;
        let order = close_order(&self.deps, &openid, &out_trade_no).await?;
        tracing::info!(%out_trade_no, status = order.status.as_str(), outcome = "closed", "order closed by its owner");
        Ok(json(
            200,
            &ViewBody {
                order: OrderBody::from(&order),
                synced: true,
                pay_params: None,
            },
        ))
    }

    async fn view(&self, request: &Request, out_trade_no: &str) -> Result<Response, ApiError> {
        let openid = caller(request, &self.identity)?;
        // A malformed number cannot be anyone's order: the same 404 as someone else's.
        let out_trade_no =
            OutTradeNo::parse(out_trade_no).map_err(|_| ApiError::from(QueryError::NotFound))?;
        let OrderView {
            order,
            synced,
            pay_params,
        } = query_order(&self.deps, &openid, &out_trade_no).await?;
        tracing::info!(
            %out_trade_no,
            transaction_id = order.transaction_id.as_deref().unwrap_or(""),
            status = order.status.as_str(),
            synced,
            outcome = "answered",
            "order queried"
        );
        Ok(json(
            200,
            &ViewBody {
                order: OrderBody::from(&order),
                synced,
                pay_params: pay_params.as_ref(),
            },
        ))
    }

    async fn list(&self, request: &Request) -> Result<Response, ApiError> {
        let openid = caller(request, &self.identity)?;
        let (limit, cursor) = list_params(request.uri().query())?;
        let page = list_orders(&self.deps, &openid, limit, cursor.as_ref()).await?;
        Ok(json(
            200,
            &ListBody {
                orders: page.items.iter().map(OrderBody::from).collect(),
                next_cursor: page.next.as_ref().map(Cursor::as_str),
            },
        ))
    }
}

#[async_trait]
impl Handler for QueryOrderHandler {
    async fn handle(&self, request: Request) -> Response {
        let path = request.uri().path().trim_end_matches('/').to_owned();
        let result = match path.strip_prefix("/orders") {
            Some("") | Some("/") if request.method() == http::Method::GET => {
                self.list(&request).await
            }
            Some(rest) if rest.starts_with('/') && !rest[1..].contains('/') => {
                if request.method() == http::Method::GET {
                    self.view(&request, &rest[1..]).await
                } else {
                    Err(ApiError::method_not_allowed())
                }
            }
            Some(rest) if rest.starts_with('/') => match rest[1..].split_once('/') {
                Some((no, "close")) if !no.is_empty() && !no.contains('/') => {
                    if request.method() == http::Method::POST {
                        self.close(&request, no).await
                    } else {
                        Err(ApiError::method_not_allowed())
                    }
                }
                _ => Err(ApiError::not_found()),
            },
            Some("") => Err(ApiError::method_not_allowed()),
            _ => Err(ApiError::not_found()),
        };
        result.unwrap_or_else(|e| e.logged("query-order"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_params_default_and_bounds() {
        assert_eq!(list_params(None).unwrap(), (DEFAULT_LIST_LIMIT, None));
        let (limit, cursor) = list_params(Some("limit=45&cursor=abc&x=1")).unwrap();
        assert_eq!((limit, cursor), (45, Some(Cursor::new("abc"))));
        for bad in ["limit=0", "limit=101", "limit=-1", "limit=ten", "limit="] {
            let e = list_params(Some(bad)).unwrap_err();
            assert_eq!((e.status, e.code), (400, "INVALID_REQUEST"), "{bad}");
        }
        assert_eq!(list_params(Some("cursor=")).unwrap().1, None);
    }
}
