//! The outbox's own writes: finding due events, claiming an attempt, recording its result.
//! Events are created by the transitions themselves (`transition.rs`); here only their
//! delivery moves, each move one conditional UpdateItem fenced by `status` and `attempts`.

use time::OffsetDateTime;

use super::expr::Expr;
use super::items::{self, attr};
use super::transition::item_diff;
use super::{DynamoStore, index_start};
use crate::domain::{DeliveryStatus, OutboxEvent};
use crate::store::{Cursor, EventClaim, Page, StoreError};
use crate::timefmt::to_utc_string;

impl DynamoStore {
    pub(super) async fn outbox_due(
        &self,
        shard: u32,
        now: OffsetDateTime,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<OutboxEvent>, StoreError> {
        let partition = items::outbox_gsi2pk(shard);
        let start = index_start(cursor, attr::GSI2PK, attr::GSI2SK, &partition)?;
        let mut e = Expr::default();
        let condition = format!(
            "{} = {} AND {} <= {}",
            e.name(attr::GSI2PK),
            e.value("shard", items::s(partition.clone())),
            e.name(attr::GSI2SK),
            e.value("now", items::s(to_utc_string(now))),
        );
        self.query_page_of(
            items::GSI2,
            e,
            &condition,
            true,
            limit,
            start,
            items::event_from_item,
        )
        .await
    }

    pub(super) async fn outbox_claim(
        &self,
        id: &str,
        now: OffsetDateTime,
        lease: time::Duration,
    ) -> Result<EventClaim, StoreError> {
        let mut e = Expr::default();
        let update = format!(
            "SET {} = {} ADD {} {}",
            e.name(attr::LEASE_UNTIL),
            e.value("lease", items::t(now + lease)),
            e.name(attr::ATTEMPTS),
            e.value("one", items::n(1)),
        );
        let lease_until = e.name(attr::LEASE_UNTIL);
        let now_v = e.value("now", items::t(now));
        let condition = format!(
            "{} = {} AND {} <= {now_v} AND (attribute_not_exists({lease_until}) OR {lease_until} < {now_v})",
            e.name(attr::STATUS),
            e.value("pending", items::s(DeliveryStatus::Pending.as_str())),
            e.name(attr::NEXT_ATTEMPT_AT),
        );
        Ok(
            match self
                .update_returning(items::event_key(id), e, update, condition)
                .await?
            {
                Ok(item) => EventClaim::Claimed(Box::new(items::event_from_item(&item)?)),
                Err(old) => EventClaim::NotClaimed(
                    old.as_ref()
                        .map(items::event_from_item)
                        .transpose()?
                        .map(Box::new),
                ),
            },
        )
    }

    pub(super) async fn outbox_update(
        &self,
        from: &OutboxEvent,
        to: &OutboxEvent,
    ) -> Result<bool, StoreError> {
        if from.id != to.id {
            return Err(StoreError::Invalid(format!(
                "event {} written over event {}",
                to.id, from.id
            )));
        }
        let old = items::event_item(from, self.shards);
        let new = items::event_item(to, self.shards);
        let mut e = Expr::default();
        let (sets, removed) = item_diff(&mut e, &old, &new, &[attr::PK, attr::SK]);
        let mut clauses = Vec::new();
        if !sets.is_empty() {
            clauses.push(format!("SET {}", sets.join(", ")));
        }
        if !removed.is_empty() {
            clauses.push(format!("REMOVE {}", removed.join(", ")));
        }
        if clauses.is_empty() {
            return Ok(true);
        }
        let condition = format!(
            "{} = {} AND {} = {}",
            e.name(attr::STATUS),
            e.value("from_status", items::s(from.status.as_str())),
            e.name(attr::ATTEMPTS),
            e.value("from_attempts", items::n(from.attempts)),
        );
        Ok(self
            .update_returning(items::event_key(&from.id), e, clauses.join(" "), condition)
            .await?
            .is_ok())
    }

    pub(super) async fn outbox_get(&self, id: &str) -> Result<Option<OutboxEvent>, StoreError> {
        self.get_item("GetItem", items::event_key(id))
            .await?
            .as_ref()
            .map(items::event_from_item)
            .transpose()
    }
}
