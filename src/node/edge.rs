//! An edge's writes in the driver: each put, document write, prefix
//! delete or writing transaction is forwarded to the server through the replica (see
//! `sync::replica::edge`), and its caller answered when the replica says
//! it is done ([`Output::Forwarded`](crate::sync::Output::Forwarded)); a
//! put or delete taken locally while no server is connected
//! (`sync::replica::handover`) is answered once durable, as a server's own.

use tokio::sync::oneshot;

use super::driver::Driver;
use super::types::WriteOptions;
use super::NodeError;
use crate::core::types::Key;
use crate::sync::{
    DocWrite, EdgeTxn, EdgeWritten, ForwardError, ForwardReceipt, TxnEntry, TxnError, TxnFailure,
    TxnOp, TxnOutcome, WriteAck, WriteError, WriteReceipt,
};
use bytes::Bytes;

/// Who waits on a forwarded write.
pub(super) enum ForwardReply {
    Put(oneshot::Sender<Result<WriteReceipt, NodeError>>),
    DeletePrefix(oneshot::Sender<Result<usize, NodeError>>),
    Txn {
        ops: Vec<TxnOp>,
        results: Vec<TxnEntry>,
        reply: oneshot::Sender<Result<TxnOutcome, NodeError>>,
    },
}

impl Driver {
    fn next_forward_id(&mut self) -> u64 {
        self.next_forward += 1;
        self.next_forward
    }

    /// A put or delete on an edge: forwarded to its server.
    pub(super) fn edge_put(
        &mut self,
        key: Key,
        value: Option<Bytes>,
        opts: WriteOptions,
        reply: oneshot::Sender<Result<WriteReceipt, NodeError>>,
        now: u64,
    ) {
        let id = self.next_forward_id();
        match self
            .replica
            .edge_write(id, key, value, opts.flags, opts.cas, opts.ack, now)
        {
            Ok(EdgeWritten::Forwarded) => {
                self.forwards.insert(id, ForwardReply::Put(reply));
            }
            // No server: taken here (`edge_writes = "local"`), answered once durable.
            Ok(EdgeWritten::Local(receipt)) => {
                self.pending.insert(receipt.stamp, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    /// A document write on an edge: forwarded; the server makes it.
    pub(super) fn edge_put_doc(
        &mut self,
        key: Key,
        write: DocWrite,
        opts: WriteOptions,
        reply: oneshot::Sender<Result<WriteReceipt, NodeError>>,
        now: u64,
    ) {
        let id = self.next_forward_id();
        match self
            .replica
            .edge_doc_write(id, key, write, opts.flags, opts.cas, opts.ack, now)
        {
            Ok(()) => {
                self.forwards.insert(id, ForwardReply::Put(reply));
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    /// A prefix delete on an edge: forwarded; the server deletes what it knows.
    pub(super) fn edge_delete_prefix(
        &mut self,
        prefix: &str,
        keys_max: usize,
        ack: Option<WriteAck>,
        reply: oneshot::Sender<Result<usize, NodeError>>,
        now: u64,
    ) {
        let id = self.next_forward_id();
        match self
            .replica
            .edge_delete_prefix(id, prefix, keys_max, ack, now)
        {
            Ok(()) => {
                self.forwards.insert(id, ForwardReply::DeletePrefix(reply));
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    /// A transaction on an edge: checked here; its writes forwarded.
    pub(super) fn edge_txn(
        &mut self,
        ops: Vec<TxnOp>,
        ack: Option<WriteAck>,
        keys_max: usize,
        reply: oneshot::Sender<Result<TxnOutcome, NodeError>>,
        now: u64,
    ) {
        let id = self.next_forward_id();
        match self.replica.edge_txn(id, &ops, ack, keys_max, now) {
            Ok(EdgeTxn::Read(results)) => {
                let _ = reply.send(Ok(TxnOutcome {
                    results,
                    receipts: Vec::new(),
                }));
            }
            Ok(EdgeTxn::Forwarded(results)) => {
                self.forwards.insert(
                    id,
                    ForwardReply::Txn {
                        ops,
                        results,
                        reply,
                    },
                );
            }
            Err(TxnError::Failed(failures)) => {
                let _ = reply.send(Err(NodeError::TxnFailed(failures)));
            }
            Err(TxnError::Write(e)) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    /// Forwarded write `id` is done: answer its caller.
    pub(super) fn forwarded(&mut self, id: u64, result: Result<ForwardReceipt, WriteError>) {
        let Some(waiting) = self.forwards.remove(&id) else {
            return;
        };
        match waiting {
            ForwardReply::Put(reply) => {
                let r = result.and_then(|r| {
                    r.receipts.into_iter().last().ok_or_else(|| {
                        WriteError::from(ForwardError::NotAcknowledged(
                            "the server wrote nothing".to_string(),
                        ))
                    })
                });
                let _ = reply.send(r.map_err(NodeError::from));
            }
            ForwardReply::DeletePrefix(reply) => {
                let _ = reply.send(result.map(|r| r.count as usize).map_err(NodeError::from));
            }
            ForwardReply::Txn {
                ops,
                mut results,
                reply,
            } => {
                let answer = match result {
                    Ok(r) => {
                        // The indexes of the keys written are this node's,
                        // known now that the writes are applied here.
                        for entry in &mut results {
                            if let Some(w) = r
                                .receipts
                                .iter()
                                .rev()
                                .find(|w| w.key.as_str() == entry.key)
                            {
                                entry.modify_index = w.index;
                                if let Some(rec) = self.replica.get(&entry.key) {
                                    entry.create_index = rec.create_index;
                                }
                            }
                        }
                        Ok(TxnOutcome {
                            results,
                            receipts: r.receipts,
                        })
                    }
                    Err(WriteError::Forward(ForwardError::Changed { key })) => {
                        // As a failed check of that key, at the first
                        // operation that looked at it.
                        let at = ops
                            .iter()
                            .position(|op| op.key() == Some(key.as_str()))
                            .unwrap_or(0);
                        Err(NodeError::TxnFailed(vec![(at, TxnFailure::CasStale(key))]))
                    }
                    Err(e) => Err(e.into()),
                };
                let _ = reply.send(answer);
            }
        }
    }
}
