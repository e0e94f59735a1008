//! WeChat's mini-program server side (DESIGN.md section 12), apart from WeChat Pay: the
//! message push that tells us an order settled. Shipping uploads and the access token join
//! it as mp-push and the shipments route land.

pub mod push;
