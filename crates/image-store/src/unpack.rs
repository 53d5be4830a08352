//! Unpacking a layer tar into a snapshot directory usable as an overlayfs lower directory.
//!
//! Each layer is unpacked on its own (it does not need its parents): Docker/OCI whiteouts become overlayfs
//! whiteouts (`.wh.NAME` -> a 0:0 character device, `.wh..wh..opq` -> `trusted.overlay.opaque=y` on the
//! directory). Owners, modes, times, xattrs, hardlinks, symlinks and device nodes are preserved.
//!
//! Hostile input never writes outside `dest`: entry paths with `..` or a leading `/` are rejected, every parent
//! directory is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (so a path through a symlink is
//! rejected), symlinks whose relative target climbs above the root and hardlinks to outside paths are rejected.
//! The first offending entry aborts the unpack with an error naming it; the caller discards `dest`.

use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use tar::EntryType;

use crate::sys;

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {path:?}: {reason}")]
    Entry { path: String, reason: String },
    #[error("layer entry {path:?}")]
    EntryIo {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("reading layer tar")]
    Tar(#[source] io::Error),
    #[error("opening snapshot directory {0}")]
    Dest(PathBuf, #[source] io::Error),
}

/// What an unpack produced.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnpackStats {
    pub entries: u64,
    /// Sum of regular file sizes.
    pub bytes: u64,
}

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// A relative, normalised path inside the snapshot: no `.`/`..`/empty components, not absolute.
#[derive(Debug, Clone)]
struct SafePath {
    parts: Vec<OsString>,
}

impl SafePath {
    fn parse(raw: &[u8]) -> Result<SafePath, String> {
        if raw.first() == Some(&b'/') {
            return Err("absolute path".into());
        }
        let mut parts = Vec::new();
        for c in raw.split(|&b| b == b'/') {
            match c {
                b"" | b"." => continue,
                b".." => return Err("path contains \"..\"".into()),
                _ => parts.push(OsString::from_vec(c.to_vec())),
            }
        }
        Ok(SafePath { parts })
    }
    fn parent(&self) -> PathBuf {
        self.parts[..self.parts.len().saturating_sub(1)].iter().collect()
    }
    fn name(&self) -> Option<&OsStr> {
        self.parts.last().map(|s| s.as_os_str())
    }
    fn rel(&self) -> PathBuf {
        self.parts.iter().collect()
    }
}

/// Does a relative symlink target, seen from `parent` inside the root, stay inside it?
fn symlink_stays_inside(parent_parts: &[OsString], target: &[u8]) -> bool {
    if target.first() == Some(&b'/') {
        // Absolute targets are resolved against the container's root at run time: inside by construction.
        return true;
    }
    let mut depth = parent_parts.len() as i64;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

struct Unpacker {
    root: OwnedFd,
    root_path: PathBuf,
    dir_times: Vec<(PathBuf, i64, i64)>,
    buf: Vec<u8>,
    /// Bytes written since the free space was last looked at.
    since_check: u64,
}

/// How often (in bytes written) an unpack looks at the free space left.
const SPACE_CHECK_EVERY: u64 = 64 << 20;
/// The free space an unpack leaves to the rest of the host: it stops rather than fill the disk (a layer may
/// unpack to far more than it weighs: a compression bomb, a sparse file written out).
const SPACE_RESERVE: u64 = 512 << 20;

/// Free bytes (for unprivileged users too, as root's reserve is the host's last resort) on `fd`'s filesystem.
fn free_bytes(fd: &impl AsRawFd) -> Option<u64> {
    // SAFETY: statvfs is a plain C struct that fstatvfs fills from our own descriptor.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and pointer.
    (unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) } == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Unpacks a (decompressed) layer tar into the empty directory `dest`.
pub fn unpack<R: Read>(layer: R, dest: &Path) -> Result<UnpackStats, UnpackError> {
    let root = sys::open_beneath(
        libc::AT_FDCWD,
        dest.as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .or_else(|_| {
        // dest itself may be reached through symlinks (e.g. /var -> /data): open it normally.
        std::fs::File::open(dest).map(OwnedFd::from)
    })
    .map_err(|e| UnpackError::Dest(dest.to_path_buf(), e))?;
    let mut u = Unpacker {
        root,
        root_path: dest.to_path_buf(),
        dir_times: Vec::new(),
        buf: vec![0; 256 << 10],
        since_check: 0,
    };
    let mut archive = tar::Archive::new(layer);
    let mut stats = UnpackStats::default();
    for entry in archive.entries().map_err(UnpackError::Tar)? {
        let mut entry = entry.map_err(UnpackError::Tar)?;
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let size = u.entry(&mut entry, &raw_path, &shown)?;
        stats.entries += 1;
        stats.bytes += size;
    }
    // Directory times last, deepest first: creating children changed them.
    u.dir_times
        .sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
    for (rel, s, ns) in std::mem::take(&mut u.dir_times) {
        let shown = rel.display().to_string();
        let r = if rel.as_os_str().is_empty() {
            sys::set_times(u.root.as_raw_fd(), OsStr::new(""), s, ns)
        } else {
            let sp = SafePath {
                parts: rel.iter().map(|c| c.to_os_string()).collect(),
            };
            u.open_parent(&sp, &shown)
                .and_then(|pfd| {
                    sys::set_times(pfd.as_raw_fd(), sp.name().unwrap(), s, ns).map_err(|e| io_err(&shown, e))
                })
                .map_err(|e| match e {
                    UnpackError::EntryIo { source, .. } => source,
                    other => io::Error::other(other.to_string()),
                })
        };
        r.map_err(|e| io_err(&shown, e))?;
    }
    Ok(stats)
}

fn io_err(path: &str, source: io::Error) -> UnpackError {
    UnpackError::EntryIo {
        path: path.to_string(),
        source,
    }
}

fn bad(path: &str, reason: impl Into<String>) -> UnpackError {
    UnpackError::Entry {
        path: path.to_string(),
        reason: reason.into(),
    }
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    xattrs: Vec<(CString, Vec<u8>)>,
}

impl Unpacker {
    /// Opens the parent directory of `p`, creating missing directories, never through a symlink.
    fn open_parent(&self, p: &SafePath, shown: &str) -> Result<OwnedFd, UnpackError> {
        let parent = p.parent();
        if parent.as_os_str().is_empty() {
            return sys::openat(
                self.root.as_raw_fd(),
                OsStr::new("."),
                libc::O_PATH | libc::O_DIRECTORY,
                0,
            )
            .map_err(|e| io_err(shown, e));
        }
        match sys::open_beneath(
            self.root.as_raw_fd(),
            parent.as_os_str(),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        ) {
            Ok(fd) => Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.create_parents(p, shown),
            Err(e) => Err(self.explain_resolve_error(p, shown, e)),
        }
    }

    fn create_parents(&self, p: &SafePath, shown: &str) -> Result<OwnedFd, UnpackError> {
        let mut cur = sys::openat(
            self.root.as_raw_fd(),
            OsStr::new("."),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
        .map_err(|e| io_err(shown, e))?;
        for comp in &p.parts[..p.parts.len() - 1] {
            let next = match sys::openat(cur.as_raw_fd(), comp, libc::O_PATH | libc::O_DIRECTORY, 0) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    sys::mkdirat(cur.as_raw_fd(), comp, 0o755).map_err(|e| io_err(shown, e))?;
                    sys::openat(cur.as_raw_fd(), comp, libc::O_PATH | libc::O_DIRECTORY, 0)
                        .map_err(|e| io_err(shown, e))?
                }
                Err(e) => return Err(self.explain_resolve_error(p, shown, e)),
            };
            cur = next;
        }
        Ok(cur)
    }

    fn explain_resolve_error(&self, _p: &SafePath, shown: &str, e: io::Error) -> UnpackError {
        match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::EXDEV) => bad(
                shown,
                "path goes through a symlink (refusing to write through it)",
            ),
            Some(libc::ENOTDIR) => bad(shown, "a parent of this path is not a directory"),
            _ => io_err(shown, e),
        }
    }

    /// Removes whatever is at `name` in `parent` unless both it and the new entry are directories.
    fn clear(
        &self,
        parent: &OwnedFd,
        p: &SafePath,
        new_is_dir: bool,
        shown: &str,
    ) -> Result<bool, UnpackError> {
        let name = p.name().unwrap();
        match sys::lstatat(parent.as_raw_fd(), name) {
            Ok(st) => {
                let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
                if is_dir && new_is_dir {
                    return Ok(true);
                }
                if is_dir {
                    // The path's parents were resolved without symlinks, and remove_dir_all never follows them.
                    std::fs::remove_dir_all(self.root_path.join(p.rel())).map_err(|e| io_err(shown, e))?;
                } else {
                    sys::unlinkat(parent.as_raw_fd(), name, 0).map_err(|e| io_err(shown, e))?;
                }
                Ok(false)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(io_err(shown, e)),
        }
    }

    fn meta<R: Read>(entry: &mut tar::Entry<R>, shown: &str) -> Result<Meta, UnpackError> {
        let h = entry.header();
        let mode = h.mode().map_err(|e| io_err(shown, e))? & 0o7777;
        let mut uid = h.uid().map_err(|e| io_err(shown, e))? as u32;
        let mut gid = h.gid().map_err(|e| io_err(shown, e))? as u32;
        let mut mtime = (h.mtime().unwrap_or(0) as i64, 0i64);
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(|e| io_err(shown, e))? {
            for ext in pax {
                let ext = ext.map_err(|e| io_err(shown, e))?;
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                match key {
                    b"uid" => uid = parse_num(value).ok_or_else(|| bad(shown, "bad PAX uid"))? as u32,
                    b"gid" => gid = parse_num(value).ok_or_else(|| bad(shown, "bad PAX gid"))? as u32,
                    b"mtime" => {
                        let s = String::from_utf8_lossy(value);
                        let (secs, frac) = s.split_once('.').unwrap_or((&s, ""));
                        let secs = secs.parse::<i64>().map_err(|_| bad(shown, "bad PAX mtime"))?;
                        let mut frac = frac.chars().take(9).collect::<String>();
                        while frac.len() < 9 {
                            frac.push('0');
                        }
                        mtime = (secs, frac.parse().unwrap_or(0));
                    }
                    _ => {
                        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                            if xattr_allowed(name) {
                                let c =
                                    CString::new(name).map_err(|_| bad(shown, "xattr name contains NUL"))?;
                                xattrs.push((c, value.to_vec()));
                            }
                        }
                    }
                }
            }
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        raw: &[u8],
        shown: &str,
    ) -> Result<u64, UnpackError> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink
        ) {
            return Ok(0);
        }
        let p = SafePath::parse(raw).map_err(|r| bad(shown, r))?;
        let meta = Self::meta(entry, shown)?;
        let Some(name) = p.name().map(|n| n.to_os_string()) else {
            // The archive root ("./"): apply its metadata to the snapshot root.
            if kind == EntryType::Directory {
                let root = sys::openat(
                    self.root.as_raw_fd(),
                    OsStr::new("."),
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                )
                .map_err(|e| io_err(shown, e))?;
                self.apply(&root, &meta, shown)?;
                self.dir_times.push((PathBuf::new(), meta.mtime.0, meta.mtime.1));
            }
            return Ok(0);
        };
        let name_bytes = name.as_bytes();

        // Whiteouts.
        if name_bytes.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            let parent = self.open_parent(&p, shown)?;
            if name_bytes == OPAQUE_WHITEOUT.as_bytes() {
                let dir = sys::openat(
                    parent.as_raw_fd(),
                    OsStr::new("."),
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                )
                .map_err(|e| io_err(shown, e))?;
                sys::fsetxattr(dir.as_raw_fd(), c"trusted.overlay.opaque", b"y")
                    .map_err(|e| io_err(shown, e))?;
                return Ok(0);
            }
            if name_bytes.starts_with(b".wh..wh.") {
                // AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): meaningless for overlay.
                return Ok(0);
            }
            let target = &name_bytes[WHITEOUT_PREFIX.len()..];
            if target.is_empty() || target == b"." || target == b".." {
                return Err(bad(shown, "invalid whiteout"));
            }
            let target = OsStr::from_bytes(target);
            let tp = SafePath {
                parts: [&p.parts[..p.parts.len() - 1], &[target.to_os_string()]].concat(),
            };
            self.clear(&parent, &tp, false, shown)?;
            sys::mknodat(parent.as_raw_fd(), target, libc::S_IFCHR, sys::makedev(0, 0))
                .map_err(|e| io_err(shown, e))?;
            return Ok(0);
        }

        let parent = self.open_parent(&p, shown)?;
        let pfd = parent.as_raw_fd();
        match kind {
            EntryType::Directory => {
                let exists = self.clear(&parent, &p, true, shown)?;
                if !exists {
                    sys::mkdirat(pfd, &name, 0o700).map_err(|e| io_err(shown, e))?;
                }
                let dir = sys::openat(pfd, &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .map_err(|e| io_err(shown, e))?;
                self.apply(&dir, &meta, shown)?;
                self.dir_times.push((p.rel(), meta.mtime.0, meta.mtime.1));
                Ok(0)
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                // A file that cannot fit is refused before a byte of it is written: a sparse entry can list
                // a terabyte of holes in a few bytes, which would cost the time to write it out up to the
                // reserve below.
                let size = entry.size();
                if size >= SPACE_CHECK_EVERY {
                    if let Some(free) = free_bytes(&parent).filter(|f| f.saturating_sub(SPACE_RESERVE) < size) {
                        return Err(UnpackError::Entry {
                            path: shown.to_string(),
                            reason: format!(
                                "this file is {} MiB and the image store's disk has {} MiB free: unpacking stops before it fills",
                                size >> 20,
                                free >> 20
                            ),
                        });
                    }
                }
                self.clear(&parent, &p, false, shown)?;
                let fd = sys::openat(pfd, &name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)
                    .map_err(|e| io_err(shown, e))?;
                let mut file = std::fs::File::from(fd);
                let mut written = 0u64;
                loop {
                    let n = entry.read(&mut self.buf).map_err(UnpackError::Tar)?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&self.buf[..n]).map_err(|e| io_err(shown, e))?;
                    written += n as u64;
                    self.since_check += n as u64;
                    if self.since_check >= SPACE_CHECK_EVERY {
                        self.since_check = 0;
                        if let Some(free) = free_bytes(&file).filter(|f| *f < SPACE_RESERVE) {
                            return Err(UnpackError::Entry {
                                path: shown.to_string(),
                                reason: format!(
                                    "the image store's disk has {} MiB free: unpacking stops before it fills (this file alone is {} MiB so far)",
                                    free >> 20,
                                    written >> 20
                                ),
                            });
                        }
                    }
                }
                let fd = OwnedFd::from(file);
                self.apply(&fd, &meta, shown)?;
                sys::set_times(fd.as_raw_fd(), OsStr::new(""), meta.mtime.0, meta.mtime.1)
                    .map_err(|e| io_err(shown, e))?;
                Ok(written)
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad(shown, "symlink without target"))?
                    .into_owned();
                if target.is_empty() {
                    return Err(bad(shown, "symlink with empty target"));
                }
                if !symlink_stays_inside(&p.parts[..p.parts.len() - 1], &target) {
                    return Err(bad(
                        shown,
                        format!(
                            "symlink target {:?} leads outside the image",
                            String::from_utf8_lossy(&target)
                        ),
                    ));
                }
                self.clear(&parent, &p, false, shown)?;
                sys::symlinkat(OsStr::from_bytes(&target), pfd, &name).map_err(|e| io_err(shown, e))?;
                sys::lchownat(pfd, &name, meta.uid, meta.gid).map_err(|e| io_err(shown, e))?;
                sys::set_times(pfd, &name, meta.mtime.0, meta.mtime.1).map_err(|e| io_err(shown, e))?;
                Ok(0)
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad(shown, "hardlink without target"))?
                    .into_owned();
                let tp = SafePath::parse(&target).map_err(|r| {
                    bad(
                        shown,
                        format!("hardlink target {:?}: {r}", String::from_utf8_lossy(&target)),
                    )
                })?;
                let Some(tname) = tp.name() else {
                    return Err(bad(shown, "hardlink to the image root"));
                };
                let tparent = self.open_parent_existing(&tp, shown)?;
                self.clear(&parent, &p, false, shown)?;
                sys::linkat(tparent.as_raw_fd(), tname, pfd, &name).map_err(|e| {
                    if e.raw_os_error() == Some(libc::ENOENT) {
                        bad(
                            shown,
                            format!(
                                "hardlink target {:?} is not in this layer",
                                String::from_utf8_lossy(&target)
                            ),
                        )
                    } else {
                        io_err(shown, e)
                    }
                })?;
                Ok(0)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.clear(&parent, &p, false, shown)?;
                let (fmt, dev) = match kind {
                    EntryType::Char | EntryType::Block => {
                        let h = entry.header();
                        let major = h.device_major().ok().flatten().unwrap_or(0);
                        let minor = h.device_minor().ok().flatten().unwrap_or(0);
                        let fmt = if kind == EntryType::Char {
                            libc::S_IFCHR
                        } else {
                            libc::S_IFBLK
                        };
                        (fmt, sys::makedev(major, minor))
                    }
                    _ => (libc::S_IFIFO, 0),
                };
                sys::mknodat(pfd, &name, fmt | 0o600, dev).map_err(|e| io_err(shown, e))?;
                sys::lchownat(pfd, &name, meta.uid, meta.gid).map_err(|e| io_err(shown, e))?;
                let fd = sys::openat(pfd, &name, libc::O_PATH, 0).map_err(|e| io_err(shown, e))?;
                // fchmod does not work on O_PATH descriptors: go through /proc/self/fd.
                std::fs::set_permissions(
                    format!("/proc/self/fd/{}", fd.as_raw_fd()),
                    std::os::unix::fs::PermissionsExt::from_mode(meta.mode),
                )
                .map_err(|e| io_err(shown, e))?;
                sys::set_times(pfd, &name, meta.mtime.0, meta.mtime.1).map_err(|e| io_err(shown, e))?;
                Ok(0)
            }
            other => Err(bad(shown, format!("unsupported tar entry type {other:?}"))),
        }
    }

    /// Like `open_parent` but never creates anything (for hardlink targets).
    fn open_parent_existing(&self, p: &SafePath, shown: &str) -> Result<OwnedFd, UnpackError> {
        let parent = p.parent();
        let path = if parent.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            parent
        };
        sys::open_beneath(
            self.root.as_raw_fd(),
            path.as_os_str(),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => bad(shown, "hardlink target is not in this layer"),
            _ => self.explain_resolve_error(p, shown, e),
        })
    }

    fn apply(&self, fd: &OwnedFd, meta: &Meta, shown: &str) -> Result<(), UnpackError> {
        sys::fchown(fd, meta.uid, meta.gid).map_err(|e| io_err(shown, e))?;
        // chmod after chown: chown clears setuid/setgid bits.
        sys::fchmod(fd, meta.mode).map_err(|e| io_err(shown, e))?;
        for (name, value) in &meta.xattrs {
            sys::fsetxattr(fd.as_raw_fd(), name, value).map_err(|e| io_err(shown, e))?;
        }
        Ok(())
    }
}

fn parse_num(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Which xattrs from an image we restore. overlayfs' own `trusted.overlay.*` would let an image forge
/// whiteouts or redirects, so they are never taken from layer content.
fn xattr_allowed(name: &[u8]) -> bool {
    (name.starts_with(b"user.") || name.starts_with(b"trusted.") || name == b"security.capability")
        && !name.starts_with(b"trusted.overlay.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_paths() {
        assert_eq!(SafePath::parse(b"./a/b/").unwrap().rel(), PathBuf::from("a/b"));
        assert!(SafePath::parse(b"../a").is_err());
        assert!(SafePath::parse(b"a/../../b").is_err());
        assert!(SafePath::parse(b"/etc/passwd").is_err());
        assert!(SafePath::parse(b"./").unwrap().name().is_none());
    }

    #[test]
    fn symlink_escapes() {
        let parent: Vec<OsString> = vec!["a".into(), "b".into()];
        assert!(symlink_stays_inside(&parent, b"../c"));
        assert!(symlink_stays_inside(&parent, b"../../c"));
        assert!(!symlink_stays_inside(&parent, b"../../../c"));
        assert!(symlink_stays_inside(&parent, b"/etc/passwd"));
        assert!(!symlink_stays_inside(&[], b".."));
    }
}
