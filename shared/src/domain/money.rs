//! Money in integer fen (1 CNY = 100 fen). WeChat Pay's `amount.total` is an integer in fen,
//! so no floating point ever touches an amount; arithmetic is checked and never wraps.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A non-negative amount in fen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Money(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount must not be negative (got {0} fen)")]
    Negative(i64),
    #[error("amount overflows")]
    Overflow,
}

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn from_fen(fen: i64) -> Result<Self, MoneyError> {
        if fen < 0 {
            Err(MoneyError::Negative(fen))
        } else {
            Ok(Money(fen))
        }
    }

    pub fn fen(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.0
            .checked_add(other.0)
            .map(Money)
            .ok_or(MoneyError::Overflow)
    }

    /// `self - other`, refusing to go below zero.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        Money::from_fen(self.0 - other.0)
    }

    pub fn checked_mul(self, quantity: u32) -> Result<Money, MoneyError> {
        self.0
            .checked_mul(i64::from(quantity))
            .map(Money)
            .ok_or(MoneyError::Overflow)
    }

    /// Sum of `price * quantity` over lines, failing on overflow rather than wrapping.
    pub fn total<I: IntoIterator<Item = (Money, u32)>>(lines: I) -> Result<Money, MoneyError> {
        lines
            .into_iter()
            .try_fold(Money::ZERO, |acc, (price, qty)| {
                acc.checked_add(price.checked_mul(qty)?)
            })
    }
}

impl TryFrom<i64> for Money {
    type Error = MoneyError;
    fn try_from(fen: i64) -> Result<Self, Self::Error> {
        Money::from_fen(fen)
    }
}

impl From<Money> for i64 {
    fn from(m: Money) -> i64 {
        m.0
    }
}

impl fmt::Display for Money {
    /// `19.80 CNY`: for humans only; machines get fen.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02} CNY", self.0 / 100, self.0 % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_is_refused() {
        assert_eq!(Money::from_fen(-1), Err(MoneyError::Negative(-1)));
        assert!(serde_json::from_str::<Money>("-5").is_err());
    }

    #[test]
    fn total_multiplies_and_adds() {
        let a = Money::from_fen(990).unwrap();
        let b = Money::from_fen(1).unwrap();
        assert_eq!(Money::total([(a, 2), (b, 3)]).unwrap().fen(), 1983);
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let big = Money::from_fen(i64::MAX / 2 + 1).unwrap();
        assert_eq!(big.checked_mul(2), Err(MoneyError::Overflow));
        assert_eq!(big.checked_add(big), Err(MoneyError::Overflow));
    }

    #[test]
    fn display_is_yuan() {
        assert_eq!(Money::from_fen(1980).unwrap().to_string(), "19.80 CNY");
        assert_eq!(Money::from_fen(5).unwrap().to_string(), "0.05 CNY");
    }
}
