//! What the bill reconciliation reads and writes (DESIGN 11): a day's payments and successful
//! refunds from their sparse `PAIDON#`/`REFUNDON#` partitions of `gsi2` (a page at a time),
//! payments, refunds and orders by key in batches, and the day's report item (`BILL#<date>`).

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::types::KeysAndAttributes;

use super::expr::build_err;
use super::items::{self, Item, attr};
use super::{BATCH_GET_MAX, BATCH_ROUNDS, DynamoStore, backoff};
use crate::domain::{BillReport, Order, OutRefundNo, OutTradeNo, Payment, Refund};
use crate::store::StoreError;
use crate::store::error::from_sdk;

impl DynamoStore {
    /// Every item of `keys` that exists (consistent reads), in batches of BatchGetItem's
    /// 100 keys, resubmitting what DynamoDB left unprocessed. Duplicate keys are read once.
    pub(super) async fn batch_get(&self, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        let mut seen = HashSet::new();
        let unique: Vec<Item> = keys
            .into_iter()
            .filter(|k| {
                seen.insert((
                    k.get(attr::PK).and_then(|v| v.as_s().ok()).cloned(),
                    k.get(attr::SK).and_then(|v| v.as_s().ok()).cloned(),
                ))
            })
            .collect();
        let mut found = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(BATCH_GET_MAX) {
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(chunk.to_vec()))
                    .consistent_read(true)
                    .build()
                    .map_err(build_err)?,
            );
            let mut round = 0;
            while let Some(request) = pending.take() {
                if round == BATCH_ROUNDS {
                    return Err(StoreError::Throttled {
                        op: "BatchGetItem",
                        message: "keys still unprocessed".into(),
                    });
                }
                backoff(round).await;
                round += 1;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| from_sdk("BatchGetItem", e))?;
                found.extend(
                    out.responses
                        .and_then(|mut r| r.remove(&self.table))
                        .unwrap_or_default(),
                );
                pending = out
                    .unprocessed_keys
                    .and_then(|mut m| m.remove(&self.table))
                    .filter(|k| !k.keys().is_empty());
            }
        }
        Ok(found)
    }

    /// The items of `keys` that exist, parsed and by their own key.
    async fn batch_map<K: std::hash::Hash + Eq, T>(
        &self,
        keys: Vec<Item>,
        parse: fn(&Item) -> Result<T, StoreError>,
        key_of: fn(&T) -> K,
    ) -> Result<HashMap<K, T>, StoreError> {
        self.batch_get(keys)
            .await?
            .iter()
            .map(|item| parse(item).map(|v| (key_of(&v), v)))
            .collect()
    }

    pub(super) async fn payments_by_id(
        &self,
        transaction_ids: &[String],
    ) -> Result<HashMap<String, Payment>, StoreError> {
        let keys = transaction_ids
            .iter()
            .map(|id| items::payment_key(id))
            .collect();
        self.batch_map(keys, items::payment_from_item, |p| p.transaction_id.clone())
            .await
    }

    pub(super) async fn orders_by_no(
        &self,
        out_trade_nos: &[OutTradeNo],
    ) -> Result<HashMap<OutTradeNo, Order>, StoreError> {
        let keys = out_trade_nos.iter().map(items::order_key).collect();
        self.batch_map(keys, items::order_from_item, |o| o.out_trade_no.clone())
            .await
    }

    pub(super) async fn refunds_by_no(
        &self,
        out_refund_nos: &[OutRefundNo],
    ) -> Result<HashMap<OutRefundNo, Refund>, StoreError> {
        let keys = out_refund_nos.iter().map(items::refund_key).collect();
        self.batch_map(keys, items::refund_from_item, |r| r.out_refund_no.clone())
            .await
    }

    /// Replaces the day's report (a re-run's report is the one that stands).
    pub(super) async fn put_report(&self, report: &BillReport) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(items::bill_report_item(report)))
            .send()
            .await
            .map_err(|e| from_sdk("PutItem", e))?;
        Ok(())
    }

    pub(super) async fn get_report(
        &self,
        date: time::Date,
    ) -> Result<Option<BillReport>, StoreError> {
        self.get_item("GetItem", items::bill_key(date))
            .await?
            .as_ref()
            .map(items::bill_report_from_item)
            .transpose()
    }
}
