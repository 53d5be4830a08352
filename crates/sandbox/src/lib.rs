//! Sandbox drivers.
//!
//! A sandbox is where a pod's agent (`hyperstart`) runs as the pod's init: a QEMU virtual machine, or a set of
//! fresh host namespaces. A driver starts and ends sandboxes and says how the agent sees host storage; it knows
//! nothing of pods, containers' processes or the daemon (those live in the agent and in libpod).

pub mod cgroups;
pub mod device_filter;
pub mod guestdir;
pub mod ns;
pub mod qemu;
pub mod rootdir;
mod sys;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use agent_proto::Rootfs;
use serde::{Deserialize, Serialize};

/// What a new sandbox gets.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub id: String,
    /// Host directory for the sandbox's state (sockets, logs); created by the driver, removed on destroy.
    pub dir: PathBuf,
    pub vcpu: u32,
    pub memory_mb: u32,
    /// The sandbox's network interface, if it gets one.
    pub nic: Option<Nic>,
}

/// A network interface for a sandbox: the driver links `host_if` (a veth end, a tap) into `bridge`; the
/// sandbox side carries `mac` (the agent finds it by that and configures the address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub host_if: String,
    pub mac: String,
    pub bridge: String,
    pub mtu: u32,
}

/// Puts a host-side link into its bridge with the MTU, and brings it up.
pub(crate) fn plug(nic: &Nic) -> Result<(), SandboxError> {
    let e = |what: &str| {
        let what = format!("{what} {}", nic.host_if);
        move |source| SandboxError::Io { context: what, source }
    };
    let index = netlink::link_index(&nic.host_if).ok_or_else(|| SandboxError::Setup(format!("link {} vanished", nic.host_if)))?;
    let bridge = netlink::link_index(&nic.bridge).ok_or_else(|| SandboxError::Setup(format!("bridge {} does not exist", nic.bridge)))?;
    let mut nl = netlink::Netlink::open().map_err(e("netlink for"))?;
    nl.set_mtu(index, nic.mtu).map_err(e("setting the MTU of"))?;
    nl.set_master(index, bridge).map_err(e("bridging"))?;
    // Hairpin: a pod's packet to a published port of its own, through the host's address, comes back out of
    // the port it came in by (bridge netfilter hands the DNAT'ed frame straight back to the bridge), which a
    // bridge port refuses by default. As Docker does for its bridge's ports.
    nl.set_hairpin(index).map_err(e("turning hairpin mode on for"))?;
    nl.set_up(index).map_err(e("bringing up"))
}

/// The last steps of every driver's `destroy`: the sandbox's host link and state directory go; failures are
/// added to `errors`, and all of them make the result.
pub(crate) fn finish_destroy(s: &SandboxState, mut errors: Vec<String>) -> Result<(), SandboxError> {
    if let Some(h) = s.details.get("host_if") {
        if let Err(e) = unplug(h) {
            errors.push(e);
        }
    }
    if let Err(e) = remove_unmounted_dir(&s.dir) {
        errors.push(e);
    }
    if errors.is_empty() { Ok(()) } else { Err(SandboxError::Teardown { id: s.id.clone(), errors }) }
}

/// Removes a directory tree that should hold no mount point by now (a sandbox's, a pod's), and refuses while
/// anything is still mounted at or below it: a recursive removal goes down into mounts, and would delete a
/// container's files or a user's volume through them. Gone already is fine.
pub fn remove_unmounted_dir(dir: &Path) -> Result<(), String> {
    if let Some(m) = sys::mounts_under(dir).last() {
        return Err(format!("{} is still mounted: {} left in place", m.display(), dir.display()));
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if dir.exists() => Err(format!("removing {}: {e}", dir.display())),
        _ => Ok(()),
    }
}

/// [`remove_unmounted_dir`] after a failure, when only a warning can be given.
pub(crate) fn discard_dir(dir: &Path) {
    if let Err(left) = remove_unmounted_dir(dir) {
        log::warn!("{left}");
    }
}

/// Deletes a host-side link if it exists (a veth end takes its peer along).
pub(crate) fn unplug(host_if: &str) -> Result<(), String> {
    let Some(index) = netlink::link_index(host_if) else { return Ok(()) };
    let mut nl = netlink::Netlink::open().map_err(|e| format!("netlink: {e}"))?;
    match nl.delete_link(index) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(format!("deleting link {host_if}: {e}")),
    }
}

/// The last `n` lines of a log that is not blank, each cut to 300 characters, from the log's last 64 KiB read as
/// UTF-8 where it is (the guest writes the console: it may be anything, and of any length).
pub fn log_tail(path: &Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut bytes = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 << 10))).and_then(|_| f.take(64 << 10).read_to_end(&mut bytes));
    }
    let text = String::from_utf8_lossy(&bytes);
    // (A VM from the cache said it waited for a host: no news about what failed.)
    let mut tail: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && l.trim() != agent_proto::VM_PARKED_MARK)
        .rev()
        .take(n)
        .map(|l| if l.chars().count() > 300 { format!("{}...", l.chars().take(300).collect::<String>()) } else { l.to_string() })
        .collect();
    tail.reverse();
    tail
}

/// A running sandbox, as persisted by the daemon (so a restarted daemon finds it again).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SandboxState {
    pub id: String,
    pub driver: String,
    /// The host process that embodies the sandbox (the agent, or QEMU).
    pub pid: i32,
    /// Its start time in clock ticks since boot (/proc/PID/stat field 22): tells a reused pid apart.
    pub start_time: u64,
    /// The host's boot it ran in: after a reboot, pid and start time may well name a process of the new boot
    /// (a service started at boot). Empty in records from before it was kept: those are trusted as they were.
    #[serde(default)]
    pub boot_id: String,
    /// Unix socket to connect to for the agent.
    pub socket: PathBuf,
    pub dir: PathBuf,
    pub started: String,
    #[serde(default)]
    pub details: BTreeMap<String, String>,
}

impl SandboxState {
    /// Whether the sandbox's process still runs: the same pid, start time and boot of the host.
    pub fn process_alive(&self) -> bool {
        (self.boot_id.is_empty() || self.boot_id == boot_id()) && process_alive(self.pid, self.start_time)
    }
}

/// A container's storage on the host: image snapshots and its writable layer.
#[derive(Debug, Clone)]
pub struct ContainerStorage {
    pub id: String,
    /// Snapshot directories, lowest layer first.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    /// Teardown keeps going after a failure; these are all the failures.
    #[error("tearing down sandbox {id}: {}", errors.join("; "))]
    Teardown { id: String, errors: Vec<String> },
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let context = context.into();
    move |source| SandboxError::Io { context, source }
}

/// The operations every driver provides.
pub trait Driver: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    /// Facts for `hyper info` (kernel, accelerator, ...).
    fn info(&self) -> Vec<(String, String)>;
    /// Starts a sandbox whose agent will accept a connection on the returned state's `socket`.
    fn start(&self, cfg: &SandboxConfig) -> Result<SandboxState, SandboxError>;
    /// Makes a container's storage visible to the agent and says how the agent mounts it.
    fn attach_rootfs(&self, s: &SandboxState, c: &ContainerStorage) -> Result<Rootfs, SandboxError>;
    /// A container's assembled root filesystem as the host sees it, if it does (a VM's share), opened
    /// (`O_PATH`) without following anything the guest may have put on the way; the daemon then does the
    /// container's file lookups itself, sparing the guest a round trip to the host for each.
    fn open_rootfs_on_host(&self, _s: &SandboxState, _container_id: &str) -> Option<std::os::fd::OwnedFd> {
        None
    }
    /// Undoes [`Driver::attach_rootfs`] (the container's processes are gone).
    fn detach_rootfs(&self, s: &SandboxState, container_id: &str) -> Result<(), SandboxError>;
    /// Makes a host directory, or a host file, visible to the agent; returns the path the agent sees.
    fn share_dir(&self, s: &SandboxState, name: &str, host: &Path) -> Result<String, SandboxError>;
    /// Undoes [`Driver::share_dir`].
    fn unshare_dir(&self, s: &SandboxState, name: &str) -> Result<(), SandboxError>;
    /// Whether the sandbox's process still runs.
    fn is_alive(&self, s: &SandboxState) -> bool;
    /// Ends the sandbox: kills whatever is left of it and releases every host resource it had. Keeps going after
    /// a failure and reports them all.
    fn destroy(&self, s: &SandboxState) -> Result<(), SandboxError>;
    /// The daemon stops: releases what the driver holds for no sandbox (running sandboxes stay).
    fn shutdown(&self) {}
}

/// A process's state letter and start time (ticks since boot), from one read of /proc/PID/stat.
fn stat(pid: i32) -> Option<(String, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: fields resume after the last ')'.
    let state = s[s.rfind(')')? + 2..].split_whitespace().next()?.to_string();
    Some((state, start_time_of_stat(s.as_bytes())?))
}

/// The start time of a process (ticks since boot).
pub fn process_start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|(_, t)| t)
}

/// The host process recorded in a sandbox's directory when it started (see [`record_on_start`]): pid and start
/// time.
/// None when the host has rebooted since: the pid and start time may then name another process.
pub fn recorded_process(dir: &Path) -> Option<(i32, u64)> {
    let rec = std::fs::read_to_string(dir.join(PROCESS_FILE)).ok()?;
    let mut f = rec.split_whitespace();
    let (pid, start, boot) = (f.next()?.parse().ok()?, f.next()?.parse().ok()?, f.next()?);
    (boot == boot_id()).then_some((pid, start))
}

/// This boot of the host (a random id the kernel draws at boot).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_string()
}

/// Whether `pid` is still the process that started at `start_time` (and not a zombie).
pub fn process_alive(pid: i32, start_time: u64) -> bool {
    matches!(stat(pid), Some((state, t)) if state != "Z" && state != "X" && t == start_time)
}

/// Unix socket paths are limited to 107 bytes.
const MAX_SOCKET_PATH: usize = 107;

/// The agent socket of a sandbox in `dir`, refused when too long to bind.
pub(crate) fn agent_socket(dir: &Path) -> Result<PathBuf, SandboxError> {
    let socket = dir.join("agent.sock");
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(SandboxError::Setup(format!(
            "the agent socket path {} is longer than {MAX_SOCKET_PATH} bytes: use a shorter --root",
            socket.display()
        )));
    }
    Ok(socket)
}

/// The file in a sandbox's directory (or a template's, or a cached VM's) that names its host process,
/// "PID START_TIME BOOT_ID": a daemon killed before it recorded the sandbox finds the process through it when it
/// comes back, and ends it.
const PROCESS_FILE: &str = "process";

/// Makes `cmd` record its process in `cfg.dir` before it execs (see [`adopt`]). Call before `cmd.spawn()`.
///
/// The forked child writes the record itself, so there is no moment in which the process runs and no record
/// names it: a daemon killed while the child sets itself up takes the child with it (a parent-death signal,
/// dropped once the record is written), and one killed later leaves a recorded process for the next daemon.
pub(crate) fn record_on_start(cmd: &mut std::process::Command, cfg: &SandboxConfig) -> Result<(), SandboxError> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let path = cfg.dir.join(PROCESS_FILE);
    // Written empty now, so that a directory the record cannot be written in fails here, with its reason,
    // rather than as a bare error of the child.
    std::fs::write(&path, "").map_err(|e| SandboxError::Setup(format!("recording the process of sandbox {} in {}: {e}", cfg.id, cfg.dir.display())))?;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| SandboxError::Setup(format!("path {} contains NUL", path.display())))?;
    let boot = boot_id();
    // The child's parent: the child checks that it still lives once the parent-death signal is armed.
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe system calls
    // (prctl, getppid, getpid, open, read, write, close) on buffers on its stack and data prepared before the
    // fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // The daemon died before the signal was armed.
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            let mut stat = [0u8; 1024];
            let fd = libc::open(c"/proc/self/stat".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::read(fd, stat.as_mut_ptr().cast(), stat.len());
            libc::close(fd);
            let start = usize::try_from(n).ok().and_then(|n| start_time_of_stat(&stat[..n])).ok_or_else(|| std::io::Error::from_raw_os_error(libc::EIO))?;
            let mut rec = [0u8; 128];
            let len = format_record(&mut rec, libc::getpid(), start, boot.as_bytes()).ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENAMETOOLONG))?;
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_TRUNC | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let w = libc::write(fd, rec.as_ptr().cast(), len);
            libc::close(fd);
            if w != len as isize {
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// The start time (field 22) of a /proc/PID/stat line. Allocates nothing: it runs in forked children.
fn start_time_of_stat(stat: &[u8]) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    let field = rest.split(|&b| b == b' ').filter(|f| !f.is_empty()).nth(19)?;
    let mut v: u64 = 0;
    for &b in field.iter().take_while(|b| **b != b'\n') {
        v = v.checked_mul(10)?.checked_add(u64::from(b.checked_sub(b'0').filter(|d| *d <= 9)?))?;
    }
    Some(v)
}

/// Writes "PID START BOOT\n" into `buf`; returns its length. Allocates nothing: it runs in forked children.
fn format_record(buf: &mut [u8], pid: libc::pid_t, start: u64, boot: &[u8]) -> Option<usize> {
    fn num(buf: &mut [u8], at: usize, mut v: u64) -> Option<usize> {
        let mut digits = [0u8; 20];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (v % 10) as u8;
            n += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let out = buf.get_mut(at..at + n)?;
        for (o, d) in out.iter_mut().zip(digits[..n].iter().rev()) {
            *o = *d;
        }
        Some(at + n)
    }
    let mut at = num(buf, 0, u64::try_from(pid).ok()?)?;
    *buf.get_mut(at)? = b' ';
    at = num(buf, at + 1, start)?;
    *buf.get_mut(at)? = b' ';
    buf.get_mut(at + 1..at + 1 + boot.len())?.copy_from_slice(boot);
    at += 1 + boot.len();
    *buf.get_mut(at)? = b'\n';
    Some(at + 1)
}

/// Takes charge of a sandbox's host process, just started for `cfg` by a command prepared with
/// [`record_on_start`]: returns its pid and start time as recorded; a thread reaps it while this daemon lives (it
/// outlives the daemon if need be).
pub(crate) fn adopt(mut child: std::process::Child, cfg: &SandboxConfig) -> Result<(i32, u64), SandboxError> {
    let pid = child.id() as i32;
    let (recorded, start_time) = recorded_process(&cfg.dir).unwrap_or((0, 0));
    if recorded != pid {
        let _ = child.kill();
        let _ = child.wait();
        return Err(SandboxError::Setup(format!("sandbox {}: process {pid} is not on record in {}", cfg.id, cfg.dir.display())));
    }
    std::thread::Builder::new()
        .name(format!("reap-{}", cfg.id))
        .stack_size(64 << 10)
        .spawn(move || {
            let _ = child.wait();
        })
        .map_err(|e| {
            // The child went with the closure that was to reap it, unkilled: end it by its pid.
            // SAFETY: kill and waitpid of our own child, whose pid we hold; status is a valid out-pointer.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut 0, 0);
            }
            io_err("starting a reaper thread")(e)
        })?;
    Ok((pid, start_time))
}

/// A short random id: `prefix` + 10 lowercase letters (sandboxes, pods, cached VMs, their taps).
pub fn random_id(prefix: &str) -> String {
    let mut b = [0u8; 10];
    // SAFETY: getrandom fills the given buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> (i * 6)) as u8 ^ (std::process::id() as u8).wrapping_mul(i as u8 + 1);
        }
    }
    let s: String = b.iter().map(|x| (b'a' + x % 26) as char).collect();
    format!("{prefix}{s}")
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_process_counts_in_the_boot_that_recorded_it_only() {
        let dir = std::env::temp_dir().join(random_id("hyper-process-test-"));
        std::fs::create_dir_all(&dir).unwrap();
        let me = std::process::id() as i32;
        let start = process_start_time(me).unwrap();
        std::fs::write(dir.join(PROCESS_FILE), format!("{me} {start} {}\n", boot_id())).unwrap();
        assert_eq!(recorded_process(&dir), Some((me, start)));
        // Another boot's pid and start time may name any process of this one.
        std::fs::write(dir.join(PROCESS_FILE), format!("{me} {start} 00000000-0000-0000-0000-000000000000\n")).unwrap();
        assert_eq!(recorded_process(&dir), None);
        std::fs::write(dir.join(PROCESS_FILE), format!("{me} {start}\n")).unwrap();
        assert_eq!(recorded_process(&dir), None, "a record without its boot is not trusted");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_process_is_on_record_before_it_runs() {
        let dir = std::env::temp_dir().join(random_id("hyper-process-test-"));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = SandboxConfig { id: "sb-test".into(), dir: dir.clone(), vcpu: 1, memory_mb: 64, nic: None };
        // The program's first act: read the record and say whether it names the program itself.
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "read pid start boot < \"$1\"/process && echo \"$pid $start $boot\" && echo \"$$\""])
            .arg("sh")
            .arg(&dir)
            .stdout(std::process::Stdio::piped());
        record_on_start(&mut cmd, &cfg).unwrap();
        let child = cmd.spawn().unwrap();
        let pid = child.id() as i32;
        let start = process_start_time(pid).unwrap();
        let out = child.wait_with_output().unwrap();
        let out = String::from_utf8(out.stdout).unwrap();
        assert_eq!(out, format!("{pid} {start} {}\n{pid}\n", boot_id()), "the record the program found");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_child_parses_its_stat_line_and_formats_its_record() {
        // A command name with spaces and parentheses; the start time is field 22.
        let stat = b"4242 (a b) c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456789 1000 100 18446744073709551615\n";
        assert_eq!(start_time_of_stat(stat), Some(123456789));
        assert_eq!(start_time_of_stat(b"4242 (x) S 1 2 3"), None, "a short line");
        assert_eq!(start_time_of_stat(b"4242 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 1x2 3"), None, "not a number");
        let mut buf = [0u8; 64];
        let n = format_record(&mut buf, 7, 0, b"b00t").unwrap();
        assert_eq!(&buf[..n], b"7 0 b00t\n");
        let n = format_record(&mut buf, i32::MAX, u64::MAX, b"").unwrap();
        assert_eq!(&buf[..n], format!("{} {} \n", i32::MAX, u64::MAX).as_bytes());
        assert_eq!(format_record(&mut [0u8; 8], 1234, 5678, b"abc"), None, "too small a buffer");
        assert_eq!(format_record(&mut buf, -1, 0, b""), None);
    }

    /// After a reboot a recorded pid and start time can name a process of the new boot, which must not be
    /// taken for the sandbox (and killed with it).
    #[test]
    fn a_sandbox_process_counts_in_its_boot_only() {
        let me = std::process::id() as i32;
        let mut s = SandboxState {
            id: "sb".into(),
            driver: "qemu".into(),
            pid: me,
            start_time: process_start_time(me).unwrap(),
            boot_id: boot_id(),
            socket: PathBuf::new(),
            dir: PathBuf::new(),
            started: String::new(),
            details: BTreeMap::new(),
        };
        assert!(s.process_alive());
        s.boot_id = "00000000-0000-0000-0000-000000000000".into();
        assert!(!s.process_alive(), "another boot's sandbox");
        s.boot_id.clear();
        assert!(s.process_alive(), "a record from before boot ids were kept");
        let old: SandboxState = serde_json::from_str(r#"{"id":"sb","driver":"ns","pid":1,"start_time":2,"socket":"/s","dir":"/d","started":""}"#).unwrap();
        assert_eq!(old.boot_id, "");
    }

    /// The guest writes its console: a start error quotes its end however long it is, whatever its bytes.
    #[test]
    fn a_log_tail_is_its_last_lines_whatever_the_log_holds() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("console.log");
        let mut log = vec![b'x'; 200 << 10];
        log.extend_from_slice(b"\nboot\n\xff\xfe broken bytes\n\n");
        log.extend(std::iter::repeat_n(b'y', 1000));
        log.extend_from_slice(b"\nKernel panic - not syncing\n");
        std::fs::write(&p, &log).unwrap();
        let tail = log_tail(&p, 3);
        assert_eq!(tail.len(), 3, "{tail:?}");
        assert_eq!(tail[0], "\u{fffd}\u{fffd} broken bytes");
        assert_eq!(tail[1].len(), 303, "a long line is cut");
        assert_eq!(tail[2], "Kernel panic - not syncing");
        assert!(log_tail(&t.path().join("none"), 3).is_empty());
    }
}
