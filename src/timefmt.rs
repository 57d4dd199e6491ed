//! The API's timestamp format: `yyyy-MM-dd'T'HH:mm:ss.SSS'Z'`, UTC, millisecond precision.

use chrono::{DateTime, SecondsFormat, Utc};
use std::time::SystemTime;

/// Format a time as the API writes it, e.g. `2023-06-28T10:00:20.022Z`.
pub fn format(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parse an API timestamp; liberal: any RFC 3339 form, with or without fraction or offset.
pub fn parse(s: &str) -> Option<SystemTime> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc).into());
    }
    // Timestamps without a zone ("2023-06-28T10:00:20.022") are UTC.
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn round_trip_with_millis() {
        let t = UNIX_EPOCH + Duration::from_millis(1_687_946_420_022);
        assert_eq!(format(t), "2023-06-28T10:00:20.022Z");
        assert_eq!(parse("2023-06-28T10:00:20.022Z"), Some(t));
        assert_eq!(parse("2023-06-28T10:00:20.022"), Some(t));
        assert_eq!(parse("2023-06-28T18:00:20.022+08:00"), Some(t));
        assert_eq!(parse("garbage"), None);
    }
}
