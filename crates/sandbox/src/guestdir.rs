//! A host directory the guest can write to (a VM's 9p share), handled from the host without following anything
//! the guest put in it.
//!
//! The guest's root controls the share's content: over 9p with `security_model=passthrough` it can rename what
//! the host made there and leave symlinks in its place. Every host path call (`create_dir_all`, `mount(2)`,
//! `umount2`, `canonicalize`) follows them: a symlink `share/<container> -> /` once made the host unmount every
//! mount of the host at the container's detach, and a symlink `share/vol-x -> /etc/cron.d` would have bound a
//! guest-writable volume over that directory. So below the share, paths are only ever resolved from a
//! descriptor of the share with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, and mounts and unmounts act on
//! the descriptor so found (through its `/proc/self/fd` link), never on a path walked again.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::sys;

/// A directory whose content the guest controls; the directory itself is the host's.
#[derive(Debug)]
pub struct GuestDir {
    /// As the kernel spells it (mountinfo's paths are compared with it).
    path: PathBuf,
    fd: OwnedFd,
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

/// The mount id of what `fd` refers to (`mnt_id` in /proc/self/fdinfo).
fn mount_id(fd: RawFd) -> io::Result<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no mnt_id in fdinfo"))
}

/// The path through which the kernel reaches exactly the file `fd` refers to.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

impl GuestDir {
    /// Opens the directory at `path`, which must be the host's own (nothing in it is followed after this).
    pub fn open(path: &Path) -> io::Result<GuestDir> {
        let path = path.canonicalize()?;
        let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW).open(&path)?;
        Ok(GuestDir { path, fd: f.into() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `rel` below the directory: no symlink, no `..` out of it, no magic link is followed (ELOOP or
    /// EXDEV if the guest left one on the way). Mounts on the way are crossed.
    pub fn open_beneath(&self, rel: &str, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
        sys::openat2(self.fd.as_raw_fd(), rel, flags, mode, libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS)
    }

    /// Makes the directory `rel` and its parents below the directory where missing; returns it (`O_PATH`). A
    /// symlink in the way is an error, never followed.
    pub fn make_dir(&self, rel: &str) -> io::Result<OwnedFd> {
        let mut at = String::new();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            if part == ".." || part == "." {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{rel}: not a plain relative path")));
            }
            let parent = if at.is_empty() { None } else { Some(self.open_beneath(&at, libc::O_PATH | libc::O_DIRECTORY, 0)?) };
            let parent_fd = parent.as_ref().map_or(self.fd.as_raw_fd(), |p| p.as_raw_fd());
            let name = cstring(part)?;
            // SAFETY: a valid descriptor and C string; mkdirat never follows its last component.
            if let Err(e) = check(unsafe { libc::mkdirat(parent_fd, name.as_ptr(), 0o755) }) {
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e);
                }
            }
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
        }
        self.open_beneath(&at, libc::O_PATH | libc::O_DIRECTORY, 0)
    }

    /// Makes the empty file `rel` (its directory must exist) where missing; returns it (`O_PATH`). What is there
    /// already is never opened but looked at: a regular file only (the guest can leave a device node or a FIFO,
    /// which opening alone could act on).
    pub fn make_file(&self, rel: &str) -> io::Result<OwnedFd> {
        match self.open_beneath(rel, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o644) {
            Ok(f) => drop(f),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        let fd = self.open_beneath(rel, libc::O_PATH, 0)?;
        if !std::fs::File::from(fd.try_clone()?).metadata()?.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{rel} is not a regular file")));
        }
        Ok(fd)
    }

    /// Whether something is mounted on `rel` (a top-level name of this directory, or deeper): its mount
    /// differs from its parent directory's.
    pub fn is_mounted(&self, rel: &str) -> io::Result<bool> {
        let rel = rel.trim_start_matches('/');
        let it = self.open_beneath(rel, libc::O_PATH, 0)?;
        let parent = match rel.rsplit_once('/') {
            Some((p, _)) => mount_id(self.open_beneath(p, libc::O_PATH | libc::O_DIRECTORY, 0)?.as_raw_fd())?,
            None => mount_id(self.fd.as_raw_fd())?,
        };
        Ok(mount_id(it.as_raw_fd())? != parent)
    }

    /// Mounts onto exactly the file or directory `target` (found below this directory).
    pub fn mount_on(target: &OwnedFd, src: &str, fstype: Option<&str>, flags: libc::c_ulong, data: Option<&str>) -> io::Result<()> {
        sys::mount(src, &fd_path(target), fstype, flags, data)
    }

    /// Unmounts (detaching) everything mounted at or below `rel`, deepest first; returns the failures. Each
    /// mount point is reached only below this directory, without symlinks: one the guest moved or replaced is
    /// not found there and stays mounted until the whole directory is unmounted.
    pub fn unmount_all(&self, rel: &str) -> Vec<String> {
        let top = self.path.join(rel.trim_start_matches('/'));
        let mut errors = Vec::new();
        for m in sys::mounts_under_path(&top) {
            let Ok(below) = m.strip_prefix(&self.path) else { continue };
            let Some(below) = below.to_str() else { continue };
            let found = if below.is_empty() {
                // The directory itself (a share is a bind mount of its own).
                std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_NOFOLLOW).open(&self.path).map(OwnedFd::from)
            } else {
                self.open_beneath(below, libc::O_PATH, 0)
            };
            let fd = match found {
                Ok(fd) => fd,
                Err(e) => {
                    errors.push(format!("unmounting {}: not reachable below {} without a symlink: {e}", m.display(), self.path.display()));
                    continue;
                }
            };
            if let Err(e) = sys::umount_detach(&fd_path(&fd)) {
                // EINVAL: not (or no longer) a mount point, e.g. the guest moved it since mountinfo was read.
                if e.raw_os_error() != Some(libc::EINVAL) {
                    errors.push(format!("unmounting {}: {e}", m.display()));
                }
            }
        }
        errors
    }

    /// Removes the entry `name` of this directory (a directory with all it holds, or a file or symlink) if
    /// nothing is mounted below it. `name` is never followed, nor is anything below it.
    pub fn remove(&self, name: &str) -> Result<(), String> {
        if name.is_empty() || name.contains('/') || name == ".." || name == "." {
            return Err(format!("{name:?}: not a name in {}", self.path.display()));
        }
        let at = self.path.join(name);
        if let Some(m) = sys::mounts_under_path(&at).last() {
            return Err(format!("{} is still mounted: {} left in place", m.display(), at.display()));
        }
        // `self.path` is the host's; std's remove_dir_all follows no symlink, at the top or below.
        match std::fs::symlink_metadata(&at) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", at.display())),
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&at).map_err(|e| format!("removing {}: {e}", at.display())),
            Ok(_) => std::fs::remove_file(&at).map_err(|e| format!("removing {}: {e}", at.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tmpfs mounted at `at` (the test's own mount namespace when run by scripts/test.sh); unmounted at drop.
    struct Tmpfs(PathBuf);

    impl Tmpfs {
        fn new(at: &Path) -> Tmpfs {
            std::fs::create_dir_all(at).unwrap();
            sys::mount("tmpfs", at, Some("tmpfs"), 0, Some("size=1m")).expect("mounting a tmpfs (the tests run as root)");
            Tmpfs(at.to_path_buf())
        }
        fn mounted(&self) -> bool {
            sys::mounts_under(&self.0).contains(&self.0.canonicalize().unwrap())
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = sys::umount_detach(&self.0);
        }
    }

    #[test]
    fn what_the_guest_leaves_in_the_share_is_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let share = t.path().join("share");
        std::fs::create_dir(&share).unwrap();
        // Host things the guest aims at: a mount, and a directory.
        let host_mount = Tmpfs::new(&t.path().join("host/rootfs"));
        let host_dir = t.path().join("cron.d");
        std::fs::create_dir(&host_dir).unwrap();
        std::os::unix::fs::symlink(t.path().join("host"), share.join("c1")).unwrap();
        std::os::unix::fs::symlink(&host_dir, share.join("vol-x")).unwrap();
        std::os::unix::fs::symlink(&host_dir, share.join("vol-f")).unwrap();
        let g = GuestDir::open(&share).unwrap();

        // A container's detach: its mount point is share/c1/rootfs, which leads to the host's mount.
        let errors = g.unmount_all("c1");
        assert!(errors.is_empty(), "{errors:?}");
        assert!(host_mount.mounted(), "a host mount was unmounted through a symlink in the share");
        assert!(g.is_mounted("c1/rootfs").is_err(), "no answer through a symlink");
        // Its attach: no directory is made, nothing is mounted, through the symlink.
        let e = g.make_dir("c1/rootfs").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        // A volume's share: the symlink is not a directory to mount on, nor a file.
        assert!(g.make_dir("vol-x").is_err());
        assert!(g.make_file("vol-f").is_err());
        assert!(g.open_beneath("../share/c1", libc::O_PATH, 0).is_err(), "nothing above the share");
        // Their removal takes the symlinks, not what they lead to.
        for name in ["c1", "vol-x", "vol-f"] {
            g.remove(name).unwrap();
            assert!(std::fs::symlink_metadata(share.join(name)).is_err());
        }
        assert!(host_mount.mounted() && host_dir.is_dir());
        assert!(g.remove("../host").is_err());
    }

    #[test]
    fn mounts_made_in_the_share_are_found_and_undone() {
        let t = tempfile::tempdir().unwrap();
        let share = t.path().join("share");
        std::fs::create_dir(&share).unwrap();
        let g = GuestDir::open(&share).unwrap();
        let dir = g.make_dir("c1/rootfs").unwrap();
        assert!(!g.is_mounted("c1/rootfs").unwrap());
        GuestDir::mount_on(&dir, "tmpfs", Some("tmpfs"), 0, Some("size=1m")).unwrap();
        assert!(g.is_mounted("c1/rootfs").unwrap());
        std::fs::write(share.join("c1/rootfs/f"), "x").unwrap();
        let host = t.path().join("host-file");
        std::fs::write(&host, "volume").unwrap();
        let f = g.make_file("vol-f").unwrap();
        GuestDir::mount_on(&f, host.to_str().unwrap(), None, libc::MS_BIND, None).unwrap();
        assert!(g.is_mounted("vol-f").unwrap());
        assert_eq!(std::fs::read_to_string(share.join("vol-f")).unwrap(), "volume");
        assert!(g.remove("c1").unwrap_err().contains("still mounted"));
        assert!(g.unmount_all("c1").is_empty());
        assert!(!g.is_mounted("c1/rootfs").unwrap());
        g.remove("c1").unwrap();
        assert!(g.unmount_all("").is_empty());
        g.remove("vol-f").unwrap();
        assert_eq!(std::fs::read_to_string(&host).unwrap(), "volume", "the host's file is left as it was");
        assert!(sys::mounts_under(&share).is_empty());
    }
}
