//! FHIR `dateTime`/`instant` values as points in time.

use chrono::{DateTime, Utc};

/// Parses a FHIR `dateTime` or `instant` that has a time and a zone.
///
/// Partial dates (`2026`, `2026-01-01`) are not points in time; scoring must not guess an
/// hour for them, so they yield `None` and the caller counts the observation as unusable.
pub fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoned_times_are_instants_and_partial_dates_are_not() {
        let t = parse_instant("2026-01-01T12:00:00+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-01T11:00:00+00:00");
        assert!(parse_instant("2026-01-01T11:00:00.123Z").is_some());
        assert!(parse_instant("2026-01-01").is_none());
        assert!(parse_instant("2026-01-01T11:00:00").is_none());
    }
}
