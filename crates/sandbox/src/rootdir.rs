//! A container's root filesystem as the host sees it, where every path resolves as it would inside the
//! container (`openat2(RESOLVE_IN_ROOT)`): an image's absolute symlinks stay in the image.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub struct RootDir {
    fd: OwnedFd,
}

fn exists_ok(r: libc::c_int) -> io::Result<()> {
    if r >= 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EEXIST) { Ok(()) } else { Err(e) }
}

impl RootDir {
    pub fn open(dir: &Path) -> io::Result<RootDir> {
        let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_DIRECTORY).open(dir)?;
        Ok(RootDir { fd: f.into() })
    }

    /// The root whose directory `fd` is (opened without following anything the guest may control).
    pub fn from_fd(fd: OwnedFd) -> RootDir {
        RootDir { fd }
    }

    /// Opens `path` inside the root, following symlinks within it.
    pub fn open_in(&self, path: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
        // openat2 refuses O_PATH with any flag but O_DIRECTORY, O_NOFOLLOW and O_CLOEXEC.
        let extra = if flags & libc::O_PATH != 0 { 0 } else { libc::O_NOCTTY };
        crate::sys::openat2(self.fd.as_raw_fd(), path, flags | extra, 0, libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS)
    }

    /// Creates the mount points every container gets (directories `dirs` at the root, empty files `files` as
    /// (directory, name)) where they are missing, as Docker's init layer does. Nothing that exists is touched:
    /// a name taken by anything, a symlink included, is left alone, and a directory that is missing is
    /// skipped. Returns what could not be made; the agent makes those itself.
    pub fn make_mount_points(&self, dirs: &[&str], files: &[(&str, &str)]) -> Vec<String> {
        let mut failed = Vec::new();
        for d in dirs {
            let Ok(name) = CString::new(*d) else { continue };
            // SAFETY: a valid descriptor and C string; a single component, so nothing is followed.
            if let Err(e) = exists_ok(unsafe { libc::mkdirat(self.fd.as_raw_fd(), name.as_ptr(), 0o755) }) {
                failed.push(format!("/{d}: {e}"));
            }
        }
        for (dir, file) in files {
            let Ok(parent) = self.open_in(dir, libc::O_PATH | libc::O_DIRECTORY) else { continue };
            let Ok(name) = CString::new(*file) else { continue };
            // SAFETY: a valid descriptor and C string; O_EXCL with O_NOFOLLOW creates or fails, never follows.
            let fd = unsafe {
                libc::openat(parent.as_raw_fd(), name.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0o644)
            };
            match exists_ok(fd) {
                // SAFETY: our new descriptor.
                Ok(()) if fd >= 0 => drop(unsafe { OwnedFd::from_raw_fd(fd) }),
                Ok(()) => {}
                Err(e) => failed.push(format!("/{dir}/{file}: {e}")),
            }
        }
        failed
    }
}
