//! Identifiers that cross the system's edges: `out_trade_no`, openid, sku id and the
//! client's `Idempotency-Key`. Each is parsed once; holding one means it is well-formed.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must be {min}-{max} characters (got {len})")]
    Length {
        kind: &'static str,
        min: usize,
        max: usize,
        len: usize,
    },
    #[error("{kind} may only contain {allowed}")]
    Charset {
        kind: &'static str,
        allowed: &'static str,
    },
}

fn check(
    kind: &'static str,
    s: &str,
    min: usize,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(u8) -> bool,
) -> Result<(), IdError> {
    let len = s.len();
    if len < min || len > max {
        return Err(IdError::Length {
            kind,
            min,
            max,
            len,
        });
    }
    if !s.bytes().all(ok) {
        return Err(IdError::Charset { kind, allowed });
    }
    Ok(())
}

/// A ULID minted at `now` (milliseconds since the epoch, then 80 random bits).
fn ulid_at(now: time::OffsetDateTime) -> String {
    let ms = (now.unix_timestamp_nanos() / 1_000_000).clamp(0, u64::MAX as i128) as u64;
    ulid::Ulid::from_parts(ms, rand::random::<u128>()).to_string()
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// The merchant's order number. Ours are ULIDs (26 chars, time-ordered); parsing accepts
    /// anything WeChat Pay accepts (6-32 chars of `[0-9A-Za-z_|*-]`) because notifications
    /// and path parameters may carry numbers we did not mint.
    OutTradeNo
);

impl OutTradeNo {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check("out_trade_no", s, 6, 32, "0-9 A-Z a-z _ | * -", |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'|' | b'*' | b'-')
        })?;
        Ok(Self(s.to_owned()))
    }

    /// A new ULID for an order created at `now` (milliseconds since the epoch).
    pub fn generate(now: time::OffsetDateTime) -> Self {
        Self(ulid_at(now))
    }

    /// Which shard of the pending-orders index (`gsi2`) this order lives in.
    pub fn shard(&self, shards: u32) -> u32 {
        fnv_shard(&self.0, shards)
    }
}

/// FNV-1a of `s` into `0..shards`: stable across processes and releases, unlike `std`'s
/// randomly seeded hasher.
pub(super) fn fnv_shard(s: &str, shards: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % shards.max(1)
}

string_id!(
    /// The merchant's refund number. Ours are ULIDs, minted when the refund is reserved;
    /// parsing accepts what WeChat Pay accepts (1-64 chars of `[0-9A-Za-z_|*@-]`).
    OutRefundNo
);

impl OutRefundNo {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check("out_refund_no", s, 1, 64, "0-9 A-Z a-z _ | * @ -", |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'|' | b'*' | b'@' | b'-')
        })?;
        Ok(Self(s.to_owned()))
    }

    /// A new ULID for a refund reserved at `now`.
    pub fn generate(now: time::OffsetDateTime) -> Self {
        Self(ulid_at(now))
    }
}

string_id!(
    /// A WeChat user's openid under our AppID (up to 128 chars of `[A-Za-z0-9_-]`).
    Openid
);

impl Openid {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check("openid", s, 1, 128, "A-Z a-z 0-9 _ -", |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')
        })?;
        Ok(Self(s.to_owned()))
    }
}

string_id!(
    /// A catalog sku (1-64 chars of `[A-Za-z0-9_.-]`).
    SkuId
);

impl SkuId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check("sku_id", s, 1, 64, "A-Z a-z 0-9 _ . -", |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
        })?;
        Ok(Self(s.to_owned()))
    }
}

string_id!(
    /// The client's `Idempotency-Key` header (1-64 chars of `[A-Za-z0-9_-]`).
    IdempotencyKey
);

impl IdempotencyKey {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check("Idempotency-Key", s, 1, 64, "A-Z a-z 0-9 _ -", |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')
        })?;
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_out_trade_no_is_a_26_char_ulid_that_parses() {
        let now = time::OffsetDateTime::now_utc();
        let a = OutTradeNo::generate(now);
        assert_eq!(a.as_str().len(), 26);
        assert_eq!(OutTradeNo::parse(a.as_str()).unwrap(), a);
        assert!(ulid::Ulid::from_string(a.as_str()).is_ok());
        let later = OutTradeNo::generate(now + time::Duration::milliseconds(1));
        assert!(later > a, "ULIDs sort by creation time");
    }

    #[test]
    fn out_trade_no_follows_wechat_rules() {
        assert!(OutTradeNo::parse("12345").is_err());
        assert!(OutTradeNo::parse("123456").is_ok());
        assert!(OutTradeNo::parse(&"a".repeat(32)).is_ok());
        assert!(matches!(
            OutTradeNo::parse(&"a".repeat(33)),
            Err(IdError::Length { len: 33, .. })
        ));
        assert!(OutTradeNo::parse("abc_|*-def").is_ok());
        assert!(matches!(
            OutTradeNo::parse("abc def1"),
            Err(IdError::Charset { .. })
        ));
        assert!(OutTradeNo::parse("订单号12345").is_err());
    }

    #[test]
    fn shard_is_stable_and_in_range() {
        let o = OutTradeNo::parse("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P").unwrap();
        assert_eq!(o.shard(4), o.shard(4));
        for n in 1..10 {
            assert!(o.shard(n) < n);
        }
        assert_eq!(o.shard(0), 0);
    }

    #[test]
    fn idempotency_key_and_openid_charsets() {
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(65)).is_err());
        assert!(IdempotencyKey::parse("a b").is_err());
        assert!(IdempotencyKey::parse("retry-1_A").is_ok());
        assert!(Openid::parse("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o").is_ok());
        assert!(Openid::parse("o#1").is_err());
        assert!(SkuId::parse("sku-1.a_b").is_ok());
        assert!(serde_json::from_str::<SkuId>("\"bad sku\"").is_err());
    }
}
