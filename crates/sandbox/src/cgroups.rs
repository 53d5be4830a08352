//! A thin cgroup writer for pod limits: cgroup v2 when the unified hierarchy has controllers, else v1
//! (memory, cpu, pids, devices; on v2 the device list is a BPF program, see `device_filter`). On hybrid hosts
//! (v1 controllers plus an empty v2 mount) v1 is used.

use std::path::{Path, PathBuf};

use crate::device_filter::DeviceRule;
use crate::{SandboxError, io_err};

const ROOT: &str = "/sys/fs/cgroup";
const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "pids", "devices"];

/// The devices a pod's processes may use, Docker's defaults: the usual character devices and terminals, and
/// mknod of any node, which then cannot be opened. Without this a container's root (host root, in the ns
/// driver) could make a node of the host's disk and write to it. On v1 it is the `devices` controller's list
/// (after denying all); on v2 a BPF program attached to the cgroup (`device_filter`).
const DEVICES_ALLOWED: &[DeviceRule] = &[
    DeviceRule { kind: 'c', major: None, minor: None, access: "m" },
    DeviceRule { kind: 'b', major: None, minor: None, access: "m" },
    DeviceRule { kind: 'c', major: Some(1), minor: Some(3), access: "rwm" },  // null
    DeviceRule { kind: 'c', major: Some(1), minor: Some(5), access: "rwm" },  // zero
    DeviceRule { kind: 'c', major: Some(1), minor: Some(7), access: "rwm" },  // full
    DeviceRule { kind: 'c', major: Some(1), minor: Some(8), access: "rwm" },  // random
    DeviceRule { kind: 'c', major: Some(1), minor: Some(9), access: "rwm" },  // urandom
    DeviceRule { kind: 'c', major: Some(5), minor: Some(0), access: "rwm" },  // tty
    DeviceRule { kind: 'c', major: Some(5), minor: Some(1), access: "rwm" },  // console
    DeviceRule { kind: 'c', major: Some(5), minor: Some(2), access: "rwm" },  // ptmx
    DeviceRule { kind: 'c', major: Some(136), minor: None, access: "rwm" }, // pts
];

/// Limits for one sandbox.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: u64,
    pub vcpu: u32,
    pub pids: u64,
}

/// The cgroup directories of one sandbox (one per v1 controller, or one v2 directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    pub paths: Vec<PathBuf>,
    pub v2: bool,
}

pub(crate) fn is_v2() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

fn write(p: &Path, v: &str) -> Result<(), SandboxError> {
    std::fs::write(p, v).map_err(io_err(format!("writing {v:?} to {}", p.display())))
}

impl Cgroup {
    /// The cgroup named `hyper/<name>` (not created).
    pub fn named(name: &str) -> Cgroup {
        if is_v2() {
            Cgroup { paths: vec![Path::new(ROOT).join("hyper").join(name)], v2: true }
        } else {
            let paths = V1_CONTROLLERS
                .iter()
                .map(|c| Path::new(ROOT).join(c))
                .filter(|p| p.is_dir())
                .map(|p| p.join("hyper").join(name))
                .collect();
            Cgroup { paths, v2: false }
        }
    }

    /// Makes the cgroup and sets its limits; on failure, removes what it made.
    pub fn create(name: &str, l: Limits) -> Result<Cgroup, SandboxError> {
        let cg = Cgroup::named(name);
        let made = cg.make(l);
        if made.is_err() {
            let _ = cg.remove();
        }
        made.map(|()| cg)
    }

    fn make(&self, l: Limits) -> Result<(), SandboxError> {
        if self.v2 {
            let parent = Path::new(ROOT).join("hyper");
            std::fs::create_dir_all(&parent).map_err(io_err(format!("creating {}", parent.display())))?;
            for p in [Path::new(ROOT), parent.as_path()] {
                // Enable what is available; a missing controller only means no limit of that kind.
                let _ = std::fs::write(p.join("cgroup.subtree_control"), "+memory +cpu +pids");
            }
        }
        for p in &self.paths {
            std::fs::create_dir_all(p).map_err(io_err(format!("creating cgroup {}", p.display())))?;
        }
        for p in &self.paths {
            let f = |n: &str| p.join(n);
            if self.v2 {
                if f("memory.max").exists() {
                    write(&f("memory.max"), &l.memory_bytes.to_string())?;
                }
                if f("cpu.max").exists() {
                    write(&f("cpu.max"), &format!("{} 100000", u64::from(l.vcpu) * 100_000))?;
                }
                if f("pids.max").exists() {
                    write(&f("pids.max"), &l.pids.to_string())?;
                }
                crate::device_filter::attach(p, DEVICES_ALLOWED)?;
            } else if p.starts_with(Path::new(ROOT).join("memory")) {
                write(&f("memory.limit_in_bytes"), &l.memory_bytes.to_string())?;
            } else if p.starts_with(Path::new(ROOT).join("cpu")) {
                write(&f("cpu.cfs_period_us"), "100000")?;
                write(&f("cpu.cfs_quota_us"), &(u64::from(l.vcpu) * 100_000).to_string())?;
            } else if p.starts_with(Path::new(ROOT).join("pids")) {
                write(&f("pids.max"), &l.pids.to_string())?;
            } else if p.starts_with(Path::new(ROOT).join("devices")) {
                write(&f("devices.deny"), "a")?;
                for rule in DEVICES_ALLOWED {
                    write(&f("devices.allow"), &rule.v1())?;
                }
            }
        }
        Ok(())
    }

    /// The files a new, single-threaded process writes `0` into to join the cgroup.
    ///
    /// On v1 that is `tasks`, not `cgroup.procs`: a thread moving itself through `tasks` skips the kernel's
    /// global threadgroup lock, whose write side waits for an RCU grace period (5-15 ms measured here, on
    /// the critical path of every pod start). For a process with a single thread the result is the same.
    /// v2 has no such file for domain cgroups: `cgroup.procs`.
    pub fn join_files(&self) -> Vec<PathBuf> {
        let file = if self.v2 { "cgroup.procs" } else { "tasks" };
        self.paths.iter().map(|p| p.join(file)).collect()
    }

    /// Every process in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self
            .paths
            .iter()
            .flat_map(|p| std::fs::read_to_string(p.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect::<Vec<_>>())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// SIGKILLs everything in the cgroup until it is empty (or `timeout` passes); returns whether it emptied.
    pub fn kill_all(&self, timeout: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        let mut pause = Backoff::new();
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return true;
            }
            if std::time::Instant::now() > end {
                return false;
            }
            for p in pids {
                // SAFETY: kill has no memory arguments.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            pause.sleep();
        }
    }

    /// Removes the (empty) cgroup directories; returns the failures.
    pub fn remove(&self) -> Vec<String> {
        let mut errs = Vec::new();
        for p in &self.paths {
            if p.exists() {
                // A just-emptied cgroup can briefly report busy (for up to ~half a second here).
                let mut r = std::fs::remove_dir(p);
                let mut pause = Backoff::new();
                for _ in 0..60 {
                    if r.is_ok() || !p.exists() {
                        break;
                    }
                    pause.sleep();
                    r = std::fs::remove_dir(p);
                }
                if let Err(e) = r {
                    if p.exists() {
                        errs.push(format!("removing cgroup {}: {e}", p.display()));
                    }
                }
            }
        }
        errs
    }
}

/// Pauses between polls for something that usually happens within a millisecond: 0.5 ms, doubling up to 10 ms.
struct Backoff(std::time::Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(std::time::Duration::from_micros(500))
    }

    fn sleep(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(std::time::Duration::from_millis(10));
    }
}
