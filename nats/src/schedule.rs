//! Message schedules (nats-server 2.12 and later): whether a server has
//! them, and the headers that make a message a schedule.
//!
//! A schedule is a message on a subject of its own in the work stream,
//! with `Nats-Schedule: @at <time>` and `Nats-Schedule-Target: <work
//! subject>`: at that time the server stores a copy of it (headers and
//! payload, without the schedule's own headers) on the work subject and
//! deletes the schedule.

/// The schedule of a message: `@at` and an RFC 3339 time.
pub(crate) const SCHEDULE: &str = "Nats-Schedule";
/// The subject the server stores the scheduled message on.
pub(crate) const TARGET: &str = "Nats-Schedule-Target";

/// Whether a server announcing `version` (`2.12.8`, `2.14.0-RC.1`) has
/// message schedules: 2.12 or later.
pub(crate) fn supported(version: &str) -> bool {
    let mut parts = version.split(['.', '-']).map(|part| {
        let digits = part.bytes().take_while(u8::is_ascii_digit).count();
        part[..digits].parse::<u64>().ok()
    });
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (2, 12),
        _ => false,
    }
}

/// The value of [`SCHEDULE`] for a message due at `due`, in nanoseconds
/// since the Unix epoch: `@at`, then the time in UTC with nanoseconds
/// (`@at 2025-01-31T08:00:00.000000001Z`), so the server fires it no
/// earlier than `due`.
pub(crate) fn at(due: u64) -> String {
    let seconds = due / 1_000_000_000;
    let nanos = due % 1_000_000_000;
    let days = seconds / 86_400;
    let of_day = seconds % 86_400;
    let (year, month, day) = civil(days);
    format!(
        "@at {year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil(days: u64) -> (u64, u64, u64) {
    // Counted from 0000-03-01, so that the leap day ends a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_is_rfc3339_utc_with_nanoseconds() {
        assert_eq!(at(0), "@at 1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            at(1_700_000_000_123_456_789),
            "@at 2023-11-14T22:13:20.123456789Z"
        );
        // A leap day, and the day after.
        assert_eq!(
            at(1_709_164_800_000_000_000),
            "@at 2024-02-29T00:00:00.000000000Z"
        );
        assert_eq!(
            at(1_709_251_199_999_999_999),
            "@at 2024-02-29T23:59:59.999999999Z"
        );
        assert_eq!(
            at(1_709_251_200_000_000_000),
            "@at 2024-03-01T00:00:00.000000000Z"
        );
        // 2000 is a leap year (divisible by 400), 2100 is not.
        assert_eq!(
            at(951_782_400_000_000_000),
            "@at 2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(
            at(4_107_542_400_000_000_000),
            "@at 2100-03-01T00:00:00.000000000Z"
        );
        assert_eq!(at(u64::MAX), "@at 2554-07-21T23:34:33.709551615Z");
    }

    #[test]
    fn schedules_start_with_2_12() {
        for (version, has) in [
            ("2.9.10", false),
            ("2.11.9", false),
            ("2.12.0", true),
            ("2.12.8", true),
            ("2.14.0-RC.1", true),
            ("3.0.0", true),
            ("1.99.0", false),
            ("", false),
            ("garbage", false),
        ] {
            assert_eq!(supported(version), has, "{version}");
        }
    }
}
