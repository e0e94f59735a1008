//! The sweeper's stock rebalancer (issue 17): every run, each sharded sku's shards are read
//! and units moved from the richest to the nearly empty ones, each move one conditional
//! two-shard transaction, so orders keep finding stock on the shard they hash to.

use serde::Serialize;
use time::OffsetDateTime;

use super::Deps;
use crate::domain::rebalance;

/// Transfers one run makes per sku at most (a run is once a minute; orders keep moving
/// stock meanwhile, so a plan is only good for a moment).
pub const MAX_TRANSFERS_PER_SKU: usize = 16;

/// What one rebalancer run did; logged and returned with the sweep's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RebalanceSummary {
    /// Sharded skus looked at.
    pub skus: u64,
    /// Transfers written, and the units they moved.
    pub transfers: u64,
    pub units: u64,
    /// Transfers refused because an order took the giver's units first (the next run sees).
    pub refused: u64,
    /// Reads or writes the store failed (the next run retries).
    pub failed: u64,
}

/// Evens out the stock shards of every sharded sku, until `deadline`.
pub async fn rebalance_stock(deps: &Deps, deadline: Option<OffsetDateTime>) -> RebalanceSummary {
    let mut summary = RebalanceSummary::default();
    let skus = match deps.store.sharded_skus().await {
        Ok(skus) => skus,
        Err(e) => {
            tracing::warn!(error = %e, outcome = "failed", "could not list the sharded skus");
            summary.failed += 1;
            return summary;
        }
    };
    for (sku_id, shards) in skus {
        if deadline.is_some_and(|d| deps.now() >= d) {
            break;
        }
        summary.skus += 1;
        let read = match deps.store.stock_shards(&sku_id, shards).await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(%sku_id, error = %e, outcome = "failed", "could not read the stock shards");
                summary.failed += 1;
                continue;
            }
        };
        for transfer in rebalance(&read, MAX_TRANSFERS_PER_SKU) {
            match deps.store.move_stock(&sku_id, &transfer).await {
                Ok(true) => {
                    summary.transfers += 1;
                    summary.units += transfer.quantity.unsigned_abs();
                }
                Ok(false) => summary.refused += 1,
                Err(e) => {
                    tracing::warn!(%sku_id, from = transfer.from, to = transfer.to, error = %e, outcome = "failed", "stock transfer failed");
                    summary.failed += 1;
                    break;
                }
            }
        }
    }
    if summary.transfers > 0 || summary.failed > 0 {
        tracing::info!(
            skus = summary.skus,
            transfers = summary.transfers,
            units = summary.units,
            refused = summary.refused,
            failed = summary.failed,
            "stock shards rebalanced"
        );
    }
    summary
}
