//! `StoreSupport` on DynamoDB: catalog seeding and direct reads for tests and the sandbox
//! (behind the `test-support` feature; the function binaries never carry them).

use std::collections::HashSet;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};

use super::expr::build_err;
use super::items;
use super::{BATCH_ROUNDS, BATCH_WRITE_MAX, DynamoStore, backoff, prepay_expression};
use crate::domain::{Order, OutTradeNo, Product, SkuId};
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
        self.put_items(products.iter().map(items::product_item).collect())
            .await
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
