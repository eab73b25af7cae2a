//! Time as Kubernetes writes it: RFC 3339 UTC seconds (`2006-01-02T15:04:05Z`) for `Time`, with
//! microseconds for `MicroTime`, and back to seconds since the Unix epoch. Leaf helpers with no
//! dependency, used by the API, the controllers and the protobuf codec alike.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now.
pub fn now_epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Now, as Kubernetes timestamps are written.
pub fn now_rfc3339() -> String {
    rfc3339(now_epoch(), None)
}

/// Now as a `MicroTime` (Leases' `acquireTime` and `renewTime`).
pub fn now_micro_rfc3339() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    rfc3339(now.as_secs() as i64, Some(now.subsec_micros() as i32))
}

/// `secs` since the Unix epoch as RFC 3339 UTC.
pub fn rfc3339_at(secs: u64) -> String {
    rfc3339(i64::try_from(secs).unwrap_or(i64::MAX), None)
}

/// `seconds` since the Unix epoch as `2006-01-02T15:04:05Z`, with `.000000` microseconds for a
/// `MicroTime`.
pub fn rfc3339(seconds: i64, micros: Option<i32>) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if let Some(micros) = micros {
        out.push_str(&format!(".{micros:06}"));
    }
    out.push('Z');
    out
}

/// Seconds since the Unix epoch of an RFC 3339 UTC timestamp (`2026-11-22T04:40:07Z`; fractions
/// ignored).
pub fn epoch_seconds(ts: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| ts.get(r).and_then(|s| s.parse::<i64>().ok());
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
        assert_eq!(epoch_seconds("1970-01-02T00:00:01Z"), Some(86_401));
        assert_eq!(epoch_seconds("2024-03-01T00:00:00Z"), Some(1_709_251_200));
        assert_eq!(rfc3339_at(1_709_251_200), "2024-03-01T00:00:00Z");
        assert_eq!(rfc3339(-1, Some(5)), "1969-12-31T23:59:59.000005Z");
        for secs in [0, 951_782_400, 4_102_444_799] {
            assert_eq!(epoch_seconds(&rfc3339_at(secs)), Some(secs as i64));
        }
        assert_eq!(now_micro_rfc3339().len(), 27);
    }
}
