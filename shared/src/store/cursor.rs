//! Opaque pagination cursors: base64url of a query's LastEvaluatedKey as JSON. Clients hand
//! them back verbatim, so decoding treats them as hostile: any tampering is `BadCursor`,
//! and a cursor only resumes the same listing (same index partition) it came from.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use super::StoreError;

/// Longest cursor accepted; our keys are a few hundred bytes.
const MAX_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor(String);

impl Cursor {
    /// Wraps a cursor received from a client; it is checked when used.
    pub fn new(s: impl Into<String>) -> Self {
        Cursor(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Encodes a LastEvaluatedKey. Our index and table keys are all strings.
    pub(crate) fn encode(key: &HashMap<String, AttributeValue>) -> Result<Cursor, StoreError> {
        let mut plain = BTreeMap::new();
        for (name, value) in key {
            let s = value.as_s().map_err(|_| {
                StoreError::Invalid(format!("LastEvaluatedKey attribute {name} is not a string"))
            })?;
            plain.insert(name.as_str(), s.as_str());
        }
        let json = serde_json::to_vec(&plain)
            .map_err(|e| StoreError::Invalid(format!("cursor encoding: {e}")))?;
        Ok(Cursor(URL_SAFE_NO_PAD.encode(json)))
    }

    /// Decodes into an ExclusiveStartKey with exactly the attributes `names`, whose attribute
    /// `partition_name` must equal `partition_value` (the listing being resumed).
    pub(crate) fn decode(
        &self,
        names: &[&str],
        partition_name: &str,
        partition_value: &str,
    ) -> Result<HashMap<String, AttributeValue>, StoreError> {
        let bad = |why: &str| StoreError::BadCursor(why.to_owned());
        if self.0.is_empty() || self.0.len() > MAX_LEN {
            return Err(bad("wrong length"));
        }
        let json = URL_SAFE_NO_PAD
            .decode(self.0.as_bytes())
            .map_err(|_| bad("not base64url"))?;
        let plain: BTreeMap<String, String> =
            serde_json::from_slice(&json).map_err(|_| bad("not a key"))?;
        if plain.len() != names.len() || !names.iter().all(|n| plain.contains_key(*n)) {
            return Err(bad("not a key of this listing"));
        }
        if plain.get(partition_name).map(String::as_str) != Some(partition_value) {
            return Err(bad("belongs to another listing"));
        }
        if plain.values().any(String::is_empty) {
            return Err(bad("empty key attribute"));
        }
        Ok(plain
            .into_iter()
            .map(|(k, v)| (k, AttributeValue::S(v)))
            .collect())
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &["pk", "sk", "gsi1pk", "gsi1sk"];

    fn key() -> HashMap<String, AttributeValue> {
        [
            ("pk", "ORDER#A"),
            ("sk", "ORDER"),
            ("gsi1pk", "USER#o_1"),
            ("gsi1sk", "2026-11-24T04:00:00.000Z#A"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), AttributeValue::S(v.to_owned())))
        .collect()
    }

    #[test]
    fn round_trips_and_is_url_safe() {
        let c = Cursor::encode(&key()).unwrap();
        assert!(
            c.as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(c.decode(NAMES, "gsi1pk", "USER#o_1").unwrap(), key());
    }

    #[test]
    fn tampering_is_bad_cursor_never_a_panic() {
        let good = Cursor::encode(&key()).unwrap();
        let other_user = good.decode(NAMES, "gsi1pk", "USER#o_2");
        assert!(matches!(other_user, Err(StoreError::BadCursor(_))));
        let wrong_index = good.decode(&["pk", "sk", "gsi2pk", "gsi2sk"], "gsi2pk", "PENDING#0");
        assert!(matches!(wrong_index, Err(StoreError::BadCursor(_))));
        let mut flipped = good.as_str().to_owned();
        flipped.insert(3, '!');
        let json_not_map = URL_SAFE_NO_PAD.encode(b"[1,2]");
        let numbers = URL_SAFE_NO_PAD.encode(br#"{"pk":1,"sk":2,"gsi1pk":3,"gsi1sk":4}"#);
        for s in [
            "",
            "%%%",
            flipped.as_str(),
            json_not_map.as_str(),
            numbers.as_str(),
            &"A".repeat(5000),
        ] {
            assert!(
                matches!(
                    Cursor::new(s).decode(NAMES, "gsi1pk", "USER#o_1"),
                    Err(StoreError::BadCursor(_))
                ),
                "{s:?}"
            );
        }
    }
}
