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

/// The Beijing (UTC+8) calendar day of an instant: the day WeChat Pay's bills file it under.
pub fn beijing_date(t: OffsetDateTime) -> time::Date {
    t.to_offset(CHINA).date()
}

/// `2026-12-06`: a bill date as WeChat Pay, the table and the merchant API write it.
pub fn date_string(d: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// A `yyyy-mm-dd` calendar date (exactly that shape).
pub fn parse_date(s: &str) -> Result<time::Date, TimeError> {
    let bytes = s.as_bytes();
    let shaped = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    let bad = || TimeError(s.chars().take(32).collect());
    if !shaped {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|v| v.parse::<u16>().ok());
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return Err(bad());
    };
    let month = time::Month::try_from(u8::try_from(m).map_err(|_| bad())?).map_err(|_| bad())?;
    time::Date::from_calendar_date(i32::from(y), month, u8::try_from(d).map_err(|_| bad())?)
        .map_err(|_| bad())
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

    #[test]
    fn beijing_dates() {
        let d = beijing_date(datetime!(2026-12-06 15:59:59.999 UTC));
        assert_eq!(date_string(d), "2026-12-06");
        assert_eq!(
            date_string(beijing_date(datetime!(2026-12-06 16:00:00 UTC))),
            "2026-12-07"
        );
        assert_eq!(parse_date("2026-12-06").unwrap(), d);
        for bad in [
            "2026-13-01",
            "2026-02-30",
            "2026-1-01",
            "20261206",
            "2026-12-06x",
            "",
            "２０２６-12-06",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }
}
