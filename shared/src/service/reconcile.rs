//! The daily bill reconciliation (DESIGN 11): WeChat Pay's trade bill of a Beijing date, checked
//! whole (SHA-1, layout, sums) before anything is applied, held row by row to the table: matched,
//! recovered by the payment or refund path, or a `BILL_MISMATCH` anomaly; the report replaces.

use std::collections::HashSet;

use time::{Date, OffsetDateTime};

use super::{Deps, PaymentOutcome, RefundError, apply_payment, apply_refund_result};
use crate::{
    domain::{
        Anomaly, AnomalyKind, BillMismatch, BillMismatchKind, BillReport, BillSums, DAY_SHARDS,
        OrderStatus, OutRefundNo, OutTradeNo, Refund, RefundStatus,
    },
    store::{Page, StoreError},
    telemetry::Metric,
    timefmt::{CHINA, date_string},
    wechatpay::{
        bill::{BillError, BillRow, BillSummary, TradeBillReader, check_download},
        gateway::PayError,
        refund::RefundState,
    },
};

/// Rows looked up in the table at once (one BatchGetItem of payments, one of refunds).
const CHUNK: usize = 100;
/// Page size of the day's payments and refunds read from the table.
const PAGE: u32 = 100;

/// How a run ended (errors aside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconcileOutcome {
    /// The date is reconciled: its report, as stored.
    Reconciled(Box<BillReport>),
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
pub async fn reconcile_bill(deps: &Deps, date: Date) -> Result<ReconcileOutcome, ReconcileError> {
    // At the millisecond the table keeps, so the report answered is the report stored.
    let started = deps.now();
    let started = started
        .replace_nanosecond(u32::from(started.millisecond()) * 1_000_000)
        .unwrap_or(started);
    if date > started.to_offset(CHINA).date() {
        return Err(ReconcileError::FutureDate(date_string(date)));
    }
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
            let mut run = Run::new(deps, date);
            run.local_not_in_bill(&mut report).await?;
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
    // Second pass over the same checked bytes: the rows, a chunk at a time.
    let mut run = Run::new(deps, date);
    let mut reader = TradeBillReader::gzip(download.as_slice());
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        let row = reader.next_row().map_err(refused)?;
        let end = row.is_none();
        chunk.extend(row);
        if chunk.len() == CHUNK || (end && !chunk.is_empty()) {
            run.rows(std::mem::take(&mut chunk), &mut report).await?;
        }
        if end {
            break;
        }
    }
    run.local_not_in_bill(&mut report).await?;
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
    let outcome = if report.mismatch_count > 0 {
        "mismatches"
    } else {
        "ok"
    };
    tracing::info!(
        bill_date = %date_string(report.bill_date),
        statement = report.statement,
        rows = report.rows,
        matched = report.matched,
        recovered = report.recovered,
        mismatches = report.mismatch_count,
        paid = report.sums.paid,
        refunded = report.sums.refunded,
        outcome,
        "bill reconciled"
    );
    Ok(ReconcileOutcome::Reconciled(Box::new(report)))
}

fn sums(s: &BillSummary) -> BillSums {
    BillSums {
        paid: s.amount_fen,
        refunded: s.refund_requested_fen,
        fees: BillSums::fen_of_millifen(s.fee_millifen),
        fees_millifen: s.fee_millifen,
    }
}

/// One run's state: what the bill named, to find what the table has and the bill lacks.
struct Run<'a> {
    deps: &'a Deps,
    date: Date,
    bill_payments: HashSet<String>,
    bill_refunds: HashSet<String>,
}

impl<'a> Run<'a> {
    fn new(deps: &'a Deps, date: Date) -> Self {
        Run {
            deps,
            date,
            bill_payments: HashSet::new(),
            bill_refunds: HashSet::new(),
        }
    }

    /// A chunk of rows: the table's payments and refunds they name read in one batch each.
    async fn rows(
        &mut self,
        rows: Vec<BillRow>,
        report: &mut BillReport,
    ) -> Result<(), ReconcileError> {
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
        for row in rows {
            if row.is_payment() {
                self.bill_payments.insert(row.transaction_id.clone());
                match payments.get(&row.transaction_id) {
                    Some(p)
                        if p.amount.fen() == row.amount_fen
                            && p.out_trade_no.as_str() == row.out_trade_no =>
                    {
                        match orders.get(&p.out_trade_no) {
                            Some(o)
                                if o.status.is_paid()
                                    && o.status != OrderStatus::AmountMismatch
                                    && o.transaction_id.as_deref()
                                        == Some(row.transaction_id.as_str()) =>
                            {
                                report.matched += 1;
                            }
                            // Held by the payment path, with its own anomaly: reported as
                            // the run that applied it reported it, nothing recorded again.
                            Some(o) if o.status == OrderStatus::AmountMismatch => {
                                report.push_mismatch(kept_as_anomaly(
                                    &row,
                                    AnomalyKind::AmountMismatch,
                                ));
                            }
                            order => {
                                let detail = format!(
                                    "the table has the payment but its order {} is {}",
                                    p.out_trade_no,
                                    order.map_or("missing".to_owned(), |o| format!(
                                        "{} (transaction {})",
                                        o.status,
                                        o.transaction_id.as_deref().unwrap_or("none")
                                    ))
                                );
                                self.mismatch(
                                    report,
                                    row_mismatch(&row, BillMismatchKind::PaymentAnomaly, detail),
                                )
                                .await?;
                            }
                        }
                    }
                    Some(p) => {
                        let detail = format!(
                            "the bill has {} fen for order {}, the table {} fen for order {}",
                            row.amount_fen,
                            row.out_trade_no,
                            p.amount.fen(),
                            p.out_trade_no
                        );
                        self.mismatch(
                            report,
                            row_mismatch(&row, BillMismatchKind::PaymentAmount, detail),
                        )
                        .await?;
                    }
                    None => self.recover_payment(&row, report).await?,
                }
            } else if row.is_refund() {
                let no = row.out_refund_no.clone().unwrap_or_default();
                self.bill_refunds.insert(no.clone());
                let kept = OutRefundNo::parse(&no).ok().and_then(|n| refunds.get(&n));
                match kept {
                    None => {
                        let detail = format!(
                            "refund {no} of {} fen (order {}) is not in the table: made outside this service?",
                            row.refund_requested_fen, row.out_trade_no
                        );
                        self.mismatch(
                            report,
                            row_mismatch(&row, BillMismatchKind::RefundUnknown, detail),
                        )
                        .await?;
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
                        self.mismatch(
                            report,
                            row_mismatch(&row, BillMismatchKind::RefundAmount, detail),
                        )
                        .await?;
                    }
                    Some(r) if r.status == RefundStatus::Success => report.matched += 1,
                    Some(r) => self.sync_refund(&row, r.clone(), report).await?,
                }
            } else {
                let detail = format!(
                    "line {}: 交易状态 {} is neither a payment nor a refund",
                    row.line, row.trade_state
                );
                self.mismatch(
                    report,
                    row_mismatch(&row, BillMismatchKind::UnexpectedRow, detail),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// A payment row the table has no payment item for: WeChat Pay is asked, and a payment
    /// it confirms is applied by the path every notification and sweep takes.
    async fn recover_payment(
        &self,
        row: &BillRow,
        report: &mut BillReport,
    ) -> Result<(), ReconcileError> {
        let unconfirmed =
            |detail: String| row_mismatch(row, BillMismatchKind::PaymentUnconfirmed, detail);
        let Ok(out_trade_no) = OutTradeNo::parse(&row.out_trade_no) else {
            let detail = format!(
                "{} fen paid for {:?}, which is not one of this service's order numbers",
                row.amount_fen, row.out_trade_no
            );
            return self.mismatch(report, unconfirmed(detail)).await;
        };
        let txn = match self
            .deps
            .gateway
            .query_by_out_trade_no(out_trade_no.as_str())
            .await
        {
            Ok(txn) => txn,
            Err(e) if e.code() == Some("ORDER_NOT_EXIST") => {
                let detail = "WeChat Pay's query says ORDER_NOT_EXIST".to_owned();
                return self.mismatch(report, unconfirmed(detail)).await;
            }
            // A refusal that asking again tomorrow would repeat: this row is reported and the
            // run goes on, so one row never keeps the whole day unreconciled.
            Err(e) if !e.retryable() => {
                let detail = format!("WeChat Pay's query was refused: {e}");
                return self.mismatch(report, unconfirmed(detail)).await;
            }
            Err(e) => return Err(e.into()),
        };
        if !txn.trade_state.is_paid()
            || txn.transaction_id.as_deref() != Some(row.transaction_id.as_str())
        {
            let detail = format!(
                "WeChat Pay's query says {} (transaction {})",
                txn.trade_state,
                txn.transaction_id.as_deref().unwrap_or("none")
            );
            return self.mismatch(report, unconfirmed(detail)).await;
        }
        let order = self.deps.store.get_order(&out_trade_no).await?;
        match apply_payment(self.deps, order, &txn, None).await {
            Ok(PaymentOutcome::Applied(_)) => {
                tracing::info!(bill_date = %date_string(self.date), out_trade_no = %out_trade_no, transaction_id = %row.transaction_id, outcome = "recovered", "a payment the table lacked applied from the bill");
                report.recovered += 1;
            }
            // Applied meanwhile (a late notification, the sweeper).
            Ok(PaymentOutcome::Duplicate(_)) => report.matched += 1,
            // Kept as the payment path's own anomaly (never applied twice, never lost).
            Ok(PaymentOutcome::Anomaly { kind, .. }) => {
                report.push_mismatch(kept_as_anomaly(row, kind));
            }
            Err(super::ApplyError::Store(e)) => return Err(e.into()),
            Err(super::ApplyError::Malformed(m)) => {
                return self
                    .mismatch(
                        report,
                        unconfirmed(format!("WeChat Pay's transaction: {m}")),
                    )
                    .await;
            }
        }
        Ok(())
    }

    /// A refund row whose refund the table has open (or settled otherwise): WeChat Pay's word
    /// applied by the refund path notifications take.
    async fn sync_refund(
        &self,
        row: &BillRow,
        refund: Refund,
        report: &mut BillReport,
    ) -> Result<(), ReconcileError> {
        let before = refund.status;
        let answer = match self
            .deps
            .gateway
            .query_refund(refund.out_refund_no.as_str())
            .await
        {
            Ok(answer) => answer,
            Err(PayError::Api { status: 404, .. }) => {
                let detail =
                    format!("refund is {before} here, but WeChat Pay's query does not know it");
                return self
                    .mismatch(
                        report,
                        row_mismatch(row, BillMismatchKind::RefundState, detail),
                    )
                    .await;
            }
            Err(e) if !e.retryable() => {
                let detail =
                    format!("refund is {before} here; WeChat Pay's query was refused: {e}");
                return self
                    .mismatch(
                        report,
                        row_mismatch(row, BillMismatchKind::RefundState, detail),
                    )
                    .await;
            }
            Err(e) => return Err(e.into()),
        };
        let Some(order) = self.deps.store.get_order(&refund.out_trade_no).await? else {
            let detail = format!("its order {} is not in the table", refund.out_trade_no);
            return self
                .mismatch(
                    report,
                    row_mismatch(row, BillMismatchKind::RefundState, detail),
                )
                .await;
        };
        let wechat = answer.status.clone();
        let (after, moved) = match apply_refund_result(
            self.deps,
            &order,
            refund,
            &answer,
            self.deps.now(),
        )
        .await
        {
            Ok(applied) => applied,
            Err(RefundError::Store(e)) => return Err(e.into()),
            // The refund path refused WeChat Pay's answer (it cannot apply it to the refund
            // or order as they are): reported, and the run goes on.
            Err(e) => {
                let detail = format!(
                    "refund is {before} here; WeChat Pay says {}, which could not be applied: {e}",
                    answer.status
                );
                return self
                    .mismatch(
                        report,
                        row_mismatch(row, BillMismatchKind::RefundState, detail),
                    )
                    .await;
            }
        };
        let agrees = match wechat {
            RefundState::Success => after.status == RefundStatus::Success,
            RefundState::Closed => after.status == RefundStatus::Closed,
            RefundState::Abnormal => after.status == RefundStatus::Abnormal,
            RefundState::Processing | RefundState::Other(_) => after.status.holds_reservation(),
        };
        if !agrees {
            let detail = format!(
                "refund is {} here but WeChat Pay says {}",
                after.status, answer.status
            );
            return self
                .mismatch(
                    report,
                    row_mismatch(row, BillMismatchKind::RefundState, detail),
                )
                .await;
        }
        if moved && after.status != before {
            tracing::info!(bill_date = %date_string(self.date), out_refund_no = %after.out_refund_no, from = %before, to = %after.status, outcome = "recovered", "a refund the table had open settled from the bill");
            report.recovered += 1;
        } else {
            report.matched += 1;
        }
        Ok(())
    }

    /// The day's payments and successful refunds in the table that the bill does not list.
    async fn local_not_in_bill(&mut self, report: &mut BillReport) -> Result<(), ReconcileError> {
        for shard in 0..DAY_SHARDS {
            let mut cursor = None;
            loop {
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
        Ok(())
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
