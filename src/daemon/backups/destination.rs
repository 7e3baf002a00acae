//! Where scheduled backups are kept: a local folder, or a bucket (and a
//! prefix in it) of S3-compatible object storage through `object_store`,
//! behind one interface. Every backup is checked where it landed: read back
//! whole, its checksums, count and header compared with what was written,
//! before it counts as taken. Large backups are uploaded in parts
//! (multipart), a few in flight. Credentials come from the destination's
//! config or the usual `AWS_*` environment variables.
//!
//! A destination is named by a location: a folder path (or `file:///path`)
//! or `s3://bucket[/prefix]`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use serde::{Deserialize, Serialize};

use super::plan::Point;
use crate::backup::{self, BackupError, Header};

/// S3's smallest part of a multipart upload (except the last).
pub const PART_BYTES_MIN: u64 = 5 * 1024 * 1024;
/// The largest part this uploads.
pub const PART_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Parts of 16 MiB by default; a backup up to this size is one request.
pub const PART_BYTES_DEFAULT: u64 = 16 * 1024 * 1024;
/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT_MAX: usize = 4;
/// Objects a destination's listing may hold under its prefix; past this the
/// listing fails with an error rather than growing without bound.
pub const LISTED_MAX: usize = 100_000;
/// Destinations in one config.
pub const DESTINATIONS_MAX: usize = 8;
/// A destination's name, at most.
pub const NAME_BYTES_MAX: usize = 32;
/// The first read of a header from object storage; most headers fit.
const HEADER_PROBE_BYTES: u64 = 4_096;

/// `[[backup.destination]]`: one place scheduled backups go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Its name in metrics, health and logs (letters, digits, `-`, `_`).
    pub name: String,
    /// A folder path, `file:///path`, or `s3://bucket[/prefix]`.
    pub url: String,
    /// An S3-compatible service's address (MinIO, Ceph, moto...); AWS by
    /// default, or `AWS_ENDPOINT_URL`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The bucket's region; `AWS_REGION` or `AWS_DEFAULT_REGION` by
    /// default, else `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Credentials; `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (or the
    /// instance's role) when not given.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// See `access_key_id`.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Allow an `http://` endpoint (a test server on loopback). Default false.
    #[serde(default)]
    pub allow_http: bool,
    /// Uploads larger than this go in parts of this size. Default 16 MiB,
    /// at least 5 MiB (S3's minimum).
    #[serde(default = "part_bytes_default")]
    pub part_bytes: u64,
    /// One request (a part, a listing, a download) at most this long.
    /// Default 60 s.
    #[serde(default = "request_timeout_ms_default")]
    pub request_timeout_ms: u64,
}

fn part_bytes_default() -> u64 {
    PART_BYTES_DEFAULT
}

fn request_timeout_ms_default() -> u64 {
    REQUEST_TIMEOUT_MS_DEFAULT
}

/// A request to object storage at most 60 s by default.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// Connecting to object storage at most this long.
const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// A failed request is tried again at most this often...
const RETRIES_MAX: usize = 3;
/// ...and not after this long: a destination that is down fails its
/// backup (counted, and health says so) instead of holding the others up.
const RETRY_MS_MAX: u64 = 15_000;

/// Where a destination is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local folder.
    Folder(PathBuf),
    /// A bucket of S3-compatible storage, and a prefix in it (no leading
    /// or trailing `/`; empty for the bucket's root).
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix objects are kept under.
        prefix: String,
    },
}

impl Location {
    /// Reads a location: `s3://bucket[/prefix]`, `file:///path`, or a path.
    pub fn parse(text: &str) -> Result<Location, DestinationError> {
        let bad = |why: &'static str| DestinationError::Location {
            location: text.to_string(),
            why,
        };
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'
                });
            if !valid {
                return Err(bad(
                    "a bucket name is 3 to 63 lowercase letters, digits, '.' or '-'",
                ));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|p| p == "." || p == "..") {
                return Err(bad("the prefix has a '.' or '..' part"));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        if let Some(path) = text.strip_prefix("file://") {
            return Ok(Location::Folder(PathBuf::from(path)));
        }
        if text.contains("://") {
            return Err(bad(
                "only s3:// and file:// (or a plain path) are supported",
            ));
        }
        if text.is_empty() {
            return Err(bad("empty"));
        }
        Ok(Location::Folder(PathBuf::from(text)))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Folder(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Why a destination could not be opened, listed, written or read.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    /// The location is not one this reads.
    #[error("{location:?} is not a backup destination: {why}")]
    Location {
        /// As given.
        location: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The destination's settings are unusable.
    #[error("backup destination {destination}: {why}")]
    Config {
        /// Its name.
        destination: String,
        /// What is wrong.
        why: String,
    },
    /// A local folder could not be read or written.
    #[error("backup destination {destination}: {op} {path}: {source}")]
    Io {
        /// Its name.
        destination: String,
        /// What was being done.
        op: &'static str,
        /// The file or folder.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Object storage refused or failed a request (after its retries).
    #[error("backup destination {destination}: {op} {path}: {source}")]
    Store {
        /// Its name.
        destination: String,
        /// What was being done.
        op: &'static str,
        /// The object.
        path: String,
        /// The error (boxed: it is large, and errors are rare).
        #[source]
        source: Box<object_store::Error>,
    },
    /// A backup there is not a usable backup.
    #[error("backup destination {destination}: {path}: {source}")]
    Backup {
        /// Its name.
        destination: String,
        /// The file or object.
        path: String,
        /// What is wrong with it.
        #[source]
        source: BackupError,
    },
    /// What was written reads back as something else.
    #[error("backup destination {destination}: {path} reads back as another backup than the one written")]
    Mismatch {
        /// Its name.
        destination: String,
        /// The file or object.
        path: String,
    },
    /// More objects under the prefix than a listing holds.
    #[error("backup destination {destination}: more than {LISTED_MAX} objects under its prefix")]
    TooMany {
        /// Its name.
        destination: String,
    },
}

impl DestinationError {
    /// The file or object is not there (it may have been removed by
    /// retention since it was listed).
    pub fn is_not_found(&self) -> bool {
        match self {
            DestinationError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            DestinationError::Store { source, .. } => {
                matches!(**source, object_store::Error::NotFound { .. })
            }
            DestinationError::Backup {
                source: BackupError::Corrupt { reason, .. },
                ..
            } => reason.contains("No such file"),
            _ => false,
        }
    }
}

/// One backup a destination holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// What its name says.
    pub point: Point,
    /// Its size.
    pub bytes: u64,
}

/// An open destination.
#[derive(Debug, Clone)]
pub struct Destination {
    name: String,
    location: Location,
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Folder(PathBuf),
    Object {
        store: Arc<dyn ObjectStore>,
        prefix: String,
        part_bytes: usize,
    },
}

impl Destination {
    /// The local folder `dir`, named `name`.
    pub fn folder(name: &str, dir: &Path) -> Destination {
        Destination {
            name: name.to_string(),
            location: Location::Folder(dir.to_path_buf()),
            backend: Backend::Folder(dir.to_path_buf()),
        }
    }

    /// Opens what `cfg` describes (no request is made yet).
    pub fn open(cfg: &DestinationConfig) -> Result<Destination, DestinationError> {
        let config = |why: String| DestinationError::Config {
            destination: cfg.name.clone(),
            why,
        };
        let name_ok = !cfg.name.is_empty()
            && cfg.name.len() <= NAME_BYTES_MAX
            && cfg
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(config(format!(
                "a destination name is 1 to {NAME_BYTES_MAX} letters, digits, '-' or '_'"
            )));
        }
        if !(PART_BYTES_MIN..=PART_BYTES_MAX).contains(&cfg.part_bytes) {
            return Err(config(format!(
                "part_bytes must be from {PART_BYTES_MIN} to {PART_BYTES_MAX}"
            )));
        }
        match Location::parse(&cfg.url)? {
            Location::Folder(dir) => Ok(Destination::folder(&cfg.name, &dir)),
            Location::S3 { bucket, prefix } => {
                let mut b = AmazonS3Builder::from_env().with_bucket_name(&bucket);
                if let Some(e) = &cfg.endpoint {
                    b = b.with_endpoint(e);
                }
                if let Some(r) = &cfg.region {
                    b = b.with_region(r);
                } else if let Ok(r) = std::env::var("AWS_REGION") {
                    b = b.with_region(r);
                }
                if let Some(k) = &cfg.access_key_id {
                    b = b.with_access_key_id(k);
                }
                if let Some(k) = &cfg.secret_access_key {
                    b = b.with_secret_access_key(k);
                }
                if !(1_000..=3_600_000).contains(&cfg.request_timeout_ms) {
                    return Err(config(
                        "request_timeout_ms must be from 1000 to 3600000".to_string(),
                    ));
                }
                // `allow_http` in the config, or AWS_ALLOW_HTTP=true.
                let allow_http = cfg.allow_http
                    || std::env::var("AWS_ALLOW_HTTP")
                        .is_ok_and(|v| v.eq_ignore_ascii_case("true"));
                let options = object_store::ClientOptions::new()
                    .with_allow_http(allow_http)
                    .with_timeout(Duration::from_millis(cfg.request_timeout_ms))
                    .with_connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS));
                b = b
                    .with_client_options(options)
                    .with_retry(object_store::RetryConfig {
                        backoff: object_store::BackoffConfig::default(),
                        max_retries: RETRIES_MAX,
                        retry_timeout: Duration::from_millis(RETRY_MS_MAX),
                    });
                // reqwest is built without a crypto provider of its own: the
                // process's is ring, as for the mesh and the API.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let store = b.build().map_err(|e| config(e.to_string()))?;
                Ok(Destination {
                    name: cfg.name.clone(),
                    location: Location::S3 {
                        bucket,
                        prefix: prefix.clone(),
                    },
                    backend: Backend::Object {
                        store: Arc::new(store),
                        prefix,
                        part_bytes: cfg.part_bytes as usize,
                    },
                })
            }
        }
    }

    /// Opens a location given on the command line: credentials, endpoint
    /// and region from the environment (`AWS_ENDPOINT_URL`, `AWS_REGION`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`).
    pub fn at(location: &str) -> Result<Destination, DestinationError> {
        let name = match Location::parse(location)? {
            Location::Folder(_) => "folder",
            Location::S3 { .. } => "s3",
        };
        Destination::open(&DestinationConfig {
            name: name.to_string(),
            url: location.to_string(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v == "true"),
            part_bytes: PART_BYTES_DEFAULT,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
        })
    }

    /// Object storage of any kind (an in-memory store in tests), objects
    /// kept under `prefix`, uploads in parts of `part_bytes`.
    pub fn object(
        name: &str,
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        part_bytes: usize,
    ) -> Destination {
        Destination {
            name: name.to_string(),
            location: Location::S3 {
                bucket: "memory".to_string(),
                prefix: prefix.to_string(),
            },
            backend: Backend::Object {
                store,
                prefix: prefix.to_string(),
                part_bytes: part_bytes.max(1),
            },
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    fn object_path(prefix: &str, file: &str) -> ObjectPath {
        if prefix.is_empty() {
            ObjectPath::from(file)
        } else {
            ObjectPath::from(format!("{prefix}/{file}"))
        }
    }

    /// Where `file` is, as logs and errors say it.
    pub fn path_of(&self, file: &str) -> String {
        match &self.backend {
            Backend::Folder(dir) => dir.join(file).display().to_string(),
            Backend::Object { prefix, .. } => match &self.location {
                Location::S3 { bucket, .. } => {
                    format!("s3://{bucket}/{}", Destination::object_path(prefix, file))
                }
                Location::Folder(_) => file.to_string(),
            },
        }
    }

    fn io(&self, op: &'static str, path: &Path, source: std::io::Error) -> DestinationError {
        DestinationError::Io {
            destination: self.name.clone(),
            op,
            path: path.display().to_string(),
            source,
        }
    }

    fn store_error(
        &self,
        op: &'static str,
        file: &str,
        source: object_store::Error,
    ) -> DestinationError {
        DestinationError::Store {
            destination: self.name.clone(),
            op,
            path: self.path_of(file),
            source: Box::new(source),
        }
    }

    /// The scheduled backups it holds (none when a folder does not exist
    /// yet). Other files and objects are ignored.
    pub async fn list(&self) -> Result<Vec<Stored>, DestinationError> {
        match &self.backend {
            Backend::Folder(dir) => {
                let entries = match std::fs::read_dir(dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(self.io("listing", dir, e)),
                };
                let mut out = Vec::new();
                for e in entries.filter_map(|e| e.ok()) {
                    let Some(point) = e.file_name().to_str().and_then(Point::parse) else {
                        continue;
                    };
                    if out.len() >= LISTED_MAX {
                        return Err(DestinationError::TooMany {
                            destination: self.name.clone(),
                        });
                    }
                    let bytes = e.metadata().map_or(0, |m| m.len());
                    out.push(Stored { point, bytes });
                }
                Ok(out)
            }
            Backend::Object { store, prefix, .. } => {
                let under = (!prefix.is_empty()).then(|| ObjectPath::from(prefix.as_str()));
                let mut listing = store.list(under.as_ref());
                let mut out = Vec::new();
                let mut seen = 0usize;
                while let Some(meta) = listing.next().await {
                    let meta = meta.map_err(|e| self.store_error("listing", "", e))?;
                    seen += 1;
                    if seen > LISTED_MAX {
                        return Err(DestinationError::TooMany {
                            destination: self.name.clone(),
                        });
                    }
                    // Only objects right under the prefix.
                    let Some(file) = meta.location.filename() else {
                        continue;
                    };
                    if Destination::object_path(prefix, file) != meta.location {
                        continue;
                    }
                    if let Some(point) = Point::parse(file) {
                        out.push(Stored {
                            point,
                            bytes: meta.size,
                        });
                    }
                }
                Ok(out)
            }
        }
    }

    /// Writes `bytes` (the backup `header` describes) as `file`, then reads
    /// it back whole and checks it: checksums, count, and the header. A
    /// folder gets a `.partial` file synced and renamed; object storage
    /// one request, or parts of `part_bytes` past that size.
    pub async fn put_checked(
        &self,
        file: &str,
        bytes: Bytes,
        header: &Header,
    ) -> Result<(), DestinationError> {
        match &self.backend {
            Backend::Folder(dir) => {
                let (dir, name, header) = (dir.clone(), file.to_string(), header.clone());
                let me = self.clone();
                tokio::task::spawn_blocking(move || me.write_folder(&dir, &name, &bytes, &header))
                    .await
                    .map_err(|e| self.io("writing", Path::new(file), std::io::Error::other(e)))?
            }
            Backend::Object {
                store,
                prefix,
                part_bytes,
            } => {
                let at = Destination::object_path(prefix, file);
                if bytes.len() <= *part_bytes {
                    store
                        .put(&at, bytes.into())
                        .await
                        .map_err(|e| self.store_error("uploading", file, e))?;
                } else {
                    let upload = store
                        .put_multipart(&at)
                        .await
                        .map_err(|e| self.store_error("starting the upload of", file, e))?;
                    let mut parts = WriteMultipart::new_with_chunk_size(upload, *part_bytes);
                    let mut rest = bytes;
                    while !rest.is_empty() {
                        parts
                            .wait_for_capacity(PARTS_IN_FLIGHT_MAX)
                            .await
                            .map_err(|e| self.store_error("uploading a part of", file, e))?;
                        let part = rest.split_to(rest.len().min(*part_bytes));
                        parts.put(part);
                    }
                    parts
                        .finish()
                        .await
                        .map_err(|e| self.store_error("completing the upload of", file, e))?;
                }
                let back = self.get(file).await?;
                let header = header.clone();
                let me = self.clone();
                let name = file.to_string();
                tokio::task::spawn_blocking(move || me.check(&name, &back, &header))
                    .await
                    .map_err(|e| self.io("checking", Path::new(file), std::io::Error::other(e)))?
            }
        }
    }

    fn write_folder(
        &self,
        dir: &Path,
        name: &str,
        bytes: &[u8],
        header: &Header,
    ) -> Result<(), DestinationError> {
        std::fs::create_dir_all(dir).map_err(|e| self.io("creating", dir, e))?;
        let path = dir.join(name);
        let partial = dir.join(format!("{name}.partial"));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&partial)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&partial, &path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| self.io("writing", &path, e))?;
        let back = std::fs::read(&path).map_err(|e| self.io("reading back", &path, e))?;
        self.check(name, &back, header)
    }

    /// `bytes` decode (checksums, count, root of a full backup) as the
    /// backup `header` describes.
    fn check(&self, file: &str, bytes: &[u8], header: &Header) -> Result<(), DestinationError> {
        match backup::decode(bytes) {
            Ok(b) if &b.header == header => Ok(()),
            Ok(_) => Err(DestinationError::Mismatch {
                destination: self.name.clone(),
                path: self.path_of(file),
            }),
            Err(source) => Err(DestinationError::Backup {
                destination: self.name.clone(),
                path: self.path_of(file),
                source,
            }),
        }
    }

    /// The whole of `file`.
    pub async fn get(&self, file: &str) -> Result<Bytes, DestinationError> {
        match &self.backend {
            Backend::Folder(dir) => {
                let path = dir.join(file);
                let read = path.clone();
                tokio::task::spawn_blocking(move || std::fs::read(&read))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r)
                    .map(Bytes::from)
                    .map_err(|e| self.io("reading", &path, e))
            }
            Backend::Object { store, prefix, .. } => {
                let at = Destination::object_path(prefix, file);
                let got = store
                    .get(&at)
                    .await
                    .map_err(|e| self.store_error("downloading", file, e))?;
                got.bytes()
                    .await
                    .map_err(|e| self.store_error("downloading", file, e))
            }
        }
    }

    /// The header of `file` (checked), reading only the bytes that hold it.
    pub async fn header(&self, file: &str) -> Result<Header, DestinationError> {
        let bad = |source| DestinationError::Backup {
            destination: self.name.clone(),
            path: self.path_of(file),
            source,
        };
        match &self.backend {
            Backend::Folder(dir) => backup::read_header(&dir.join(file)).map_err(bad),
            Backend::Object { store, prefix, .. } => {
                let at = Destination::object_path(prefix, file);
                let size = store
                    .head(&at)
                    .await
                    .map_err(|e| self.store_error("reading", file, e))?
                    .size;
                let range = |end: u64| store.get_range(&at, 0..end.min(size));
                let mut start = range(HEADER_PROBE_BYTES)
                    .await
                    .map_err(|e| self.store_error("reading", file, e))?;
                let need = backup::header_bytes(&start).map_err(bad)? as u64;
                if need > start.len() as u64 {
                    if need > size {
                        return Err(bad(BackupError::Truncated(start.len())));
                    }
                    start = range(need)
                        .await
                        .map_err(|e| self.store_error("reading", file, e))?;
                }
                backup::header_of(&start).map_err(bad)
            }
        }
    }

    /// Removes `file` (retention).
    pub async fn remove(&self, file: &str) -> Result<(), DestinationError> {
        match &self.backend {
            Backend::Folder(dir) => {
                let path = dir.join(file);
                std::fs::remove_file(&path).map_err(|e| self.io("removing", &path, e))
            }
            Backend::Object { store, prefix, .. } => store
                .delete(&Destination::object_path(prefix, file))
                .await
                .map_err(|e| self.store_error("removing", file, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_read() {
        assert_eq!(
            Location::parse("s3://meridian-backups/eu/node-1").unwrap(),
            Location::S3 {
                bucket: "meridian-backups".into(),
                prefix: "eu/node-1".into()
            }
        );
        assert_eq!(
            Location::parse("s3://bucket").unwrap().to_string(),
            "s3://bucket"
        );
        assert_eq!(
            Location::parse("/var/backups").unwrap(),
            Location::Folder("/var/backups".into())
        );
        assert_eq!(
            Location::parse("file:///var/backups").unwrap(),
            Location::Folder("/var/backups".into())
        );
        for bad in ["s3://", "s3://Upper", "s3://b/../x", "gs://bucket", ""] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_destination_config_is_checked() {
        let mut cfg = DestinationConfig {
            name: "eu".into(),
            url: "s3://bucket/p".into(),
            endpoint: Some("http://127.0.0.1:1".into()),
            region: Some("eu-west-1".into()),
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            allow_http: true,
            part_bytes: PART_BYTES_DEFAULT,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
        };
        assert!(Destination::open(&cfg).is_ok());
        cfg.part_bytes = 1024;
        assert!(Destination::open(&cfg).is_err());
        cfg.part_bytes = PART_BYTES_DEFAULT;
        cfg.name = "a b".into();
        assert!(Destination::open(&cfg).is_err());
    }

    fn backup_of(keys: usize, value_bytes: usize) -> (Header, Bytes) {
        use crate::core::codec::ClusterId;
        use crate::core::hlc::Hlc;
        use crate::core::types::{Entry, Key, Kind, NodeId, Stamp};
        let entries: Vec<(Key, Entry)> = (0..keys)
            .map(|i| {
                let entry = Entry {
                    stamp: Stamp::new(Hlc::new(1_000 + i as u64, 0), NodeId(7)),
                    prev: Stamp::ZERO,
                    flags: 0,
                    value: Some(Bytes::from(vec![b'v'; value_bytes])),
                    kind: Kind::Value,
                };
                (Key::new(&format!("k/{i:06}")).unwrap(), entry)
            })
            .collect();
        let header = Header {
            version: backup::FORMAT_VERSION,
            cluster: ClusterId([1; 16]),
            node: NodeId(7),
            name: "a".into(),
            region: "eu".into(),
            since: 0,
            index: keys as u64,
            root: backup::root_of(&entries),
            gc_floor: Hlc::ZERO,
            created_ms: 1_750_000_000_000,
            removed: Vec::new(),
        };
        let bytes = backup::encode(&header, &entries).unwrap();
        (header, Bytes::from(bytes))
    }

    #[tokio::test]
    async fn object_storage_takes_backups_whole_or_in_parts_and_checks_them() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let d = Destination::object("mem", store.clone(), "eu/a", 64 * 1024);
        let (header, bytes) = backup_of(3_000, 100);
        assert!(bytes.len() > 4 * 64 * 1024, "in several parts");
        let point = Point {
            taken_ms: 1_750_000_000_000,
            index: header.index,
            since: 0,
            schedule: "daily".into(),
            node: "a".into(),
        };
        d.put_checked(&point.file_name(), bytes.clone(), &header)
            .await
            .unwrap();
        // Something else under the prefix, and deeper, is not a backup.
        store
            .put(
                &ObjectPath::from("eu/a/notes.txt"),
                Bytes::from_static(b"x").into(),
            )
            .await
            .unwrap();
        store
            .put(
                &ObjectPath::from(format!("eu/a/old/{}", point.file_name())),
                bytes.clone().into(),
            )
            .await
            .unwrap();
        let listed = d.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].point, point);
        assert_eq!(listed[0].bytes, bytes.len() as u64);
        assert_eq!(d.get(&point.file_name()).await.unwrap(), bytes);
        assert_eq!(d.header(&point.file_name()).await.unwrap(), header);
        d.remove(&point.file_name()).await.unwrap();
        assert!(d.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_damaged_object_is_found_by_the_check_after_upload() {
        // A store that flips a byte of what it is given.
        #[derive(Debug)]
        struct Flips(object_store::memory::InMemory);
        impl std::fmt::Display for Flips {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "flips")
            }
        }
        #[async_trait::async_trait]
        impl ObjectStore for Flips {
            async fn put_opts(
                &self,
                location: &ObjectPath,
                payload: object_store::PutPayload,
                opts: object_store::PutOptions,
            ) -> object_store::Result<object_store::PutResult> {
                let mut bytes: Vec<u8> = Bytes::from(payload).to_vec();
                let at = bytes.len() / 2;
                bytes[at] ^= 0x40;
                self.0.put_opts(location, bytes.into(), opts).await
            }
            async fn put_multipart_opts(
                &self,
                location: &ObjectPath,
                opts: object_store::PutMultipartOptions,
            ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
                self.0.put_multipart_opts(location, opts).await
            }
            async fn get_opts(
                &self,
                location: &ObjectPath,
                options: object_store::GetOptions,
            ) -> object_store::Result<object_store::GetResult> {
                self.0.get_opts(location, options).await
            }
            fn delete_stream(
                &self,
                locations: futures_util::stream::BoxStream<
                    'static,
                    object_store::Result<ObjectPath>,
                >,
            ) -> futures_util::stream::BoxStream<'static, object_store::Result<ObjectPath>>
            {
                self.0.delete_stream(locations)
            }
            fn list(
                &self,
                prefix: Option<&ObjectPath>,
            ) -> futures_util::stream::BoxStream<
                'static,
                object_store::Result<object_store::ObjectMeta>,
            > {
                self.0.list(prefix)
            }
            async fn list_with_delimiter(
                &self,
                prefix: Option<&ObjectPath>,
            ) -> object_store::Result<object_store::ListResult> {
                self.0.list_with_delimiter(prefix).await
            }
            async fn copy_opts(
                &self,
                from: &ObjectPath,
                to: &ObjectPath,
                options: object_store::CopyOptions,
            ) -> object_store::Result<()> {
                self.0.copy_opts(from, to, options).await
            }
        }
        let d = Destination::object(
            "flips",
            Arc::new(Flips(object_store::memory::InMemory::new())),
            "",
            1 << 30,
        );
        let (header, bytes) = backup_of(100, 10);
        let e = d.put_checked("x.mbak", bytes, &header).await.unwrap_err();
        assert!(
            matches!(
                e,
                DestinationError::Backup { .. } | DestinationError::Mismatch { .. }
            ),
            "{e}"
        );
    }
}
