//! The on-disk layout: content-addressed blobs, unpacked layer snapshots and a scratch area.
//!
//! ```text
//! <root>/blobs/sha256/<hex>       verified blobs (manifests, configs, layers as fetched)
//! <root>/snapshots/<diffid-hex>/  one unpacked layer, an overlayfs lower directory
//! <root>/tmp/                     work in progress; emptied when the store opens
//! ```
//! Nothing appears under `blobs/` or `snapshots/` before it is complete and verified: it is written under
//! `tmp/`, fsynced, and renamed into place.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::{Digest, Hasher};

/// Errors of the content store.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("blob {0} is not in the store")]
    Missing(Digest),
    #[error("blob {digest} is larger than the {limit}-byte limit for its kind")]
    TooLarge { digest: Digest, limit: u64 },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

pub(crate) fn io_ctx(context: impl Into<String>) -> impl FnOnce(io::Error) -> ContentError {
    let context = context.into();
    move |source| ContentError::Io { context, source }
}

/// Paths and atomic operations of the image store's files.
#[derive(Debug)]
pub struct Layout {
    root: PathBuf,
    counter: AtomicU64,
}

impl Layout {
    /// Opens (creating) the layout under `root` and clears leftovers of interrupted work.
    pub fn open(root: &Path) -> Result<Layout, ContentError> {
        for d in ["blobs/sha256", "snapshots", "tmp"] {
            fs::create_dir_all(root.join(d))
                .map_err(io_ctx(format!("creating {}", root.join(d).display())))?;
        }
        let tmp = root.join("tmp");
        for e in fs::read_dir(&tmp).map_err(io_ctx("reading tmp"))? {
            let p = e.map_err(io_ctx("reading tmp"))?.path();
            let r = if p.is_dir() && !p.is_symlink() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            r.map_err(io_ctx(format!("removing leftover {}", p.display())))?;
        }
        Ok(Layout {
            root: root.to_path_buf(),
            counter: AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn snapshot_path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("snapshots").join(diff_id.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    pub fn has_snapshot(&self, diff_id: &Digest) -> bool {
        self.snapshot_path(diff_id).is_dir()
    }

    /// A fresh path under `tmp/`.
    pub fn temp_path(&self, prefix: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        self.root
            .join("tmp")
            .join(format!("{prefix}-{}-{nanos}-{n}", std::process::id()))
    }

    /// Reads a whole blob of at most `limit` bytes, checking it against its digest.
    pub fn read_blob(&self, d: &Digest, limit: u64) -> Result<Vec<u8>, ContentError> {
        let path = self.blob_path(d);
        let f = File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ContentError::Missing(d.clone())
            } else {
                io_ctx(format!("opening blob {d}"))(e)
            }
        })?;
        let len = f.metadata().map_err(io_ctx(format!("stat blob {d}")))?.len();
        if len > limit {
            return Err(ContentError::TooLarge {
                digest: d.clone(),
                limit,
            });
        }
        let mut data = Vec::with_capacity(len as usize);
        f.take(limit + 1)
            .read_to_end(&mut data)
            .map_err(io_ctx(format!("reading blob {d}")))?;
        expect_digest(&format!("stored blob {d}"), d, &Digest::of(&data))?;
        Ok(data)
    }

    /// Stores bytes as a blob; returns its digest. When `expected` is given the bytes must match it.
    pub fn write_blob(
        &self,
        data: &[u8],
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<Digest, ContentError> {
        let actual = Digest::of(data);
        if let Some(e) = expected {
            expect_digest(what, e, &actual)?;
        }
        if self.has_blob(&actual) {
            return Ok(actual);
        }
        let mut w = self.blob_writer()?;
        w.write_all(data).map_err(io_ctx(format!("writing {what}")))?;
        w.commit(Some(&actual), Some(data.len() as u64), what)
    }

    /// A writer for a new blob; nothing is visible until [`BlobWriter::commit`].
    pub fn blob_writer(&self) -> Result<BlobWriter, ContentError> {
        let path = self.temp_path("blob");
        let file = File::create(&path).map_err(io_ctx(format!("creating {}", path.display())))?;
        Ok(BlobWriter {
            blobs_dir: self.root.join("blobs/sha256"),
            path,
            file: Some(io::BufWriter::with_capacity(1 << 20, file)),
            hasher: Hasher::new(),
        })
    }

    /// Moves a finished snapshot directory from `tmp/` into place (after syncing it to disk).
    pub fn commit_snapshot(&self, tmp_dir: &Path, diff_id: &Digest) -> Result<(), ContentError> {
        let dest = self.snapshot_path(diff_id);
        let dir = File::open(tmp_dir).map_err(io_ctx(format!("opening {}", tmp_dir.display())))?;
        crate::sys::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)).map_err(io_ctx("syncing snapshot"))?;
        match fs::rename(tmp_dir, &dest) {
            Ok(()) => {}
            // Another pull committed the same layer first: theirs is as good as ours.
            Err(e)
                if dest.is_dir()
                    && matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) =>
            {
                let _ = fs::remove_dir_all(tmp_dir);
            }
            Err(e) => return Err(io_ctx(format!("renaming snapshot into {}", dest.display()))(e)),
        }
        sync_dir(&self.root.join("snapshots"))
    }

    /// Lists the digests of every stored blob.
    pub fn list_blobs(&self) -> Result<Vec<Digest>, ContentError> {
        list_hex(&self.root.join("blobs/sha256"))
    }

    /// Lists the diff ids of every stored snapshot.
    pub fn list_snapshots(&self) -> Result<Vec<Digest>, ContentError> {
        list_hex(&self.root.join("snapshots"))
    }

    pub fn remove_blob(&self, d: &Digest) -> Result<(), ContentError> {
        match fs::remove_file(self.blob_path(d)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_ctx(format!("removing blob {d}"))(e)),
            _ => Ok(()),
        }
    }

    /// Removes a snapshot: renamed into `tmp/` first so a crash never leaves half a snapshot in place.
    pub fn remove_snapshot(&self, diff_id: &Digest) -> Result<(), ContentError> {
        let src = self.snapshot_path(diff_id);
        if !src.exists() {
            return Ok(());
        }
        let doomed = self.temp_path("rm");
        fs::rename(&src, &doomed).map_err(io_ctx(format!("moving snapshot {diff_id} away")))?;
        fs::remove_dir_all(&doomed).map_err(io_ctx(format!("removing snapshot {diff_id}")))
    }

    /// Size on disk of a snapshot's regular files.
    pub fn snapshot_size(&self, diff_id: &Digest) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(rd) = fs::read_dir(p) else { return 0 };
            rd.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
                    _ => 0,
                })
                .sum()
        }
        walk(&self.snapshot_path(diff_id))
    }
}

fn list_hex(dir: &Path) -> Result<Vec<Digest>, ContentError> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(io_ctx(format!("reading {}", dir.display())))? {
        let e = e.map_err(io_ctx(format!("reading {}", dir.display())))?;
        if let Some(d) = e.file_name().to_str().and_then(|n| Digest::from_hex(n).ok()) {
            out.push(d);
        }
    }
    Ok(out)
}

/// `DigestMismatch` naming `what` unless `actual` is the `expected` digest.
pub(crate) fn expect_digest(what: &str, expected: &Digest, actual: &Digest) -> Result<(), ContentError> {
    if expected == actual {
        return Ok(());
    }
    Err(ContentError::DigestMismatch {
        what: what.to_string(),
        expected: expected.clone(),
        actual: actual.clone(),
    })
}

/// `SizeMismatch` naming `what` unless `actual` is the `expected` size in bytes.
pub(crate) fn expect_size(what: &str, expected: u64, actual: u64) -> Result<(), ContentError> {
    if expected == actual {
        return Ok(());
    }
    Err(ContentError::SizeMismatch {
        what: what.to_string(),
        expected,
        actual,
    })
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), ContentError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_ctx(format!("syncing {}", dir.display())))
}

/// A blob being written; hashed on the fly, renamed into place on commit, deleted if dropped.
#[derive(Debug)]
pub struct BlobWriter {
    blobs_dir: PathBuf,
    path: PathBuf,
    file: Option<io::BufWriter<File>>,
    hasher: Hasher,
}

impl BlobWriter {
    pub fn written(&self) -> u64 {
        self.hasher.len()
    }

    /// Verifies digest and size, syncs, and moves the blob into the store.
    pub fn commit(
        mut self,
        expected: Option<&Digest>,
        size: Option<u64>,
        what: &str,
    ) -> Result<Digest, ContentError> {
        let hasher = std::mem::take(&mut self.hasher);
        let len = hasher.len();
        let actual = hasher.finish();
        if let Some(s) = size {
            expect_size(what, s, len)?;
        }
        if let Some(e) = expected {
            expect_digest(what, e, &actual)?;
        }
        let file = self.file.take().expect("blob writer used after commit");
        let file = file
            .into_inner()
            .map_err(|e| io_ctx(format!("writing {what}"))(e.into_error()))?;
        file.sync_all().map_err(io_ctx(format!("syncing {what}")))?;
        let dest = self.blobs_dir.join(actual.hex());
        fs::rename(&self.path, &dest).map_err(io_ctx(format!("storing {what}")))?;
        sync_dir(&self.blobs_dir)?;
        Ok(actual)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self
            .file
            .as_mut()
            .expect("blob writer used after commit")
            .write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_roundtrip_and_verification() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::open(dir.path()).unwrap();
        let d = l.write_blob(b"hello", None, "test").unwrap();
        assert_eq!(l.read_blob(&d, 100).unwrap(), b"hello");
        let wrong = Digest::of(b"other");
        assert!(matches!(
            l.write_blob(b"hello", Some(&wrong), "t"),
            Err(ContentError::DigestMismatch { .. })
        ));
        let mut w = l.blob_writer().unwrap();
        w.write_all(b"abc").unwrap();
        assert!(matches!(
            w.commit(None, Some(4), "t"),
            Err(ContentError::SizeMismatch { .. })
        ));
        // nothing left behind in tmp
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        // a corrupted stored blob is detected on read
        fs::write(l.blob_path(&d), b"HELLO").unwrap();
        assert!(matches!(
            l.read_blob(&d, 100),
            Err(ContentError::DigestMismatch { .. })
        ));
    }
}
