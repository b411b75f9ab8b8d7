//! RFC 3339 timestamps as the API speaks them: UTC with milliseconds
//! (`2026-01-17T18:00:23.000Z`) on output; on input a full date-time with a
//! zone (a bare date is rejected).

use crate::clock::Millis;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The largest instant the API accepts or renders (9999-12-31T23:59:59.999Z):
/// keeps every timestamp four-digit-year RFC 3339 and far from `i64` overflow.
pub const MILLIS_MAX: Millis = 253_402_300_799_999;

/// Bytes of a rendered timestamp: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub const RENDERED_BYTES: usize = 24;

/// Renders `ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format(ms: Millis) -> String {
    let mut buf = [0u8; RENDERED_BYTES];
    write(ms, &mut buf).to_owned()
}

/// Renders `ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ` into `buf`, without
/// allocating (responses render several timestamps per token). The
/// calendar is the `time` crate's; this only lays the digits out.
pub fn write(ms: Millis, buf: &mut [u8; RENDERED_BYTES]) -> &str {
    let clamped = ms.clamp(0, MILLIS_MAX);
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(clamped) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let (year, month, day) = at.to_calendar_date();
    let (hour, minute, second, milli) = at.to_hms_milli();
    // Clamped to years 1970..=9999: four digits.
    let year = u32::try_from(year).unwrap_or(0);
    let fields: [(usize, u32, usize); 7] = [
        (0, year, 4),
        (5, u32::from(u8::from(month)), 2),
        (8, u32::from(day), 2),
        (11, u32::from(hour), 2),
        (14, u32::from(minute), 2),
        (17, u32::from(second), 2),
        (20, u32::from(milli), 3),
    ];
    *buf = *b"0000-00-00T00:00:00.000Z";
    for (start, mut value, width) in fields {
        for at in (start..start + width).rev() {
            buf[at] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    // Only ASCII digits and separators were written.
    std::str::from_utf8(buf).unwrap_or("1970-01-01T00:00:00.000Z")
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
    fn writes_what_the_time_crate_formats() {
        let layout = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let mut ms: Millis = 0;
        while ms < MILLIS_MAX {
            let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .expect("in range");
            assert_eq!(format(ms), at.format(&layout).expect("formats"), "{ms}");
            // Steps that hit every month, leap days and the millisecond digits.
            ms += 86_399_999 * 7 + 13;
        }
        assert_eq!(format(MILLIS_MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(format(-5), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn round_trips() {
        for ms in [0, 1, 999, 1_768_672_823_004, MILLIS_MAX] {
            assert_eq!(parse(&format(ms)), Ok(ms));
        }
    }
}
