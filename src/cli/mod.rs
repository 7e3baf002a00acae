//! The operator commands of the binary, one file each: `kv`, `doc`, `status`,
//! `health`, `promote`, `verify`, `conflicts`, `backup`, `bench`, `dev`,
//! `acl`, `audit`, `members`, `leave`, `forget`.
//! Each talks to a node's HTTP API through [`meridian::client`].

pub mod acl;
pub mod audit;
pub mod backup;
pub mod bench;
pub mod bench_docs;
pub mod bench_edges;
pub mod conflicts;
pub mod dev;
mod doc;
mod kv;
mod local;
pub mod members;
mod status;
pub mod transfer;
mod verify;

pub use doc::{doc, DocCommand};
pub use kv::{kv, KvCommand};
pub use status::{health, promote, status};
pub use verify::verify;

/// `YYYY-MM-DD HH:MM:SS.mmm` (UTC) of ms since the epoch.
fn utc(ms: u64) -> String {
    meridian::core::types::utc_text(ms, ' ')
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
