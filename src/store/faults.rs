//! Disk faults on demand, for tests and demonstrations: a [`Store`] wrapper
//! whose commits fail with ENOSPC (as a full disk makes them) while a
//! shared switch says so.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::{Store, StoreError};
use crate::core::types::{Key, NodeId};
use crate::sync::{DurableState, Loaded, PersistBatch};

/// The switchboard shared by a test and the stores it wraps.
#[derive(Debug, Default)]
pub struct StoreFaults {
    full: AtomicBool,
    refused: AtomicU64,
}

impl StoreFaults {
    /// A switchboard with the disk not full, to share with the stores it wraps.
    pub fn new() -> Arc<StoreFaults> {
        Arc::new(StoreFaults::default())
    }

    /// From now on every commit (and reopen) fails with ENOSPC, until `set_full(false)`.
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    /// Commits refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.full.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Injected(std::io::Error::from_raw_os_error(
                libc::ENOSPC,
            )));
        }
        Ok(())
    }
}

/// A store whose writes obey a [`StoreFaults`]; reads pass through.
pub struct FaultyStore {
    inner: Box<dyn Store>,
    faults: Arc<StoreFaults>,
}

impl FaultyStore {
    /// Wraps `inner`: its commits fail while `faults` says the disk is full.
    pub fn new(inner: Box<dyn Store>, faults: Arc<StoreFaults>) -> FaultyStore {
        FaultyStore { inner, faults }
    }
}

impl Store for FaultyStore {
    fn load(&self) -> Result<DurableState, StoreError> {
        self.inner.load()
    }

    fn load_meta(&self) -> Result<DurableState, StoreError> {
        self.inner.load_meta()
    }

    fn load_records(&self, sink: &mut dyn FnMut(Vec<Loaded>) -> bool) -> Result<(), StoreError> {
        self.inner.load_records(sink)
    }

    fn load_record(&self, key: &Key) -> Result<Option<Loaded>, StoreError> {
        self.inner.load_record(key)
    }

    fn records_len(&self) -> Result<u64, StoreError> {
        self.inner.records_len()
    }

    fn commit(&mut self, batches: &[PersistBatch]) -> Result<(), StoreError> {
        self.faults.check()?;
        self.inner.commit(batches)
    }

    fn set_node(&mut self, node: NodeId) -> Result<(), StoreError> {
        self.faults.check()?;
        self.inner.set_node(node)
    }

    fn reopen(&mut self) -> Result<(), StoreError> {
        self.faults.check()?;
        self.inner.reopen()
    }
}
