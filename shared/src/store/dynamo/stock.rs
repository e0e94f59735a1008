//! Sharded stock on DynamoDB (issue 17): the shard items of a flash-sale sku
//! (`STOCK#<sku>#<k>`), the actions that reserve, release and restock on the shard an order
//! recorded, the rebalancer's conditional two-shard transfer, and the reads behind them.
//! Every stock change rides in its order's transaction or is itself conditional, so a shard
//! is never negative and a unit is never counted twice.

use aws_sdk_dynamodb::types::TransactWriteItem;

use super::DynamoStore;
use super::expr::{Expr, is_ccf, unexplained_cancel, update_action};
use super::items::{self, Item, attr};
use crate::domain::{SkuId, StockChange, StockMove, StockShard, StockTransfer};
use crate::store::StoreError;

/// How many actions a stock move takes: a sharded restock gives the units back to its
/// shard and takes them off the product's `sold`; every other move writes one item.
pub(super) fn actions_per_move(m: &StockMove) -> usize {
    match (m.shard, m.change) {
        (Some(_), StockChange::Restock) => 2,
        _ => 1,
    }
}

/// The sku each action of `moves` writes, in action order: what a cancellation reason at
/// that position is about.
pub(super) fn action_skus(moves: &[StockMove]) -> Vec<&SkuId> {
    moves
        .iter()
        .flat_map(|m| std::iter::repeat_n(&m.sku_id, actions_per_move(m)))
        .collect()
}

impl DynamoStore {
    /// `q` units reserved on one shard, only if it has them: the order transaction's stock
    /// action for a sharded sku (the product item is not in that transaction at all).
    pub(super) fn shard_reservation(
        &self,
        sku_id: &SkuId,
        shard: u32,
        q: i64,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut e = Expr::default();
        let update = format!(
            "ADD {} {}, {} {}",
            e.name(attr::AVAILABLE),
            e.value("neg_q", items::n(-q)),
            e.name(attr::TAKEN),
            e.value("q", items::n(q)),
        );
        let condition = format!(
            "attribute_exists({}) AND {} >= {}",
            e.name(attr::PK),
            e.name(attr::AVAILABLE),
            e.value("q", items::n(q)),
        );
        update_action(
            &self.table,
            items::stock_shard_key(sku_id, shard),
            update,
            condition,
            e,
        )
    }

    /// One move's actions (see [`actions_per_move`]). Each is conditional on its item
    /// existing: an ADD would otherwise create a product or shard for a deleted sku.
    pub(super) fn stock_actions(
        &self,
        m: &StockMove,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let q = i64::from(m.quantity);
        let add = |key: Item, counters: &[(&str, i64)]| {
            let mut e = Expr::default();
            let adds: Vec<String> = counters
                .iter()
                .enumerate()
                .map(|(i, (name, by))| {
                    format!(
                        "{} {}",
                        e.name(name),
                        e.value(&format!("by{i}"), items::n(*by))
                    )
                })
                .collect();
            let condition = format!("attribute_exists({})", e.name(attr::PK));
            update_action(
                &self.table,
                key,
                format!("ADD {}", adds.join(", ")),
                condition,
                e,
            )
        };
        let product = || items::product_key(&m.sku_id);
        Ok(match (m.shard, m.change) {
            (None, StockChange::Sell) => {
                vec![add(product(), &[(attr::RESERVED, -q), (attr::SOLD, q)])?]
            }
            (None, StockChange::Release) => {
                vec![add(
                    product(),
                    &[(attr::RESERVED, -q), (attr::AVAILABLE, q)],
                )?]
            }
            (None, StockChange::Restock) => {
                vec![add(product(), &[(attr::SOLD, -q), (attr::AVAILABLE, q)])?]
            }
            // A sharded sku's product item never counted the reservation: only `sold`.
            (Some(_), StockChange::Sell) => vec![add(product(), &[(attr::SOLD, q)])?],
            (Some(shard), StockChange::Release) => vec![add(
                items::stock_shard_key(&m.sku_id, shard),
                &[(attr::TAKEN, -q), (attr::AVAILABLE, q)],
            )?],
            (Some(shard), StockChange::Restock) => vec![
                add(
                    items::stock_shard_key(&m.sku_id, shard),
                    &[(attr::TAKEN, -q), (attr::AVAILABLE, q)],
                )?,
                add(product(), &[(attr::SOLD, -q)])?,
            ],
        })
    }

    /// Every shard of a sku (`0..shards`), strongly consistent, in shard order; missing ones
    /// are absent.
    pub(super) async fn read_stock_shards(
        &self,
        sku_id: &SkuId,
        shards: u32,
    ) -> Result<Vec<StockShard>, StoreError> {
        let keys = (0..shards)
            .map(|k| items::stock_shard_key(sku_id, k))
            .collect();
        let mut found = self
            .batch_get(keys)
            .await?
            .iter()
            .map(items::stock_shard_from_item)
            .collect::<Result<Vec<_>, _>>()?;
        found.sort_by_key(|s| s.shard);
        Ok(found)
    }

    /// The rebalancer's step: `quantity` units from one shard to another in one transaction,
    /// only if the giver still has them. `false`: it did not (an order took them first);
    /// nothing moved.
    pub(super) async fn transfer_stock(
        &self,
        sku_id: &SkuId,
        transfer: &StockTransfer,
    ) -> Result<bool, StoreError> {
        if transfer.from == transfer.to || transfer.quantity <= 0 {
            return Err(StoreError::Invalid(format!(
                "a stock transfer needs two shards and a positive quantity (got {transfer:?})"
            )));
        }
        let q = transfer.quantity;
        let mut e = Expr::default();
        let give = update_action(
            &self.table,
            items::stock_shard_key(sku_id, transfer.from),
            format!(
                "ADD {} {}",
                e.name(attr::AVAILABLE),
                e.value("neg_q", items::n(-q))
            ),
            format!(
                "attribute_exists({}) AND {} >= {}",
                e.name(attr::PK),
                e.name(attr::AVAILABLE),
                e.value("q", items::n(q))
            ),
            e,
        )?;
        let mut e = Expr::default();
        let take = update_action(
            &self.table,
            items::stock_shard_key(sku_id, transfer.to),
            format!(
                "ADD {} {}",
                e.name(attr::AVAILABLE),
                e.value("q", items::n(q))
            ),
            format!("attribute_exists({})", e.name(attr::PK)),
            e,
        )?;
        match self.transact(vec![give, take]).await? {
            Ok(()) => Ok(true),
            Err(reasons) if reasons.first().is_some_and(is_ccf) => Ok(false),
            Err(reasons) if reasons.get(1).is_some_and(is_ccf) => Err(StoreError::Invalid(
                format!("sku {sku_id} has no stock shard {}", transfer.to),
            )),
            Err(reasons) => Err(unexplained_cancel(&reasons)),
        }
    }

    /// The sharded skus and their shard counts (the list written when their stock was staged).
    pub(super) async fn list_sharded_skus(&self) -> Result<Vec<(SkuId, u32)>, StoreError> {
        self.partition(
            items::SHARDED_SKUS_PK.to_owned(),
            items::sharded_sku_from_item,
        )
        .await
    }
}
