//! Building a container's mount namespace, and turning this process into the container's program.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use agent_proto::{ContainerConfig, ProcessConfig, Rootfs};
use base64::Engine as _;

use super::root::Slash;
use super::{InitReply, caps, seccomp};
use crate::sys;

type R<T> = Result<T, String>;

fn ctx<T>(r: std::io::Result<T>, what: impl FnOnce() -> String) -> R<T> {
    r.map_err(|e| format!("{}: {e}", what()))
}

/// Makes the directory `p` and its parents in the container (after `pivot_root`: `/` is its root) and returns
/// it. Every lookup stays inside the root and follows no magic link: a working directory, mount point or file
/// under `/proc/<pid>/root` (or a symlink to it that another container of the pod swapped in) would otherwise
/// be made in whatever root that process has, with container-init's full capabilities.
fn mkdir_p(p: &Path) -> R<OwnedFd> {
    let fail = |e: std::io::Error| format!("creating {}: {e}", p.display());
    let root = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_DIRECTORY).open("/").map_err(fail)?;
    // Usually there already: one lookup (in a VM, a round trip to the host).
    if let Ok(d) = sys::open_in_root(&root, p, libc::O_PATH | libc::O_DIRECTORY) {
        return Ok(d);
    }
    let mut dir = OwnedFd::from(root.try_clone().map_err(fail)?);
    let mut so_far = PathBuf::from("/");
    for part in p.components() {
        let name = match part {
            std::path::Component::Normal(n) => n,
            std::path::Component::ParentDir => std::ffi::OsStr::new(".."),
            _ => continue,
        };
        match sys::mkdirat(&dir, name, 0o755) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(fail(e)),
        }
        // The next directory, opened from the root again (not from `dir`: a symlink there resolves in the root).
        so_far.push(name);
        dir = sys::open_in_root(&root, &so_far, libc::O_PATH | libc::O_DIRECTORY).map_err(fail)?;
    }
    Ok(dir)
}

/// Makes `p` exist as an empty file (for a file bind mount), creating parents.
fn touch(p: &Path) -> R<()> {
    // Usually there already (/etc/hosts...): one lookup, which in a VM is a round trip to the host.
    if std::fs::symlink_metadata(p).is_ok() {
        return Ok(());
    }
    let (Some(d), Some(name)) = (p.parent(), p.file_name()) else { return Err(format!("creating {}: not a file's path", p.display())) };
    let dir = mkdir_p(d)?;
    ctx(sys::openat(&dir, name, libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW, 0o644).map(|_| ()), || format!("creating {}", p.display()))
}

/// Takes a detached copy of a mount source, to be attached after pivot_root (see [`bind_from_fd`]).
fn open_path(p: &str) -> R<(OwnedFd, bool)> {
    let is_dir = ctx(std::fs::metadata(p), || format!("stat {p}"))?.is_dir();
    let tree = ctx(sys::clone_tree(Path::new(p)), || format!("cloning the mount of {p}"))?;
    Ok((tree, is_dir))
}

struct Bind {
    fd: OwnedFd,
    is_dir: bool,
    dest: PathBuf,
    read_only: bool,
}

const MS_RO_REMOUNT: libc::c_ulong = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;

/// Runs `mount`, which mounts something on `target`; when `target` is missing, makes it (a directory or an
/// empty file) and runs `mount` again. Mount points are usually there (the image or the driver made them): in a
/// VM, looking first would cost a round trip to the host for each.
fn on_mount_point(target: &Path, is_dir: bool, mount: impl Fn() -> std::io::Result<()>) -> std::io::Result<()> {
    match mount() {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            let made = if is_dir { mkdir_p(target).map(drop) } else { touch(target) };
            made.map_err(std::io::Error::other)?;
            mount()
        }
        other => other,
    }
}

/// Attaches a cloned tree at its destination. The destination is resolved inside the container's root, so an
/// image's symlinks cannot point it elsewhere.
fn bind_from_fd(b: &Bind) -> R<()> {
    // Every mount of the tree, before it is attached (a remount of the top leaves those below writable); on
    // kernels before 5.12, the top only.
    let whole_tree = match b.read_only.then(|| sys::make_tree_read_only(&b.fd)) {
        None | Some(Ok(())) => true,
        Some(Err(e)) if e.raw_os_error() == Some(libc::ENOSYS) => false,
        Some(Err(e)) => return Err(format!("making {} read-only: {e}", b.dest.display())),
    };
    ctx(on_mount_point(&b.dest, b.is_dir, || sys::move_mount(&b.fd, &b.dest)), || format!("mounting onto {}", b.dest.display()))?;
    if !whole_tree {
        ctx(sys::mount(None, &b.dest, None, MS_RO_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV, None), || {
            format!("making {} read-only", b.dest.display())
        })?;
    }
    Ok(())
}

fn setup_dev() -> R<()> {
    let dev = Path::new("/dev");
    ctx(
        on_mount_point(dev, true, || sys::mount(Some("tmpfs"), dev, Some("tmpfs"), libc::MS_NOSUID | libc::MS_STRICTATIME, Some("mode=755,size=65536k"))),
        || "mounting /dev".into(),
    )?;
    for (name, major, minor) in [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)] {
        let p = dev.join(name);
        ctx(sys::mknod(&p, libc::S_IFCHR | 0o666, libc::makedev(major, minor)), || format!("creating {}", p.display()))?;
        ctx(std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)), || format!("chmod {}", p.display()))?;
    }
    for (link, target) in [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")] {
        ctx(std::os::unix::fs::symlink(target, dev.join(link)), || format!("creating /dev/{link}"))?;
    }
    // (A fresh tmpfs of this container's: nothing else can be there.)
    let made = |d: &Path| ctx(std::fs::create_dir(d), || format!("creating {}", d.display()));
    let pts = dev.join("pts");
    made(&pts)?;
    ctx(
        sys::mount(Some("devpts"), &pts, Some("devpts"), libc::MS_NOSUID | libc::MS_NOEXEC, Some("newinstance,ptmxmode=0666,mode=0620,gid=5")),
        || "mounting /dev/pts".into(),
    )?;
    let mq = dev.join("mqueue");
    made(&mq)?;
    // POSIX message queues: one instance per IPC namespace, so the pod's containers share it.
    ctx(sys::mount(Some("mqueue"), &mq, Some("mqueue"), libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, None), || {
        "mounting /dev/mqueue".into()
    })?;
    made(&dev.join("shm"))
}

/// Hides or freezes the parts of /proc and /sys that reach into the host kernel or hardware, as Docker does.
fn mask_proc() -> R<()> {
    for p in [
        "/proc/asound",
        "/proc/acpi",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ] {
        let path = Path::new(p);
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                ctx(sys::mount(Some("tmpfs"), path, Some("tmpfs"), libc::MS_RDONLY, Some("size=0")), || format!("masking {p}"))?;
            }
            Ok(_) => {
                ctx(sys::mount(Some("/dev/null"), path, None, libc::MS_BIND, None), || format!("masking {p}"))?;
            }
            Err(_) => {}
        }
    }
    for p in ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"] {
        let path = Path::new(p);
        if path.exists() {
            ctx(sys::mount(Some(p), path, None, libc::MS_BIND | libc::MS_REC, None), || format!("freezing {p}"))?;
            ctx(sys::mount(None, path, None, MS_RO_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, None), || {
                format!("freezing {p}")
            })?;
        }
    }
    Ok(())
}

fn inject_files(c: &ContainerConfig) -> R<()> {
    for f in &c.files {
        let data = base64::engine::general_purpose::STANDARD.decode(&f.content).map_err(|e| format!("file {}: bad content: {e}", f.path))?;
        let path = Path::new(&f.path);
        let (Some(d), Some(name)) = (path.parent(), path.file_name()) else { return Err(format!("file {}: not a file's path", f.path)) };
        let dir = mkdir_p(d)?;
        let uid = if f.user.is_empty() { 0 } else { passwd::resolve_user_id(&Slash, &f.user).map_err(|e| format!("file {}: {e}", f.path))? };
        let gid = if f.group.is_empty() { 0 } else { passwd::resolve_group(&Slash, &f.group).map_err(|e| format!("file {}: {e}", f.path))? };
        let _ = sys::unlinkat(&dir, name);
        let mut file = std::fs::File::from(ctx(sys::openat(&dir, name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW, 0o600), || {
            format!("creating {}", f.path)
        })?);
        ctx(file.write_all(&data), || format!("writing {}", f.path))?;
        // On the file written, not by its path: another container sharing the directory (a volume, /dev/shm)
        // could have put a symlink in its place meanwhile, and chmod follows it.
        ctx(std::os::unix::fs::fchown(&file, Some(uid), Some(gid)), || format!("chown {}", f.path))?;
        ctx(file.set_permissions(std::fs::Permissions::from_mode(f.mode)), || format!("chmod {}", f.path))?;
    }
    Ok(())
}

fn apply_sysctls(c: &ContainerConfig) -> R<()> {
    for (k, v) in &c.sysctl {
        let p = format!("/proc/sys/{}", k.replace('.', "/"));
        ctx(std::fs::write(&p, v.as_bytes()), || format!("sysctl {k}={v}"))?;
    }
    Ok(())
}

/// Builds the container and execs its program; returns only with an error.
pub fn create(c: &ContainerConfig, root: &str, pod_dir: &str, shm: &str, hostname: &str, sock: &mut UnixStream) -> String {
    match create_inner(c, root, pod_dir, shm) {
        Ok(()) => run_process(&c.process, hostname, true, sock),
        Err(e) => e,
    }
}

fn create_inner(c: &ContainerConfig, root: &str, pod_dir: &str, shm: &str) -> R<()> {
    crate::vm::trace("container: forked");
    ctx(sys::unshare(libc::CLONE_NEWNS), || "creating the mount namespace".into())?;
    ctx(sys::mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_SLAVE, None), || "making / a slave mount".into())?;
    let rootp = Path::new(root);
    match &c.rootfs {
        Rootfs::Overlay { lower, upper, work } => {
            let data = format!("lowerdir={},upperdir={upper},workdir={work}", lower.join(":"));
            ctx(sys::mount(Some("overlay"), rootp, Some("overlay"), 0, Some(&data)), || "mounting the overlay root filesystem".into())?;
        }
        Rootfs::Bind { path } => {
            ctx(sys::mount(Some(path), rootp, None, libc::MS_BIND | libc::MS_REC, None), || format!("bind-mounting the root filesystem {path}"))?;
        }
    }
    // Mount sources are cloned now, while the agent's view of the filesystem is still reachable; they are
    // attached after pivot_root, so their destinations resolve inside the container whatever its symlinks say.
    let mut binds = Vec::new();
    for m in &c.mounts {
        let (fd, is_dir) = open_path(&m.source)?;
        binds.push(Bind { fd, is_dir, dest: PathBuf::from(&m.destination), read_only: m.read_only });
    }
    for (file, dest) in [("hosts", "/etc/hosts"), ("hostname", "/etc/hostname"), ("resolv.conf", "/etc/resolv.conf")] {
        // A volume mounted over /etc, or a file the podfile puts there, wins over the pod's files.
        if c.mounts.iter().any(|m| m.destination.trim_end_matches('/') == "/etc" || m.destination == dest)
            || c.files.iter().any(|f| Path::new(&f.path) == Path::new(dest))
        {
            continue;
        }
        let (fd, is_dir) = open_path(&format!("{pod_dir}/{file}"))?;
        binds.insert(0, Bind { fd, is_dir, dest: PathBuf::from(dest), read_only: false });
    }

    let (shm_fd, _) = open_path(shm)?;
    crate::vm::trace("container: root and mount sources");

    ctx(sys::pivot_into(rootp), || format!("entering {root}"))?;

    let proc_ = Path::new("/proc");
    ctx(on_mount_point(proc_, true, || sys::mount(Some("proc"), proc_, Some("proc"), libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, None)), || {
        "mounting /proc".into()
    })?;
    crate::vm::trace("container: pivot_root, /proc");
    setup_dev()?;
    crate::vm::trace("container: /dev");
    bind_from_fd(&Bind { fd: shm_fd, is_dir: true, dest: PathBuf::from("/dev/shm"), read_only: false })?;
    let sys_ = Path::new("/sys");
    ctx(
        on_mount_point(sys_, true, || {
            sys::mount(Some("sysfs"), sys_, Some("sysfs"), libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, None)
        }),
        || "mounting /sys".into(),
    )?;
    for b in &binds {
        bind_from_fd(b)?;
    }
    crate::vm::trace("container: /sys, binds");
    inject_files(c)?;
    apply_sysctls(c)?;
    mask_proc()?;
    crate::vm::trace("container: /proc masked");
    if c.read_only {
        ctx(sys::mount(None, Path::new("/"), None, libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY, None), || {
            "making the root filesystem read-only".into()
        })?;
    }
    Ok(())
}

/// Joins the mount namespace of a container's main process and execs there; returns only with an error.
pub fn exec(target_pid: i32, p: &ProcessConfig, hostname: &str, sock: &mut UnixStream) -> String {
    let r = (|| -> R<()> {
        let ns = ctx(std::fs::File::open(format!("/proc/{target_pid}/ns/mnt")), || "opening the container's mount namespace".into())?;
        ctx(sys::setns(ns.as_raw_fd(), libc::CLONE_NEWNS), || "joining the container's mount namespace".into())?;
        ctx(std::env::set_current_dir("/"), || "chdir /".into())
    })();
    match r {
        Ok(()) => run_process(p, hostname, false, sock),
        Err(e) => e,
    }
}

/// Environment defaults a process gets unless the configuration sets them.
fn environment(p: &ProcessConfig, id: &passwd::Identity, hostname: &str) -> Vec<String> {
    let mut env = p.env.clone();
    let has = |env: &[String], k: &str| env.iter().any(|e| e.split_once('=').is_some_and(|(n, _)| n == k));
    for (k, v) in [
        ("PATH", passwd::DEFAULT_PATH.to_string()),
        ("HOSTNAME", hostname.to_string()),
        ("HOME", if id.home.is_empty() { "/".into() } else { id.home.clone() }),
    ] {
        if !has(&env, k) {
            env.push(format!("{k}={v}"));
        }
    }
    if p.terminal && !has(&env, "TERM") {
        env.push("TERM=xterm".into());
    }
    env
}

/// Puts the container's own /dev/null on the standard descriptors that hold another one. A process without
/// input (or output) got the agent's /dev/null, opened before the fork: in the ns driver, the host's. Open in
/// the container, it let a root process change the host's node (`chmod 0 /proc/self/fd/0`), as runc's once did.
fn own_null() -> R<()> {
    let mine = ctx(std::fs::metadata("/dev/null"), || "looking at /dev/null".into())?;
    let mut null = None;
    for fd in 0..3 {
        // SAFETY: all-zero is a valid `stat`, which fstat fills.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid out-pointer; a closed descriptor only fails.
        if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFCHR || st.st_rdev != libc::makedev(1, 3) {
            continue;
        }
        if st.st_dev == mine.dev() && st.st_ino == mine.ino() {
            continue;
        }
        if null.is_none() {
            null = Some(ctx(std::fs::OpenOptions::new().read(true).write(true).open("/dev/null"), || "opening /dev/null".into())?);
        }
        let n = null.as_ref().map_or(-1, |n| n.as_raw_fd());
        ctx(sys::dup2(n, fd), || "attaching /dev/null".into())?;
    }
    Ok(())
}

fn run_process(p: &ProcessConfig, hostname: &str, create_cwd: bool, sock: &mut UnixStream) -> String {
    let r = (|| -> R<(String, Vec<String>, Option<OwnedFd>)> {
        if p.args.is_empty() {
            return Err("no command to run (neither the podfile nor the image gives one)".into());
        }
        // What the daemon found beforehand, or our own lookups.
        let (id, exe) = match &p.resolved {
            Some(r) => (passwd::Identity { uid: r.uid, gid: r.gid, groups: r.groups.clone(), home: r.home.clone() }, Some(r.exe.clone())),
            None => (passwd::resolve(&Slash, &p.user, &p.group, &p.additional_groups)?, None),
        };
        let env = environment(p, &id, hostname);
        let cwd = if p.cwd.is_empty() { "/" } else { &p.cwd };
        if create_cwd && std::fs::metadata(cwd).is_err() {
            // Owned by the process's user, through the descriptor made: the path could lead elsewhere by now.
            let dir = mkdir_p(Path::new(cwd))?;
            let _ = sys::fchown_fd(&dir, id.uid, id.gid);
        }
        ctx(std::env::set_current_dir(cwd), || format!("working directory {cwd}"))?;
        // A working directory reached through a magic link (/proc/<pid>/cwd or root of a process outside the
        // container's root) is not below the root: getcwd then fails or says "(unreachable)" (as runc checks
        // since CVE-2024-21626).
        if !std::env::current_dir().is_ok_and(|d| d.is_absolute()) {
            return Err(format!("working directory {cwd} is outside the container's root filesystem"));
        }
        let exe = match exe {
            Some(e) => e,
            None => passwd::find_executable(&Slash, &p.args[0], &env)?,
        };
        // SAFETY: setsid has no preconditions; failure (already a leader) is harmless.
        unsafe { libc::setsid() };
        let master = if p.terminal {
            let (master, slave) = ctx(sys::openpty(), || "opening a terminal".into())?;
            for fd in 0..3 {
                ctx(sys::dup2(slave.as_raw_fd(), fd), || "attaching the terminal".into())?;
            }
            // SAFETY: TIOCSCTTY on our new session's terminal, integer argument.
            unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
            Some(master)
        } else {
            own_null()?;
            None
        };
        for (res, soft, hard) in &p.rlimits {
            ctx(sys::setrlimit(*res, *soft, *hard), || format!("setting rlimit {res}"))?;
        }
        ctx(caps::drop_bounding(), || "dropping capabilities".into())?;
        ctx(sys::set_ids(id.uid, id.gid, &id.groups), || format!("becoming uid {} gid {}", id.uid, id.gid))?;
        if id.uid == 0 {
            ctx(sys::capset(caps::default_mask()), || "setting capabilities".into())?;
        }
        ctx(sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1), || "setting no_new_privs".into())?;
        ctx(seccomp::install(), || "installing the seccomp filter".into())?;
        Ok((exe, env, master))
    })();
    let (exe, env, master) = match r {
        Ok(v) => v,
        Err(e) => return e,
    };
    crate::vm::trace("container: process ready");
    // Framed here and sent in one message, so the pty master can ride along.
    let mut framed = Vec::new();
    super::write_msg(&mut framed, &InitReply::Ready).expect("writing to memory");
    if let Err(e) = sys::send_with_fd(sock.as_raw_fd(), &framed, master.as_ref().map(|m| m.as_raw_fd())) {
        return format!("reporting readiness: {e}");
    }
    drop(master);
    sys::unblock_all_signals();
    let err = sys::execvpe(&exe, &p.args, &env);
    format!("exec {exe}: {err}")
}
