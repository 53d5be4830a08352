//! Host mount helpers for drivers that prepare storage on the host.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))
}

pub fn mount(src: &str, target: &Path, fstype: Option<&str>, flags: libc::c_ulong, data: Option<&str>) -> std::io::Result<()> {
    let s = CString::new(src).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL"))?;
    let t = cstr(target)?;
    let f = fstype.map(|f| CString::new(f).expect("fs type has no NUL"));
    let d = data.map(CString::new).transpose().map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL"))?;
    // SAFETY: valid C strings (or NULL) that outlive the call.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            d.as_ref().map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

/// Sets the propagation of a mount (`MS_PRIVATE`, ...).
pub fn propagation(target: &Path, flags: libc::c_ulong) -> std::io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: valid C string; NULL source and type are allowed for propagation changes.
    let r = unsafe { libc::mount(std::ptr::null(), t.as_ptr(), std::ptr::null(), flags, std::ptr::null()) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

pub fn umount_detach(target: &Path) -> std::io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: valid C string.
    let r = unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

/// Mount points at or below `dir` in this mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<std::path::PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .map(std::path::PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..(i + 4).min(s.len())], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Creates, inside the container root `root`, the mount points every container gets (directories `dirs`,
/// empty files `files` as (directory, name)) where they are missing, as Docker's init layer does. Paths
/// resolve inside the root (an image's symlinks cannot lead out of it) and nothing that exists is touched: a
/// name taken by anything, a symlink included, is left alone, and a directory that is missing is skipped.
/// Returns what could not be made; the agent makes those itself.
pub fn make_mount_points(root: &Path, dirs: &[&str], files: &[(&str, &str)]) -> Vec<String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut failed = Vec::new();
    let open_in_root = |dirfd: libc::c_int, path: &str| -> std::io::Result<OwnedFd> {
        let c = CString::new(path)?;
        // SAFETY: open_how is plain data; zeroed is a valid value, then filled in.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: valid descriptor, C string and open_how of the size passed.
        let fd = unsafe { libc::syscall(libc::SYS_openat2, dirfd, c.as_ptr(), &how as *const libc::open_how, std::mem::size_of::<libc::open_how>()) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new descriptor, ours alone.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
    };
    let root_fd = match std::fs::File::open(root) {
        Ok(f) => f,
        Err(e) => return vec![format!("{}: {e}", root.display())],
    };
    let exists_ok = |r: libc::c_int| r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST);
    for d in dirs {
        let Ok(name) = CString::new(*d) else { continue };
        // SAFETY: valid descriptor and C string.
        if !exists_ok(unsafe { libc::mkdirat(root_fd.as_raw_fd(), name.as_ptr(), 0o755) }) {
            failed.push(format!("/{d}: {}", std::io::Error::last_os_error()));
        }
    }
    for (dir, file) in files {
        let Ok(parent) = open_in_root(root_fd.as_raw_fd(), dir) else { continue };
        let Ok(name) = CString::new(*file) else { continue };
        // SAFETY: valid descriptor and C string; O_EXCL with O_NOFOLLOW creates or fails, never follows.
        let fd = unsafe {
            libc::openat(parent.as_raw_fd(), name.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0o644)
        };
        if fd >= 0 {
            // SAFETY: our new descriptor.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        } else if !exists_ok(fd) {
            failed.push(format!("/{dir}/{file}: {}", std::io::Error::last_os_error()));
        }
    }
    failed
}
