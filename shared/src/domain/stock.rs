//! Sharded stock of a flash-sale sku (issue 17): its units split over N shard items so no
//! single item takes every order's write. Here the pure rules: which shard a line tries
//! first, and how the rebalancer evens shards out; the store makes each move conditional.

use super::SkuId;

/// Most shards one sku may have: every shard is read when a line finds its shards empty
/// (BatchGetItem takes 100 keys a call), and a rebalancer run reads them all.
pub const MAX_STOCK_SHARDS: u32 = 1024;

/// One shard of a sku's stock: `available` units left to reserve on it, `taken` units
/// reserved by orders that recorded it (PENDING ones, and paid ones: PAID never touches a
/// shard; closing or a refund's restock gives them back here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockShard {
    pub sku_id: SkuId,
    pub shard: u32,
    pub available: i64,
    pub taken: i64,
}

/// Units to move from one shard of a sku to another (the rebalancer's step): written only
/// if `from` still has `quantity` available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockTransfer {
    pub from: u32,
    pub to: u32,
    pub quantity: i64,
}

/// The shard a line of `sku_id` tries first, from the caller and Idempotency-Key
/// (`scope`): a retry of the same request lands on the same shard, and different
/// requests spread evenly.
pub fn first_shard(scope: &str, sku_id: &SkuId, shards: u32) -> u32 {
    super::ids::fnv_shard(&format!("{scope}#{sku_id}"), shards)
}

/// The display total of a sharded sku: what its shards have left (read-only; orders
/// reserve on one shard each, never on this sum).
pub fn available_total(shards: &[StockShard]) -> i64 {
    shards.iter().map(|s| s.available.max(0)).sum()
}

/// Transfers that refill shards holding less than half an even share from the richest
/// shards, each up to the even share and never taking a donor below it; at most
/// `max_moves`. Nothing moves while the even share is under 2 units: then any shard that
/// can serve a line is found by the order's own check of every shard.
pub fn rebalance(shards: &[StockShard], max_moves: usize) -> Vec<StockTransfer> {
    let n = shards.len() as i64;
    if n < 2 {
        return Vec::new();
    }
    let mut available: Vec<(u32, i64)> = shards
        .iter()
        .map(|s| (s.shard, s.available.max(0)))
        .collect();
    let share = available.iter().map(|(_, a)| a).sum::<i64>() / n;
    if share < 2 {
        return Vec::new();
    }
    let low = share / 2;
    let mut moves = Vec::new();
    while moves.len() < max_moves {
        let (poor, rich) = {
            let poor = available.iter().enumerate().min_by_key(|(_, (_, a))| *a);
            let rich = available.iter().enumerate().max_by_key(|(_, (_, a))| *a);
            match (poor, rich) {
                (Some((p, _)), Some((r, _))) => (p, r),
                _ => break,
            }
        };
        let quantity = (share - available[poor].1).min(available[rich].1 - share);
        if available[poor].1 >= low || quantity <= 0 {
            break;
        }
        moves.push(StockTransfer {
            from: available[rich].0,
            to: available[poor].0,
            quantity,
        });
        available[rich].1 -= quantity;
        available[poor].1 += quantity;
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(available: &[i64]) -> Vec<StockShard> {
        available
            .iter()
            .enumerate()
            .map(|(i, a)| StockShard {
                sku_id: SkuId::parse("hot").unwrap(),
                shard: i as u32,
                available: *a,
                taken: 0,
            })
            .collect()
    }

    #[test]
    fn first_shard_is_stable_and_spreads() {
        let sku = SkuId::parse("hot").unwrap();
        assert_eq!(
            first_shard("o_a#k1", &sku, 16),
            first_shard("o_a#k1", &sku, 16)
        );
        let hit: std::collections::HashSet<u32> = (0..200)
            .map(|i| first_shard(&format!("o_{i}#k"), &sku, 16))
            .collect();
        assert_eq!(hit.len(), 16, "200 requests reach every shard");
        assert!(hit.iter().all(|s| *s < 16));
    }

    #[test]
    fn rebalance_refills_empty_shards_and_conserves_units() {
        let before = shards(&[40, 0, 0, 20]);
        let moves = rebalance(&before, 10);
        let mut after: Vec<i64> = before.iter().map(|s| s.available).collect();
        for m in &moves {
            assert!(m.quantity > 0 && m.from != m.to);
            after[m.from as usize] -= m.quantity;
            after[m.to as usize] += m.quantity;
        }
        assert_eq!(after.iter().sum::<i64>(), 60);
        assert!(after.iter().all(|a| *a >= 15 / 2), "{after:?}");
        assert!(after.iter().all(|a| *a >= 0));
    }

    #[test]
    fn rebalance_leaves_even_or_nearly_empty_stock_alone_and_respects_the_bound() {
        assert!(rebalance(&shards(&[10, 9, 11, 10]), 10).is_empty());
        assert!(
            rebalance(&shards(&[3, 0, 0, 0]), 10).is_empty(),
            "share < 2"
        );
        assert!(rebalance(&shards(&[7]), 10).is_empty());
        assert_eq!(rebalance(&shards(&[100, 0, 0, 0]), 1).len(), 1);
    }
}
