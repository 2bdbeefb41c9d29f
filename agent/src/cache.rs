//! The last-known-good cache: the policy table as last applied, on local disk, so an agent that
//! starts while the control plane is unreachable serves what it enforced before (invariant 4)
//! instead of refusing every handshake.
//!
//! One file, `snapshot.json`, replaced atomically: the new content goes to a temporary file in
//! the same directory, is fsynced, renamed over the old file, and the directory is fsynced so
//! the rename itself survives a power cut. A reader therefore sees the old snapshot or the new
//! one, never a mix; a temporary file left by a crash is simply overwritten by the next store.

use std::{
    cell::Cell,
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tlsfleet_policy::{BucketName, HttpsConfig};

use crate::table::TableSnapshot;

/// The version of the on-disk format this build reads and writes. A file of any other
/// version is refused (as corrupt) rather than misread.
pub const FORMAT_VERSION: u32 = 1;

const FILE_NAME: &str = "snapshot.json";
// A fixed name rather than a random one: there is one writer per cache directory, and a file
// left behind by a crash is truncated by the next store instead of accumulating.
const TEMP_NAME: &str = "snapshot.json.tmp";

/// A whole policy table at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CachedSnapshot {
    /// The control-plane revision the table was at.
    pub revision: i64,
    /// Every bucket's stored policy.
    pub policies: Vec<(BucketName, HttpsConfig)>,
    /// The store the revision comes from, if known.
    pub store_id: Option<String>,
    /// Buckets refused because their newest policy could not be read: they stay refused.
    pub refused: Vec<BucketName>,
    /// The fleet default policy, if one is set.
    pub default: Option<HttpsConfig>,
}

/// Why the cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cache {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cache {path} has format version {found}, this agent reads version {FORMAT_VERSION}")]
    UnsupportedFormat { path: PathBuf, found: u32 },
    #[error("cache {path} has a negative revision {revision}")]
    BadRevision { path: PathBuf, revision: i64 },
}

/// A cache directory. Cheap to clone; no I/O until [`Cache::load`] or [`Cache::store`].
#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// A cache kept in `dir` (created on the first store if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The snapshot file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The stored snapshot; `None` when nothing was ever stored.
    pub fn load(&self) -> Result<Option<CachedSnapshot>, CacheError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Io { path, source }),
        };
        // Read the version alone first, so a future format is reported as such and not as
        // whatever field of it this build happens to trip over.
        let header: Header = match serde_json::from_slice(&bytes) {
            Ok(header) => header,
            Err(source) => return Err(CacheError::Corrupt { path, source }),
        };
        if header.format != FORMAT_VERSION {
            return Err(CacheError::UnsupportedFormat {
                path,
                found: header.format,
            });
        }
        let file: FileV1 = match serde_json::from_slice(&bytes) {
            Ok(file) => file,
            Err(source) => return Err(CacheError::Corrupt { path, source }),
        };
        if file.revision < 0 {
            return Err(CacheError::BadRevision {
                path,
                revision: file.revision,
            });
        }
        Ok(Some(CachedSnapshot {
            revision: file.revision,
            policies: file
                .policies
                .into_iter()
                .map(|e| (e.bucket, e.config))
                .collect(),
            store_id: file.store_id,
            refused: file.refused,
            default: file.default,
        }))
    }

    /// Replaces the stored snapshot atomically and durably (see the module docs). Blocking:
    /// call it from a blocking-capable thread.
    pub fn store(&self, snapshot: &CachedSnapshot) -> Result<(), CacheError> {
        let policies = snapshot
            .policies
            .iter()
            .map(|(bucket, config)| (bucket.as_str(), config));
        self.write(&FileRefV1 {
            format: FORMAT_VERSION,
            revision: snapshot.revision,
            policies: Entries::new(policies),
            store_id: snapshot.store_id.as_deref(),
            refused: &snapshot.refused,
            default: snapshot.default.as_ref(),
        })
    }

    /// [`Cache::store`] of the published table, written as it is walked: a million policies
    /// are never copied out of the table first. `None` when the table has no revision yet.
    pub fn store_table(
        &self,
        table: &TableSnapshot,
        store_id: Option<&str>,
    ) -> Result<Option<i64>, CacheError> {
        let Some(revision) = table.revision() else {
            return Ok(None);
        };
        let refused = table.refused_without_policy();
        self.write(&FileRefV1 {
            format: FORMAT_VERSION,
            revision,
            policies: Entries::new(table.stored_policies()),
            store_id,
            refused: &refused,
            default: table.default_config(),
        })?;
        Ok(Some(revision))
    }

    fn write<'a, I>(&self, file: &FileRefV1<'a, I>) -> Result<(), CacheError>
    where
        I: Iterator<Item = (&'a str, &'a HttpsConfig)>,
    {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| CacheError::Io { path, source }
        };
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let temp = self.dir.join(TEMP_NAME);
        let written = write_synced(&temp, file);
        if let Err(source) = written {
            // Best effort: the next store truncates it anyway.
            let _ = fs::remove_file(&temp);
            return Err(CacheError::Io { path: temp, source });
        }
        let path = self.path();
        fs::rename(&temp, &path).map_err(io_err(&path))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_err(&self.dir))
    }
}

fn write_synced<'a, I>(path: &Path, file: &FileRefV1<'a, I>) -> io::Result<()>
where
    I: Iterator<Item = (&'a str, &'a HttpsConfig)>,
{
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let mut out = io::BufWriter::new(out);
    serde_json::to_writer(&mut out, file).map_err(io::Error::other)?;
    out.write_all(b"\n")?;
    let out = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    out.sync_all()
}

#[derive(Deserialize)]
struct Header {
    format: u32,
}

// `format` is checked through `Header`.
// `store_id` and `refused` were added within version 1: absent means none.
#[derive(Deserialize)]
struct FileV1 {
    revision: i64,
    policies: Vec<Entry>,
    #[serde(default)]
    store_id: Option<String>,
    #[serde(default)]
    refused: Vec<BucketName>,
    #[serde(default)]
    default: Option<HttpsConfig>,
}

#[derive(Deserialize)]
struct Entry {
    bucket: BucketName,
    config: HttpsConfig,
}

#[derive(Serialize)]
#[serde(bound = "")]
struct FileRefV1<'a, I: Iterator<Item = (&'a str, &'a HttpsConfig)>> {
    format: u32,
    revision: i64,
    policies: Entries<I>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store_id: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    refused: &'a [BucketName],
    #[serde(skip_serializing_if = "Option::is_none")]
    default: Option<&'a HttpsConfig>,
}

/// The policies, serialised as a sequence straight from whatever holds them. `Serialize`
/// takes `&self`, so the iterator (used once) sits in a cell.
struct Entries<I>(Cell<Option<I>>);

impl<I> Entries<I> {
    fn new(policies: I) -> Self {
        Self(Cell::new(Some(policies)))
    }
}

impl<'a, I: Iterator<Item = (&'a str, &'a HttpsConfig)>> Serialize for Entries<I> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let policies = self
            .0
            .take()
            .ok_or_else(|| serde::ser::Error::custom("the policies were already written"))?;
        serializer.collect_seq(policies.map(|(bucket, config)| EntryRef { bucket, config }))
    }
}

#[derive(Serialize)]
struct EntryRef<'a> {
    bucket: &'a str,
    config: &'a HttpsConfig,
}
