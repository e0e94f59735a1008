//! The sandbox's demo catalog: `infra/local/products.json` (built in, or `--products FILE`),
//! validated into domain `Product`s and seeded into the table on every start. The rule: a
//! sku missing from the table is inserted; an existing one gets name, price, stock and active
//! from the file but keeps its `reserved` and `sold` counters, so restarts never lose stock.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;
use shared::domain::{Money, Product, SkuId};
use shared::store::{StoreError, StoreSupport};

/// The repository's `infra/local/products.json`, compiled in so the binary runs from any
/// directory (cargo rebuilds the sandbox when the file changes).
pub const BUILT_IN: &str = include_str!("../../infra/local/products.json");

/// Where the built-in catalog came from, for messages.
pub const BUILT_IN_NAME: &str = "infra/local/products.json";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("seeding the catalog: {0}")]
    Store(#[from] StoreError),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    /// Free text for whoever edits the file.
    #[serde(default)]
    #[allow(dead_code)]
    about: Option<String>,
    products: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    sku_id: String,
    name: String,
    /// Fen.
    price: i64,
    /// Absent: unlimited.
    #[serde(default)]
    stock: Option<i64>,
    #[serde(default = "yes")]
    active: bool,
    /// Stock shard items (a flash-sale sku); absent: 1, the single counter.
    #[serde(default)]
    stock_shards: Option<u32>,
}

fn yes() -> bool {
    true
}

/// One sku as the file defines it (no counters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub sku_id: SkuId,
    pub name: String,
    pub price: Money,
    pub stock: Option<i64>,
    pub active: bool,
    /// 1: the single counter; more: its stock is staged over that many shards.
    pub stock_shards: u32,
}

/// The validated catalog, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    /// `infra/local/products.json` or the `--products` path.
    pub source_name: String,
    pub entries: Vec<CatalogEntry>,
}

/// What seeding did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeedReport {
    pub inserted: usize,
    pub refreshed: usize,
    pub unchanged: usize,
}

impl Catalog {
    /// The built-in catalog, or the file at `path`.
    pub fn load(path: Option<&Path>) -> Result<Catalog, CatalogError> {
        match path {
            None => Catalog::parse(BUILT_IN_NAME, BUILT_IN),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Catalog::parse(&path.display().to_string(), &text)
            }
        }
    }

    pub fn parse(source_name: &str, text: &str) -> Result<Catalog, CatalogError> {
        let invalid = |message: String| CatalogError::Invalid {
            source_name: source_name.to_owned(),
            message,
        };
        let file: CatalogFile = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if file.products.is_empty() {
            return Err(invalid("no products".into()));
        }
        let mut seen = HashSet::new();
        let mut entries = Vec::with_capacity(file.products.len());
        for entry in file.products {
            let sku_id = SkuId::parse(&entry.sku_id)
                .map_err(|e| invalid(format!("sku_id {:?}: {e}", entry.sku_id)))?;
            if !seen.insert(sku_id.clone()) {
                return Err(invalid(format!("sku_id {sku_id} is listed twice")));
            }
            if entry.name.trim().is_empty() {
                return Err(invalid(format!("{sku_id}: name must not be empty")));
            }
            if entry.price <= 0 {
                return Err(invalid(format!(
                    "{sku_id}: price must be at least 1 fen (got {})",
                    entry.price
                )));
            }
            let price = Money::from_fen(entry.price)
                .map_err(|e| invalid(format!("{sku_id}: price: {e}")))?;
            if let Some(stock) = entry.stock
                && stock < 0
            {
                return Err(invalid(format!(
                    "{sku_id}: stock must not be negative (got {stock}); leave it out for unlimited"
                )));
            }
            let stock_shards = entry.stock_shards.unwrap_or(1);
            if !(1..=shared::domain::MAX_STOCK_SHARDS).contains(&stock_shards) {
                return Err(invalid(format!(
                    "{sku_id}: stock_shards must be 1-{} (got {stock_shards})",
                    shared::domain::MAX_STOCK_SHARDS
                )));
            }
            if stock_shards > 1 && entry.stock.is_none() {
                return Err(invalid(format!(
                    "{sku_id}: stock_shards needs a limited stock to split"
                )));
            }
            entries.push(CatalogEntry {
                sku_id,
                name: entry.name,
                price,
                stock: entry.stock,
                active: entry.active,
                stock_shards,
            });
        }
        Ok(Catalog {
            source_name: source_name.to_owned(),
            entries,
        })
    }

    pub fn sku_ids(&self) -> Vec<SkuId> {
        self.entries.iter().map(|e| e.sku_id.clone()).collect()
    }

    pub fn get(&self, sku_id: &str) -> Option<&CatalogEntry> {
        self.entries.iter().find(|e| e.sku_id.as_str() == sku_id)
    }

    /// The first active sku with limited stock (the demo's and the walkthrough's choice).
    pub fn limited(&self) -> Option<&CatalogEntry> {
        self.entries
            .iter()
            .find(|e| e.active && e.stock.is_some_and(|s| s > 0))
    }

    pub fn inactive(&self) -> Option<&CatalogEntry> {
        self.entries.iter().find(|e| !e.active)
    }

    /// Inserts missing skus and refreshes the definition of existing ones, keeping their
    /// counters (see the module docs). Run before anything serves orders.
    pub async fn seed(&self, store: &dyn StoreSupport) -> Result<SeedReport, CatalogError> {
        let existing = store.get_products(&self.sku_ids()).await?;
        let mut report = SeedReport::default();
        let mut writes = Vec::new();
        for entry in &self.entries {
            let (reserved, sold) = match existing.get(&entry.sku_id) {
                None => {
                    report.inserted += 1;
                    (0, 0)
                }
                Some(current) => {
                    let same = current.name == entry.name
                        && current.price == entry.price
                        && current.stock == entry.stock
                        && current.active == entry.active
                        && current.stock_shards == entry.stock_shards;
                    if same {
                        report.unchanged += 1;
                        continue;
                    }
                    report.refreshed += 1;
                    (current.reserved, current.sold)
                }
            };
            writes.push(Product {
                sku_id: entry.sku_id.clone(),
                name: entry.name.clone(),
                price: entry.price,
                stock: entry.stock,
                reserved,
                sold,
                active: entry.active,
                stock_shards: entry.stock_shards,
            });
        }
        if !writes.is_empty() {
            store.put_products(&writes).await?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalog_is_valid_and_has_what_the_demo_needs() {
        let c = Catalog::load(None).unwrap();
        let limited = c.limited().expect("a limited-stock sku");
        assert_eq!(limited.stock, Some(5));
        assert!(c.inactive().is_some());
        assert!(c.entries.iter().any(|e| e.stock.is_none() && e.active));
        assert!(c.entries.iter().any(|e| !e.name.is_ascii()));
        assert!(
            c.entries.iter().any(|e| e.active && e.stock_shards > 1),
            "a sharded flash-sale sku"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let e = |text: &str| Catalog::parse("x.json", text).unwrap_err().to_string();
        assert!(e(r#"{"products": []}"#).contains("no products"));
        assert!(e(r#"{"products": [{"sku_id": "a b", "name": "n", "price": 1}]}"#).contains("a b"));
        assert!(e(r#"{"products": [{"sku_id": "a", "name": "n", "price": 0}]}"#).contains("price"));
        assert!(
            e(r#"{"products": [{"sku_id": "a", "name": "n", "price": 1, "stock": -1}]}"#)
                .contains("stock")
        );
        assert!(
            e(r#"{"products": [{"sku_id": "a", "name": "n", "price": 1, "stock_shards": 4}]}"#)
                .contains("stock_shards needs a limited stock")
        );
        assert!(
            e(r#"{"products": [{"sku_id": "a", "name": "n", "price": 1, "stock": 9, "stock_shards": 0}]}"#)
                .contains("stock_shards must be")
        );
        assert!(
            e(r#"{"products": [{"sku_id": "a", "name": "n", "price": 1, "prize": 1}]}"#)
                .contains("prize")
        );
        assert!(
            e(r#"{"products": [{"sku_id": "a", "name": "n", "price": 1}, {"sku_id": "a", "name": "m", "price": 2}]}"#)
                .contains("twice")
        );
    }
}
