//! The data directory: the store file and the file that names the node.
//!
//! Owns which node a data directory belongs to, and what happens when its
//! store cannot be read. `node.id` (the node id in hex, written once, with
//! fsync) survives anything that happens to the store: a data directory that
//! held a node never silently becomes a new node. When the store is
//! damaged or missing and `node.id` names the node, the damaged file is
//! moved aside (`meridian.redb.damaged-<ms>`) and the node starts empty
//! under its own id, rebuilding from a peer (the replica refuses client
//! writes until then). Without `node.id` (a directory written before it
//! existed) a damaged store is refused with the path and what to do: that
//! decision is the operator's.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::NodeError;
use crate::core::types::NodeId;

/// The store's file name in the data directory.
pub const STORE_FILE: &str = "meridian.redb";
/// The file that names the node the directory belongs to.
pub const NODE_ID_FILE: &str = "node.id";

/// Present while the node id was adopted from the certificate and is not
/// yet confirmed as new (see `sync/replica/identity.rs`): when it was
/// adopted, in ms.
pub const ADOPTED_FILE: &str = "node.id.adopted";

/// A data directory, created if missing.
pub struct DataDir {
    dir: PathBuf,
}

impl DataDir {
    /// Opens the data directory `dir`, creating it (and its parents) if missing.
    pub fn open(dir: &Path) -> Result<DataDir, NodeError> {
        std::fs::create_dir_all(dir).map_err(|source| NodeError::DataDir {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(DataDir {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the store file ([`STORE_FILE`]) in the directory.
    pub fn store_path(&self) -> PathBuf {
        self.dir.join(STORE_FILE)
    }

    fn id_path(&self) -> PathBuf {
        self.dir.join(NODE_ID_FILE)
    }

    /// The node id this directory belongs to, if it names one.
    pub fn node_id(&self) -> Result<Option<NodeId>, NodeError> {
        let path = self.id_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(NodeError::DataDir { path, source }),
        };
        match u64::from_str_radix(text.trim(), 16) {
            Ok(id) if id != 0 => Ok(Some(NodeId(id))),
            _ => Err(NodeError::DataDirInvalid {
                path,
                reason: format!(
                    "{text:?} is not a node id (16 hex digits): restore the file, or remove \
                     the whole data directory to start a new node"
                ),
            }),
        }
    }

    /// Records that this directory belongs to `node` (once; durable).
    pub fn set_node_id(&self, node: NodeId) -> Result<(), NodeError> {
        let path = self.id_path();
        let tmp = self.dir.join(format!("{NODE_ID_FILE}.partial"));
        let io = |source| NodeError::DataDir {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        writeln!(f, "{node}").map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        sync_dir(&self.dir).map_err(io)
    }

    /// The path of [`ADOPTED_FILE`].
    pub fn adopted_path(&self) -> PathBuf {
        self.dir.join(ADOPTED_FILE)
    }

    /// When the node id was adopted from the certificate, while that is
    /// not yet confirmed; `None` when it was made here or is confirmed.
    pub fn adopted_at_ms(&self) -> Result<Option<u64>, NodeError> {
        let path = self.adopted_path();
        match std::fs::read_to_string(&path) {
            Ok(t) => t
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| NodeError::DataDirInvalid {
                    path,
                    reason: format!("{t:?} is not a time in ms"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(NodeError::DataDir { path, source }),
        }
    }

    /// Records that the node id was adopted from the certificate at `at_ms` (durable).
    pub fn set_adopted(&self, at_ms: u64) -> Result<(), NodeError> {
        let path = self.adopted_path();
        let io = |source| NodeError::DataDir {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::File::create(&path).map_err(io)?;
        writeln!(f, "{at_ms}").map_err(io)?;
        f.sync_all().map_err(io)?;
        sync_dir(&self.dir).map_err(io)
    }

    /// Moves a damaged store file aside (kept for inspection); returns where.
    pub fn move_aside(&self, now_ms: u64) -> Result<Option<PathBuf>, NodeError> {
        let from = self.store_path();
        if !from.exists() {
            return Ok(None);
        }
        let to = self.dir.join(format!("{STORE_FILE}.damaged-{now_ms}"));
        let io = |source| NodeError::DataDir {
            path: from.clone(),
            source,
        };
        std::fs::rename(&from, &to).map_err(io)?;
        sync_dir(&self.dir).map_err(io)?;
        Ok(Some(to))
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
