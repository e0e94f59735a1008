//! WeChat's mini-program server side (DESIGN.md section 12), apart from WeChat Pay: the
//! order-shipping API a shipment is uploaded with, and the message push that tells us an
//! order settled.

pub mod push;
pub mod shipping;

pub use shipping::{
    HttpMiniProgram, MiniProgramApi, MiniProgramSettings, WxApiError, WxOrder, upload_body,
    upload_result,
};
