//! The health loop: judges the node's health every [`HEALTH_CHECK_MS`]
//! and publishes each change as an event.

use std::sync::Arc;
use std::time::Duration;

use crate::api::{self, Thresholds};
use crate::node::Node;

/// How often the daemon judges health (and publishes changes as events).
pub const HEALTH_CHECK_MS: u64 = 1_000;

/// Judges health every [`HEALTH_CHECK_MS`]; publishes each change as an event.
pub(super) async fn health_loop(
    node: Arc<Node>,
    thresholds: Thresholds,
    extra: Option<Arc<dyn api::health::Extra>>,
) {
    let mut healthy = true;
    loop {
        tokio::time::sleep(Duration::from_millis(HEALTH_CHECK_MS)).await;
        let Ok(status) = node.status().await else {
            return;
        };
        let mut reasons = api::health::assess(&status, &thresholds);
        if let Some(e) = &extra {
            reasons.extend(e.reasons(status.now_ms));
        }
        let reasons: Vec<String> = reasons.into_iter().map(|r| r.message).collect();
        let now = reasons.is_empty();
        if now != healthy {
            healthy = now;
            tracing::warn!(healthy, ?reasons, "health changed");
            node.publish(crate::node::EventKind::Health { healthy, reasons });
        }
    }
}
