//! The daily bill reconciliation (DESIGN 11): WeChat Pay's trade bill of a Beijing date, checked
//! whole (SHA-1, layout, sums) before anything is applied, held row by row to the table: matched,
//! recovered by the payment or refund path, or a `BILL_MISMATCH` anomaly; the report replaces.
//! A run with a deadline stops before it and leaves an incomplete report the next run redoes.

use std::{collections::HashSet, future::Future, sync::Arc};

use time::{Date, Duration, OffsetDateTime};
use tokio::{sync::Semaphore, task::JoinSet};

use super::{Deps, PaymentOutcome, RefundError, apply_payment, apply_refund_result};
use crate::{
    domain::{
        Anomaly, AnomalyKind, BillMismatch, BillMismatchKind, BillReport, BillSums, DAY_SHARDS,
        Money, Order, OrderStatus, OutRefundNo, OutTradeNo, Refund, RefundStatus,
    },
    store::{Page, RefundReserveOutcome, StoreError},
    telemetry::Metric,
    timefmt::{CHINA, date_string},
    wechatpay::{
        bill::{BillError, BillRow, BillSummary, TradeBillReader, check_download},
        gateway::PayError,
        refund::{RefundResult, RefundState},
    },
};

/// Rows looked up in the table at once (one BatchGetItem each of payments, refunds, orders).
const CHUNK: usize = 100;
/// Page size of the day's payments and refunds read from the table.
const PAGE: u32 = 100;
/// Rows confirmed with WeChat Pay at once (a query, then the payment or refund path): a day
/// with many rows the table lacks is not one query at a time, nor a burst at WeChat Pay.
pub const RECOVERIES_AT_ONCE: usize = 8;
/// Kept free before a run's deadline: the report's write (one PutItem at its client's whole
/// budget) and the answer. Work still in flight then is dropped, which is safe: each of its
/// steps is one idempotent transition, and the next run redoes what it did not reach.
pub const REPORT_MARGIN: Duration = Duration::seconds(4);

/// How a run ended (errors aside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconcileOutcome {
    /// The date is reconciled: its report, as stored.
    Reconciled(Box<BillReport>),
    /// The deadline came first: the report of what was done, stored with `complete: false`;
    /// the date must be run again (the schedule does).
    Incomplete(Box<BillReport>),
    /// WeChat Pay has not generated that day's bill yet (`STATEMENT_CREATING`: bills are
    /// ready from about 10:00 Beijing time the next day). Nothing was done; ask again later.
    NotReady,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{0} is after today in Beijing: no bill can exist yet")]
    FutureDate(String),
    /// The file is unusable (damaged, tampered, another layout): nothing was applied.
    #[error("the bill of {date} was refused and nothing applied: {source}")]
    Bill {
        date: String,
        #[source]
        source: BillError,
    },
    /// WeChat Pay refused the date itself (400 `INVALID_REQUEST` / `PARAM_ERROR`: a date
    /// older than the 3 months it keeps bills for): the caller's date is the problem.
    #[error(
        "WeChat Pay has no bill to give for {date} ({code}: {message}); bills exist for the last 3 months only"
    )]
    DateRefused {
        date: String,
        code: String,
        message: String,
    },
    #[error("WeChat Pay: {0}")]
    WeChat(#[from] PayError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("refund: {0}")]
    Refund(RefundError),
    /// A row's recovery task ended without an answer (it panicked).
    #[error("a row's recovery stopped: {0}")]
    Aborted(String),
}

impl From<RefundError> for ReconcileError {
    fn from(e: RefundError) -> Self {
        match e {
            RefundError::Store(e) => ReconcileError::Store(e),
            other => ReconcileError::Refund(other),
        }
    }
}

/// The stored report of a date, if it was reconciled.
pub async fn bill_report(deps: &Deps, date: Date) -> Result<Option<BillReport>, ReconcileError> {
    Ok(deps.store.get_bill_report(date).await?)
}

/// Reconciles the trade bill of the Beijing date `date` with the table, applies what the
/// table lacked (each through the path a notification takes, so a re-run applies nothing
/// twice), records every mismatch, and stores the report in place of an earlier run's.
/// `deadline` is the invocation's: the run stops [`REPORT_MARGIN`] before it, with an
/// incomplete report.
pub async fn reconcile_bill(
    deps: &Deps,
    date: Date,
    deadline: Option<OffsetDateTime>,
) -> Result<ReconcileOutcome, ReconcileError> {
    // At the millisecond the table keeps, so the report answered is the report stored.
    let started = deps.now();
    let started = started
        .replace_nanosecond(u32::from(started.millisecond()) * 1_000_000)
        .unwrap_or(started);
    if date > started.to_offset(CHINA).date() {
        return Err(ReconcileError::FutureDate(date_string(date)));
    }
    let mut run = Run {
        deps: deps.clone(),
        date,
        stop_at: deadline.map(|d| d - REPORT_MARGIN),
        bill_payments: HashSet::new(),
        bill_refunds: HashSet::new(),
    };
    let location = match deps.gateway.trade_bill(date).await {
        Ok(location) => location,
        Err(PayError::StatementNotReady) => {
            tracing::info!(bill_date = %date_string(date), outcome = "not_ready", "WeChat Pay has not generated the bill yet; retry later");
            return Ok(ReconcileOutcome::NotReady);
        }
        // Today's bill cannot be final: WeChat Pay has none yet, whatever it answers.
        Err(PayError::NoStatement) if date == started.to_offset(CHINA).date() => {
            tracing::info!(bill_date = %date_string(date), outcome = "not_ready", "no bill of today yet; retry after the day ends");
            return Ok(ReconcileOutcome::NotReady);
        }
        Err(PayError::NoStatement) => {
            // No trades that day, per WeChat Pay: any payment or refund we have is a mismatch.
            let mut report = BillReport::empty(date, started);
            report.complete = run.local_not_in_bill(&mut report).await?;
            return finish(deps, report).await;
        }
        Err(PayError::Api {
            status: 400,
            code,
            message,
            ..
        }) => {
            return Err(ReconcileError::DateRefused {
                date: date_string(date),
                code,
                message,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let download = deps.gateway.download_bill(&location).await?;
    let refused = |source| ReconcileError::Bill {
        date: date_string(date),
        source,
    };
    // First pass: every row parsed, the summary and the SHA-1 checked; nothing kept.
    let summary = check_download(&download, &location).map_err(refused)?;
    let mut report = BillReport {
        rows: summary.rows,
        statement: true,
        sums: sums(&summary),
        ..BillReport::empty(date, started)
    };
    // Second pass over the same checked bytes: the rows, a chunk at a time, while time lasts.
    let mut reader = TradeBillReader::gzip(download.as_slice());
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut complete = true;
    loop {
        let row = reader.next_row().map_err(refused)?;
        let end = row.is_none();
        chunk.extend(row);
        if (chunk.len() == CHUNK || (end && !chunk.is_empty()))
            && !run.rows(std::mem::take(&mut chunk), &mut report).await?
        {
            complete = false;
            break;
        }
        if end {
            break;
        }
    }
    // The table's side needs every row of the bill seen.
    if complete {
        complete = run.local_not_in_bill(&mut report).await?;
    }
    report.complete = complete;
    finish(deps, report).await
}

async fn finish(deps: &Deps, report: BillReport) -> Result<ReconcileOutcome, ReconcileError> {
    deps.store.put_bill_report(&report).await?;
    crate::telemetry::emit_metrics(
        &[
            (Metric::BillRows, report.rows),
            (Metric::BillMatched, report.matched),
            (Metric::BillRecovered, report.recovered),
            (Metric::BillMismatches, report.mismatch_count),
        ],
        deps.now(),
    );
    let outcome = if !report.complete {
        "incomplete"
    } else if report.mismatch_count > 0 {
        "mismatches"
    } else {
        "ok"
    };
    tracing::info!(
        bill_date = %date_string(report.bill_date),
        statement = report.statement,
        complete = report.complete,
        rows = report.rows,
        matched = report.matched,
        recovered = report.recovered,
        mismatches = report.mismatch_count,
        paid = report.sums.paid,
        refunded = report.sums.refunded,
        outcome,
        "bill reconciled"
    );
    Ok(if report.complete {
        ReconcileOutcome::Reconciled(Box::new(report))
    } else {
        ReconcileOutcome::Incomplete(Box::new(report))
    })
}

fn sums(s: &BillSummary) -> BillSums {
    BillSums {
        paid: s.amount_fen,
        refunded: s.refund_requested_fen,
        fees: BillSums::fen_of_millifen(s.fee_millifen),
        fees_millifen: s.fee_millifen,
    }
}

/// What became of one row.
#[derive(Debug)]
enum Verdict {
    /// The table already agreed.
    Matched,
    /// Applied by this run.
    Recovered,
    /// Reported, and kept as a `BILL_MISMATCH` anomaly.
    Mismatch(BillMismatch),
    /// Reported only: the payment path keeps it as its own anomaly.
    Reported(BillMismatch),
}

/// A row that needs WeChat Pay's word before it can be judged.
type Recovery = std::pin::Pin<Box<dyn Future<Output = Result<Verdict, ReconcileError>> + Send>>;

/// One run's state: what the bill named, to find what the table has and the bill lacks.
struct Run {
    deps: Deps,
    date: Date,
    /// When the run stops taking up work (its deadline less [`REPORT_MARGIN`]).
    stop_at: Option<OffsetDateTime>,
    bill_payments: HashSet<String>,
    bill_refunds: HashSet<String>,
}

impl Run {
    /// How long work may still run: `None` without a deadline, zero once it has come.
    fn time_left(&self) -> Option<std::time::Duration> {
        self.stop_at
            .map(|stop| std::time::Duration::try_from(stop - self.deps.now()).unwrap_or_default())
    }

    fn out_of_time(&self) -> bool {
        self.time_left().is_some_and(|left| left.is_zero())
    }

    /// A chunk of rows: the table's payments, refunds and orders they name read in one batch
    /// each, then the rows it lacks or has open confirmed with WeChat Pay, payments before
    /// refunds (a refund's order must be paid first), [`RECOVERIES_AT_ONCE`] at a time.
    /// False if the deadline came before every row was done.
    async fn rows(
        &mut self,
        rows: Vec<BillRow>,
        report: &mut BillReport,
    ) -> Result<bool, ReconcileError> {
        if self.out_of_time() {
            return Ok(false);
        }
        let payment_ids: Vec<String> = rows
            .iter()
            .filter(|r| r.is_payment())
            .map(|r| r.transaction_id.clone())
            .collect();
        let refund_nos: Vec<OutRefundNo> = rows
            .iter()
            .filter(|r| r.is_refund())
            .filter_map(|r| r.out_refund_no.as_deref())
            .filter_map(|no| OutRefundNo::parse(no).ok())
            .collect();
        let payments = if payment_ids.is_empty() {
            Default::default()
        } else {
            self.deps.store.get_payments(&payment_ids).await?
        };
        let refunds = if refund_nos.is_empty() {
            Default::default()
        } else {
            self.deps.store.get_refunds(&refund_nos).await?
        };
        // A payment item alone does not say the order was paid by it (a payment held as
        // AMOUNT_MISMATCH has one too): the orders of the rows it matches, in one batch.
        let order_nos: Vec<OutTradeNo> = rows
            .iter()
            .filter(|r| r.is_payment())
            .filter(|r| {
                payments
                    .get(&r.transaction_id)
                    .is_some_and(|p| p.out_trade_no.as_str() == r.out_trade_no)
            })
            .filter_map(|r| OutTradeNo::parse(&r.out_trade_no).ok())
            .collect();
        let orders = if order_nos.is_empty() {
            Default::default()
        } else {
            self.deps.store.get_orders(&order_nos).await?
        };

        let mut verdicts: Vec<Option<Verdict>> = rows.iter().map(|_| None).collect();
        let mut payment_recoveries: Vec<(usize, Recovery)> = Vec::new();
        let mut refund_recoveries: Vec<(usize, Recovery)> = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let deps = self.deps.clone();
            let date = self.date;
            if row.is_payment() {
                self.bill_payments.insert(row.transaction_id.clone());
                verdicts[i] = match payments.get(&row.transaction_id) {
                    Some(p)
                        if p.amount.fen() == row.amount_fen
                            && p.out_trade_no.as_str() == row.out_trade_no =>
                    {
                        Some(paid_order_verdict(row, orders.get(&p.out_trade_no)))
                    }
                    Some(p) => {
                        let detail = format!(
                            "the bill has {} fen for order {}, the table {} fen for order {}",
                            row.amount_fen,
                            row.out_trade_no,
                            p.amount.fen(),
                            p.out_trade_no
                        );
                        Some(Verdict::Mismatch(row_mismatch(
                            row,
                            BillMismatchKind::PaymentAmount,
                            detail,
                        )))
                    }
                    None => {
                        let row = row.clone();
                        payment_recoveries.push((
                            i,
                            Box::pin(async move { recover_payment(&deps, date, &row).await }),
                        ));
                        None
                    }
                };
            } else if row.is_refund() {
                let no = row.out_refund_no.clone().unwrap_or_default();
                self.bill_refunds.insert(no.clone());
                let kept = OutRefundNo::parse(&no).ok().and_then(|n| refunds.get(&n));
                verdicts[i] = match kept {
                    None => {
                        let row = row.clone();
                        refund_recoveries.push((
                            i,
                            Box::pin(async move { recover_refund(&deps, date, &row).await }),
                        ));
                        None
                    }
                    Some(r)
                        if r.amount.fen() != row.refund_requested_fen
                            || r.out_trade_no.as_str() != row.out_trade_no =>
                    {
                        let detail = format!(
                            "the bill has {} fen of order {}, the table {} fen of order {}",
                            row.refund_requested_fen,
                            row.out_trade_no,
                            r.amount.fen(),
                            r.out_trade_no
                        );
                        Some(Verdict::Mismatch(row_mismatch(
                            row,
                            BillMismatchKind::RefundAmount,
                            detail,
                        )))
                    }
                    Some(r) if r.status == RefundStatus::Success => Some(Verdict::Matched),
                    Some(r) => {
                        let (row, refund) = (row.clone(), r.clone());
                        refund_recoveries.push((
                            i,
                            Box::pin(async move { sync_refund(&deps, date, &row, refund).await }),
                        ));
                        None
                    }
                };
            } else {
                let detail = format!(
                    "line {}: 交易状态 {} is neither a payment nor a refund",
                    row.line, row.trade_state
                );
                verdicts[i] = Some(Verdict::Mismatch(row_mismatch(
                    row,
                    BillMismatchKind::UnexpectedRow,
                    detail,
                )));
            }
        }
        // Once the stop time has come no recovery starts, so a refund is never judged
        // against an order whose payment this run left for the next.
        for recoveries in [payment_recoveries, refund_recoveries] {
            for (i, verdict) in self.confirm(recoveries).await? {
                verdicts[i] = Some(verdict);
            }
        }
        let mut complete = true;
        for (row, verdict) in rows.iter().zip(verdicts) {
            match verdict {
                Some(verdict) => self.tally(report, verdict).await?,
                None => {
                    tracing::info!(bill_date = %date_string(self.date), line = row.line, out_trade_no = %row.out_trade_no, outcome = "left", "deadline: row left for the next run");
                    complete = false;
                }
            }
        }
        Ok(complete)
    }

    /// Runs `recoveries` [`RECOVERIES_AT_ONCE`] at a time, none started or kept running past
    /// the stop time: the verdicts of those that finished, by row index.
    async fn confirm(
        &self,
        recoveries: Vec<(usize, Recovery)>,
    ) -> Result<Vec<(usize, Verdict)>, ReconcileError> {
        let limit = Arc::new(Semaphore::new(RECOVERIES_AT_ONCE));
        let mut tasks: JoinSet<Option<(usize, Result<Verdict, ReconcileError>)>> = JoinSet::new();
        let mut done = Vec::new();
        let mut keep = |joined: Result<_, tokio::task::JoinError>| match joined {
            Ok(Some((i, Ok(verdict)))) => {
                done.push((i, verdict));
                Ok(())
            }
            // Cut off at the stop time: left for the next run.
            Ok(None) => Ok(()),
            Ok(Some((_, Err(e)))) => Err(e),
            Err(e) => Err(ReconcileError::Aborted(e.to_string())),
        };
        for (i, recovery) in recoveries {
            // A slot first, so the time left is read when the work would start.
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                break;
            };
            while let Some(joined) = tasks.try_join_next() {
                keep(joined)?;
            }
            let left = self.time_left();
            if left.is_some_and(|l| l.is_zero()) {
                break;
            }
            tasks.spawn(async move {
                let verdict = match left {
                    Some(left) => tokio::time::timeout(left, recovery).await.ok(),
                    None => Some(recovery.await),
                };
                drop(permit);
                verdict.map(|v| (i, v))
            });
        }
        while let Some(joined) = tasks.join_next().await {
            keep(joined)?;
        }
        Ok(done)
    }

    /// Counts a verdict in the report; a mismatch is also kept as an anomaly.
    async fn tally(&self, report: &mut BillReport, verdict: Verdict) -> Result<(), ReconcileError> {
        match verdict {
            Verdict::Matched => report.matched += 1,
            Verdict::Recovered => report.recovered += 1,
            Verdict::Mismatch(m) => self.mismatch(report, m).await?,
            Verdict::Reported(m) => report.push_mismatch(m),
        }
        Ok(())
    }

    /// The day's payments and successful refunds in the table that the bill does not list.
    /// False if the deadline came first.
    async fn local_not_in_bill(&mut self, report: &mut BillReport) -> Result<bool, ReconcileError> {
        for shard in 0..DAY_SHARDS {
            let mut cursor = None;
            loop {
                if self.out_of_time() {
                    return Ok(false);
                }
                let page: Page<_> = self
                    .deps
                    .store
                    .payments_on(self.date, shard, PAGE, cursor.as_ref())
                    .await?;
                for p in page.items {
                    if self.bill_payments.contains(&p.transaction_id) {
                        continue;
                    }
                    let detail = format!(
                        "{} fen paid at {} is in the table but not in the bill",
                        p.amount.fen(),
                        crate::timefmt::to_wechat(p.success_time)
                    );
                    let m = BillMismatch {
                        kind: BillMismatchKind::PaymentNotInBill,
                        out_trade_no: Some(p.out_trade_no.to_string()),
                        transaction_id: Some(p.transaction_id.clone()),
                        out_refund_no: None,
                        detail,
                    };
                    self.mismatch(report, m).await?;
                }
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            let mut cursor = None;
            loop {
                if self.out_of_time() {
                    return Ok(false);
                }
                let page: Page<Refund> = self
                    .deps
                    .store
                    .refunds_on(self.date, shard, PAGE, cursor.as_ref())
                    .await?;
                for r in page.items {
                    if self.bill_refunds.contains(r.out_refund_no.as_str()) {
                        continue;
                    }
                    let detail = format!(
                        "{} fen refunded (accepted {}) is in the table but not in the bill",
                        r.amount.fen(),
                        crate::timefmt::to_wechat(r.submitted_at.unwrap_or(r.created_at))
                    );
                    let m = BillMismatch {
                        kind: BillMismatchKind::RefundNotInBill,
                        out_trade_no: Some(r.out_trade_no.to_string()),
                        transaction_id: None,
                        out_refund_no: Some(r.out_refund_no.to_string()),
                        detail,
                    };
                    self.mismatch(report, m).await?;
                }
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        Ok(true)
    }

    /// Reports a mismatch and keeps it as a `BILL_MISMATCH` anomaly (with its event): one
    /// per bill date, kind and row (`BILL_MISMATCH#<date>#<kind>#<id>`), so a re-run records
    /// nothing new.
    async fn mismatch(
        &self,
        report: &mut BillReport,
        m: BillMismatch,
    ) -> Result<(), ReconcileError> {
        let now = self.deps.now();
        let date = date_string(self.date);
        let out_trade_no = m
            .out_trade_no
            .as_deref()
            .and_then(|no| OutTradeNo::parse(no).ok());
        // One per distinct cause: the date, what disagrees, and the row's own id (a refund's
        // when it is one), so two different disagreements of one order are both kept.
        let cause = format!(
            "{date}#{}#{}",
            m.kind,
            m.out_refund_no
                .as_deref()
                .or(m.transaction_id.as_deref())
                .unwrap_or("-")
        );
        let anomaly = Anomaly {
            out_trade_no,
            kind: AnomalyKind::BillMismatch,
            cause,
            at: now,
            transaction_id: m.transaction_id.clone(),
            notification_id: None,
            detail: format!("bill of {date}: {}: {}", m.kind, m.detail),
            plaintext: None,
        };
        self.deps.store.record_anomaly(&anomaly, now).await?;
        tracing::warn!(bill_date = %date, kind = %m.kind, out_trade_no = m.out_trade_no.as_deref(), transaction_id = m.transaction_id.as_deref(), out_refund_no = m.out_refund_no.as_deref(), detail = %m.detail, outcome = "anomaly:bill_mismatch", "the bill and the table disagree");
        report.push_mismatch(m);
        Ok(())
    }
}

/// A payment row whose payment item agrees: matched if its order was paid by it.
fn paid_order_verdict(row: &BillRow, order: Option<&Order>) -> Verdict {
    match order {
        Some(o)
            if o.status.is_paid()
                && o.status != OrderStatus::AmountMismatch
                && o.transaction_id.as_deref() == Some(row.transaction_id.as_str()) =>
        {
            Verdict::Matched
        }
        // Held by the payment path, with its own anomaly: reported as the run that applied
        // it reported it, nothing recorded again.
        Some(o) if o.status == OrderStatus::AmountMismatch => {
            Verdict::Reported(kept_as_anomaly(row, AnomalyKind::AmountMismatch))
        }
        order => {
            let detail = format!(
                "the table has the payment but its order {} is {}",
                row.out_trade_no,
                order.map_or("missing".to_owned(), |o| format!(
                    "{} (transaction {})",
                    o.status,
                    o.transaction_id.as_deref().unwrap_or("none")
                ))
            );
            Verdict::Mismatch(row_mismatch(row, BillMismatchKind::PaymentAnomaly, detail))
        }
    }
}

/// A payment row the table has no payment item for: WeChat Pay is asked, and a payment it
/// confirms is applied by the path every notification and sweep takes.
async fn recover_payment(
    deps: &Deps,
    date: Date,
    row: &BillRow,
) -> Result<Verdict, ReconcileError> {
    let unconfirmed = |detail: String| {
        Ok(Verdict::Mismatch(row_mismatch(
            row,
            BillMismatchKind::PaymentUnconfirmed,
            detail,
        )))
    };
    let Ok(out_trade_no) = OutTradeNo::parse(&row.out_trade_no) else {
        return unconfirmed(format!(
            "{} fen paid for {:?}, which is not one of this service's order numbers",
            row.amount_fen, row.out_trade_no
        ));
    };
    let txn = match deps
        .gateway
        .query_by_out_trade_no(out_trade_no.as_str())
        .await
    {
        Ok(txn) => txn,
        Err(e) if e.code() == Some("ORDER_NOT_EXIST") => {
            return unconfirmed("WeChat Pay's query says ORDER_NOT_EXIST".to_owned());
        }
        // A refusal that asking again tomorrow would repeat: this row is reported and the
        // run goes on, so one row never keeps the whole day unreconciled.
        Err(e) if !e.retryable() => {
            return unconfirmed(format!("WeChat Pay's query was refused: {e}"));
        }
        Err(e) => return Err(e.into()),
    };
    if !txn.trade_state.is_paid()
        || txn.transaction_id.as_deref() != Some(row.transaction_id.as_str())
    {
        return unconfirmed(format!(
            "WeChat Pay's query says {} (transaction {})",
            txn.trade_state,
            txn.transaction_id.as_deref().unwrap_or("none")
        ));
    }
    let order = deps.store.get_order(&out_trade_no).await?;
    match apply_payment(deps, order, &txn, None).await {
        Ok(PaymentOutcome::Applied(_)) => {
            tracing::info!(bill_date = %date_string(date), out_trade_no = %out_trade_no, transaction_id = %row.transaction_id, outcome = "recovered", "a payment the table lacked applied from the bill");
            Ok(Verdict::Recovered)
        }
        // Applied meanwhile (a late notification, the sweeper).
        Ok(PaymentOutcome::Duplicate(_)) => Ok(Verdict::Matched),
        // Kept as the payment path's own anomaly (never applied twice, never lost).
        Ok(PaymentOutcome::Anomaly { kind, .. }) => {
            Ok(Verdict::Reported(kept_as_anomaly(row, kind)))
        }
        Err(super::ApplyError::Store(e)) => Err(e.into()),
        Err(super::ApplyError::Malformed(m)) => {
            unconfirmed(format!("WeChat Pay's transaction: {m}"))
        }
    }
}

/// WeChat Pay's query of a refund a row names: `Ok(Err(verdict))` when it is refused for
/// good (this row is reported as `kind`, the run goes on); a transient failure fails the run.
async fn query_refund(
    deps: &Deps,
    row: &BillRow,
    out_refund_no: &str,
    kind: BillMismatchKind,
    here: &str,
) -> Result<Result<RefundResult, Verdict>, ReconcileError> {
    match deps.gateway.query_refund(out_refund_no).await {
        Ok(answer) => Ok(Ok(answer)),
        Err(PayError::Api { status: 404, .. }) => Ok(Err(Verdict::Mismatch(row_mismatch(
            row,
            kind,
            format!("{here}, but WeChat Pay's query does not know it"),
        )))),
        Err(e) if !e.retryable() => Ok(Err(Verdict::Mismatch(row_mismatch(
            row,
            kind,
            format!("{here}; WeChat Pay's query was refused: {e}"),
        )))),
        Err(e) => Err(e.into()),
    }
}

/// A refund row whose refund the table has open (or settled otherwise): WeChat Pay's word
/// applied by the refund path notifications take.
async fn sync_refund(
    deps: &Deps,
    date: Date,
    row: &BillRow,
    refund: Refund,
) -> Result<Verdict, ReconcileError> {
    let here = format!("refund is {} here", refund.status);
    let answer = match query_refund(
        deps,
        row,
        refund.out_refund_no.as_str(),
        BillMismatchKind::RefundState,
        &here,
    )
    .await?
    {
        Ok(answer) => answer,
        Err(verdict) => return Ok(verdict),
    };
    let Some(order) = deps.store.get_order(&refund.out_trade_no).await? else {
        let detail = format!("its order {} is not in the table", refund.out_trade_no);
        return Ok(Verdict::Mismatch(row_mismatch(
            row,
            BillMismatchKind::RefundState,
            detail,
        )));
    };
    apply_refund_answer(deps, date, row, &order, refund, &answer).await
}

/// A refund row the table has no refund for (made in the merchant platform, or its
/// reservation lost): WeChat Pay's query confirms it and, when its order is ours, it is
/// recorded against the order (reserved as the merchant's refunds are, with WeChat Pay's
/// acceptance time) and moved by WeChat Pay's word through the refund path, as a
/// notification would; otherwise it is reported (`REFUND_UNKNOWN`).
async fn recover_refund(deps: &Deps, date: Date, row: &BillRow) -> Result<Verdict, ReconcileError> {
    let no = row.out_refund_no.as_deref().unwrap_or_default();
    let unknown = |detail: String| {
        Ok(Verdict::Mismatch(row_mismatch(
            row,
            BillMismatchKind::RefundUnknown,
            detail,
        )))
    };
    let (Ok(out_refund_no), Ok(out_trade_no)) =
        (OutRefundNo::parse(no), OutTradeNo::parse(&row.out_trade_no))
    else {
        return unknown(format!(
            "refund {no:?} of {} fen (order {:?}) is not in the table and names no order of this service",
            row.refund_requested_fen, row.out_trade_no
        ));
    };
    let Some(order) = deps.store.get_order(&out_trade_no).await? else {
        return unknown(format!(
            "refund {no} of {} fen: its order {out_trade_no} is not in the table either",
            row.refund_requested_fen
        ));
    };
    let here = "the refund is not in the table".to_owned();
    let answer = match query_refund(deps, row, no, BillMismatchKind::RefundUnknown, &here).await? {
        Ok(answer) => answer,
        Err(verdict) => return Ok(verdict),
    };
    if answer
        .out_trade_no
        .as_deref()
        .is_some_and(|o| o != row.out_trade_no)
        || answer.amount.refund != row.refund_requested_fen
    {
        return unknown(format!(
            "the bill has {} fen of order {}; WeChat Pay's query says {} fen of order {}",
            row.refund_requested_fen,
            row.out_trade_no,
            answer.amount.refund,
            answer.out_trade_no.as_deref().unwrap_or("?")
        ));
    }
    let Ok(amount) = Money::from_fen(row.refund_requested_fen) else {
        return unknown(format!("{} fen is not an amount", row.refund_requested_fen));
    };
    let now = deps.now();
    // Created when WeChat Pay accepted it, so the refund path files it under the bill's day.
    let created_at = answer
        .create_time
        .as_deref()
        .and_then(|t| crate::timefmt::parse_rfc3339(t).ok())
        .map_or(now, |t| t.min(now));
    let wanted = Refund::requested(
        out_refund_no,
        out_trade_no,
        amount,
        None,
        Vec::new(),
        created_at,
    );
    let (order, refund) = match deps.store.reserve_refund(&order, &wanted).await? {
        RefundReserveOutcome::Reserved(order) => {
            tracing::info!(bill_date = %date_string(date), out_trade_no = %order.out_trade_no, out_refund_no = %wanted.out_refund_no, amount = amount.fen(), outcome = "reserved", "a refund the table lacked recorded from the bill");
            (*order, wanted)
        }
        // Recorded meanwhile (the merchant's own request, a concurrent run).
        RefundReserveOutcome::Exists(kept) => (order, *kept),
        RefundReserveOutcome::Refused { order, reason } => {
            return unknown(format!(
                "confirmed by WeChat Pay ({}), but its order {} ({}) refuses it: {reason}",
                answer.status, order.out_trade_no, order.status
            ));
        }
        RefundReserveOutcome::NotFound => {
            return unknown(format!("its order {} vanished", row.out_trade_no));
        }
    };
    apply_refund_answer(deps, date, row, &order, refund, &answer).await
}

/// WeChat Pay's answer on a refund applied through the refund path: recovered when this moved
/// it, matched when it already agreed, a `REFUND_STATE` mismatch when the refund path cannot
/// apply it or the refund stays otherwise.
async fn apply_refund_answer(
    deps: &Deps,
    date: Date,
    row: &BillRow,
    order: &Order,
    refund: Refund,
    answer: &RefundResult,
) -> Result<Verdict, ReconcileError> {
    let before = refund.status;
    let state_mismatch = |detail: String| {
        Ok(Verdict::Mismatch(row_mismatch(
            row,
            BillMismatchKind::RefundState,
            detail,
        )))
    };
    let (after, moved) = match apply_refund_result(deps, order, refund, answer, deps.now()).await {
        Ok(applied) => applied,
        // The store failing is the run's failure (asked again by the next run).
        Err(RefundError::Store(e)) if !matches!(e, StoreError::Inconsistent(_)) => {
            return Err(e.into());
        }
        // The refund path refused WeChat Pay's answer (it cannot apply it to the refund or
        // order as they are): reported, and the run goes on.
        Err(e) => {
            return state_mismatch(format!(
                "refund is {before} here; WeChat Pay says {}, which could not be applied: {e}",
                answer.status
            ));
        }
    };
    let agrees = match &answer.status {
        RefundState::Success => after.status == RefundStatus::Success,
        RefundState::Closed => after.status == RefundStatus::Closed,
        RefundState::Abnormal => after.status == RefundStatus::Abnormal,
        RefundState::Processing | RefundState::Other(_) => after.status.holds_reservation(),
    };
    if !agrees {
        return state_mismatch(format!(
            "refund is {} here but WeChat Pay says {}",
            after.status, answer.status
        ));
    }
    if moved && after.status != before {
        tracing::info!(bill_date = %date_string(date), out_refund_no = %after.out_refund_no, from = %before, to = %after.status, outcome = "recovered", "a refund the table lacked or had open settled from the bill");
        Ok(Verdict::Recovered)
    } else {
        Ok(Verdict::Matched)
    }
}

/// A billed payment the payment path keeps as its own anomaly (`kind`): reported on every
/// run, by the run that applied it and by any re-run, and never recorded twice.
fn kept_as_anomaly(row: &BillRow, kind: AnomalyKind) -> BillMismatch {
    row_mismatch(
        row,
        BillMismatchKind::PaymentAnomaly,
        format!("confirmed by WeChat Pay and kept as a {kind} anomaly"),
    )
}

/// A mismatch on a bill row, named by the row's ids.
fn row_mismatch(row: &BillRow, kind: BillMismatchKind, detail: String) -> BillMismatch {
    BillMismatch {
        kind,
        out_trade_no: Some(row.out_trade_no.clone()).filter(|s| !s.is_empty()),
        transaction_id: Some(row.transaction_id.clone()).filter(|s| !s.is_empty()),
        out_refund_no: row.out_refund_no.clone(),
        detail,
    }
}

/// The previous Beijing date at `now`: what the daily run reconciles.
pub fn previous_beijing_date(now: OffsetDateTime) -> Date {
    let today = now.to_offset(CHINA).date();
    today.previous_day().unwrap_or(today)
}
