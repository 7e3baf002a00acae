//! Client writes: validated, stamped, applied, then persisted; prefix
//! deletes; the import of backup entries; the push that follows a write.

use bytes::Bytes;
use thiserror::Error;

use super::documents::DocWrite;
use super::edge::ForwardError;
use super::{Replica, Resolution, Timer};
use crate::core::doc::{parse_json, DocError};
use crate::core::hlc::{ClockError, Hlc};
use crate::core::types::{Entry, IntoKey, Key, KeyError, Kind, Stamp, ValueError};
use crate::sync::config::{PartitionPolicy, WriteAck};

/// Why a client write was refused. Nothing was changed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// The key is empty, too long, contains a NUL byte or is not UTF-8.
    #[error("invalid key: {0}")]
    Key(#[from] KeyError),
    /// The value is larger than the configured limit.
    #[error("invalid value: {0}")]
    Value(#[from] ValueError),
    /// The clock could not issue a stamp: it already runs too far ahead of
    /// physical time, or the physical time is out of range.
    #[error("clock: {0}")]
    Clock(#[from] ClockError),
    /// No majority of the known regions is reachable, and the partition
    /// policy or the write's acknowledgement needs one.
    #[error(
        "no quorum: {reachable} of {total} regions reachable and partition_policy is \"quorum\""
    )]
    NoQuorum {
        /// Regions reachable, this one included.
        reachable: usize,
        /// Regions known, this one included.
        total: usize,
    },
    /// This node is a standby: it takes client writes only once promoted.
    #[error(
        "this node is a standby: write to an active node, or promote this one (`meridian promote`)"
    )]
    Standby,
    /// This node left the cluster (`meridian leave`).
    #[error("this node left the cluster: write to a member")]
    Left,
    /// On an edge: the write was forwarded to a server and failed there
    /// or on the way.
    #[error("{0}")]
    Forward(#[from] ForwardError),
    /// A document write was refused: not JSON, not an object, too large
    /// saved, or a patch of a plain value.
    #[error("document: {0}")]
    Document(#[from] DocError),
    /// A check-and-set write found another modify index.
    #[error("check-and-set failed: key's modify index is {actual}, not {expected}")]
    CasMismatch {
        /// The modify index the write asked for (0: the key must not exist).
        expected: u64,
        /// The key's modify index here (0: absent or deleted).
        actual: u64,
    },
    /// A prefix delete covers more keys than one request may delete.
    #[error(
        "{count} keys under the prefix, more than {max} in one request: delete narrower prefixes"
    )]
    TooManyKeys {
        /// Keys under the prefix, tombstones included.
        count: usize,
        /// The most one request may delete.
        max: usize,
    },
    /// The store was lost and is being rebuilt from a peer; writes resume once it is done.
    #[error("this node lost its store and is rebuilding it from a peer: writes resume once the rebuild is done")]
    Rebuilding,
    /// Too many quorum writes are already waiting for their majority.
    #[error("more than {max} writes are waiting for a quorum of regions: try again later")]
    TooManyPending {
        /// The most quorum writes that may wait at once.
        max: usize,
    },
    /// A majority of the members' clocks disagree with this node's: its
    /// stamps would lose (a slow clock) or never leave it (a fast one).
    #[error(
        "this node's clock is {} ms {} {disagreeing} of the {} other members (bound {bound_ms} ms): \
         client writes are refused until its clock is fixed",
        offset_ms.unsigned_abs(),
        if *offset_ms > 0 { "behind" } else { "ahead of" },
        members - 1
    )]
    ClockOffset {
        /// The others' clocks minus this node's.
        offset_ms: i64,
        /// Members whose clocks disagree with this node's beyond the bound.
        disagreeing: usize,
        /// Members of the cluster, this node included.
        members: usize,
        /// The clock-offset bound, in ms.
        bound_ms: u64,
    },
}

/// What a write puts under its key.
pub(super) enum Body {
    /// A delete.
    Tombstone,
    /// Opaque bytes (JSON to a key that holds a document: see `write_body`).
    Value(Bytes),
    /// A document write.
    Doc(DocWrite),
}

impl From<Option<Bytes>> for Body {
    /// A value, or a delete (`None`).
    fn from(v: Option<Bytes>) -> Body {
        v.map_or(Body::Tombstone, Body::Value)
    }
}

/// A write accepted by the replica. It is acknowledged (durable) once the
/// `Persist` emitted with it is, which the replica signals by the
/// [`Output::Acknowledge`](super::Output::Acknowledge) that follows that `Persist`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReceipt {
    /// The key written.
    pub key: Key,
    /// The write's stamp.
    pub stamp: Stamp,
    /// The local index of the change (the key's new modify index).
    pub index: u64,
}

/// What an import of backup entries did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Entries that changed this replica's state.
    pub applied: u64,
    /// Entries this replica already held, or held something newer for.
    pub unchanged: u64,
    /// Entries of absent keys at or below the collection floor.
    pub refused_floor: u64,
    /// Entries stamped too far ahead of this replica's clock.
    pub refused_clock: u64,
}

impl Replica {
    /// Merges entries from a backup as replicated state: per key the greater
    /// stamp wins, so nothing newer is lost. Entries at or below the
    /// collection floor for absent keys are refused (they may be deleted
    /// keys whose tombstones were collected), and so are entries stamped
    /// further ahead of `now_ms` than the clock bound. Durable with the
    /// `Persist` that follows.
    pub fn import(&mut self, entries: Vec<(Key, Entry)>, now_ms: u64) -> ImportReport {
        let mut report = ImportReport::default();
        // The highest floor known in the cluster: a peer may have collected
        // tombstones this replica never held (it was rebuilt, or new), and
        // an old value of such a key must not come back here.
        let floor = self
            .peers
            .values()
            .map(|p| p.gc_floor)
            .fold(self.gc_floor, Hlc::max);
        for (k, e) in entries {
            if self
                .clock
                .check(e.stamp.hlc, self.checked_now(now_ms))
                .is_err()
            {
                report.refused_clock += 1;
                continue;
            }
            let below = self.metrics.below_floor_refused;
            if self.merge_entry(None, k, e, floor, now_ms) {
                report.applied += 1;
            } else if self.metrics.below_floor_refused != below {
                report.refused_floor += 1;
            } else {
                report.unchanged += 1;
            }
        }
        self.commit();
        report
    }

    /// Writes `value` under `key`. With `cas`, only if the key's modify index
    /// is `cas` (0: only if the key does not exist).
    pub fn put(
        &mut self,
        key: impl IntoKey,
        value: Bytes,
        flags: u64,
        cas: Option<u64>,
        now_ms: u64,
    ) -> Result<WriteReceipt, WriteError> {
        self.put_acked(key, value, flags, cas, self.cfg.write_ack, now_ms)
    }

    /// [`Replica::put`], acknowledged as `ack` says.
    pub fn put_acked(
        &mut self,
        key: impl IntoKey,
        value: Bytes,
        flags: u64,
        cas: Option<u64>,
        ack: WriteAck,
        now_ms: u64,
    ) -> Result<WriteReceipt, WriteError> {
        self.cfg.limits.check_value(value.len())?;
        self.write(key, Some(value), flags, cas, ack, now_ms)
    }

    /// Deletes `key`: writes a tombstone stamped now, whether or not the key
    /// is present here, since a write this replica has not seen yet may be
    /// on its way and the later delete must win against it. With `cas`,
    /// only a live key whose modify index is `cas` is deleted; a key that is
    /// not live here fails the check with `actual` 0 and nothing is written
    /// (Consul answers `true` to that: nothing is left to delete).
    pub fn delete(
        &mut self,
        key: impl IntoKey,
        cas: Option<u64>,
        now_ms: u64,
    ) -> Result<WriteReceipt, WriteError> {
        self.delete_acked(key, cas, self.cfg.write_ack, now_ms)
    }

    /// [`Replica::delete`], acknowledged as `ack` says.
    pub fn delete_acked(
        &mut self,
        key: impl IntoKey,
        cas: Option<u64>,
        ack: WriteAck,
        now_ms: u64,
    ) -> Result<WriteReceipt, WriteError> {
        self.write(key, None, 0, cas, ack, now_ms)
    }

    pub(super) fn write(
        &mut self,
        key: impl IntoKey,
        value: Option<Bytes>,
        flags: u64,
        cas: Option<u64>,
        ack: WriteAck,
        now_ms: u64,
    ) -> Result<WriteReceipt, WriteError> {
        let body = match value {
            None => Body::Tombstone,
            Some(v) => Body::Value(v),
        };
        self.write_body(key, body, flags, cas, ack, now_ms)
    }

    /// Every single-key client write: checked, stamped, applied, acknowledged.
    pub(super) fn write_body(
        &mut self,
        key: impl IntoKey,
        body: Body,
        flags: u64,
        cas: Option<u64>,
        ack: WriteAck,
        now_ms: u64,
    ) -> Result<WriteReceipt, WriteError> {
        self.observe_time(now_ms);
        let key = key.into_key(self.cfg.limits.key_bytes_max)?;
        self.writable()?;
        self.quorum_writable(ack)?;
        // A document write is computed against the document held: it must
        // pass its check (and not be out for repair).
        let doc_held = self.map.get(key.as_str()).is_some_and(|r| r.entry.is_doc());
        let doc_write =
            matches!(body, Body::Doc(_)) || (doc_held && matches!(body, Body::Value(_)));
        if doc_write && !self.check_before_serving(key.as_str(), now_ms) {
            return Err(DocError::Repairing.into());
        }
        let current = self.map.get(key.as_str());
        if let Some(expected) = cas {
            let actual = current
                .filter(|r| !r.entry.is_tombstone())
                .map_or(0, |r| r.modify_index);
            // A delete needs a live version to match: cas=0 never deletes.
            if actual != expected || (matches!(body, Body::Tombstone) && actual == 0) {
                return Err(WriteError::CasMismatch { expected, actual });
            }
        }
        let current = current.map(|r| r.entry.clone());
        // A value written to a key that holds a document is a write of the
        // whole document: JSON, or refused with nothing written.
        let body = match body {
            Body::Value(v) if current.as_ref().is_some_and(Entry::is_doc) => {
                Body::Doc(DocWrite::Whole(parse_json(&v)?))
            }
            b => b,
        };
        let prev = current.as_ref().map_or(Stamp::ZERO, |e| e.stamp);
        let stamp = Stamp::new(self.clock.tick(now_ms)?, self.cfg.node);
        let (value, kind) = match body {
            Body::Tombstone => (None, Kind::Value),
            Body::Value(v) => (Some(v), Kind::Value),
            Body::Doc(w) => (Some(self.doc_bytes(current.as_ref(), w, stamp)?), Kind::Doc),
        };
        let index = self.map.apply_local(
            &key,
            Entry {
                stamp,
                prev,
                flags,
                value,
                kind,
            },
        );
        self.metrics.local_writes += 1;
        self.resolve_key(&key, Resolution::Overwritten);
        self.dirty_keys.insert(key.clone());
        self.dirty_meta = true;
        let receipt = WriteReceipt { key, stamp, index };
        self.acknowledge(receipt.clone(), ack, now_ms);
        self.push_written(ack, now_ms);
        self.commit();
        Ok(receipt)
    }

    /// Sends local writes on: at once for a quorum write (its
    /// acknowledgement waits on the push), else with the next batch.
    pub(super) fn push_written(&mut self, ack: WriteAck, now_ms: u64) {
        if ack == WriteAck::Quorum {
            self.pump_all(now_ms);
        } else {
            self.schedule_push(now_ms);
        }
    }

    /// Deletes every key this replica knows under `prefix`, live or already
    /// deleted, with one stamp each, in one input: durable together with
    /// the `Persist` that follows, after which each is acknowledged.
    /// Keys deleted here before are deleted again,
    /// so that the prefix delete also wins over writes to them this replica
    /// has not seen yet. Keys it never heard of are not covered, nor
    /// Meridian's own (reserved) keys unless `prefix` is among them. At
    /// most `keys_max` keys; more is refused and nothing is written.
    pub fn delete_prefix(
        &mut self,
        prefix: &str,
        keys_max: usize,
        now_ms: u64,
    ) -> Result<Vec<WriteReceipt>, WriteError> {
        self.delete_prefix_acked(prefix, keys_max, self.cfg.write_ack, now_ms)
    }

    /// [`Replica::delete_prefix`], each tombstone acknowledged as `ack`
    /// says (with a quorum, the pending acknowledgements count every key).
    pub fn delete_prefix_acked(
        &mut self,
        prefix: &str,
        keys_max: usize,
        ack: WriteAck,
        now_ms: u64,
    ) -> Result<Vec<WriteReceipt>, WriteError> {
        self.observe_time(now_ms);
        self.writable()?;
        self.quorum_writable(ack)?;
        let keys: Vec<(Key, Stamp)> = self
            .map
            .scan_visible(prefix)
            .take(keys_max.saturating_add(1))
            .map(|(k, r)| (k.clone(), r.entry.stamp))
            .collect();
        if keys.len() > keys_max {
            let count = self.map.scan_visible(prefix).count();
            return Err(WriteError::TooManyKeys {
                count,
                max: keys_max,
            });
        }
        self.quorum_room(ack, keys.len())?;
        let mut receipts = Vec::with_capacity(keys.len());
        for (key, prev) in keys {
            let stamp = Stamp::new(self.clock.tick(now_ms)?, self.cfg.node);
            let index = self.map.apply_local(
                &key,
                Entry {
                    stamp,
                    prev,
                    flags: 0,
                    value: None,
                    kind: Kind::Value,
                },
            );
            self.metrics.local_writes += 1;
            self.resolve_key(&key, Resolution::Overwritten);
            self.dirty_keys.insert(key.clone());
            let receipt = WriteReceipt { key, stamp, index };
            self.acknowledge(receipt.clone(), ack, now_ms);
            receipts.push(receipt);
        }
        if !receipts.is_empty() {
            self.dirty_meta = true;
            self.push_written(ack, now_ms);
        }
        self.commit();
        Ok(receipts)
    }

    /// Refuses client writes while this replica may not take them.
    pub(super) fn writable(&self) -> Result<(), WriteError> {
        if self.cfg.standby {
            return Err(WriteError::Standby);
        }
        if self.left.is_some() {
            return Err(WriteError::Left);
        }
        if self.lost_store() {
            return Err(WriteError::Rebuilding);
        }
        if self.judgement.off {
            return Err(WriteError::ClockOffset {
                offset_ms: self.judgement.offset_ms.unwrap_or(0),
                disagreeing: self.judgement.disagreeing,
                members: self.judgement.members,
                bound_ms: self.cfg.clock_offset_ms_max,
            });
        }
        if self.cfg.partition_policy == PartitionPolicy::Quorum && !self.has_quorum() {
            let (reachable, total) = self.region_counts();
            return Err(WriteError::NoQuorum { reachable, total });
        }
        Ok(())
    }

    /// Pushes local writes now, or after the batching delay.
    fn schedule_push(&mut self, now_ms: u64) {
        if self.cfg.push_delay_ms == 0 {
            self.pump_all(now_ms);
        } else if !self.timers.is_set(Timer::Push) {
            self.timers
                .set(Timer::Push, now_ms + self.cfg.push_delay_ms);
        }
    }
}
