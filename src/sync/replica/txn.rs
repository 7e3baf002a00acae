//! Transactions: a list of KV operations (Consul's `/v1/txn` verbs)
//! checked together against this replica's state, each seeing the effects
//! of those before it, and applied all or nothing in one input, so that
//! they are durable in one commit. Across regions each key written is
//! still a last-writer-wins register: a transaction is atomic here, and
//! its writes replicate as any others.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use thiserror::Error;

use super::documents::DocWrite;
use super::write::{Body, WriteError, WriteReceipt};
use super::{Replica, Resolution};
use crate::core::doc::{parse_json, DocError};
use crate::core::types::{Entry, IntoKey, Key, KeyError, Kind, Stamp, ValueError};
use crate::sync::config::WriteAck;

/// One operation of a transaction (Consul's KV verbs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Writes the key.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
        /// Consul's flags.
        flags: u64,
    },
    /// Writes the key if its modify index is `index` (0: if it is absent).
    Cas {
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
        /// Consul's flags.
        flags: u64,
        /// The modify index the key must have.
        index: u64,
    },
    /// Returns the key's entry; fails when it is absent.
    Get {
        /// The key.
        key: String,
    },
    /// Returns every live entry under the prefix.
    GetTree {
        /// The prefix.
        prefix: String,
    },
    /// Fails unless the key's modify index is `index`.
    CheckIndex {
        /// The key.
        key: String,
        /// The modify index it must have.
        index: u64,
    },
    /// Fails when the key exists.
    CheckNotExists {
        /// The key.
        key: String,
    },
    /// Deletes the key (a tombstone, whether or not it is live here).
    Delete {
        /// The key.
        key: String,
    },
    /// Deletes every key this replica knows under the prefix.
    DeleteTree {
        /// The prefix.
        prefix: String,
    },
    /// Deletes the key if its modify index is `index`; a key that is not
    /// live passes and nothing is written (as Consul has it).
    DeleteCas {
        /// The key.
        key: String,
        /// The modify index it must have.
        index: u64,
    },
}

impl TxnOp {
    /// Whether the operation may write.
    pub fn writes(&self) -> bool {
        matches!(
            self,
            TxnOp::Set { .. }
                | TxnOp::Cas { .. }
                | TxnOp::Delete { .. }
                | TxnOp::DeleteTree { .. }
                | TxnOp::DeleteCas { .. }
        )
    }

    /// The one key it works on (`None` for the `-tree` verbs).
    pub fn key(&self) -> Option<&str> {
        match self {
            TxnOp::Set { key, .. }
            | TxnOp::Cas { key, .. }
            | TxnOp::Get { key }
            | TxnOp::CheckIndex { key, .. }
            | TxnOp::CheckNotExists { key }
            | TxnOp::Delete { key }
            | TxnOp::DeleteCas { key, .. } => Some(key),
            TxnOp::GetTree { .. } | TxnOp::DeleteTree { .. } => None,
        }
    }

    /// The keys it reads, or the prefix (`true`) it reads under, if it
    /// reads values: what is checked before it is served.
    pub fn reads(&self) -> Option<(&str, bool)> {
        match self {
            TxnOp::Get { key } => Some((key, false)),
            TxnOp::GetTree { prefix } => Some((prefix, true)),
            _ => None,
        }
    }
}

/// Why one operation of a transaction fails (Consul's messages).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TxnFailure {
    /// The key is empty, too long, contains a NUL byte or is not UTF-8.
    #[error("invalid key: {0}")]
    Key(#[from] KeyError),
    /// The value is larger than the configured limit.
    #[error("invalid value: {0}")]
    Value(#[from] ValueError),
    /// An operation on one key without a key.
    #[error("Must provide key")]
    NoKey,
    /// `get` of a key that is not live.
    #[error("key {0:?} doesn't exist")]
    Missing(String),
    /// `check-index` of a key that is not live.
    #[error("failed to check index, key {0:?} doesn't exist")]
    CheckMissing(String),
    /// `check-not-exists` of a live key.
    #[error("key {0:?} exists")]
    Exists(String),
    /// `check-index` of a key with another modify index.
    #[error("failed index check for key {key:?}, current modify index {actual} != {expected}")]
    IndexMismatch {
        /// The key.
        key: String,
        /// The index asked for.
        expected: u64,
        /// The key's modify index.
        actual: u64,
    },
    /// `cas` found another modify index.
    #[error("failed to set key {0:?}, index is stale")]
    CasStale(String),
    /// `delete-cas` found another modify index.
    #[error("failed to delete key {0:?}, index is stale")]
    DeleteCasStale(String),
    /// On an edge: the transaction, forwarded, has more operations (its
    /// writes and a check of every key it looked at) than one forward carries.
    #[error("{count} operations to forward, more than {max}")]
    TooManyOps {
        /// Operations it would forward.
        count: usize,
        /// The most one forward carries.
        max: usize,
    },
    /// `delete-tree` covers more keys than one request may delete.
    #[error("{count} keys under {prefix:?}, more than {max} in one transaction")]
    TooManyKeys {
        /// The prefix.
        prefix: String,
        /// Keys under it, tombstones included.
        count: usize,
        /// The most one transaction may delete.
        max: usize,
    },
}

/// Why a transaction wrote nothing.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TxnError {
    /// Operations failed (each with its index in the transaction).
    #[error("{} of the transaction's operations failed", .0.len())]
    Failed(Vec<(usize, TxnFailure)>),
    /// The replica takes no client writes now (the transaction writes).
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// An entry a transaction returns: `value` is `None` where the operation
/// did not read it (Consul returns values for `get` and `get-tree` only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnEntry {
    /// The key.
    pub key: String,
    /// The value, for the operations that read it.
    pub value: Option<Bytes>,
    /// Consul's flags.
    pub flags: u64,
    /// The index at which the key was created (or re-created).
    pub create_index: u64,
    /// The index of the key's latest change, this transaction's included.
    pub modify_index: u64,
}

/// A transaction applied: what it returns, and a receipt per write (it is
/// acknowledged once all of them are).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnOutcome {
    /// The operations' entries, in order.
    pub results: Vec<TxnEntry>,
    /// The writes, in order.
    pub receipts: Vec<WriteReceipt>,
}

/// A key as the transaction sees it: the replica's record with the
/// transaction's earlier writes over it.
#[derive(Debug, Clone)]
struct View {
    /// `None`: absent or deleted.
    value: Option<Bytes>,
    flags: u64,
    create_index: u64,
    modify_index: u64,
}

/// The transaction's writes so far, over the replica's state.
struct Overlay<'a> {
    replica: &'a Replica,
    /// What each written key holds after the writes so far.
    keys: HashMap<String, View>,
    /// The writes, in order.
    writes: Vec<(Key, Option<Bytes>, u64)>,
}

impl Overlay<'_> {
    fn view(&self, key: &str) -> Option<View> {
        if let Some(v) = self.keys.get(key) {
            return Some(v.clone());
        }
        self.replica.map.get(key).map(|r| View {
            value: r.entry.visible_value(),
            flags: r.entry.flags,
            create_index: r.create_index,
            modify_index: r.modify_index,
        })
    }

    fn live(&self, key: &str) -> Option<View> {
        self.view(key).filter(|v| v.value.is_some())
    }

    /// Records a write; the map numbers changes one by one, so its index
    /// is known before it is applied.
    fn write(&mut self, key: Key, value: Option<Bytes>, flags: u64) -> TxnEntry {
        let index = self.replica.map.index() + 1 + self.writes.len() as u64;
        let create_index = match self.live(key.as_str()) {
            Some(v) if value.is_some() => v.create_index,
            _ => index,
        };
        let view = View {
            value: value.clone(),
            flags,
            create_index,
            modify_index: index,
        };
        self.keys.insert(key.as_str().to_string(), view);
        self.writes.push((key.clone(), value, flags));
        TxnEntry {
            key: key.as_str().to_string(),
            value: None,
            flags,
            create_index,
            modify_index: index,
        }
    }

    /// Every key under `prefix` the replica or the transaction knows,
    /// deleted ones included, in key order.
    fn tree(&self, prefix: &str) -> BTreeMap<String, View> {
        let mut out: BTreeMap<String, View> = self
            .replica
            .map
            .scan_visible(prefix)
            .map(|(k, r)| {
                let v = View {
                    value: r.entry.visible_value(),
                    flags: r.entry.flags,
                    create_index: r.create_index,
                    modify_index: r.modify_index,
                };
                (k.as_str().to_string(), v)
            })
            .collect();
        for (k, v) in &self.keys {
            if k.starts_with(prefix) {
                out.insert(k.clone(), v.clone());
            }
        }
        out
    }
}

fn entry(key: &str, v: &View, with_value: bool) -> TxnEntry {
    TxnEntry {
        key: key.to_string(),
        value: if with_value { v.value.clone() } else { None },
        flags: v.flags,
        create_index: v.create_index,
        modify_index: v.modify_index,
    }
}

impl Replica {
    /// Runs `ops` as one transaction: every operation is checked against
    /// this replica's state with the earlier operations' writes applied;
    /// if any fails, nothing is written and every failure is returned.
    /// Otherwise the writes are applied in order in this one input, durable
    /// together with the `Persist` that follows, each acknowledged as `ack`
    /// says. `delete-tree` deletes at most `keys_max` keys.
    pub fn txn(
        &mut self,
        ops: &[TxnOp],
        ack: WriteAck,
        keys_max: usize,
        now_ms: u64,
    ) -> Result<TxnOutcome, TxnError> {
        self.observe_time(now_ms);
        let (results, writes) = self.txn_check(ops, keys_max)?;
        if writes.is_empty() {
            return Ok(TxnOutcome {
                results,
                receipts: Vec::new(),
            });
        }
        let writes = writes
            .into_iter()
            .map(|(k, v, flags)| (k, Body::from(v), flags))
            .collect();
        let receipts = self.make_writes(writes, ack, now_ms)?;
        self.commit();
        Ok(TxnOutcome { results, receipts })
    }

    /// Makes `writes` (key, value or `None` for a delete, flags) as this
    /// replica's own, in order, in this one input: durable together with
    /// the `Persist` that follows, each acknowledged as `ack` says. All or
    /// nothing: a refusal (the replica may not take writes now, a clock
    /// that will not stamp) comes before anything is applied.
    pub(super) fn make_writes(
        &mut self,
        writes: Vec<(Key, Body, u64)>,
        ack: WriteAck,
        now_ms: u64,
    ) -> Result<Vec<WriteReceipt>, WriteError> {
        self.writable()?;
        self.quorum_writable(ack)?;
        self.quorum_room(ack, writes.len())?;
        // Every stamp first: a clock that refuses one refuses before anything is applied.
        let mut stamps = Vec::with_capacity(writes.len());
        for _ in &writes {
            let hlc = self.clock.tick(now_ms)?;
            stamps.push(Stamp::new(hlc, self.cfg.node));
        }
        // A value for a key that holds a document is a whole-document
        // write (as a PUT's): JSON, or the whole input is refused.
        let mut made = Vec::with_capacity(writes.len());
        for ((key, body, flags), stamp) in writes.into_iter().zip(stamps) {
            let current = self.map.get(key.as_str()).map(|r| r.entry.clone());
            let doc_held = current.as_ref().is_some_and(Entry::is_doc);
            let write = match body {
                Body::Tombstone => {
                    made.push((key, None, flags, Kind::Value, stamp));
                    continue;
                }
                Body::Value(v) if !doc_held => {
                    made.push((key, Some(v), flags, Kind::Value, stamp));
                    continue;
                }
                Body::Value(v) => DocWrite::Whole(parse_json(&v)?),
                Body::Doc(w) => w,
            };
            if !self.check_before_serving(key.as_str(), now_ms) {
                return Err(DocError::Repairing.into());
            }
            let bytes = self.doc_bytes(current.as_ref(), write, stamp)?;
            made.push((key, Some(bytes), flags, Kind::Doc, stamp));
        }
        let first = self.map.index() + 1;
        let mut receipts = Vec::with_capacity(made.len());
        for (n, (key, value, flags, kind, stamp)) in made.into_iter().enumerate() {
            let prev = self
                .map
                .get(key.as_str())
                .map_or(Stamp::ZERO, |r| r.entry.stamp);
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
            assert_eq!(
                index,
                first + n as u64,
                "a transaction's indexes are consecutive"
            );
            self.metrics.local_writes += 1;
            self.resolve_key(&key, Resolution::Overwritten);
            self.dirty_keys.insert(key.clone());
            let receipt = WriteReceipt { key, stamp, index };
            self.acknowledge(receipt.clone(), ack, now_ms);
            receipts.push(receipt);
        }
        self.dirty_meta = true;
        self.push_written(ack, now_ms);
        Ok(receipts)
    }

    /// Checks every operation; returns the results and the writes to apply.
    #[allow(clippy::type_complexity)]
    pub(super) fn txn_check(
        &self,
        ops: &[TxnOp],
        keys_max: usize,
    ) -> Result<(Vec<TxnEntry>, Vec<(Key, Option<Bytes>, u64)>), TxnError> {
        let mut o = Overlay {
            replica: self,
            keys: HashMap::new(),
            writes: Vec::new(),
        };
        let mut results = Vec::new();
        let mut failures = Vec::new();
        let key_max = self.cfg.limits.key_bytes_max;
        for (i, op) in ops.iter().enumerate() {
            let outcome: Result<(), TxnFailure> = (|| {
                if op.key().is_some_and(str::is_empty) {
                    return Err(TxnFailure::NoKey);
                }
                match op {
                    TxnOp::Set { key, value, flags } => {
                        let key = key.as_str().into_key(key_max)?;
                        self.cfg.limits.check_value(value.len())?;
                        results.push(o.write(key, Some(value.clone()), *flags));
                    }
                    TxnOp::Cas {
                        key,
                        value,
                        flags,
                        index,
                    } => {
                        let k = key.as_str().into_key(key_max)?;
                        self.cfg.limits.check_value(value.len())?;
                        let actual = o.live(key).map_or(0, |v| v.modify_index);
                        if actual != *index {
                            return Err(TxnFailure::CasStale(key.clone()));
                        }
                        results.push(o.write(k, Some(value.clone()), *flags));
                    }
                    TxnOp::Get { key } => match o.live(key) {
                        Some(v) => results.push(entry(key, &v, true)),
                        None => return Err(TxnFailure::Missing(key.clone())),
                    },
                    TxnOp::GetTree { prefix } => {
                        for (k, v) in o.tree(prefix) {
                            if v.value.is_some() {
                                results.push(entry(&k, &v, true));
                            }
                        }
                    }
                    TxnOp::CheckIndex { key, index } => match o.live(key) {
                        None => return Err(TxnFailure::CheckMissing(key.clone())),
                        Some(v) if v.modify_index != *index => {
                            return Err(TxnFailure::IndexMismatch {
                                key: key.clone(),
                                expected: *index,
                                actual: v.modify_index,
                            })
                        }
                        Some(v) => results.push(entry(key, &v, false)),
                    },
                    TxnOp::CheckNotExists { key } => {
                        if o.live(key).is_some() {
                            return Err(TxnFailure::Exists(key.clone()));
                        }
                    }
                    TxnOp::Delete { key } => {
                        let key = key.as_str().into_key(key_max)?;
                        o.write(key, None, 0);
                    }
                    TxnOp::DeleteTree { prefix } => {
                        let keys: Vec<String> = o.tree(prefix).into_keys().collect();
                        if keys.len() > keys_max {
                            return Err(TxnFailure::TooManyKeys {
                                prefix: prefix.clone(),
                                count: keys.len(),
                                max: keys_max,
                            });
                        }
                        for k in keys {
                            let k = k.as_str().into_key(key_max)?;
                            o.write(k, None, 0);
                        }
                    }
                    TxnOp::DeleteCas { key, index } => {
                        let k = key.as_str().into_key(key_max)?;
                        match o.live(key) {
                            None => {}
                            Some(v) if v.modify_index != *index => {
                                return Err(TxnFailure::DeleteCasStale(key.clone()))
                            }
                            Some(_) => {
                                o.write(k, None, 0);
                            }
                        }
                    }
                }
                Ok(())
            })();
            if let Err(f) = outcome {
                failures.push((i, f));
            }
        }
        if !failures.is_empty() {
            return Err(TxnError::Failed(failures));
        }
        Ok((results, o.writes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::codec::ClusterId;
    use crate::core::types::NodeId;
    use crate::sync::config::Config;

    fn config() -> Config {
        Config::new(NodeId(1), "a", "eu", ClusterId([7; 16]))
    }

    fn replica() -> Replica {
        Replica::new(config(), 1_000).unwrap()
    }

    fn set(key: &str, value: &str) -> TxnOp {
        TxnOp::Set {
            key: key.into(),
            value: Bytes::copy_from_slice(value.as_bytes()),
            flags: 0,
        }
    }

    #[test]
    fn a_failed_check_writes_nothing_and_names_every_failure() {
        let mut r = replica();
        let w = r
            .put("a", Bytes::from_static(b"1"), 0, None, 1_000)
            .unwrap();
        let before = r.map.index();
        let ops = vec![
            set("b", "2"),
            TxnOp::CheckIndex {
                key: "a".into(),
                index: w.index + 5,
            },
            TxnOp::CheckNotExists { key: "a".into() },
        ];
        let e = r.txn(&ops, WriteAck::Local, 100, 1_001).unwrap_err();
        let TxnError::Failed(f) = e else {
            panic!("{e:?}")
        };
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].0, 1);
        assert_eq!(f[1], (2, TxnFailure::Exists("a".into())));
        assert_eq!(r.map.index(), before, "nothing written");
        assert!(r.get("b").is_none());
    }

    #[test]
    fn operations_see_the_earlier_ones_and_indexes_are_exact() {
        let mut r = replica();
        let start = r.map.index();
        let ops = vec![
            set("app/x", "1"),
            TxnOp::Cas {
                key: "app/x".into(),
                value: Bytes::from_static(b"2"),
                flags: 7,
                index: start + 1,
            },
            TxnOp::Get {
                key: "app/x".into(),
            },
            set("app/y", "3"),
            TxnOp::DeleteCas {
                key: "app/y".into(),
                index: start + 3,
            },
            TxnOp::GetTree {
                prefix: "app/".into(),
            },
        ];
        let out = r.txn(&ops, WriteAck::Local, 100, 1_001).unwrap();
        assert_eq!(out.receipts.len(), 4);
        // set, cas, get, set (delete-cas returns nothing), get-tree (one key).
        assert_eq!(out.results.len(), 5);
        assert_eq!(out.results[1].modify_index, start + 2);
        assert_eq!(out.results[1].create_index, start + 1);
        assert_eq!(out.results[2].value.as_deref(), Some(&b"2"[..]));
        assert_eq!(out.results[2].flags, 7);
        assert_eq!(out.results[4].key, "app/x");
        let x = r.get("app/x").unwrap();
        assert_eq!(x.modify_index, start + 2);
        assert_eq!(x.create_index, start + 1);
        assert!(r.get("app/y").unwrap().entry.is_tombstone());
        assert_eq!(r.map.index(), start + 4);
    }

    #[test]
    fn a_read_only_transaction_is_served_by_a_standby() {
        let mut cfg = config();
        cfg.standby = true;
        let mut r = Replica::new(cfg, 1_000).unwrap();
        let get = [TxnOp::GetTree { prefix: "".into() }];
        assert!(r.txn(&get, WriteAck::Local, 100, 1_001).is_ok());
        let e = r.txn(&[set("k", "v")], WriteAck::Local, 100, 1_001);
        assert_eq!(e, Err(TxnError::Write(WriteError::Standby)));
    }
}
