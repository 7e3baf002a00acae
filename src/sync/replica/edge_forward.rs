//! An edge's writes (see `edge.rs` for both sides of the link): each is
//! forwarded to the connected server as a [`Message::Forward`] and answered
//! once the server acknowledged it and it is applied here
//! (read-your-writes), or after the forward timeout; a server lost with
//! writes unanswered fails them. At most [`FORWARDS_PENDING_MAX`] wait at
//! once.

use bytes::Bytes;

use super::documents::DocWrite;
use super::edge::{EdgeTxn, ForwardError, ForwardReceipt, FORWARDS_PENDING_MAX};
use super::EdgeWritten;
use super::{Output, Replica, TxnError, TxnFailure, TxnOp};
use super::{WriteError, WriteReceipt};
use crate::core::codec::{ForwardOp, ForwardOutcome, Message, RefusalClass, FORWARD_OPS_MAX};
use crate::core::doc::DocError;
use crate::core::types::{IntoKey, Key, NodeId, Stamp};
use crate::sync::config::{EdgeWrites, Role, WriteAck};

/// A forwarded write an edge waits on.
#[derive(Debug, Clone)]
pub(super) struct PendingForward {
    server: NodeId,
    sent_ms: u64,
    /// For a check-and-set write: the key and the index asked for, to
    /// answer a changed key as a failed check.
    cas: Option<(Key, u64)>,
    state: ForwardState,
}

#[derive(Debug, Clone)]
pub(super) enum ForwardState {
    /// Sent; no answer yet. Fails after `forward_timeout_ms`.
    Sent,
    /// Acknowledged by the server; answered once applied here, or at `until_ms`.
    Made {
        count: u64,
        written: Vec<(Key, Stamp)>,
        until_ms: u64,
    },
}

impl Replica {
    /// The connected server forwarded writes go to.
    pub(super) fn server(&self) -> Option<NodeId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.role == Role::Server && p.link.up() && !p.told_stale)
            .map(|(id, _)| *id)
            .next()
    }

    /// On an edge: forwards `ops` to the server as write number `id`. Its
    /// outcome comes as [`Output::Forwarded`] with the same `id`.
    fn forward(
        &mut self,
        id: u64,
        ops: Vec<ForwardOp>,
        cas: Option<(Key, u64)>,
        ack: Option<WriteAck>,
        now_ms: u64,
    ) -> Result<(), WriteError> {
        assert!(ops.len() <= FORWARD_OPS_MAX, "bounded by the callers");
        let Some(server) = self.server() else {
            return Err(ForwardError::NoServer.into());
        };
        if self.forwards.len() >= FORWARDS_PENDING_MAX {
            return Err(ForwardError::TooMany {
                max: FORWARDS_PENDING_MAX,
            }
            .into());
        }
        if self.forwards.contains_key(&id) {
            return Err(ForwardError::Refused {
                class: RefusalClass::Invalid,
                message: format!("write number {id} is already waiting"),
            }
            .into());
        }
        self.forwards.insert(
            id,
            PendingForward {
                server,
                sent_ms: now_ms,
                cas,
                state: ForwardState::Sent,
            },
        );
        self.metrics.forwards_sent += 1;
        let quorum = ack.map(|a| a == WriteAck::Quorum);
        self.send(server, Message::Forward { id, ops, quorum });
        self.commit();
        Ok(())
    }

    /// On an edge with no server connected and local writes on: why this
    /// write cannot be taken here (`None`: it can, or there is a server).
    fn needs_server(&self, what: &'static str) -> Option<WriteError> {
        (self.cfg.edge_writes == EdgeWrites::Local && self.server().is_none())
            .then(|| ForwardError::ServerNeeded { what }.into())
    }

    /// On an edge: writes `value` under `key` (`None`: deletes it) through
    /// the server, as write number `id`. With `cas`, only if the key's
    /// modify index here is `cas` (0: if it is not live here) and the
    /// server still holds the version this edge saw. With no server
    /// connected and `edge_writes = "local"`, a write without `cas` or a
    /// quorum is taken here instead (see `replica/handover.rs`).
    #[allow(clippy::too_many_arguments)]
    pub fn edge_write(
        &mut self,
        id: u64,
        key: impl IntoKey,
        value: Option<Bytes>,
        flags: u64,
        cas: Option<u64>,
        ack: Option<WriteAck>,
        now_ms: u64,
    ) -> Result<EdgeWritten, WriteError> {
        self.observe_time(now_ms);
        let key = key.into_key(self.cfg.limits.key_bytes_max)?;
        if let Some(v) = &value {
            self.cfg.limits.check_value(v.len())?;
        }
        if self.server().is_none() {
            if cas.is_some() {
                if let Some(e) = self.needs_server("a check-and-set") {
                    return Err(e);
                }
            } else if ack == Some(WriteAck::Quorum) {
                if let Some(e) = self.needs_server("a quorum write") {
                    return Err(e);
                }
            } else if let Some(receipt) = self.write_locally(&key, value.clone(), flags, now_ms)? {
                return Ok(EdgeWritten::Local(receipt));
            }
        }
        let mut ops = Vec::with_capacity(2);
        ops.extend(self.cas_expected(&key, cas, value.is_none())?);
        ops.push(match value {
            Some(value) => ForwardOp::Set {
                key: key.clone(),
                value,
                flags,
            },
            None => ForwardOp::Delete { key: key.clone() },
        });
        self.forward(id, ops, cas.map(|c| (key, c)), ack, now_ms)?;
        Ok(EdgeWritten::Forwarded)
    }

    /// With `cas`, the check that the key's modify index here is `cas` (0:
    /// it is not live here; a delete needs it live), and the `Expect` that
    /// makes the server check it still holds the version seen here.
    fn cas_expected(
        &self,
        key: &Key,
        cas: Option<u64>,
        delete: bool,
    ) -> Result<Option<ForwardOp>, WriteError> {
        let Some(expected) = cas else {
            return Ok(None);
        };
        let actual = self
            .map
            .get(key.as_str())
            .filter(|r| !r.entry.is_tombstone())
            .map_or(0, |r| r.modify_index);
        if actual != expected || (delete && actual == 0) {
            return Err(WriteError::CasMismatch { expected, actual });
        }
        Ok(Some(ForwardOp::Expect {
            key: key.clone(),
            stamp: self.live_stamp(key.as_str()),
        }))
    }

    /// On an edge: a document write (see `replica::documents`) through the
    /// server, as write number `id`: the server computes the change against
    /// the document it holds. Needs a server connected (an edge makes no
    /// document write of its own). A merge patch to a key that holds a
    /// plain value here is refused here, as the server would.
    #[allow(clippy::too_many_arguments)]
    pub fn edge_doc_write(
        &mut self,
        id: u64,
        key: impl IntoKey,
        write: DocWrite,
        flags: u64,
        cas: Option<u64>,
        ack: Option<WriteAck>,
        now_ms: u64,
    ) -> Result<(), WriteError> {
        self.observe_time(now_ms);
        let key = key.into_key(self.cfg.limits.key_bytes_max)?;
        if let Some(e) = self.needs_server("a document write") {
            return Err(e);
        }
        let (json, patch) = match &write {
            DocWrite::Whole(json) => (json, false),
            DocWrite::Patch(json) => (json, true),
        };
        let plain_held = self
            .map
            .get(key.as_str())
            .is_some_and(|r| !r.entry.is_tombstone() && !r.entry.is_doc());
        if patch && plain_held {
            return Err(DocError::NotDocument.into());
        }
        let json =
            Bytes::from(serde_json::to_vec(json).map_err(|e| DocError::NotJson(e.to_string()))?);
        self.cfg.limits.check_value(json.len())?;
        let mut ops = Vec::with_capacity(2);
        ops.extend(self.cas_expected(&key, cas, false)?);
        ops.push(ForwardOp::Doc {
            key: key.clone(),
            json,
            patch,
            flags,
        });
        self.forward(id, ops, cas.map(|c| (key, c)), ack, now_ms)
    }

    /// On an edge: deletes every key the server knows under `prefix` (at
    /// most `keys_max`), as write number `id`.
    pub fn edge_delete_prefix(
        &mut self,
        id: u64,
        prefix: &str,
        keys_max: usize,
        ack: Option<WriteAck>,
        now_ms: u64,
    ) -> Result<(), WriteError> {
        self.observe_time(now_ms);
        if let Some(e) = self.needs_server("a prefix delete") {
            return Err(e);
        }
        let keys_max = keys_max.min(u32::MAX as usize) as u32;
        let ops = vec![ForwardOp::DeleteTree {
            prefix: prefix.to_string(),
            keys_max,
        }];
        self.forward(id, ops, None, ack, now_ms)
    }

    /// On an edge: a transaction, checked here; its writes (if any) are
    /// forwarded as write number `id`, on the condition that every key it
    /// looked at is, at the server, the version it saw here.
    pub fn edge_txn(
        &mut self,
        id: u64,
        ops: &[TxnOp],
        ack: Option<WriteAck>,
        keys_max: usize,
        now_ms: u64,
    ) -> Result<EdgeTxn, TxnError> {
        self.observe_time(now_ms);
        let (results, writes) = self.txn_check(ops, keys_max)?;
        if writes.is_empty() {
            return Ok(EdgeTxn::Read(results));
        }
        if let Some(e) = self.needs_server("a writing transaction") {
            return Err(TxnError::Write(e));
        }
        let mut seen: Vec<&str> = ops
            .iter()
            .filter(|op| {
                matches!(
                    op,
                    TxnOp::Cas { .. }
                        | TxnOp::Get { .. }
                        | TxnOp::CheckIndex { .. }
                        | TxnOp::CheckNotExists { .. }
                        | TxnOp::DeleteCas { .. }
                )
            })
            .filter_map(TxnOp::key)
            .collect();
        seen.sort_unstable();
        seen.dedup();
        let mut forwarded = Vec::with_capacity(seen.len() + writes.len());
        for key in seen {
            let Ok(k) = key.into_key(self.cfg.limits.key_bytes_max) else {
                continue;
            };
            let stamp = self.live_stamp(key);
            forwarded.push(ForwardOp::Expect { key: k, stamp });
        }
        for (key, value, flags) in writes {
            forwarded.push(match value {
                Some(value) => ForwardOp::Set { key, value, flags },
                None => ForwardOp::Delete { key },
            });
        }
        if forwarded.len() > FORWARD_OPS_MAX {
            return Err(TxnError::Failed(vec![(
                0,
                TxnFailure::TooManyOps {
                    count: forwarded.len(),
                    max: FORWARD_OPS_MAX,
                },
            )]));
        }
        self.forward(id, forwarded, None, ack, now_ms)
            .map_err(TxnError::Write)?;
        Ok(EdgeTxn::Forwarded(results))
    }

    pub(super) fn on_forwarded(
        &mut self,
        from: NodeId,
        id: u64,
        outcome: ForwardOutcome,
        now_ms: u64,
    ) {
        if !self
            .forwards
            .get(&id)
            .is_some_and(|f| f.server == from && matches!(f.state, ForwardState::Sent))
        {
            self.metrics.messages_ignored += 1;
            return;
        }
        let f = self.forwards.get_mut(&id).expect("checked");
        let failed = match outcome {
            ForwardOutcome::Done { count, written } => {
                f.state = ForwardState::Made {
                    count,
                    written,
                    until_ms: now_ms + self.cfg.peer_timeout_ms,
                };
                None
            }
            ForwardOutcome::Changed { key } => Some(match f.cas.take() {
                Some((k, expected)) if k == key => {
                    let actual = self
                        .map
                        .get(k.as_str())
                        .filter(|r| !r.entry.is_tombstone())
                        .map_or(0, |r| r.modify_index);
                    // The server holds a version this edge has not seen
                    // yet: the index here may still be the one asked for.
                    WriteError::CasMismatch {
                        expected,
                        actual: if actual == expected { 0 } else { actual },
                    }
                }
                _ => ForwardError::Changed {
                    key: key.to_string(),
                }
                .into(),
            }),
            ForwardOutcome::Refused { class, message } => {
                Some(ForwardError::Refused { class, message }.into())
            }
            ForwardOutcome::NotAcknowledged(m) => Some(ForwardError::NotAcknowledged(m).into()),
        };
        if let Some(e) = failed {
            self.forwards.remove(&id);
            self.staged.push(Output::Forwarded { id, result: Err(e) });
        }
        self.check_forwards(now_ms);
    }

    /// Answers the forwarded writes that are applied here (or waited long
    /// enough for), and fails those whose server did not answer in time.
    pub(super) fn check_forwards(&mut self, now_ms: u64) {
        if self.forwards.is_empty() {
            return;
        }
        let timeout = self.cfg.forward_timeout_ms;
        let mut done = Vec::new();
        for (id, f) in &self.forwards {
            match &f.state {
                ForwardState::Sent if now_ms >= f.sent_ms + timeout => done.push(*id),
                ForwardState::Sent => {}
                ForwardState::Made {
                    written, until_ms, ..
                } => {
                    let applied = written.iter().all(|(k, s)| match self.map.get(k.as_str()) {
                        Some(r) => r.entry.stamp >= *s,
                        None => s.hlc <= self.gc_floor,
                    });
                    if applied || now_ms >= *until_ms {
                        done.push(*id);
                    }
                }
            }
        }
        for id in done {
            let f = self.forwards.remove(&id).expect("listed");
            let result = match f.state {
                ForwardState::Sent => Err(ForwardError::Timeout {
                    waited_ms: now_ms.saturating_sub(f.sent_ms),
                }
                .into()),
                ForwardState::Made { count, written, .. } => {
                    let index = self.map.index();
                    let receipts = written
                        .into_iter()
                        .map(|(key, stamp)| {
                            let index = self
                                .map
                                .get(key.as_str())
                                .filter(|r| r.entry.stamp == stamp)
                                .map_or(index, |r| r.modify_index);
                            WriteReceipt { key, stamp, index }
                        })
                        .collect();
                    Ok(ForwardReceipt { count, receipts })
                }
            };
            self.staged.push(Output::Forwarded { id, result });
        }
    }

    /// The server `peer` was lost: what was sent to it and not answered fails.
    pub(super) fn server_lost(&mut self, peer: NodeId) {
        let lost: Vec<u64> = self
            .forwards
            .iter()
            .filter(|(_, f)| f.server == peer && matches!(f.state, ForwardState::Sent))
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            self.forwards.remove(&id);
            self.staged.push(Output::Forwarded {
                id,
                result: Err(ForwardError::Lost.into()),
            });
        }
    }

    /// The earliest deadline of a forwarded write.
    pub(super) fn forward_deadline(&self) -> Option<u64> {
        let timeout = self.cfg.forward_timeout_ms;
        self.forwards
            .values()
            .map(|f| match &f.state {
                ForwardState::Sent => f.sent_ms + timeout,
                ForwardState::Made { until_ms, .. } => *until_ms,
            })
            .min()
    }
}
