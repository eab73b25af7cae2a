//! Time as Kubernetes writes it: RFC 3339 UTC seconds (`2006-01-02T15:04:05Z`) for `Time`, with
//! microseconds for `MicroTime`, and back to seconds since the Unix epoch (jiff does the calendar).
//! Leaf helpers used by the API, the controllers and the protobuf codec alike.

use std::time::{SystemTime, UNIX_EPOCH};

use jiff::{Timestamp, fmt::temporal::DateTimePrinter};

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
/// `MicroTime`. Beyond the years -9999..=9999 (a protobuf body may say anything) the nearest time that
/// can be written.
pub fn rfc3339(seconds: i64, micros: Option<i32>) -> String {
    const SECONDS: DateTimePrinter = DateTimePrinter::new().precision(Some(0));
    const MICROS: DateTimePrinter = DateTimePrinter::new().precision(Some(6));
    let nanos = micros.map_or(0, |us| us.clamp(0, 999_999) * 1000);
    let at = Timestamp::new(seconds, nanos).unwrap_or(if seconds < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    let printer = if micros.is_some() { MICROS } else { SECONDS };
    printer.timestamp_to_string(&at)
}

/// Seconds since the Unix epoch of an RFC 3339 timestamp (`2026-11-22T04:40:07Z`, or with an offset;
/// fractions dropped).
pub fn epoch_seconds(ts: &str) -> Option<i64> {
    ts.parse::<Timestamp>().ok().map(|t| t.as_second())
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
        // Offsets count (2024-03-01T00:00:00Z written in UTC+2).
        assert_eq!(epoch_seconds("2024-03-01T02:00:00+02:00"), Some(1_709_251_200));
        assert_eq!(epoch_seconds("2024-03-01T00:00:00.999999Z"), Some(1_709_251_200));
        assert_eq!(epoch_seconds("yesterday"), None);
        // A client's protobuf Time far outside what anyone means still writes a timestamp.
        assert_eq!(rfc3339(i64::MAX, None), rfc3339(i64::MAX - 1, None));
        assert!(rfc3339(i64::MIN, Some(7)).ends_with('Z'));
    }
}
