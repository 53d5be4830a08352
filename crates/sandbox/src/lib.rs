//! Sandbox drivers.
//!
//! A sandbox is where a pod's agent (`hyperstart`) runs as the pod's init: a QEMU virtual machine, or a set of
//! fresh host namespaces. A driver starts and ends sandboxes and says how the agent sees host storage; it knows
//! nothing of pods, containers' processes or the daemon (those live in the agent and in libpod).

pub mod cgroups;
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
    if let Err(e) = std::fs::remove_dir_all(&s.dir) {
        if s.dir.exists() {
            errors.push(format!("removing {}: {e}", s.dir.display()));
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(SandboxError::Teardown { id: s.id.clone(), errors }) }
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

/// A running sandbox, as persisted by the daemon (so a restarted daemon finds it again).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SandboxState {
    pub id: String,
    pub driver: String,
    /// The host process that embodies the sandbox (the agent, or QEMU).
    pub pid: i32,
    /// Its start time in clock ticks since boot (/proc/PID/stat field 22): tells a reused pid apart.
    pub start_time: u64,
    /// Unix socket to connect to for the agent.
    pub socket: PathBuf,
    pub dir: PathBuf,
    pub started: String,
    #[serde(default)]
    pub details: BTreeMap<String, String>,
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
    /// Where the host sees a container's assembled root filesystem, if it does (a VM's share); the daemon then
    /// does the container's file lookups itself, sparing the guest a round trip to the host for each.
    fn rootfs_on_host(&self, _s: &SandboxState, _container_id: &str) -> Option<PathBuf> {
        None
    }
    /// Undoes [`Driver::attach_rootfs`] (the container's processes are gone).
    fn detach_rootfs(&self, s: &SandboxState, container_id: &str) -> Result<(), SandboxError>;
    /// Makes a host directory visible to the agent; returns the path the agent sees.
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
    let mut f = s[s.rfind(')')? + 2..].split_whitespace();
    let state = f.next()?.to_string();
    Some((state, f.nth(18)?.parse().ok()?))
}

/// The start time of a process (ticks since boot).
pub fn process_start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|(_, t)| t)
}

/// The host process recorded in a sandbox's directory when it started (see [`adopt`]): pid and start time.
/// None when the host has rebooted since: the pid and start time may then name another process.
pub fn recorded_process(dir: &Path) -> Option<(i32, u64)> {
    let rec = std::fs::read_to_string(dir.join(PROCESS_FILE)).ok()?;
    let mut f = rec.split_whitespace();
    let (pid, start, boot) = (f.next()?.parse().ok()?, f.next()?.parse().ok()?, f.next()?);
    (boot == boot_id()).then_some((pid, start))
}

/// This boot of the host (a random id the kernel draws at boot).
fn boot_id() -> String {
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
/// "PID START_TIME BOOT_ID", written as the process starts: a daemon killed before it recorded the sandbox
/// finds the process through it when it comes back, and ends it.
const PROCESS_FILE: &str = "process";

/// Takes charge of a sandbox's host process, just started for `cfg`: records its pid and start time in the
/// sandbox's directory and returns them; a thread reaps it while this daemon lives (it outlives the daemon if
/// it must). A process that cannot be recorded is killed.
pub(crate) fn adopt(mut child: std::process::Child, cfg: &SandboxConfig) -> Result<(i32, u64), SandboxError> {
    let pid = child.id() as i32;
    let start_time = process_start_time(pid).unwrap_or(0);
    if let Err(e) = std::fs::write(cfg.dir.join(PROCESS_FILE), format!("{pid} {start_time} {}\n", boot_id())) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(SandboxError::Setup(format!("recording the process of sandbox {} in {}: {e}", cfg.id, cfg.dir.display())));
    }
    std::thread::Builder::new()
        .name(format!("reap-{}", cfg.id))
        .stack_size(64 << 10)
        .spawn(move || {
            let _ = child.wait();
        })
        .map_err(io_err("starting a reaper thread"))?;
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
}
