//! Latency of each main store operation on embedded Dynoxide over loopback HTTP (the whole
//! path: SDK serialisation, signing, HTTP, engine, parsing), and the DynamoDB calls each
//! costs, counted by the same interceptor the tests use.
//!
//! Run: `cargo bench -p wxpay-tests --bench store` (criterion flags after `--`).

use shared::store::StoreSupport;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use shared::domain::{Order, Product};
use shared::store::embedded::Embedded;
use shared::store::{CallCounter, DynamoStore, Store, with_interceptor};
use tokio::runtime::Runtime;
use wxpay_tests::*;

struct Bench {
    rt: Runtime,
    store: DynamoStore,
    counter: CallCounter,
    tea: Product,
    cup: Product,
    _engine: Embedded,
}

impl Bench {
    fn new() -> Bench {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let engine = rt
            .block_on(Embedded::memory("orders-bench"))
            .expect("embedded Dynoxide");
        let counter = CallCounter::new();
        let store = DynamoStore::new(
            with_interceptor(engine.client(), counter.clone()),
            "orders-bench",
        );
        let tea = product("tea", 990, Some(1_000_000_000));
        let cup = product("cup", 150, None);
        rt.block_on(store.put_products(&[tea.clone(), cup.clone()]))
            .expect("seed");
        Bench {
            rt,
            store,
            counter,
            tea,
            cup,
            _engine: engine,
        }
    }

    fn new_order(&self) -> Order {
        order("o_bench", &[(&self.tea, 1), (&self.cup, 2)])
    }

    fn placed(&self, n: u64) -> Vec<Order> {
        self.rt.block_on(async {
            let mut v = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let o = self.new_order();
                self.store
                    .create_order(&fresh_claim(&o), &o)
                    .await
                    .expect("create");
                v.push(o);
            }
            v
        })
    }

    /// `n` paid orders, each with a REQUESTED refund of 100 fen reserved on it.
    fn reserved_refunds(&self, n: u64) -> Vec<(Order, shared::domain::Refund)> {
        let orders = self.placed(n);
        self.rt.block_on(async {
            let mut v = Vec::with_capacity(orders.len());
            for o in orders {
                self.store
                    .mark_paid(
                        &o,
                        &payment(&o, &format!("txn-rf-{}", o.out_trade_no)),
                        now_ms(),
                    )
                    .await
                    .expect("pay");
                let paid = self
                    .store
                    .get_order(&o.out_trade_no)
                    .await
                    .expect("read")
                    .expect("the order");
                let refund = shared::domain::Refund::requested(
                    shared::domain::OutRefundNo::generate(now_ms()),
                    o.out_trade_no.clone(),
                    fen(100),
                    None,
                    Vec::new(),
                    now_ms(),
                );
                self.store
                    .reserve_refund(&paid, &refund)
                    .await
                    .expect("reserve");
                v.push((paid, refund));
            }
            v
        })
    }

    /// Calls one run of `f` costs, printed next to criterion's timings.
    fn report_calls<F: Future>(&self, name: &str, f: F) {
        let (_, calls) = self.rt.block_on(self.counter.measure(f));
        println!("calls per {name}: {:?}", calls.calls);
    }
}

fn store_ops(c: &mut Criterion) {
    let b = Bench::new();
    let mut g = c.benchmark_group("store");

    g.bench_function("create_order (2 lines)", |bch| {
        bch.iter_custom(|iters| {
            let orders: Vec<_> = (0..iters).map(|_| b.new_order()).collect();
            b.rt.block_on(async {
                let start = Instant::now();
                for o in &orders {
                    b.store
                        .create_order(&fresh_claim(o), o)
                        .await
                        .expect("create");
                }
                start.elapsed()
            })
        })
    });

    let sample = b.placed(1).remove(0);
    g.bench_function("get_order", |bch| {
        bch.iter(|| {
            b.rt.block_on(b.store.get_order(&sample.out_trade_no))
                .expect("get")
        })
    });

    let skus = [b.tea.sku_id.clone(), b.cup.sku_id.clone()];
    g.bench_function("get_products (2 skus)", |bch| {
        bch.iter(|| b.rt.block_on(b.store.get_products(&skus)).expect("get"))
    });

    g.bench_function("record_prepay", |bch| {
        bch.iter(|| {
            b.rt.block_on(b.store.record_prepay(&sample.out_trade_no, "wx-prepay"))
                .expect("prepay")
        })
    });

    g.bench_function("mark_paid (wins)", |bch| {
        bch.iter_custom(|iters| {
            let orders = b.placed(iters);
            b.rt.block_on(async {
                let start = Instant::now();
                for o in &orders {
                    b.store
                        .mark_paid(o, &payment(o, &format!("txn-{}", o.out_trade_no)), now_ms())
                        .await
                        .expect("pay");
                }
                start.elapsed()
            })
        })
    });

    // The notify path's first delivery: the notification as received rides in the same
    // transaction (the audit trail, issue 12.9).
    g.bench_function("mark_paid with its notification (wins)", |bch| {
        bch.iter_custom(|iters| {
            let orders = b.placed(iters);
            b.rt.block_on(async {
                let start = Instant::now();
                for o in &orders {
                    let mut pay = payment(o, &format!("txn-n-{}", o.out_trade_no));
                    pay.notification = Some(Box::new(notification_record(o)));
                    b.store.mark_paid(o, &pay, now_ms()).await.expect("pay");
                }
                start.elapsed()
            })
        })
    });

    // Issue 14: a notification's whole store path, payment beside refund. Payment: read the
    // order, then the PAID transaction with its record and event. Refund: read the refund
    // and its order together, then the settling transaction with its record and event.
    g.bench_function(
        "payment notification: get_order + mark_paid (wins)",
        |bch| {
            bch.iter_custom(|iters| {
                let orders = b.placed(iters);
                b.rt.block_on(async {
                    let start = Instant::now();
                    for o in &orders {
                        let read = b.store.get_order(&o.out_trade_no).await.expect("read");
                        let read = read.expect("the order");
                        let mut pay = payment(o, &format!("txn-p-{}", o.out_trade_no));
                        pay.notification = Some(Box::new(notification_record(o)));
                        b.store.mark_paid(&read, &pay, now_ms()).await.expect("pay");
                    }
                    start.elapsed()
                })
            })
        },
    );
    // DESIGN 5: the same notification written without the read, as `handle_notification`
    // now does (`mark_paid_unread`: order condition on status and amount, payment, record,
    // `order.paid` to complete).
    g.bench_function("payment notification: mark_paid_unread (wins)", |bch| {
        bch.iter_custom(|iters| {
            let orders = b.placed(iters);
            b.rt.block_on(async {
                let start = Instant::now();
                for o in &orders {
                    let mut pay = payment(o, &format!("txn-u-{}", o.out_trade_no));
                    pay.notification = Some(Box::new(notification_record(o)));
                    let plan = shared::domain::PaidUnread::plan(&pay, now_ms()).expect("plan");
                    let out = b.store.mark_paid_unread(&plan).await.expect("pay");
                    assert_eq!(out, shared::store::PaidUnreadOutcome::Applied);
                }
                start.elapsed()
            })
        })
    });
    g.bench_function(
        "refund notification: get_refund_and_order + settle_refund (wins)",
        |bch| {
            bch.iter_custom(|iters| {
                let refunds = b.reserved_refunds(iters);
                b.rt.block_on(async {
                    let start = Instant::now();
                    for (o, r) in &refunds {
                        let (refund, order) = b
                            .store
                            .get_refund_and_order(&r.out_refund_no, &o.out_trade_no)
                            .await
                            .expect("read");
                        let record = notification_record(o);
                        b.store
                            .settle_refund(
                                &order.expect("the order"),
                                &refund.expect("the refund"),
                                shared::domain::RefundStatus::Success,
                                None,
                                Some(&record),
                                now_ms(),
                            )
                            .await
                            .expect("settle");
                    }
                    start.elapsed()
                })
            })
        },
    );

    let paid = b.placed(1).remove(0);
    let paid_payment = payment(&paid, "txn-dup");
    b.rt.block_on(b.store.mark_paid(&paid, &paid_payment, now_ms()))
        .expect("pay");
    g.bench_function("mark_paid (duplicate, loses)", |bch| {
        bch.iter(|| {
            b.rt.block_on(b.store.mark_paid(&paid, &paid_payment, now_ms()))
                .expect("pay")
        })
    });

    g.bench_function("close (wins)", |bch| {
        bch.iter_custom(|iters| {
            let orders = b.placed(iters);
            b.rt.block_on(async {
                let start = Instant::now();
                for o in &orders {
                    b.store.close(o, "expired", now_ms()).await.expect("close");
                }
                start.elapsed()
            })
        })
    });

    let user = openid("o_bench");
    g.bench_function("list_orders (page of 20)", |bch| {
        bch.iter(|| {
            b.rt.block_on(b.store.list_orders(&user, 20, None))
                .expect("list")
        })
    });

    let later = now_ms() + time::Duration::hours(1);
    g.bench_function("due_pending (page of 20)", |bch| {
        bch.iter(|| {
            b.rt.block_on(b.store.due_pending(0, later, 20, None))
                .expect("due")
        })
    });
    g.finish();

    let o = b.placed(1).remove(0);
    b.report_calls("create_order", async {
        let o = b.new_order();
        b.store.create_order(&fresh_claim(&o), &o).await
    });
    b.report_calls("get_order", b.store.get_order(&o.out_trade_no));
    b.report_calls(
        "mark_paid (wins)",
        b.store.mark_paid(&o, &payment(&o, "txn-r"), now_ms()),
    );
    b.report_calls(
        "mark_paid (loses)",
        b.store.mark_paid(&o, &payment(&o, "txn-r"), now_ms()),
    );
    let o = b.placed(1).remove(0);
    b.report_calls("close", b.store.close(&o, "expired", now_ms()));
    b.report_calls("list_orders page", b.store.list_orders(&user, 20, None));
}

/// A notification record the size of WeChat Pay's (a ~1 KB envelope, four headers).
fn notification_record(o: &Order) -> shared::store::NotificationRecord {
    shared::store::NotificationRecord {
        id: format!("n-{}", o.out_trade_no),
        event_type: "TRANSACTION.SUCCESS".into(),
        received_at: now_ms(),
        body: "x".repeat(1024),
        headers: vec![
            ("wechatpay-nonce".into(), "n".repeat(32)),
            (
                "wechatpay-serial".into(),
                "PUB_KEY_ID_0000000000000024101100397200000006".into(),
            ),
            ("wechatpay-signature".into(), "s".repeat(344)),
            ("wechatpay-timestamp".into(), "1796650000".into()),
        ],
        out_trade_no: Some(o.out_trade_no.clone()),
        outcome: "applied".into(),
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = store_ops
}
criterion_main!(benches);
