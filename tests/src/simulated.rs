//! The WeChat Pay simulator behind the backend's real client (`HttpPayGateway`), set up with
//! the test keys of `testdata/keys`: one fixture for every suite that drives WeChat Pay's
//! flows in process, and a meter of the WeChat Pay calls a use case keeps in flight at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sandbox::{Simulator, SimulatorConfig, SimulatorHandle};
use shared::wechatpay::bill::BillLocation;
use shared::wechatpay::gateway::{PayError, PayGateway, PrepayRequest, PrepayResponse};
use shared::wechatpay::notification::{NotificationError, Transaction, VerifiedNotification};
use shared::wechatpay::refund::{RefundRequest, RefundResult};
use shared::wechatpay::sign::PayParams;
use shared::wechatpay::verify::WechatpayHeaders;
use shared::wechatpay::{ApiV3Key, GatewaySettings, HttpPayGateway, RsaPrivateKey, RsaPublicKey};

pub const APPID: &str = "wxd678efh567hg6787";
pub const MCHID: &str = "1230000109";
pub const MCH_SERIAL: &str = "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB";
pub const PUB_KEY_ID: &str = "PUB_KEY_ID_0114232134912410000000000012345678";
pub const APIV3: &str = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";

/// A PEM of `testdata/keys`.
pub fn test_pem(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../testdata/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("test key")
}

pub fn merchant_key() -> RsaPrivateKey {
    RsaPrivateKey::from_pkcs8_pem(&test_pem("test_merchant_key.pem")).expect("merchant key")
}

pub fn platform_public_key() -> RsaPublicKey {
    RsaPublicKey::from_spki_pem(&test_pem("test_platform_public.pem")).expect("platform key")
}

/// The simulator on a free local port with the test keys, retrying notifications a thousand
/// times faster than WeChat Pay, and settling refunds only when a test says so
/// (`settle_refund`); change a field with `SimulatorConfig { .., ..simulator_config() }`.
pub fn simulator_config() -> SimulatorConfig {
    SimulatorConfig {
        addr: "127.0.0.1:0".parse().expect("address"),
        appid: APPID.into(),
        mchid: MCHID.into(),
        merchant_serial_no: MCH_SERIAL.into(),
        merchant_public_key: merchant_key().public_key(),
        platform_private_key: RsaPrivateKey::from_pkcs8_pem(&test_pem("test_platform_key.pem"))
            .expect("platform private key"),
        public_key_id: PUB_KEY_ID.into(),
        apiv3_key: ApiV3Key::new(APIV3).expect("APIv3 key"),
        app_secret: "sandboxappsecret".into(),
        retry_scale: 0.001,
        min_time_expire_ahead: Duration::from_secs(60),
        delivery_timeout: Duration::from_secs(1),
        refund_delay: Duration::from_secs(3600),
        refund_spacing: Duration::from_secs(60),
        certificates: Vec::new(),
        shipping_index_lag: Duration::ZERO,
        push: None,
    }
}

pub async fn start_simulator(config: SimulatorConfig) -> SimulatorHandle {
    Simulator::start(config)
        .await
        .expect("WeChat Pay simulator")
}

/// The real client of `sim` (public-key mode), sending `notify_url` with its orders and refunds.
pub fn simulator_gateway(sim: &SimulatorHandle, notify_url: &str) -> HttpPayGateway {
    HttpPayGateway::new(simulator_gateway_settings(sim, notify_url)).expect("WeChat Pay client")
}

/// The settings of [`simulator_gateway`], for a test that changes one.
pub fn simulator_gateway_settings(sim: &SimulatorHandle, notify_url: &str) -> GatewaySettings {
    GatewaySettings {
        api_base: sim.base_url(),
        appid: APPID.into(),
        mchid: MCHID.into(),
        mch_serial_no: MCH_SERIAL.into(),
        mch_private_key: Some(merchant_key()),
        apiv3_key: ApiV3Key::new(APIV3).expect("APIv3 key"),
        public_key: Some((PUB_KEY_ID.into(), platform_public_key())),
        notify_url: Some(notify_url.into()),
        retry: Default::default(),
        certificate_refresh_interval: Duration::from_secs(60),
        certificate_max_age: shared::wechatpay::client::CERTIFICATE_MAX_AGE,
    }
}

/// A gateway passing every call to `inner`, counting the queries (of payments and refunds)
/// in flight at once: what a use case's bounded concurrency looks like from WeChat Pay's side.
pub struct Metered {
    inner: Arc<dyn PayGateway>,
    in_flight: AtomicUsize,
    most: AtomicUsize,
    queries: AtomicUsize,
}

impl Metered {
    pub fn new(inner: Arc<dyn PayGateway>) -> Metered {
        Metered {
            inner,
            in_flight: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            queries: AtomicUsize::new(0),
        }
    }

    /// The most queries that were in flight at one time.
    pub fn most_in_flight(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }

    /// Queries made so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    async fn query<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        // Counted down even when the caller drops the call half-way.
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _leave = Leave(&self.in_flight);
        call.await
    }
}

#[async_trait]
impl PayGateway for Metered {
    async fn jsapi_prepay(&self, request: &PrepayRequest) -> Result<PrepayResponse, PayError> {
        self.inner.jsapi_prepay(request).await
    }
    async fn query_by_out_trade_no(&self, out_trade_no: &str) -> Result<Transaction, PayError> {
        self.query(self.inner.query_by_out_trade_no(out_trade_no))
            .await
    }
    async fn query_by_transaction_id(&self, transaction_id: &str) -> Result<Transaction, PayError> {
        self.query(self.inner.query_by_transaction_id(transaction_id))
            .await
    }
    async fn close(&self, out_trade_no: &str) -> Result<Option<String>, PayError> {
        self.inner.close(out_trade_no).await
    }
    async fn create_refund(&self, request: &RefundRequest) -> Result<RefundResult, PayError> {
        self.inner.create_refund(request).await
    }
    async fn query_refund(&self, out_refund_no: &str) -> Result<RefundResult, PayError> {
        self.query(self.inner.query_refund(out_refund_no)).await
    }
    async fn apply_abnormal_refund(
        &self,
        refund_id: &str,
        out_refund_no: &str,
    ) -> Result<RefundResult, PayError> {
        self.inner
            .apply_abnormal_refund(refund_id, out_refund_no)
            .await
    }
    async fn verify_notification(
        &self,
        headers: &WechatpayHeaders,
        raw_body: &[u8],
        now: i64,
    ) -> Result<VerifiedNotification, NotificationError> {
        self.inner.verify_notification(headers, raw_body, now).await
    }
    async fn trade_bill(&self, bill_date: time::Date) -> Result<BillLocation, PayError> {
        self.inner.trade_bill(bill_date).await
    }
    async fn download_bill(&self, location: &BillLocation) -> Result<Vec<u8>, PayError> {
        self.inner.download_bill(location).await
    }
    fn pay_params(&self, prepay_id: &str, timestamp: i64) -> Result<PayParams, PayError> {
        self.inner.pay_params(prepay_id, timestamp)
    }
}
