//! The physical clock the node runs on, with the clock-skew fault the
//! tests inject.

/// Fault injection: `MERIDIAN_FAULT_CLOCK_SKEW_MS` (signed ms) moves this
/// process's physical clock, as libfaketime would, for the tests of clocks
/// that run fast or slow. Read once.
pub const CLOCK_SKEW_ENV: &str = "MERIDIAN_FAULT_CLOCK_SKEW_MS";

pub(super) fn clock_skew_ms() -> i64 {
    static SKEW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *SKEW.get_or_init(|| {
        std::env::var(CLOCK_SKEW_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    })
}

/// The physical time the node runs on (ms since the epoch).
pub(crate) fn now_ms() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ms.saturating_add_signed(clock_skew_ms())
}
