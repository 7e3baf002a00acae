//! The in-memory store: tests, and embedded use without a disk.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Store, StoreError, LOAD_CHUNK_RECORDS};
use crate::core::types::{Key, NodeId};
use crate::sync::{DurableState, Loaded, PersistBatch};

/// A store that forgets everything when dropped.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    state: DurableState,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl Store for MemoryStore {
    fn load(&self) -> Result<DurableState, StoreError> {
        Ok(self.state.clone())
    }

    fn load_meta(&self) -> Result<DurableState, StoreError> {
        let s = &self.state;
        Ok(DurableState {
            records: BTreeMap::new(),
            damaged: Vec::new(),
            peers: s.peers.clone(),
            conflicts: s.conflicts.clone(),
            forgotten: s.forgotten.clone(),
            rejoined: s.rejoined,
            left: s.left,
            ..*s
        })
    }

    fn load_records(&self, sink: &mut dyn FnMut(Vec<Loaded>) -> bool) -> Result<(), StoreError> {
        let mut it = self
            .state
            .records
            .iter()
            .map(|(k, r)| Loaded::Record(k.clone(), r.clone()))
            .chain(self.state.damaged.iter().cloned().map(Loaded::Damaged));
        loop {
            let chunk: Vec<_> = it.by_ref().take(LOAD_CHUNK_RECORDS).collect();
            if chunk.is_empty() || !sink(chunk) {
                return Ok(());
            }
        }
    }

    fn load_record(&self, key: &Key) -> Result<Option<Loaded>, StoreError> {
        Ok(self.state.load_record(key))
    }

    fn records_len(&self) -> Result<u64, StoreError> {
        Ok((self.state.records.len() + self.state.damaged.len()) as u64)
    }

    fn commit(&mut self, batches: &[PersistBatch]) -> Result<(), StoreError> {
        for b in batches {
            self.state.apply(b);
        }
        Ok(())
    }

    fn set_node(&mut self, node: NodeId) -> Result<(), StoreError> {
        if self.state.node != NodeId(0) && self.state.node != node {
            return Err(StoreError::WrongNode {
                path: PathBuf::from(":memory:"),
                expected: node,
                found: self.state.node,
            });
        }
        self.state.node = node;
        Ok(())
    }
}
