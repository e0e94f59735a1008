//! The outbox's own writes: finding due events, claiming an attempt, recording its result.
//! Events are created by the transitions themselves (`transition.rs`); here only their
//! delivery moves, each move one conditional UpdateItem fenced by `status` and `attempts`.

use time::OffsetDateTime;

use super::DynamoStore;
use super::expr::Expr;
use super::items::{self, attr};
use super::transition::item_diff;
use crate::domain::{DeliveryStatus, OutboxEvent};
use crate::store::{Cursor, EventClaim, Page, StoreError};

impl DynamoStore {
    pub(super) async fn outbox_due(
        &self,
        shard: u32,
        now: OffsetDateTime,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<OutboxEvent>, StoreError> {
        // One unreadable item must not stall its shard: it is logged and left out.
        let page = self
            .due_in(items::outbox_gsi2pk(shard), now, limit, cursor, |item| {
                Ok(items::event_from_item(item).map_err(|err| (item.clone(), err)))
            })
            .await?;
        let items = page
            .items
            .into_iter()
            .filter_map(|decoded| match decoded {
                Ok(event) => Some(event),
                Err((item, err)) => {
                    let key = item.get(attr::PK).and_then(|v| v.as_s().ok()).cloned();
                    tracing::error!(pk = key.as_deref().unwrap_or(""), error = %err, outcome = "malformed_event", "an outbox item this version cannot read; skipped");
                    None
                }
            })
            .collect();
        Ok(Page {
            items,
            next: page.next,
        })
    }

    pub(super) async fn outbox_claim(
        &self,
        id: &str,
        now: OffsetDateTime,
        lease: time::Duration,
    ) -> Result<EventClaim, StoreError> {
        let mut e = Expr::default();
        let first = e.name(attr::FIRST_ATTEMPT_AT);
        let update = format!(
            "SET {} = {}, {first} = if_not_exists({first}, {}) ADD {} {one}, {} {one}",
            e.name(attr::LEASE_UNTIL),
            e.value("lease", items::t(now + lease)),
            e.value("first", items::t(now)),
            e.name(attr::ATTEMPTS),
            e.name(attr::FENCE),
            one = e.value("one", items::n(1)),
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
        // The fence grows with every claim and redelivery: a result recorded over the fence
        // its claim set is the newest word, anything else lost to a newer one.
        let fence = e.name(attr::FENCE);
        let condition = if from.fence == 0 {
            format!(
                "{} = {} AND (attribute_not_exists({fence}) OR {fence} = {})",
                e.name(attr::STATUS),
                e.value("from_status", items::s(from.status.as_str())),
                e.value("from_fence", items::n(0)),
            )
        } else {
            format!(
                "{} = {} AND {fence} = {}",
                e.name(attr::STATUS),
                e.value("from_status", items::s(from.status.as_str())),
                e.value("from_fence", items::n(from.fence)),
            )
        };
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
