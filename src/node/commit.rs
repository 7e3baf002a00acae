//! The store thread: group commit, commits the disk refuses, read-backs.
//!
//! Owns the thread that makes persist batches durable (and reads back a
//! record the replica found damaged in memory, in order with commits). The driver hands it
//! one group of batches at a time (while one group is on its way to disk
//! the next gathers); it commits the group as one transaction and reports
//! back. A commit that fails (a full disk, an I/O error) is not given up:
//! the thread reports the failure, then reopens the store and commits the
//! same group again, with a delay that doubles up to
//! [`COMMIT_RETRY_MS_MAX`], until it succeeds or the node stops. Nothing in
//! the group is acknowledged before that; the driver meanwhile refuses new
//! writes and keeps serving reads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::core::types::Key;
use crate::store::Store;
use crate::sync::{Loaded, PersistBatch};

/// First delay before a failed commit is tried again.
pub const COMMIT_RETRY_MS_MIN: u64 = 50;
/// Longest delay between attempts.
pub const COMMIT_RETRY_MS_MAX: u64 = 1_000;

/// What the store thread tells the driver.
#[derive(Debug)]
pub(super) enum CommitReport {
    /// Every batch up to persist number `seq` is durable; the commit took `us`.
    Done { seq: u64, us: u64 },
    /// The commit of the group up to `seq` failed (it is being retried).
    Failed {
        seq: u64,
        error: String,
        disk_full: bool,
    },
    /// `key`'s stored record, read back (`None`: none, or the read failed).
    ReadBack { key: Key, found: Option<Loaded> },
}

/// What the driver hands the store thread.
enum Job {
    /// Commit a group of batches, the last of them persist number `seq`.
    Commit(Vec<PersistBatch>, u64),
    ReadBack(Key),
}

/// The driver's handle on the store thread.
pub(super) struct StoreThread {
    tx: Option<std::sync::mpsc::Sender<Job>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StoreThread {
    /// Starts the thread for `store`; reports go to `reports`.
    pub fn spawn(
        name: &str,
        mut store: Box<dyn Store>,
        reports: mpsc::Sender<CommitReport>,
    ) -> std::io::Result<StoreThread> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("meridian-store-{name}"))
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let (batches, seq) = match job {
                        Job::Commit(batches, seq) => (batches, seq),
                        Job::ReadBack(key) => {
                            let found = store.load_record(&key).unwrap_or_else(|e| {
                                tracing::warn!(%key, "reading a record back failed: {e}");
                                None
                            });
                            if reports
                                .blocking_send(CommitReport::ReadBack { key, found })
                                .is_err()
                            {
                                return;
                            }
                            continue;
                        }
                    };
                    let started = Instant::now();
                    if !commit_until_done(&mut *store, &batches, seq, &reports, &stopping) {
                        return;
                    }
                    let us = started.elapsed().as_micros() as u64;
                    if reports
                        .blocking_send(CommitReport::Done { seq, us })
                        .is_err()
                    {
                        return;
                    }
                }
            })?;
        Ok(StoreThread {
            tx: Some(tx),
            stop,
            thread: Some(thread),
        })
    }

    /// Hands a group over; false if the thread is gone.
    pub fn send(&self, group: Vec<PersistBatch>, seq: u64) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.send(Job::Commit(group, seq)).is_ok())
    }

    /// Asks for `key`'s stored record (after the groups already handed
    /// over); false if the thread is gone.
    pub fn read_back(&self, key: Key) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.send(Job::ReadBack(key)).is_ok())
    }

    /// Stops the thread and waits until it has closed the store: it
    /// finishes the commit in hand, or gives up retrying one the disk refuses.
    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// Commits `batches`, retrying through failures; false if told to stop
/// (or the driver is gone) before it succeeded.
fn commit_until_done(
    store: &mut dyn Store,
    batches: &[PersistBatch],
    seq: u64,
    reports: &mpsc::Sender<CommitReport>,
    stop: &AtomicBool,
) -> bool {
    let mut delay_ms = COMMIT_RETRY_MS_MIN;
    let mut last_error = String::new();
    loop {
        match store.commit(batches) {
            Ok(()) => return true,
            Err(e) => {
                let error = e.to_string();
                if error != last_error {
                    tracing::error!("store commit failed, retrying: {error}");
                    let report = CommitReport::Failed {
                        seq,
                        error: error.clone(),
                        disk_full: e.is_disk_full(),
                    };
                    if reports.blocking_send(report).is_err() {
                        return false;
                    }
                    last_error = error;
                }
            }
        }
        // redb refuses every transaction after an I/O error: wait, reopen,
        // and try the same group again.
        loop {
            if !sleep_unless_stopped(delay_ms, stop) {
                return false;
            }
            delay_ms = (delay_ms * 2).min(COMMIT_RETRY_MS_MAX);
            match store.reopen() {
                Ok(()) => break,
                Err(e) => tracing::debug!("reopening the store failed: {e}"),
            }
        }
    }
}

/// Sleeps `ms` in short steps; false if `stop` was set meanwhile.
fn sleep_unless_stopped(ms: u64, stop: &AtomicBool) -> bool {
    const STEP_MS: u64 = 20;
    let mut left = ms;
    while left > 0 {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let step = left.min(STEP_MS);
        std::thread::sleep(Duration::from_millis(step));
        left -= step;
    }
    !stop.load(Ordering::SeqCst)
}
