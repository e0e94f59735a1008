//! Time at the edges, kept out of the domain. Inside, every instant is an `OffsetDateTime` in
//! UTC; clients get RFC 3339, WeChat Pay gets RFC 3339 at `+08:00` without fractions (as its
//! docs show), and the table stores fixed-width UTC so index sort keys order by time.

use time::{OffsetDateTime, UtcOffset, format_description::well_known::Rfc3339};

/// China Standard Time, the offset WeChat Pay writes and expects.
pub const CHINA: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(o) => o,
    Err(_) => UtcOffset::UTC,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 date-time: {0:?}")]
pub struct TimeError(pub String);

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// `2026-11-24T12:30:00+08:00`: what WeChat Pay's `time_expire` and our API's `expire_at` show.
pub fn to_wechat(t: OffsetDateTime) -> String {
    whole_seconds(t.to_offset(CHINA))
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// `2026-11-24T04:30:00Z`: stored timestamps; sorts lexically in time order at a fixed width.
pub fn to_utc_string(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    // Fixed millisecond precision keeps lexical order == time order for index sort keys.
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Any RFC 3339 date-time (any offset), normalised to UTC.
pub fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, TimeError> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| t.to_offset(UtcOffset::UTC))
        .map_err(|_| TimeError(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn wechat_format_is_plus_eight_without_fraction() {
        let t = datetime!(2026-11-24 04:30:00.123 UTC);
        assert_eq!(to_wechat(t), "2026-11-24T12:30:00+08:00");
    }

    #[test]
    fn utc_string_is_fixed_width_and_sortable() {
        let a = datetime!(2026-11-24 04:30:00 UTC);
        let b = datetime!(2026-11-24 04:30:00.5 UTC);
        assert_eq!(to_utc_string(a), "2026-11-24T04:30:00.000Z");
        assert!(to_utc_string(a) < to_utc_string(b));
        assert_eq!(parse_rfc3339(&to_utc_string(b)).unwrap(), b);
    }

    #[test]
    fn parses_any_offset_to_utc() {
        let t = parse_rfc3339("2026-11-24T12:30:00+08:00").unwrap();
        assert_eq!(t, datetime!(2026-11-24 04:30:00 UTC));
        assert_eq!(t.offset(), UtcOffset::UTC);
        assert!(parse_rfc3339("2026-11-24 12:30").is_err());
    }
}
