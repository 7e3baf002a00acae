//! The client workload: puts and deletes (one key or a prefix) on a small
//! key space so that writes conflict, each acknowledged write recorded
//! for the oracle, each refusal checked to be one the situation allows.

use bytes::Bytes;

use super::{Issued, Sim, PREFIX_DELETE_PER_MILLION};
use crate::sync::WriteError;

impl Sim {
    pub(super) fn client_write(&mut self) {
        let i = self.rng.below(self.nodes.len() as u64) as usize;
        let key = format!("k{}", self.rng.below(self.cfg.keys as u64));
        let delete = self.rng.chance(self.cfg.delete_per_million);
        let flags = self.rng.below(4);
        let value = Bytes::from(format!("v{}-{}", self.seq, self.rng.next_u64() % 1000));
        let prefix_delete = delete && self.rng.chance(PREFIX_DELETE_PER_MILLION);
        let prefix = format!("k{}", self.rng.below(10));
        let now = self.node_now(i);
        if self.nodes[i].attached.is_some() {
            let delete = delete.then_some(prefix_delete.then_some(prefix));
            return self.edge_write(i, key, delete, value, flags, now);
        }
        let Some(r) = self.nodes[i].replica.as_mut() else {
            self.report.writes_refused += 1;
            return;
        };
        if prefix_delete {
            match r.delete_prefix_acked(&prefix, usize::MAX, self.cfg.write_ack, now) {
                Ok(receipts) => {
                    self.report.prefix_deletes += receipts.len() as u64;
                    for receipt in &receipts {
                        self.check_stamp_rises(i, receipt.stamp);
                    }
                    let incarnation = self.nodes[i].incarnation;
                    for receipt in receipts {
                        let issued = Issued {
                            key: receipt.key.to_string(),
                            value: None,
                            flags: 0,
                            node: i,
                            incarnation,
                            acknowledged: false,
                            answered: false,
                            forwarded: false,
                        };
                        self.issued.insert(receipt.stamp, issued);
                    }
                }
                Err(e) if refusal_expected(&e) => self.count_refusal(i, &e),
                Err(e) => return self.fail(format!("prefix delete at node {i} refused: {e}")),
            }
            return self.drain(i);
        }
        let absent = r.get(&key).is_none_or(|rec| rec.entry.is_tombstone());
        let ack = self.cfg.write_ack;
        let res = if delete {
            r.delete_acked(&key, None, ack, now)
        } else {
            r.put_acked(&key, value.clone(), flags, None, ack, now)
        };
        if self.traced(&key) {
            self.tr(|| format!("n{i} write {key} delete={delete} -> {res:?}"));
        }
        match res {
            Ok(receipt) => {
                self.check_stamp_rises(i, receipt.stamp);
                if delete && absent {
                    self.report.deletes_of_absent_keys += 1;
                }
                let incarnation = self.nodes[i].incarnation;
                self.issued.insert(
                    receipt.stamp,
                    Issued {
                        key,
                        value: (!delete).then_some(value),
                        flags: if delete { 0 } else { flags },
                        node: i,
                        incarnation,
                        acknowledged: false,
                        answered: false,
                        forwarded: false,
                    },
                );
            }
            Err(e) if refusal_expected(&e) => self.count_refusal(i, &e),
            Err(e) => return self.fail(format!("write to node {i} refused unexpectedly: {e}")),
        }
        self.drain(i);
    }

    /// A node stamps every write above every write it acknowledged, across
    /// restarts too (its clock resumes from the stored one): otherwise a
    /// client's later write loses to its earlier one, on the same node.
    pub(super) fn check_stamp_rises(&mut self, i: usize, stamp: crate::core::types::Stamp) {
        let before = self.nodes[i].acked_hlc_max;
        if stamp.hlc <= before {
            self.fail(format!(
                "node {i} stamped a write at {:?} after acknowledging one at {before:?}: \
                 its clock went back",
                stamp.hlc
            ));
        }
    }

    /// Counts a refusal node `i` answered. A node whose clock is right
    /// may refuse a write for its clock only when a majority of the clocks
    /// went wrong (it is outvoted): one wrong clock must not stop the
    /// others' writes (design §3, "Clock skew": a stamp beyond the bound
    /// is refused, so the local clock never runs past it).
    pub(super) fn count_refusal(&mut self, i: usize, e: &WriteError) {
        self.report.writes_refused += 1;
        if matches!(e, WriteError::ClockOffset { .. } | WriteError::Clock(_)) {
            self.report.writes_refused_for_clock += 1;
            if !self.clock_wrong(i) && !self.clocks_majority_wrong {
                self.fail(format!(
                    "node {i}, whose clock is right, refused a write for its clock while \
                     only a minority of the clocks were wrong: {e}"
                ));
            }
        }
    }
}

/// The refusals a correct replica may answer in these scenarios: no
/// quorum, a clock judged off or running ahead of time, a store being
/// rebuilt, too many quorum writes waiting, a standby not promoted.
pub(super) fn refusal_expected(e: &WriteError) -> bool {
    matches!(
        e,
        WriteError::NoQuorum { .. }
            | WriteError::ClockOffset { .. }
            | WriteError::Clock(crate::core::hlc::ClockError::AheadOfTime { .. })
            | WriteError::Rebuilding
            | WriteError::TooManyPending { .. }
            // A standby, in runs with failover, until it takes over.
            | WriteError::Standby
            | WriteError::Left
            // A document damaged in memory, until a peer's copy repairs it.
            | WriteError::Document(crate::core::doc::DocError::Repairing)
    )
}
