//! Host mount helpers for drivers that prepare storage on the host.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::fd::RawFd;
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

/// Mount points at or below `dir` in this mount namespace, deepest first. mountinfo gives real paths: `dir` is
/// compared as the kernel spells it (through symlinks), whatever spelling it comes in.
pub fn mounts_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let real = dir.canonicalize();
    mounts_under_path(real.as_deref().unwrap_or(dir))
}

/// Mount points at or below `dir`, spelled exactly as the kernel spells it (nothing in it is resolved: for a
/// directory whose content a guest controls), deepest first.
pub fn mounts_under_path(dir: &Path) -> Vec<std::path::PathBuf> {
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

/// `openat2(2)` of `path` (leading `/`s dropped) from the directory `dir`, with `resolve`'s limits on the walk.
pub fn openat2(dir: RawFd, path: &str, flags: libc::c_int, mode: u32, resolve: u64) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let c = CString::new(path.trim_start_matches('/')).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    // SAFETY: open_how is a plain C struct for which all-zero is valid (and required for unused fields).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if flags & libc::O_CREAT != 0 { u64::from(mode) } else { 0 };
    how.resolve = resolve;
    // SAFETY: `c` is a valid C string and `how` a valid open_how that outlive the call; the kernel copies both.
    let fd = unsafe { libc::syscall(libc::SYS_openat2, dir, c.as_ptr(), &how as *const libc::open_how, std::mem::size_of::<libc::open_how>()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as RawFd) })
}
