//! Request dates: parsing the two formats signers use and the clock-skew rule.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::AuthError;

/// How far a request's date may be from the server's clock, either way (OSS: 15 minutes).
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// Seconds since the Unix epoch (negative before it).
pub(crate) fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Parses `YYYYMMDDTHHMMSSZ` (UTC), the V4 and gRPC date format.
pub(crate) fn parse_iso_basic(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let year = i32::try_from(num(0..4)?).ok()?;
    let month = time::Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?;
    let day = u8::try_from(num(6..8)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let hms = |r| num(r).and_then(|v| u8::try_from(v).ok());
    let time = time::Time::from_hms(hms(9..11)?, hms(11..13)?, hms(13..15)?).ok()?;
    Some(
        time::PrimitiveDateTime::new(date, time)
            .assume_utc()
            .unix_timestamp(),
    )
}

/// Parses an HTTP date (`Sat, 28 Nov 2026 21:07:15 GMT`, or the obsolete forms), as V1
/// signers send in `Date`.
pub(crate) fn parse_http_date(s: &str) -> Option<i64> {
    httpdate::parse_http_date(s.trim()).ok().map(unix)
}

/// `Err(RequestTimeTooSkewed)` unless `date` is within [`MAX_SKEW`] of `now`.
pub(crate) fn check_skew(date: i64, now: i64) -> Result<(), AuthError> {
    check_window(date, now, MAX_SKEW, MAX_SKEW)
}

/// `Err(RequestTimeTooSkewed)` unless `date` is at most `past` before `now` and at most
/// `future` after it.
pub(crate) fn check_window(
    date: i64,
    now: i64,
    past: Duration,
    future: Duration,
) -> Result<(), AuthError> {
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    if date < now.saturating_sub(secs(past)) || date > now.saturating_add(secs(future)) {
        return Err(AuthError::RequestTimeTooSkewed);
    }
    Ok(())
}

/// When a request dated `date` stops being accepted: the first second after its window (it
/// is accepted up to `date + MAX_SKEW` included, so it must be remembered until then too).
pub(crate) fn expiry(date: i64) -> i64 {
    date.saturating_add(i64::try_from(MAX_SKEW.as_secs()).unwrap_or(i64::MAX))
        .saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_formats_to_the_same_instant() {
        let a = parse_iso_basic("20261128T210715Z").unwrap();
        let b = parse_http_date("Sat, 28 Nov 2026 21:07:15 GMT").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, 1_795_900_035);
    }

    #[test]
    fn rejects_bad_iso_dates() {
        for bad in [
            "",
            "20261128T210715",
            "20261128 210715Z",
            "2026112xT210715Z",
            "20261328T210715Z",
            "20260230T210715Z",
            "20261128T250715Z",
            "+0261128T210715Z",
            "２0261128T210715Z",
        ] {
            assert_eq!(parse_iso_basic(bad), None, "{bad}");
        }
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn skew_is_fifteen_minutes_either_way() {
        let now = 1_000_000;
        assert!(check_skew(now - 900, now).is_ok());
        assert!(check_skew(now + 900, now).is_ok());
        assert!(check_skew(now - 901, now).is_err());
        assert!(check_skew(now + 901, now).is_err());
        assert!(check_skew(i64::MIN, i64::MAX).is_err());
    }
}
