//! `api::audit`: the audit log. Every accepted change made through the
//! API (KV writes and deletes, transactions, restores, promotions, ACL
//! changes) is appended as one JSON line: time, node, region, operation,
//! keys, the token's accessor (never its secret) and the client's address.
//!
//! Handlers that accept a change attach an `Audited` to their answer;
//! the `record` middleware (and the `?dc=` server for forwarded
//! requests) appends it. One writer thread numbers the records, appends
//! them in batches (syncing at most once a second), starts a new file past
//! `file_bytes_max` and deletes the oldest beyond `files_max`; after a
//! restart it goes on from the last number on disk. Requests wait only
//! for room in the bounded queue: a crash of the process loses the records
//! still queued, a crash of the machine also up to the last second written.
//!
//! `GET /v1/audit?since=N[&limit=M]` reads them back (a management token
//! when ACLs are on).

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::error::{error, ApiError};
use super::query::Params;
use super::{wire, Api};

/// Records waiting for the writer; a full queue makes requests wait.
pub const AUDIT_QUEUE_MAX: usize = 16_384;
/// Records written together at most.
const BATCH_MAX: usize = 1_024;
/// The files are synced at most this often: a sync per batch would compete
/// with the store's own syncs on every durable write.
const SYNC_MS_MIN: u64 = 1_000;
/// Keys named in one record; more are counted (`keys_total`).
pub const AUDIT_KEYS_MAX: usize = 64;
/// Records one `GET /v1/audit` returns at most.
pub const AUDIT_READ_MAX: usize = 10_000;
/// Audit files are named `audit-<first sequence number>.jsonl`.
const FILE_PREFIX: &str = "audit-";

/// Where the log goes and how much of it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// The directory of the log's files.
    pub dir: PathBuf,
    /// A file grows to about this size, then the next one starts.
    pub file_bytes_max: u64,
    /// Files kept; the oldest beyond are deleted.
    pub files_max: usize,
}

/// What a handler accepted, for the log.
#[derive(Debug, Clone)]
pub(super) struct Audited {
    pub(super) op: &'static str,
    pub(super) keys: Vec<String>,
    /// How many keys it changed, when not `keys.len()` (a restore).
    pub(super) total: Option<u64>,
}

impl Audited {
    pub(super) fn new(op: &'static str, keys: Vec<String>) -> Audited {
        Audited {
            op,
            keys,
            total: None,
        }
    }

    /// `response` with this attached.
    pub(super) fn on(self, mut response: Response) -> Response {
        response.extensions_mut().insert(self);
        response
    }
}

/// The client's address, set by the server on every request.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// Why the audit log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("audit log in {dir}: {source}")]
pub struct AuditError {
    dir: PathBuf,
    #[source]
    source: std::io::Error,
}

/// What the writer is sent.
#[derive(Debug)]
enum Item {
    Record(Box<wire::AuditRecord>),
    /// Answered once everything queued before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The open audit log: the queue to its writer, and where it reads back.
#[derive(Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Item>,
    dir: PathBuf,
}

impl AuditLog {
    /// Opens (or creates) the log in `cfg.dir` and starts its writer.
    pub fn open(cfg: &AuditConfig) -> Result<Arc<AuditLog>, AuditError> {
        let fail = |source| AuditError {
            dir: cfg.dir.clone(),
            source,
        };
        std::fs::create_dir_all(&cfg.dir).map_err(fail)?;
        let files = files(&cfg.dir).map_err(fail)?;
        let next = match files.last() {
            Some((_, path)) => last_seq(path).map_err(fail)?.map_or(1, |s| s + 1),
            None => 1,
        };
        let (tx, rx) = mpsc::channel(AUDIT_QUEUE_MAX);
        let w = Writer {
            cfg: cfg.clone(),
            next,
            file: None,
            synced: std::time::Instant::now(),
        };
        std::thread::Builder::new()
            .name("meridian-audit".into())
            .spawn(move || w.run(rx))
            .map_err(fail)?;
        Ok(Arc::new(AuditLog {
            tx,
            dir: cfg.dir.clone(),
        }))
    }

    /// Queues a record (waits while the queue is full).
    pub(super) async fn append(&self, r: wire::AuditRecord) {
        if self.tx.send(Item::Record(Box::new(r))).await.is_err() {
            tracing::error!("the audit log's writer stopped: a record is lost");
        }
    }

    /// Waits until every record queued so far is written (a read after
    /// this sees them).
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Item::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Records after `since`, oldest first, at most `limit`.
    pub fn read(&self, since: u64, limit: usize) -> std::io::Result<Vec<wire::AuditRecord>> {
        let mut out = Vec::new();
        let files = files(&self.dir)?;
        for (i, (_, path)) in files.iter().enumerate() {
            // Skip files wholly at or before `since`.
            if let Some((next_first, _)) = files.get(i + 1) {
                if *next_first <= since.saturating_add(1) {
                    continue;
                }
            }
            let f = match std::fs::File::open(path) {
                Ok(f) => f,
                // Deleted by retention meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for line in std::io::BufReader::new(f).lines() {
                let Ok(r) = serde_json::from_str::<wire::AuditRecord>(&line?) else {
                    continue; // a torn last line after a crash
                };
                if r.seq > since {
                    out.push(r);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The log's files, by their first sequence number.
fn files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_prefix(FILE_PREFIX))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((first, e.path()));
    }
    out.sort();
    Ok(out)
}

/// The greatest sequence number in a file (`None` if it holds none).
fn last_seq(path: &Path) -> std::io::Result<Option<u64>> {
    let f = std::fs::File::open(path)?;
    let mut last = None;
    for line in std::io::BufReader::new(f).lines() {
        if let Ok(r) = serde_json::from_str::<wire::AuditRecord>(&line?) {
            last = Some(last.map_or(r.seq, |l: u64| l.max(r.seq)));
        }
    }
    Ok(last)
}

struct Writer {
    cfg: AuditConfig,
    next: u64,
    file: Option<(std::fs::File, u64)>,
    /// When the open file was last synced.
    synced: std::time::Instant,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Item>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = Vec::new();
            let mut flushes = Vec::new();
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    Item::Record(r) => batch.push(*r),
                    Item::Flush(done) => flushes.push(done),
                }
                if batch.len() < BATCH_MAX {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                if let Err(e) = self.write(batch) {
                    tracing::error!(dir = %self.cfg.dir.display(), error = %e, "writing the audit log failed: records lost");
                    self.file = None;
                }
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    fn write(&mut self, batch: Vec<wire::AuditRecord>) -> std::io::Result<()> {
        let first = self.next;
        let mut text = Vec::new();
        for mut r in batch {
            r.seq = self.next;
            self.next += 1;
            serde_json::to_writer(&mut text, &r)?;
            text.push(b'\n');
        }
        let full = self
            .file
            .as_ref()
            .is_none_or(|(_, size)| *size >= self.cfg.file_bytes_max);
        if full {
            let path = self.cfg.dir.join(format!("{FILE_PREFIX}{first:020}.jsonl"));
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            let size = f.metadata()?.len();
            self.file = Some((f, size));
            self.retain()?;
        }
        let (f, size) = self.file.as_mut().expect("opened above");
        f.write_all(&text)?;
        *size += text.len() as u64;
        // In the page cache now: a crash of the process loses nothing; a
        // crash of the machine loses at most the last second.
        if self.synced.elapsed().as_millis() as u64 >= SYNC_MS_MIN {
            f.sync_data()?;
            self.synced = std::time::Instant::now();
        }
        Ok(())
    }

    /// Deletes the oldest files beyond `files_max`.
    fn retain(&self) -> std::io::Result<()> {
        let files = files(&self.cfg.dir)?;
        let extra = files.len().saturating_sub(self.cfg.files_max.max(1));
        for (_, path) in files.into_iter().take(extra) {
            std::fs::remove_file(path)?;
        }
        Ok(())
    }
}

/// What a success answer says it accepted, for the log.
pub(super) fn accepted(response: &Response) -> Option<Audited> {
    if !response.status().is_success() {
        return None;
    }
    response.extensions().get::<Audited>().cloned()
}

impl Api {
    /// Appends `a` (what a handler accepted) for the caller of
    /// `headers`/`uri` at `remote`.
    pub(super) async fn audit(
        &self,
        a: Option<Audited>,
        headers: &HeaderMap,
        uri: &Uri,
        remote: String,
    ) {
        let (Some(log), Some(a)) = (&self.audit, a) else {
            return;
        };
        let caller = self.caller(headers, uri);
        let keys_total = a.total.unwrap_or(a.keys.len() as u64);
        let r = wire::AuditRecord {
            seq: 0,
            at_ms: crate::node::time::now_ms(),
            node: self.node.id().to_string(),
            name: self.node.name().to_string(),
            region: self.node.region().to_string(),
            op: a.op.to_string(),
            keys: a.keys.into_iter().take(AUDIT_KEYS_MAX).collect(),
            keys_total,
            accessor: caller.accessor_id,
            remote,
        };
        log.append(r).await;
    }
}

/// The middleware that appends what a handler accepted.
pub(super) async fn record(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    // Reads change nothing: the hot path stays as it was.
    let reads = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if api.audit.is_none() || reads {
        return next.run(req).await;
    }
    let headers = req.headers().clone();
    let uri = req.uri().clone();
    let remote = req
        .extensions()
        .get::<RemoteAddr>()
        .map_or_else(String::new, |a| a.0.to_string());
    let response = next.run(req).await;
    api.audit(accepted(&response), &headers, &uri, remote).await;
    response
}

/// `GET /v1/audit?since=N&limit=M`: records after N, oldest first.
#[allow(clippy::result_large_err)]
pub(super) async fn audit(State(api): State<Arc<Api>>, headers: HeaderMap, uri: Uri) -> Response {
    let go = async {
        let Some(log) = api.audit.clone() else {
            return Err(error(
                StatusCode::NOT_FOUND,
                "the audit log is off on this node ([audit] enabled = false)",
            )
            .into_response());
        };
        let caller = api.caller(&headers, &uri);
        if api.acl.enabled() && !caller.authz.is_management() {
            return Err(super::acl::denied(&caller, "management", "audit log").into_response());
        }
        let q = Params::parse(&uri).map_err(IntoResponse::into_response)?;
        let since = q
            .number("since")
            .map_err(IntoResponse::into_response)?
            .unwrap_or(0);
        let limit = q
            .number("limit")
            .map_err(IntoResponse::into_response)?
            .map_or(AUDIT_READ_MAX, |l| (l as usize).clamp(1, AUDIT_READ_MAX));
        log.flush().await;
        let records = tokio::task::spawn_blocking(move || log.read(since, limit))
            .await
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())?
            .map_err(|e| {
                let e: ApiError = error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("reading the audit log: {e}"),
                );
                e.into_response()
            })?;
        Ok(axum::Json(records).into_response())
    };
    go.await.unwrap_or_else(|r: Response| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u64) -> wire::AuditRecord {
        wire::AuditRecord {
            seq: 0,
            at_ms: i,
            node: "n".into(),
            name: "a".into(),
            region: "r".into(),
            op: "put".into(),
            keys: vec![format!("key/{i:04}/{}", "x".repeat(40))],
            keys_total: 1,
            accessor: String::new(),
            remote: "127.0.0.1:1".into(),
        }
    }

    #[tokio::test]
    async fn files_rotate_old_ones_go_and_numbering_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("meridian-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = AuditConfig {
            dir: dir.clone(),
            file_bytes_max: 4_096,
            files_max: 3,
        };
        let log = AuditLog::open(&cfg).unwrap();
        for i in 0..400 {
            log.append(record(i)).await;
            if i % 50 == 0 {
                log.flush().await; // several batches, so several files
            }
        }
        log.flush().await;
        assert!(files(&dir).unwrap().len() <= 3);
        let kept = log.read(0, AUDIT_READ_MAX).unwrap();
        assert!(!kept.is_empty() && kept.len() < 400, "{}", kept.len());
        assert_eq!(kept.last().unwrap().seq, 400);
        assert!(kept.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        assert_eq!(log.read(398, 10).unwrap().len(), 2);
        assert_eq!(log.read(0, 5).unwrap().len(), 5);
        drop(log);
        let log = AuditLog::open(&cfg).unwrap();
        log.append(record(400)).await;
        log.flush().await;
        assert_eq!(log.read(400, 10).unwrap()[0].seq, 401);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
