//! The in-process catalog cache (issue 17): a sharded sku's price and active state are read
//! from here for a few seconds, so a flash sale's orders never read (nor, in their
//! transactions, write or check) its hot product item. Other skus are read from the store
//! every time, as their transactions check them anyway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use time::{Duration, OffsetDateTime};

use crate::domain::{Product, SkuId};
use crate::store::{Store, StoreError};

/// How long a sharded sku's catalog entry is trusted: a price or active change reaches
/// orders within this (freeze the catalog during a sale).
pub const CATALOG_TTL: Duration = Duration::seconds(5);

/// Shared by every request of a process (cheap to clone).
#[derive(Clone)]
pub struct CatalogCache {
    ttl: Duration,
    entries: Arc<Mutex<HashMap<SkuId, (Product, OffsetDateTime)>>>,
}

impl Default for CatalogCache {
    fn default() -> Self {
        CatalogCache::new(CATALOG_TTL)
    }
}

impl CatalogCache {
    pub fn new(ttl: Duration) -> Self {
        CatalogCache {
            ttl,
            entries: Arc::default(),
        }
    }

    /// The catalog entries of `skus` that exist: a sharded sku read less than the TTL ago
    /// comes from the cache, everything else from the store (one batched read), and what
    /// was read is remembered.
    pub async fn products(
        &self,
        store: &dyn Store,
        skus: &[SkuId],
        now: OffsetDateTime,
    ) -> Result<HashMap<SkuId, Product>, StoreError> {
        let mut found = HashMap::with_capacity(skus.len());
        let mut missing = Vec::new();
        {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            for sku in skus {
                match entries.get(sku) {
                    Some((p, at)) if p.is_sharded() && now - *at < self.ttl => {
                        found.insert(sku.clone(), p.clone());
                    }
                    _ => missing.push(sku.clone()),
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let read = store.get_products(&missing).await?;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for (sku, p) in read {
            entries.insert(sku.clone(), (p.clone(), now));
            found.insert(sku, p);
        }
        Ok(found)
    }
}
