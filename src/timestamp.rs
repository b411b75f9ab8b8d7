//! RFC 3339 timestamps as the API speaks them: UTC with milliseconds
//! (`2026-01-17T18:00:23.000Z`) on output; on input a full date-time with a
//! zone (a bare date is rejected).

use crate::clock::Millis;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

/// The largest instant the API accepts or renders (9999-12-31T23:59:59.999Z):
/// keeps every timestamp four-digit-year RFC 3339 and far from `i64` overflow.
pub const MILLIS_MAX: Millis = 253_402_300_799_999;

/// Renders `ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format(ms: Millis) -> String {
    let clamped = ms.clamp(0, MILLIS_MAX);
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(clamped) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let layout =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    // Formatting a valid date with a static layout cannot fail; the fallback
    // keeps this path free of panics anyway.
    at.format(&layout)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

/// Parses an RFC 3339 date-time with zone into milliseconds since the epoch.
/// Sub-millisecond digits are truncated.
pub fn parse(text: &str) -> Result<Millis, &'static str> {
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        "must be an RFC 3339 date-time with a time zone, e.g. 2026-01-17T18:00:23.000Z"
    })?;
    let ms = at.unix_timestamp_nanos() / 1_000_000;
    if !(0..=i128::from(MILLIS_MAX)).contains(&ms) {
        return Err("must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z");
    }
    Ok(ms as Millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis_and_z() {
        assert_eq!(format(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format(1_768_672_823_004), "2026-01-17T18:00:23.004Z");
    }

    #[test]
    fn parses_zones_and_rejects_bare_dates() {
        assert_eq!(parse("2026-01-17T18:00:23.004Z"), Ok(1_768_672_823_004));
        assert_eq!(
            parse("2026-01-17T20:00:23.004+02:00"),
            Ok(1_768_672_823_004)
        );
        assert!(parse("2026-01-17").is_err());
        assert!(parse("2026-01-17T18:00:23").is_err());
        assert!(parse("yesterday").is_err());
    }

    #[test]
    fn round_trips() {
        for ms in [0, 1, 999, 1_768_672_823_004, MILLIS_MAX] {
            assert_eq!(parse(&format(ms)), Ok(ms));
        }
    }
}
