//! Domain types of wxpay-orders: orders, their states, money and identifiers.
//!
//! Nothing here knows about HTTP, Lambda, DynamoDB or WeChat Pay's wire format. Values are
//! parsed once at the edge into these newtypes, so code that holds one never re-validates.

mod ids;
mod money;
mod order;
mod status;
pub mod time;

pub use ids::{IdError, IdempotencyKey, Openid, OutTradeNo, SkuId};
pub use money::{Money, MoneyError};
pub use order::{HistoryEntry, Order, OrderLine, Product, Quantity, QuantityError};
pub use status::{OrderStatus, TRANSITIONS, TransitionError};
