//! The shipments use case on Dynoxide with WeChat's mini-program API scripted where the
//! simulator cannot be made to answer on cue: an upload that got no answer is checked with
//! `get_order` before anything is sent again, a final refusal is an anomaly, `TRADE_MANAGED`
//! off uploads nothing, `auto` asks once, and a refunded order ships nothing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use shared::domain::{
    AnomalyKind, IdempotencyKey, Order, OrderStatus, Package, RefundStatus, UploadState,
};
use shared::miniprogram::{MiniProgramApi, WxApiError, WxOrder};
use shared::service::{
    ShipmentError, ShipmentInput, ShipmentReply, ShippingPorts, TradeManaged, record_shipment,
    sweep_uploads,
};
use shared::store::{MarkPaidOutcome, RefundSettleOutcome, Store, StoreSupport};
use wxpay_tests::scripted::{Scripted, scripted_deps};
use wxpay_tests::*;

#[derive(Default)]
struct Wx {
    uploads: Mutex<VecDeque<Result<(), WxApiError>>>,
    orders: Mutex<VecDeque<Result<WxOrder, WxApiError>>>,
    managed: Mutex<VecDeque<Result<bool, WxApiError>>>,
    calls: Mutex<Vec<String>>,
}

impl Wx {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl MiniProgramApi for Wx {
    async fn upload_shipping_info(&self, body: &str) -> Result<(), WxApiError> {
        self.calls.lock().unwrap().push(format!("upload {body}"));
        self.uploads
            .lock()
            .unwrap()
            .pop_front()
            .expect("a scripted upload answer")
    }
    async fn get_order(&self, transaction_id: &str) -> Result<WxOrder, WxApiError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("get_order {transaction_id}"));
        self.orders
            .lock()
            .unwrap()
            .pop_front()
            .expect("a scripted get_order answer")
    }
    async fn is_trade_managed(&self) -> Result<bool, WxApiError> {
        self.calls.lock().unwrap().push("is_trade_managed".into());
        self.managed
            .lock()
            .unwrap()
            .pop_front()
            .expect("a scripted is_trade_managed answer")
    }
}

fn virtual_goods() -> ShipmentInput {
    ShipmentInput {
        logistics_type: "virtual".into(),
        packages: vec![Package {
            tracking_no: None,
            express_company: None,
            item_desc: "会员月卡*1".into(),
            receiver_contact: None,
        }],
        is_all_delivered: true,
    }
}

fn code(errcode: i64) -> WxApiError {
    WxApiError::Code {
        errcode,
        errmsg: "scripted".into(),
    }
}

async fn paid(ctx: &StoreCtx) -> Order {
    let tea = product("tea", 500, None);
    ctx.store
        .put_products(std::slice::from_ref(&tea))
        .await
        .unwrap();
    let o = order("o_buyer", &[(&tea, 2)]);
    ctx.store.create_order(&fresh_claim(&o), &o).await.unwrap();
    let tid = format!("42{}", o.out_trade_no);
    match ctx
        .store
        .mark_paid(&o, &payment(&o, &tid), now_ms())
        .await
        .unwrap()
    {
        MarkPaidOutcome::Applied(o) => *o,
        other => panic!("{other:?}"),
    }
}

fn upload_state(o: &Order) -> Option<UploadState> {
    o.shipping.as_ref()?.upload.as_ref().map(|u| u.state)
}

#[tokio::test]
async fn an_unanswered_upload_is_checked_with_get_order_before_it_is_sent_again() {
    let ctx = StoreCtx::dynoxide("ship_ambiguous").await;
    let deps = scripted_deps(&ctx, Arc::new(Scripted::default()));
    let wx = Arc::new(Wx::default());
    let ports = ShippingPorts::new(Some(wx.clone()), TradeManaged::On);
    let o = paid(&ctx).await;
    wx.uploads
        .lock()
        .unwrap()
        .push_back(Err(WxApiError::Unavailable("timed out".into())));
    let key = IdempotencyKey::parse("ship-amb").unwrap();
    let reply = record_shipment(&deps, &ports, &o.out_trade_no, &key, virtual_goods())
        .await
        .unwrap();
    let ShipmentReply::Uploading(order) = reply else {
        panic!("{reply:?}")
    };
    let upload = order.shipping.as_ref().unwrap().upload.clone().unwrap();
    assert!(upload.ambiguous);
    assert_eq!(upload.last_errcode, None);

    // Due again later: WeChat already shows it shipped, so nothing is sent again.
    let later = order.shipping.as_ref().unwrap().shipped_at + time::Duration::minutes(1);
    let deps = shared::service::Deps {
        clock: Arc::new(move || later),
        ..deps
    };
    wx.orders.lock().unwrap().push_back(Ok(WxOrder {
        transaction_id: order.transaction_id.clone().unwrap(),
        order_state: 2,
    }));
    let summary = sweep_uploads(&deps, &ports, None).await;
    assert_eq!((summary.checked, summary.uploaded), (1, 1), "{summary:?}");
    let calls = wx.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].starts_with("upload "));
    assert!(calls[1].starts_with("get_order "));
    let stored = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(upload_state(&stored), Some(UploadState::Uploaded));
}

#[tokio::test]
async fn a_final_refusal_is_an_anomaly_and_the_shipment_stays() {
    let ctx = StoreCtx::dynoxide("ship_refused").await;
    let deps = scripted_deps(&ctx, Arc::new(Scripted::default()));
    let wx = Arc::new(Wx::default());
    let ports = ShippingPorts::new(Some(wx.clone()), TradeManaged::On);
    let o = paid(&ctx).await;
    wx.uploads.lock().unwrap().push_back(Err(code(10060031)));
    let key = IdempotencyKey::parse("ship-ref").unwrap();
    let reply = record_shipment(&deps, &ports, &o.out_trade_no, &key, virtual_goods())
        .await
        .unwrap();
    let ShipmentReply::Recorded(order) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(order.status, OrderStatus::Shipped);
    assert_eq!(upload_state(&order), Some(UploadState::Failed));
    let anomalies = ctx.store.list_anomalies(&o.out_trade_no).await.unwrap();
    assert_eq!(anomalies.len(), 1);
    assert_eq!(anomalies[0].kind, AnomalyKind::ShippingUploadFailed);
    // Never resent: the sweeper has nothing due.
    let summary = sweep_uploads(&deps, &ports, None).await;
    assert_eq!(summary.checked, 0);
    assert_eq!(wx.calls().len(), 1);
}

#[tokio::test]
async fn trade_management_off_records_the_shipment_and_uploads_nothing() {
    let ctx = StoreCtx::dynoxide("ship_off").await;
    let deps = scripted_deps(&ctx, Arc::new(Scripted::default()));
    let wx = Arc::new(Wx::default());
    let off = ShippingPorts::new(Some(wx.clone()), TradeManaged::Off);
    let o = paid(&ctx).await;
    let key = IdempotencyKey::parse("ship-off").unwrap();
    let reply = record_shipment(&deps, &off, &o.out_trade_no, &key, virtual_goods())
        .await
        .unwrap();
    let ShipmentReply::Recorded(order) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(order.status, OrderStatus::Shipped);
    assert!(order.shipping.as_ref().unwrap().upload.is_none());
    assert!(wx.calls().is_empty());
    // Nothing uploaded, nothing for WeChat to settle: the sweeper never asks about it.
    let later = now_ms() + time::Duration::days(30);
    let deps_later = shared::service::Deps {
        clock: Arc::new(move || later),
        ..deps.clone()
    };
    assert_eq!(sweep_uploads(&deps_later, &off, None).await.checked, 0);
    assert!(wx.calls().is_empty());

    // `auto` asks WeChat once per day and process; not managed uploads nothing.
    let auto = ShippingPorts::new(Some(wx.clone()), TradeManaged::Auto);
    wx.managed.lock().unwrap().push_back(Ok(false));
    for i in 0..2 {
        let o = paid(&ctx).await;
        let key = IdempotencyKey::parse(&format!("ship-auto-{i}")).unwrap();
        let reply = record_shipment(&deps, &auto, &o.out_trade_no, &key, virtual_goods())
            .await
            .unwrap();
        assert!(reply.order().shipping.as_ref().unwrap().upload.is_none());
    }
    assert_eq!(wx.calls(), ["is_trade_managed"]);

    // Without an AppSecret nothing can be uploaded: refused, nothing stored.
    let unconfigured = ShippingPorts::new(None, TradeManaged::On);
    let o = paid(&ctx).await;
    let key = IdempotencyKey::parse("ship-nocfg").unwrap();
    let e = record_shipment(&deps, &unconfigured, &o.out_trade_no, &key, virtual_goods())
        .await
        .unwrap_err();
    assert!(matches!(e, ShipmentError::NotConfigured(_)), "{e:?}");
    assert!(e.to_string().contains("WX_APP_SECRET"));
    let stored = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(stored, o);
}

#[tokio::test]
async fn a_refunded_or_unknown_order_ships_nothing() {
    let ctx = StoreCtx::dynoxide("ship_refunded").await;
    let deps = scripted_deps(&ctx, Arc::new(Scripted::default()));
    let wx = Arc::new(Wx::default());
    let ports = ShippingPorts::new(Some(wx.clone()), TradeManaged::On);
    let o = paid(&ctx).await;
    let refund = shared::domain::Refund::requested(
        shared::domain::OutRefundNo::generate(now_ms()),
        o.out_trade_no.clone(),
        o.amount_total,
        None,
        Vec::new(),
        now_ms(),
    );
    ctx.store.reserve_refund(&o, &refund).await.unwrap();
    let key = IdempotencyKey::parse("ship-r").unwrap();
    // Everything is being refunded: nothing to ship.
    let e = record_shipment(&deps, &ports, &o.out_trade_no, &key, virtual_goods())
        .await
        .unwrap_err();
    assert!(matches!(e, ShipmentError::OrderRefunded), "{e:?}");
    let read = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    let settled = ctx
        .store
        .settle_refund(&read, &refund, RefundStatus::Success, None, None, now_ms())
        .await
        .unwrap();
    assert!(matches!(settled, RefundSettleOutcome::Applied { .. }));
    let e = record_shipment(&deps, &ports, &o.out_trade_no, &key, virtual_goods())
        .await
        .unwrap_err();
    assert!(matches!(e, ShipmentError::OrderRefunded), "{e:?}");
    let unknown = shared::domain::OutTradeNo::generate(now_ms());
    let e = record_shipment(&deps, &ports, &unknown, &key, virtual_goods())
        .await
        .unwrap_err();
    assert!(matches!(e, ShipmentError::OrderNotFound), "{e:?}");
    assert!(wx.calls().is_empty());
}

fn push_message(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn pushes_that_do_not_fit_are_acknowledged_and_kept_as_anomalies() {
    use shared::service::{PushOutcome, handle_push};
    let ctx = StoreCtx::dynoxide("push_edges").await;
    let deps = scripted_deps(&ctx, Arc::new(Scripted::default()));
    let settlement = |tid: &str| {
        push_message(&[
            ("MsgType", "event"),
            ("Event", "trade_manage_order_settlement"),
            ("transaction_id", tid),
            ("settlement_time", "1765000000"),
        ])
    };
    // A settlement for a transaction not in the table: acknowledged, one anomaly.
    let unknown = settlement("4200009999999999");
    for _ in 0..2 {
        assert_eq!(
            handle_push(&deps, &unknown).await.unwrap(),
            PushOutcome::Mismatch
        );
    }
    let page = ctx.store.recent_anomalies(10, None).await.unwrap();
    assert_eq!(page.items.len(), 1, "a replay records nothing new");
    assert_eq!(page.items[0].kind, AnomalyKind::ShippingStateMismatch);
    assert_eq!(page.items[0].out_trade_no, None);

    // Settled at WeChat while PAID here (shipped in the console): the order is untouched.
    let o = paid(&ctx).await;
    let tid = o.transaction_id.clone().unwrap();
    assert_eq!(
        handle_push(&deps, &settlement(&tid)).await.unwrap(),
        PushOutcome::Mismatch
    );
    assert_eq!(
        ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap(),
        o
    );
    let kinds: Vec<AnomalyKind> = ctx
        .store
        .list_anomalies(&o.out_trade_no)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.kind)
        .collect();
    assert_eq!(kinds, [AnomalyKind::ShippingStateMismatch]);

    // Reminders are counted, anything else acknowledged; neither writes.
    let remind = push_message(&[
        ("Event", "trade_manage_remind_shipping"),
        ("transaction_id", &tid),
    ]);
    assert_eq!(
        handle_push(&deps, &remind).await.unwrap(),
        PushOutcome::Reminder
    );
    let other = push_message(&[("MsgType", "event"), ("Event", "user_enter_tempsession")]);
    assert_eq!(
        handle_push(&deps, &other).await.unwrap(),
        PushOutcome::Ignored
    );
    assert_eq!(
        ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap(),
        o
    );
}

#[tokio::test]
async fn the_sweepers_settlement_check_completes_reschedules_or_records_a_mismatch() {
    let ctx = StoreCtx::dynoxide("settle_check").await;
    let now = now_ms();
    let base = scripted_deps(&ctx, Arc::new(Scripted::default()));
    let then = now - time::Duration::days(16);
    let shipped_then = shared::service::Deps {
        clock: Arc::new(move || then),
        ..base.clone()
    };
    // Uploaded at once (the merchant's request); only the settlement is left to watch.
    let answers: std::collections::HashMap<String, u8> = std::collections::HashMap::new();
    let ports = ShippingPorts::new(Some(Arc::new(ByTransaction(answers))), TradeManaged::On);
    let mut orders = Vec::new();
    for i in 0..3 {
        let o = paid(&ctx).await;
        let key = IdempotencyKey::parse(&format!("ship-check-{i}")).unwrap();
        record_shipment(
            &shipped_then,
            &ports,
            &o.out_trade_no,
            &key,
            virtual_goods(),
        )
        .await
        .unwrap();
        orders.push(o);
    }
    // WeChat says: still shipped (2), settled (4), refunded (5).
    let answers: std::collections::HashMap<String, u8> = orders
        .iter()
        .zip([2u8, 4, 5])
        .map(|(o, s)| (o.transaction_id.clone().unwrap(), s))
        .collect();
    // The scripted get_order answers by transaction, whatever order the sweeper asks in.
    let by_tid = Arc::new(ByTransaction(answers));
    let ports = ShippingPorts::new(Some(by_tid.clone()), TradeManaged::On);
    let summary = sweep_uploads(&base, &ports, None).await;
    assert_eq!(
        (summary.checked, summary.completed, summary.errors),
        (3, 1, 0),
        "{summary:?}"
    );
    let read = |i: usize| {
        let (store, no) = (ctx.store.clone(), orders[i].out_trade_no.clone());
        async move { store.get_order(&no).await.unwrap().unwrap() }
    };
    let still = read(0).await;
    assert_eq!(still.status, OrderStatus::Shipped);
    let next = still.shipping.as_ref().unwrap().settle_check_at.unwrap();
    assert!(
        next > now + time::Duration::hours(23),
        "asked again in a day: {next}"
    );
    assert_eq!(read(1).await.status, OrderStatus::Completed);
    let refunded_there = read(2).await;
    assert_eq!(refunded_there.status, OrderStatus::Shipped);
    let kinds: Vec<AnomalyKind> = ctx
        .store
        .list_anomalies(&orders[2].out_trade_no)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.kind)
        .collect();
    assert_eq!(kinds, [AnomalyKind::ShippingStateMismatch]);
    // Nothing is due again today.
    assert_eq!(sweep_uploads(&base, &ports, None).await.checked, 0);
}

/// get_order answers by transaction_id; uploads are taken.
struct ByTransaction(std::collections::HashMap<String, u8>);

#[async_trait]
impl MiniProgramApi for ByTransaction {
    async fn upload_shipping_info(&self, _: &str) -> Result<(), WxApiError> {
        Ok(())
    }
    async fn get_order(&self, transaction_id: &str) -> Result<WxOrder, WxApiError> {
        let order_state = *self.0.get(transaction_id).expect("a known transaction");
        Ok(WxOrder {
            transaction_id: transaction_id.to_owned(),
            order_state,
        })
    }
    async fn is_trade_managed(&self) -> Result<bool, WxApiError> {
        Ok(false)
    }
}
