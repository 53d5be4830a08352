//! Checked wrappers over the system calls the agent and container init use. Each wrapper is the only place
//! its `unsafe` lives; it converts `-1` into `io::Error`.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub fn cstr(p: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(p.as_ref().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string contains NUL"))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

fn check_l(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// `mount(2)`; `None` arguments become NULL.
pub fn mount(src: Option<&str>, target: &Path, fstype: Option<&str>, flags: libc::c_ulong, data: Option<&str>) -> io::Result<()> {
    let src = src.map(cstr).transpose()?;
    let target = cstr(target)?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = data.map(cstr).transpose()?;
    // SAFETY: every pointer is either NULL or a valid NUL-terminated string that outlives the call.
    check(unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref().map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    })
    .map(|_| ())
}

pub fn umount(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: valid C string.
    check(unsafe { libc::umount2(t.as_ptr(), flags) }).map(|_| ())
}

pub fn pivot_root(new: &Path, old: &Path) -> io::Result<()> {
    let n = cstr(new)?;
    let o = cstr(old)?;
    // SAFETY: valid C strings.
    check_l(unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) }).map(|_| ())
}

/// Makes the mount at `dir` the root of this mount namespace (`pivot_root`), with the old root detached under it,
/// and changes to the new root.
pub fn pivot_into(dir: &Path) -> io::Result<()> {
    std::env::set_current_dir(dir)?;
    pivot_root(Path::new("."), Path::new("."))?;
    umount(Path::new("."), libc::MNT_DETACH)?;
    std::env::set_current_dir("/")
}

pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: no pointers.
    check(unsafe { libc::unshare(flags) }).map(|_| ())
}

pub fn setns(fd: RawFd, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: no pointers; the kernel validates the descriptor.
    check(unsafe { libc::setns(fd, nstype) }).map(|_| ())
}

pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe a live slice.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(|_| ())
}

pub fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the options used here take integer arguments only.
    check(unsafe { libc::prctl(option, arg2, 0, 0, 0) }).map(|_| ())
}

pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: no pointers.
    check(unsafe { libc::kill(pid, sig) }).map(|_| ())
}

/// Reaps one exited child without blocking: `Ok(None)` if none is ready.
pub fn reap() -> io::Result<Option<(i32, i32)>> {
    let mut status = 0;
    // SAFETY: status is a valid out-pointer.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    match pid {
        0 => Ok(None),
        p if p > 0 => Ok(Some((p, status))),
        _ => {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ECHILD) { Ok(None) } else { Err(e) }
        }
    }
}

/// `(exit code, signal)` from a wait status; signals give 128 + signal as shells do.
pub fn decode_status(status: i32) -> (i32, Option<i32>) {
    if libc::WIFEXITED(status) {
        (libc::WEXITSTATUS(status), None)
    } else if libc::WIFSIGNALED(status) {
        let s = libc::WTERMSIG(status);
        (128 + s, Some(s))
    } else {
        (255, None)
    }
}

pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element out-array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element out-array.
    check(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) })?;
    // SAFETY: both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor with integer arguments.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let flags = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }).map(|_| ())
}

/// Turns SIGIO for `fd` on or off: with it on, the kernel signals this process when the descriptor's state
/// changes (for a virtio port: data arrived, or the host connected or went).
pub fn set_async(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: getpid has no arguments; fcntl on a descriptor with integer arguments.
    unsafe {
        if on {
            check(libc::fcntl(fd, libc::F_SETOWN, libc::getpid()))?;
        }
        let flags = check(libc::fcntl(fd, libc::F_GETFL))?;
        let flags = if on { flags | libc::O_ASYNC } else { flags & !libc::O_ASYNC };
        check(libc::fcntl(fd, libc::F_SETFL, flags)).map(|_| ())
    }
}

pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor with integer arguments.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    let flags = if on { flags | libc::FD_CLOEXEC } else { flags & !libc::FD_CLOEXEC };
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, flags) }).map(|_| ())
}

pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a live, writable slice of the given length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is a live slice of the given length.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

pub fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we own.
    let n = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: n is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

pub fn dup2(fd: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: plain descriptor numbers.
    check(unsafe { libc::dup2(fd, to) }).map(|_| ())
}

/// A signalfd for SIGCHLD and SIGIO (which are blocked so they are only seen through the fd).
pub fn signal_fd() -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is a plain C type; zeroed then filled by sigemptyset/sigaddset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t; the calls only modify it or the signal mask.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigaddset(&mut set, libc::SIGIO);
        check(libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()))?;
    }
    // SAFETY: set is valid; the returned descriptor is new.
    let fd = check(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
    // SAFETY: fd is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Undoes [`signal_fd`]'s mask and Rust's ignored SIGPIPE (in a child before exec: ignored signals and the
/// mask survive exec, and programs expect neither).
pub fn unblock_all_signals() {
    // SAFETY: an empty set is valid; sigprocmask and signal only change this process's signal state.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

pub fn drain_signalfd(fd: RawFd) {
    let mut buf = [0u8; 128 * 8];
    while let Ok(n) = read(fd, &mut buf) {
        if n == 0 {
            break;
        }
    }
}

pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: fds is a live, writable array of pollfd of the given length.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted { Ok(0) } else { Err(e) }
    } else {
        Ok(n as usize)
    }
}

pub fn set_winsize(fd: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads a winsize from the given valid pointer.
    check(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) }).map(|_| ())
}

/// Opens a new pty pair from `/dev/ptmx` of the current mount namespace: (master, slave).
pub fn openpty() -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: posix_openpt returns a new descriptor or -1.
    let m = check(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
    // SAFETY: m is new and ours.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    // SAFETY: unlockpt on a valid master descriptor.
    check(unsafe { libc::unlockpt(master.as_raw_fd()) })?;
    // TIOCGPTPEER opens the slave without a path lookup (immune to a hostile /dev/pts).
    // SAFETY: the ioctl returns a new descriptor or -1.
    let s = check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY) })?;
    // SAFETY: s is new and ours.
    Ok((master, unsafe { OwnedFd::from_raw_fd(s) }))
}

/// Sends `data` and, optionally, one descriptor (SCM_RIGHTS) over a unix socket.
pub fn send_with_fd(sock: RawFd, data: &[u8], fd: Option<RawFd>) -> io::Result<()> {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: msghdr is a plain C struct; zero is a valid initial value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: msg_control points at a buffer of CMSG_SPACE(sizeof(int)) bytes, so the first header and its
        // data fit; CMSG_FIRSTHDR/CMSG_DATA stay inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
            std::ptr::copy_nonoverlapping(&fd as *const RawFd as *const u8, libc::CMSG_DATA(c), std::mem::size_of::<RawFd>());
        }
    }
    // SAFETY: msg and everything it points to are valid for the duration of the call.
    let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if (n as usize) < data.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short sendmsg"));
    }
    Ok(())
}

/// Receives up to `buf.len()` bytes and at most one descriptor.
pub fn recv_with_fd(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: msghdr is a plain C struct; zero is a valid initial value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg points at live buffers of the declared sizes.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fd = None;
    // SAFETY: the kernel filled msg_control; CMSG_FIRSTHDR/CMSG_DATA read within msg_controllen.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if !c.is_null() && (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
            let mut raw: RawFd = -1;
            std::ptr::copy_nonoverlapping(libc::CMSG_DATA(c), &mut raw as *mut RawFd as *mut u8, std::mem::size_of::<RawFd>());
            if raw >= 0 {
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
        }
    }
    Ok((n as usize, fd))
}

/// Reads the namespace identity (`mnt:[4026531840]`) of a process.
pub fn ns_id(pid: i32, ns: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok().map(|p| p.to_string_lossy().into_owned())
}

/// Whether a process has ended (a zombie waiting for its parent, or gone).
pub fn has_ended(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return true };
    // The command name may hold spaces and parentheses: the state follows the last ')'.
    stat.rsplit_once(')').is_none_or(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X') | None))
}

/// Pids of every process this agent can see.
pub fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| rd.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect())
        .unwrap_or_default()
}

pub fn mknod(path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknod(p.as_ptr(), mode, dev) }).map(|_| ())
}

/// Opens `path` below the directory `root` as if `root` were `/`: `..` and absolute symlinks stay inside it,
/// and no magic link (`/proc/<pid>/root`, `/proc/self/fd/N`) is followed (`openat2` with `RESOLVE_IN_ROOT |
/// RESOLVE_NO_MAGICLINKS`).
pub fn open_in_root(root: &impl AsRawFd, path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes().strip_prefix(b"/").map_or(path.as_os_str(), OsStr::from_bytes))?;
    let c = if c.as_bytes().is_empty() { cstr(".")? } else { c };
    // SAFETY: open_how is a plain C struct for which all-zero is valid (and required for unused fields).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: a valid descriptor, C string and open_how that outlive the call; the kernel copies them.
    let fd = check_l(unsafe { libc::syscall(libc::SYS_openat2, root.as_raw_fd(), c.as_ptr(), &how as *const libc::open_how, std::mem::size_of::<libc::open_how>()) })?;
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `mkdirat(2)` of one name in the directory `dir` (the name itself is never followed).
pub fn mkdirat(dir: &impl AsRawFd, name: &OsStr, mode: libc::mode_t) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: a valid descriptor and C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), mode) }).map(|_| ())
}

/// `openat(2)` of one name in the directory `dir`.
pub fn openat(dir: &impl AsRawFd, name: &OsStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    let n = cstr(name)?;
    // SAFETY: a valid descriptor and C string; the mode is read only with O_CREAT.
    let fd = check(unsafe { libc::openat(dir.as_raw_fd(), n.as_ptr(), flags | libc::O_CLOEXEC, libc::c_uint::from(mode)) })?;
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `unlinkat(2)` of one name (a file or symlink) in the directory `dir`.
pub fn unlinkat(dir: &impl AsRawFd, name: &OsStr) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: a valid descriptor and C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), 0) }).map(|_| ())
}

/// Changes the owner of what `fd` refers to (an `O_PATH` descriptor will do: `AT_EMPTY_PATH`).
pub fn fchown_fd(fd: &impl AsRawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: a valid descriptor and an empty C string literal.
    check(unsafe { libc::fchownat(fd.as_raw_fd(), c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH) }).map(|_| ())
}

pub fn setrlimit(resource: u32, soft: u64, hard: u64) -> io::Result<()> {
    let r = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: r is a valid rlimit.
    check(unsafe { libc::setrlimit(resource as _, &r) }).map(|_| ())
}

pub fn set_ids(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    // SAFETY: groups is a live slice of gid_t.
    check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })?;
    // SAFETY: no pointers.
    check(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: no pointers.
    check(unsafe { libc::setresuid(uid, uid, uid) }).map(|_| ())
}

const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets the effective and permitted capabilities to `mask` (bit n = capability n), the inheritable ones to none
/// (as Docker since CVE-2022-24769: a program with file capabilities must not gain them through it).
pub fn capset(mask: u64) -> io::Result<()> {
    let h = CapHeader { version: CAP_VERSION_3, pid: 0 };
    let lo = mask as u32;
    let hi = (mask >> 32) as u32;
    let d = [CapData { effective: lo, permitted: lo, inheritable: 0 }, CapData { effective: hi, permitted: hi, inheritable: 0 }];
    // SAFETY: header and a two-element data array as capset(2) version 3 requires.
    check_l(unsafe { libc::syscall(libc::SYS_capset, &h as *const CapHeader, d.as_ptr()) }).map(|_| ())
}

pub fn execvpe(path: &str, args: &[String], env: &[String]) -> io::Error {
    let p = match cstr(path) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let a: Vec<CString> = match args.iter().map(cstr).collect() {
        Ok(a) => a,
        Err(e) => return e,
    };
    let e: Vec<CString> = match env.iter().map(cstr).collect() {
        Ok(e) => e,
        Err(e) => return e,
    };
    let mut ap: Vec<*const libc::c_char> = a.iter().map(|s| s.as_ptr()).collect();
    ap.push(std::ptr::null());
    let mut ep: Vec<*const libc::c_char> = e.iter().map(|s| s.as_ptr()).collect();
    ep.push(std::ptr::null());
    // SAFETY: NUL-terminated arrays of valid C strings that outlive the call (which only returns on error).
    unsafe { libc::execve(p.as_ptr(), ap.as_ptr(), ep.as_ptr()) };
    io::Error::last_os_error()
}

/// Brings an interface up (`lo` in a fresh network namespace).
pub fn link_up(name: &str) -> io::Result<()> {
    let index = netlink::link_index(name).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {name}")))?;
    netlink::Netlink::open()?.set_up(index)
}

/// A detached copy of the mount tree at `path` (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`): it can be attached
/// anywhere later with [`move_mount`], even after `pivot_root` has made `path` unreachable.
pub fn clone_tree(path: &Path) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let p = cstr(path)?;
    // SAFETY: valid C string; the returned descriptor is new.
    let fd = check_l(unsafe {
        libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, p.as_ptr(), OPEN_TREE_CLONE | AT_RECURSIVE | libc::O_CLOEXEC as libc::c_uint)
    })?;
    // SAFETY: fd is new and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Attaches a detached mount tree (from [`clone_tree`]) at `target`.
pub fn move_mount(tree: &OwnedFd, target: &Path) -> io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let t = cstr(target)?;
    let empty = cstr("")?;
    // SAFETY: valid descriptor and C strings.
    check_l(unsafe {
        libc::syscall(libc::SYS_move_mount, tree.as_raw_fd(), empty.as_ptr(), libc::AT_FDCWD, t.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH)
    })
    .map(|_| ())
}

/// Makes a detached mount tree (from [`clone_tree`]) read-only, every mount in it (`mount_setattr` with
/// `AT_RECURSIVE`): a remount of the top would leave the mounts below it writable. Linux 5.12 and later:
/// `ENOSYS` before.
pub fn make_tree_read_only(tree: &OwnedFd) -> io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let attr = MountAttr { attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let empty = cstr("")?;
    // SAFETY: valid descriptor, C string and attribute struct of the size passed.
    check_l(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(|_| ())
}

/// Sets the wall clock (`CLOCK_REALTIME`) to `ns` nanoseconds since the epoch.
pub fn set_realtime(ns: u64) -> io::Result<()> {
    let ts = libc::timespec { tv_sec: (ns / 1_000_000_000) as libc::time_t, tv_nsec: (ns % 1_000_000_000) as libc::c_long };
    // SAFETY: a valid timespec, read by the kernel during the call.
    check(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) }).map(|_| ())
}

/// Mixes `bytes` into the kernel's random pool, credited as entropy, and makes the generator reseed from it
/// now (`RNDADDENTROPY`, then `RNDRESEEDCRNG`).
pub fn add_entropy(bytes: &[u8]) -> io::Result<()> {
    // <linux/random.h>: _IOW('R', 0x03, int[2]) and _IO('R', 0x07).
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
    const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
    let f = std::fs::OpenOptions::new().write(true).open("/dev/urandom")?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info: Vec<u8> = Vec::with_capacity(8 + bytes.len());
    info.extend_from_slice(&((bytes.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(bytes.len() as i32).to_ne_bytes());
    info.extend_from_slice(bytes);
    // SAFETY: `info` is a rand_pool_info of `bytes.len()` bytes, alive during the call; RNDRESEEDCRNG takes no
    // argument.
    unsafe {
        check(libc::ioctl(f.as_raw_fd(), RNDADDENTROPY, info.as_ptr()))?;
        check(libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG))?;
    }
    Ok(())
}
