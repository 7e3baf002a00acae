//! The operator commands of the binary, one file each: `kv`, `status`,
//! `health`, `promote`, `verify`, `conflicts`, `backup`, `bench`, `dev`.
//! Each talks to a node's HTTP API through [`meridian::client`].

pub mod backup;
pub mod bench;
pub mod conflicts;
pub mod dev;
mod kv;
mod local;
mod status;
pub mod transfer;
mod verify;

pub use kv::{kv, KvCommand};
pub use status::{health, promote, status};
pub use verify::verify;

/// `YYYY-MM-DD HH:MM:SS.mmm` (UTC) of ms since the epoch.
fn utc(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1_000 % 60,
        rem % 1_000
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(1_795_567_459_522), "2026-11-25 00:44:19.522");
        // A leap day.
        assert_eq!(utc(951_782_400_123), "2000-02-29 00:00:00.123");
    }
}
