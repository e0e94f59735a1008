//! `StoreSupport` on DynamoDB: catalog seeding and direct reads for tests and the sandbox
//! (behind the `test-support` feature; the function binaries never carry them).

use std::collections::HashSet;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};

use super::expr::{Expr, build_err, conditional};
use super::items;
use super::{BATCH_ROUNDS, BATCH_WRITE_MAX, DynamoStore, backoff, prepay_expression};
use crate::domain::{MAX_STOCK_SHARDS, Order, OutTradeNo, Product, SkuId};
use crate::idempotency::{IdempotencyRecord, IdempotencyScope};
use crate::store::error::from_sdk;
use crate::store::{NotificationRecord, Payment, PrepayOutcome, StoreError, StoreSupport};

impl DynamoStore {
    /// Whole items written unconditionally, 25 per BatchWriteItem, unprocessed ones retried
    /// with backoff: seeding only.
    async fn put_items(&self, all: Vec<items::Item>) -> Result<(), StoreError> {
        for chunk in all.chunks(BATCH_WRITE_MAX) {
            let mut pending = chunk
                .iter()
                .map(|item| {
                    PutRequest::builder()
                        .set_item(Some(item.clone()))
                        .build()
                        .map(|put| WriteRequest::builder().put_request(put).build())
                        .map_err(build_err)
                })
                .collect::<Result<Vec<_>, _>>()?;
            for round in 0..=BATCH_ROUNDS {
                if pending.is_empty() {
                    break;
                }
                if round == BATCH_ROUNDS {
                    return Err(StoreError::Throttled {
                        op: "BatchWriteItem",
                        message: format!("{} items still unprocessed", pending.len()),
                    });
                }
                backoff(round).await;
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(|e| from_sdk("BatchWriteItem", e))?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.table))
                    .unwrap_or_default();
            }
        }
        Ok(())
    }

    /// A sharded sku's stock staged: `stock` split evenly over its shards (the remainder on
    /// the first ones), each shard written only if absent, and the sku listed for the
    /// rebalancer.
    async fn stage_shards(&self, p: &Product) -> Result<(), StoreError> {
        let (stock, n) = (p.stock.unwrap_or(0).max(0), i64::from(p.stock_shards));
        for shard in 0..p.stock_shards {
            let available = stock / n + i64::from(i64::from(shard) < stock % n);
            let mut e = Expr::default();
            let condition = format!("attribute_not_exists({})", e.name(items::attr::PK));
            let (names, values) = e.into_parts();
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(items::stock_shard_item(&p.sku_id, shard, available)))
                .condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .send()
                .await;
            // A shard already there keeps its counters (its reservations).
            let _kept_or_written = conditional("PutItem", result)?;
        }
        self.put_items(vec![items::sharded_sku_item(&p.sku_id, p.stock_shards)])
            .await
    }

    /// The stored `available` counter of a product (a denormalised `stock - reserved - sold`
    /// that conditions can compare); exposed so tests can check it never drifts.
    pub async fn product_available_counter(
        &self,
        sku_id: &SkuId,
    ) -> Result<Option<i64>, StoreError> {
        match self.get_item("GetItem", items::product_key(sku_id)).await? {
            Some(item) => items::product_available_attr(&item),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl StoreSupport for DynamoStore {
    async fn put_products(&self, products: &[Product]) -> Result<(), StoreError> {
        let mut seen = HashSet::new();
        if let Some(dup) = products.iter().find(|p| !seen.insert(&p.sku_id)) {
            return Err(StoreError::Invalid(format!(
                "sku {} listed twice",
                dup.sku_id
            )));
        }
        if let Some(p) = products
            .iter()
            .find(|p| p.stock_shards == 0 || p.stock_shards > MAX_STOCK_SHARDS)
        {
            return Err(StoreError::Invalid(format!(
                "sku {}: stock_shards must be 1..={MAX_STOCK_SHARDS} (got {})",
                p.sku_id, p.stock_shards
            )));
        }
        self.put_items(products.iter().map(items::product_item).collect())
            .await?;
        for p in products.iter().filter(|p| p.is_sharded()) {
            self.stage_shards(p).await?;
        }
        Ok(())
    }

    async fn put_paid_orders(&self, paid: &[(Order, Payment)]) -> Result<(), StoreError> {
        self.put_items(
            paid.iter()
                .flat_map(|(order, payment)| {
                    [
                        items::order_item(order, self.shards),
                        items::payment_item(payment),
                    ]
                })
                .collect(),
        )
        .await
    }

    async fn get_product(&self, sku_id: &SkuId) -> Result<Option<Product>, StoreError> {
        self.get_item("GetItem", items::product_key(sku_id))
            .await?
            .as_ref()
            .map(items::product_from_item)
            .transpose()
    }

    async fn get_idempotency(
        &self,
        scope: &IdempotencyScope,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.get_item("GetItem", items::idempotency_key(scope))
            .await?
            .as_ref()
            .map(items::idempotency_from_item)
            .transpose()
    }

    async fn record_prepay(
        &self,
        out_trade_no: &OutTradeNo,
        prepay_id: &str,
    ) -> Result<PrepayOutcome, StoreError> {
        let (e, update, condition) = prepay_expression(prepay_id, None);
        Ok(
            match self
                .update_order(out_trade_no, e, update, condition)
                .await?
            {
                Ok(order) => PrepayOutcome::Recorded(Box::new(order)),
                Err(Some(old)) => PrepayOutcome::NotPending(Box::new(old)),
                Err(None) => PrepayOutcome::NotFound,
            },
        )
    }

    async fn get_notification(&self, id: &str) -> Result<Option<NotificationRecord>, StoreError> {
        self.get_item("GetItem", items::notification_key(id))
            .await?
            .as_ref()
            .map(items::notification_from_item)
            .transpose()
    }
}
