//! Thin, checked wrappers over the `*at` system calls the layer unpacker needs.
//!
//! Every path handed to these functions is a single component or a path resolved with `openat2`
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, so nothing here can be steered outside a snapshot.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens `path` (relative, may have several components) beneath `dir`, refusing symlinks anywhere on the way.
pub fn open_beneath(dir: RawFd, path: &OsStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: open_how is a plain C struct for which all-zero is valid (and required for unused fields).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if flags & libc::O_CREAT != 0 {
        mode as u64
    } else {
        0
    };
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `c` is a valid NUL-terminated string and `how` a valid open_how that outlives the call;
    // the kernel copies both before returning.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)` for one path component.
pub fn openat(dir: RawFd, name: &OsStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: valid C string; the returned fd is checked and owned below.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC, mode) };
    let fd = check(fd)?;
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn mkdirat(dir: RawFd, name: &OsStr, mode: libc::mode_t) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string, no memory is retained by the kernel.
    check(unsafe { libc::mkdirat(dir, c.as_ptr(), mode) }).map(|_| ())
}

pub fn mknodat(dir: RawFd, name: &OsStr, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknodat(dir, c.as_ptr(), mode, dev) }).map(|_| ())
}

pub fn symlinkat(target: &OsStr, dir: RawFd, name: &OsStr) -> io::Result<()> {
    let t = cstr(target)?;
    let c = cstr(name)?;
    // SAFETY: both are valid C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) }).map(|_| ())
}

pub fn linkat(olddir: RawFd, oldname: &OsStr, newdir: RawFd, newname: &OsStr) -> io::Result<()> {
    let o = cstr(oldname)?;
    let n = cstr(newname)?;
    // SAFETY: valid C strings; flags 0 means a symlink target is linked itself, never followed.
    check(unsafe { libc::linkat(olddir, o.as_ptr(), newdir, n.as_ptr(), 0) }).map(|_| ())
}

pub fn unlinkat(dir: RawFd, name: &OsStr, flags: libc::c_int) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::unlinkat(dir, c.as_ptr(), flags) }).map(|_| ())
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub fn lstatat(dir: RawFd, name: &OsStr) -> io::Result<libc::stat> {
    let c = cstr(name)?;
    // SAFETY: an all-zero stat is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and a valid out-pointer.
    check(unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

/// `fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW)`; `name` empty means `dir` itself.
pub fn lchownat(dir: RawFd, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = libc::AT_SYMLINK_NOFOLLOW | if name.is_empty() { libc::AT_EMPTY_PATH } else { 0 };
    // SAFETY: valid C string.
    check(unsafe { libc::fchownat(dir, c.as_ptr(), uid, gid, flags) }).map(|_| ())
}

pub fn fchown(fd: &OwnedFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: fd is a valid open descriptor.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(|_| ())
}

pub fn fchmod(fd: &OwnedFd, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: fd is a valid open descriptor.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(|_| ())
}

/// Sets atime and mtime of `name` under `dir` without following a final symlink.
pub fn set_times(dir: RawFd, name: &OsStr, secs: i64, nanos: i64) -> io::Result<()> {
    let c = cstr(name)?;
    let ts = libc::timespec {
        tv_sec: secs,
        tv_nsec: nanos,
    };
    let times = [ts, ts];
    let flags = libc::AT_SYMLINK_NOFOLLOW | if name.is_empty() { libc::AT_EMPTY_PATH } else { 0 };
    // SAFETY: valid C string and a two-element timespec array as utimensat requires.
    let r = unsafe { libc::utimensat(dir, c.as_ptr(), times.as_ptr(), flags) };
    // utimensat does not take AT_EMPTY_PATH on every kernel; fall back to futimens.
    if r < 0 && name.is_empty() {
        // SAFETY: dir is a valid descriptor; times as above.
        return check(unsafe { libc::futimens(dir, times.as_ptr()) }).map(|_| ());
    }
    check(r).map(|_| ())
}

pub fn fsetxattr(fd: RawFd, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: name is NUL-terminated; value pointer/length describe a live slice.
    check(unsafe { libc::fsetxattr(fd, name.as_ptr(), value.as_ptr().cast(), value.len(), 0) }).map(|_| ())
}

pub fn syncfs(fd: RawFd) -> io::Result<()> {
    // SAFETY: fd is a valid descriptor.
    check(unsafe { libc::syncfs(fd) }).map(|_| ())
}

pub fn makedev(major: u32, minor: u32) -> libc::dev_t {
    libc::makedev(major, minor)
}
