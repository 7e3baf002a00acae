//! `/metrics`: a node's counters in the Prometheus text format (0.0.4).
//!
//! Rendered from one [`NodeStatus`] per scrape rather than through a global
//! recorder, so that several nodes in one process (`meridian dev`, tests,
//! edge agents) each report their own numbers.

use std::fmt::Write;

use crate::node::{NodeStatus, COMMIT_BUCKETS_US};
use crate::sync::Event;

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP meridian_{name} {help}");
        let _ = writeln!(self.0, "# TYPE meridian_{name} {kind}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.head(name, kind, help);
        let _ = writeln!(self.0, "meridian_{name} {value}");
    }

    fn labelled(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "meridian_{name} {value}");
            return;
        }
        let mut l = String::new();
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                l.push(',');
            }
            let _ = write!(l, "{k}=\"{}\"", escape(v));
        }
        let _ = writeln!(self.0, "meridian_{name}{{{l}}} {value}");
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric sample from outside the node (see [`super::health::Extra`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Its name, without the `meridian_` prefix.
    pub name: &'static str,
    /// `gauge` or `counter`.
    pub kind: &'static str,
    /// What it measures.
    pub help: &'static str,
    /// Its labels.
    pub labels: Vec<(&'static str, String)>,
    /// Its value.
    pub value: u64,
}

/// The text of `samples`, each name's help and type once.
pub fn render_samples(samples: &[Sample]) -> String {
    let mut o = Out(String::new());
    let mut seen: Vec<&str> = Vec::new();
    for s in samples {
        if !seen.contains(&s.name) {
            seen.push(s.name);
            o.head(s.name, s.kind, s.help);
        }
        let labels: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        o.labelled(s.name, &labels, s.value);
    }
    o.0
}

/// The text of one scrape.
pub fn render(s: &NodeStatus) -> String {
    let r = &s.replica;
    let m = &s.metrics;
    let mut o = Out(String::with_capacity(4_096));
    o.head("info", "gauge", "This node's identity.");
    let node = r.node.to_string();
    o.labelled("info", &[("node", &node), ("region", &r.region)], 1);
    o.one(
        "index",
        "gauge",
        "Last index of the local change feed.",
        r.index,
    );
    o.one("keys", "gauge", "Live keys.", r.keys);
    o.one("tombstones", "gauge", "Tombstones held.", r.tombstones);
    o.one(
        "rebuilding",
        "gauge",
        "1 while rebuilding from a peer.",
        u8::from(r.rebuilding),
    );
    o.one(
        "quorum",
        "gauge",
        "1 when a majority of regions is reachable.",
        u8::from(r.quorum),
    );
    o.one(
        "clock_off",
        "gauge",
        "1 while a majority of members' clocks disagree with this node's (client writes refused).",
        u8::from(r.clock.judgement.off),
    );
    o.one(
        "clock_offset_ms",
        "gauge",
        "The other members' clocks minus this node's (median of those beyond the bound, else of all), ms.",
        r.clock.judgement.offset_ms.unwrap_or(0),
    );
    o.one(
        "clock_ahead_of_time_ms",
        "gauge",
        "How far this node's clock runs ahead of its physical clock beyond the bound (writes refused while > 0).",
        r.clock.ahead_of_time_ms,
    );
    o.one(
        "store_lost",
        "gauge",
        "1 while rebuilding a store that could not be read.",
        u8::from(r.store_lost),
    );
    o.one(
        "store_refusing_commits",
        "gauge",
        "1 while the store refuses commits (writes refused, reads served).",
        u8::from(s.store_trouble.is_some()),
    );
    o.one(
        "disk_full",
        "gauge",
        "1 while commits fail because the disk is full.",
        u8::from(s.store_trouble.as_ref().is_some_and(|t| t.disk_full)),
    );
    o.one(
        "records_quarantined",
        "gauge",
        "Records quarantined now (they failed their integrity check).",
        r.quarantined,
    );
    o.one(
        "records_quarantined_total",
        "counter",
        "Records that failed their integrity check (on load, before sending or serving, in the scrub).",
        m.records_quarantined,
    );
    o.one(
        "records_repaired_total",
        "counter",
        "Quarantines ended (repaired from a peer or from the copy on disk, overwritten, or held by no peer).",
        m.records_repaired,
    );
    o.one(
        "records_read_back_total",
        "counter",
        "Records damaged in memory repaired from their intact copies on disk.",
        m.records_read_back,
    );
    o.one(
        "records_damaged_in_memory_total",
        "counter",
        "Records found damaged in memory.",
        m.damage_found_in_memory,
    );
    o.one(
        "records_scrubbed_total",
        "counter",
        "Records verified by the background scrub.",
        m.records_scrubbed,
    );
    o.one(
        "scrub_passes_total",
        "counter",
        "Complete passes of the background scrub.",
        m.scrub_passes,
    );
    o.one("regions_known", "gauge", "Regions known.", r.total_regions);
    o.one(
        "regions_reachable",
        "gauge",
        "Regions reachable, this one included.",
        r.reachable_regions.len(),
    );
    o.one(
        "conflicts_total",
        "counter",
        "Concurrent writes resolved by last-writer-wins.",
        r.conflicts,
    );
    o.one(
        "writes_total",
        "counter",
        "Local writes accepted.",
        m.local_writes,
    );
    o.one(
        "doc_merges_total",
        "counter",
        "Versions of a document that met here, merged as a write of their union.",
        m.doc_merges_made,
    );
    o.one(
        "doc_merges_too_large_total",
        "counter",
        "Merges of documents not made: they would have saved past the value limit.",
        m.doc_merges_too_large,
    );
    o.one(
        "doc_compactions_total",
        "counter",
        "Document writes that started a document over from its JSON (history past half the value limit).",
        m.doc_compactions,
    );
    o.one(
        "doc_changes_sent_total",
        "counter",
        "Documents sent in a feed as their changes since a version the peer held, not whole.",
        m.doc_changes_sent,
    );
    o.one(
        "doc_changes_missed_total",
        "counter",
        "Documents received as changes that could not be rebuilt here: asked for again, whole.",
        m.doc_changes_missed,
    );
    o.one(
        "docs_refused_total",
        "counter",
        "Documents from peers or backups refused: their bytes do not load.",
        m.docs_refused,
    );
    o.one(
        "feed_entries_applied_total",
        "counter",
        "Entries applied from peers' change feeds.",
        m.feed_entries_applied,
    );
    o.one(
        "ae_rounds_total",
        "counter",
        "Anti-entropy rounds started.",
        m.ae_rounds_started,
    );
    o.one(
        "ae_rounds_equal_total",
        "counter",
        "Anti-entropy rounds that found equal roots.",
        m.ae_rounds_equal,
    );
    o.one(
        "ae_keys_repaired_total",
        "counter",
        "Entries applied by anti-entropy.",
        m.ae_entries_applied,
    );
    o.one(
        "ae_keys_sent_total",
        "counter",
        "Entries sent by anti-entropy.",
        m.ae_entries_sent,
    );
    o.one(
        "clock_skew_refusals_total",
        "counter",
        "Messages refused for a stamp too far ahead of our clock.",
        m.clock_skew_refusals,
    );
    let skew = s
        .recent_events
        .iter()
        .filter_map(|e| match e {
            Event::ClockSkew { ahead_ms, .. } => Some(*ahead_ms),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    o.one(
        "clock_skew_ahead_ms_max",
        "gauge",
        "Largest lead of a refused peer stamp over our clock among recent events (ms).",
        skew,
    );
    o.one(
        "peers_refused_total",
        "counter",
        "Peers refused (cluster, protocol, identity).",
        s.peers_refused.max(m.peers_refused),
    );
    o.one(
        "stale_peers_total",
        "counter",
        "Peers told to resync (away past the tombstone horizon).",
        m.stale_peers,
    );
    o.one(
        "lost_stores_found_total",
        "counter",
        "Times a peer knew this node's adopted (certificate) id from before: its store had been wiped.",
        m.lost_stores_found,
    );
    o.one(
        "recoveries_started_total",
        "counter",
        "Recoveries begun after damaged records or a lost store (every peer's state is taken).",
        m.recoveries_started,
    );
    o.one(
        "recoveries_completed_total",
        "counter",
        "Recoveries complete.",
        m.recoveries_completed,
    );
    o.one(
        "recovering",
        "gauge",
        "1 while recovering from damaged records or a lost store.",
        u8::from(r.recovery.is_some()),
    );
    o.one(
        "resyncs_total",
        "counter",
        "Times this node was told to resync.",
        m.resyncs,
    );
    o.one(
        "tombstones_collected_total",
        "counter",
        "Tombstones garbage-collected.",
        m.tombstones_collected,
    );
    o.one(
        "frames_in_total",
        "counter",
        "Frames received from peers.",
        s.frames_in,
    );
    o.one(
        "frames_out_total",
        "counter",
        "Frames sent to peers.",
        s.frames_out,
    );
    o.one(
        "bytes_in_total",
        "counter",
        "Bytes received from peers.",
        s.bytes_in,
    );
    o.one(
        "bytes_out_total",
        "counter",
        "Bytes sent to peers.",
        s.bytes_out,
    );
    o.one(
        "frames_dropped_total",
        "counter",
        "Frames dropped on a full per-peer send queue.",
        s.frames_dropped,
    );
    o.one(
        "frames_malformed_total",
        "counter",
        "Malformed frames (their connection was closed).",
        s.malformed_frames,
    );
    let partitions = r.regions.iter().filter(|g| !g.reachable).count();
    o.one(
        "partitions",
        "gauge",
        "Known regions currently unreachable.",
        partitions,
    );
    o.head(
        "region_unreachable_seconds",
        "gauge",
        "How long each unreachable region has been cut off.",
    );
    for g in r.regions.iter().filter(|g| !g.reachable) {
        let secs = s.now_ms.saturating_sub(g.since_ms) as f64 / 1e3;
        o.labelled("region_unreachable_seconds", &[("region", &g.region)], secs);
    }
    o.head("peer_connected", "gauge", "1 while connected to the peer.");
    for p in &r.peers {
        o.labelled(
            "peer_connected",
            &[
                ("node", &p.node.to_string()),
                ("peer", &p.name),
                ("region", &p.region),
            ],
            u8::from(p.connected),
        );
    }
    o.head(
        "peer_clock_offset_ms",
        "gauge",
        "The peer's clock minus this node's (ms), from round trips.",
    );
    for p in &r.peers {
        if let Some(offset) = p.clock_offset_ms {
            o.labelled(
                "peer_clock_offset_ms",
                &[
                    ("node", &p.node.to_string()),
                    ("peer", &p.name),
                    ("region", &p.region),
                ],
                offset,
            );
        }
    }
    o.head(
        "peer_lag_index",
        "gauge",
        "Changes of the peer not yet applied here.",
    );
    for p in &r.peers {
        o.labelled(
            "peer_lag_index",
            &[
                ("node", &p.node.to_string()),
                ("peer", &p.name),
                ("region", &p.region),
            ],
            p.lag_index,
        );
    }
    o.head(
        "peer_lag_seconds",
        "gauge",
        "Time since this node last held every write of the peer.",
    );
    for p in r.peers.iter().filter(|p| p.in_sync_at_ms > 0) {
        let secs = s.now_ms.saturating_sub(p.in_sync_at_ms) as f64 / 1e3;
        o.labelled(
            "peer_lag_seconds",
            &[
                ("node", &p.node.to_string()),
                ("peer", &p.name),
                ("region", &p.region),
            ],
            secs,
        );
    }
    o.head(
        "store_commit_seconds",
        "histogram",
        "Group commit latency of the store.",
    );
    let h = &s.commit_latency;
    let mut cumulative = 0;
    for (i, le) in COMMIT_BUCKETS_US.iter().enumerate() {
        cumulative += h.counts[i];
        let le = format!("{}", *le as f64 / 1e6);
        o.labelled("store_commit_seconds_bucket", &[("le", &le)], cumulative);
    }
    o.labelled("store_commit_seconds_bucket", &[("le", "+Inf")], h.count);
    let _ = writeln!(
        o.0,
        "meridian_store_commit_seconds_sum {}",
        h.sum_us as f64 / 1e6
    );
    let _ = writeln!(o.0, "meridian_store_commit_seconds_count {}", h.count);
    o.0
}
