//! The VM cache (`hyperd --vm-cache N`): N guests of one shape booted ahead of time, each parked at its agent's
//! port with no pod and no host connected. A start of that shape takes one instead of booting, and another boots
//! in its place. The original Hyper had the same (its VmCache); unlike a template, every cached guest booted on
//! its own, so nothing of its memory (random state, address layout) is shared with another VM.
//!
//! ```text
//! <cache dir>/<id>/          a parked VM's sandbox directory (share/, sockets, logs, its QEMU's `process`
//!                            record); a start renames it to the sandbox's own directory (QEMU holds the
//!                            share, the log and its listening sockets by descriptor or inode, so none of
//!                            them minds)
//! ```
//!
//! Whatever is in the cache directory when a daemon starts was left by an earlier one: its QEMU (named in
//! `process`) is killed, its tap (`hc` and the id's letters) and its directory removed.
//!
//! A parked VM's tap is neither bridged nor up; the start that takes the VM renames it to the sandbox's own
//! name and plugs it, and the agent gives the guest's NIC the pod's MAC at set-up (as for a template).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::{Boot, QemuDriver, kill_spawned, remove_from_host};
use crate::{Nic, SandboxConfig, SandboxError, io_err, process_alive};

/// How long a refill waits after a start took a VM: the taken guest's hello, set-up and containers (~0.1-0.2 s
/// under TCG) then have the host's CPUs to themselves.
const REFILL_DELAY: Duration = Duration::from_millis(300);

/// What the cache keeps ready.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    pub dir: PathBuf,
    /// How many VMs wait (0: the cache is off, and only leftovers of an earlier daemon are removed).
    pub size: usize,
    pub vcpu: u32,
    pub memory_mb: u32,
}

/// A VM waiting in the cache.
#[derive(Debug)]
struct Parked {
    dir: PathBuf,
    pid: i32,
    start: u64,
    tap: String,
    /// Restored from a VM template (with `--vm-templates`): it waits as soon as it runs.
    restored: bool,
}

/// A cached VM handed to a sandbox.
pub struct Taken {
    pub pid: i32,
    pub start: u64,
    /// Its name in the cache (QEMU's `-name hyper-NAME` stays).
    pub name: String,
    pub restored: bool,
}

#[derive(Debug)]
pub struct VmCache {
    o: CacheOptions,
    parked: Mutex<Vec<Parked>>,
    /// VMs being started for the cache right now (counted against its size).
    booting: AtomicUsize,
    /// One refill at a time.
    filling: Mutex<()>,
    driver: Mutex<Weak<QemuDriver>>,
    /// The daemon stops: a VM that finishes starting now is killed, not parked.
    closed: AtomicBool,
}

fn err(msg: impl Into<String>) -> SandboxError {
    SandboxError::Setup(msg.into())
}

impl VmCache {
    /// The cache in `o.dir`, after removing what a daemon before this one left there.
    pub fn new(o: CacheOptions) -> VmCache {
        clean(&o.dir);
        VmCache {
            o,
            parked: Mutex::new(Vec::new()),
            booting: AtomicUsize::new(0),
            filling: Mutex::new(()),
            driver: Mutex::new(Weak::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Starts filling the cache, for the driver it belongs to (now shared).
    pub fn start(&self, d: &Arc<QemuDriver>) {
        *self.driver.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(d);
        self.refill(Duration::ZERO);
    }

    /// Fills the cache in the background, after a pause.
    fn refill(&self, after: Duration) {
        if self.o.size == 0 || self.closed.load(Ordering::SeqCst) {
            return;
        }
        let weak = self.driver.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let spawned = std::thread::Builder::new().name("vm-cache".into()).spawn(move || {
            std::thread::sleep(after);
            if let Some(d) = weak.upgrade()
                && let Some(c) = &d.cache
            {
                c.fill(&d);
            }
        });
        if let Err(e) = spawned {
            log::warn!("VM cache: cannot start refilling: {e}");
        }
    }

    /// Boots VMs until the cache holds its size.
    fn fill(&self, d: &QemuDriver) {
        let _g = self.filling.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let have = self.parked.lock().unwrap_or_else(|e| e.into_inner()).len();
            if have >= self.o.size || self.closed.load(Ordering::SeqCst) {
                return;
            }
            self.booting.fetch_add(1, Ordering::SeqCst);
            let kept = match self.boot(d) {
                Ok(p) if !self.closed.load(Ordering::SeqCst) => {
                    self.parked.lock().unwrap_or_else(|e| e.into_inner()).push(p);
                    true
                }
                Ok(p) => {
                    discard(&p);
                    false
                }
                Err(e) => {
                    log::warn!("VM cache: booting a VM failed, the cache stays short: {e}");
                    false
                }
            };
            self.booting.fetch_sub(1, Ordering::SeqCst);
            if !kept {
                return;
            }
        }
    }

    /// Starts one VM for the cache: its directory, private share mount and unplugged tap, then QEMU.
    fn boot(&self, d: &QemuDriver) -> Result<Parked, SandboxError> {
        let id = crate::random_id("vc-");
        let dir = self.o.dir.join(&id);
        let tap = tap_of(&id);
        let share = dir.join("share");
        std::fs::create_dir_all(&share).map_err(io_err(format!("creating {}", share.display())))?;
        let cfg = SandboxConfig {
            id: id.clone(),
            dir: dir.clone(),
            vcpu: self.o.vcpu,
            memory_mb: self.o.memory_mb,
            nic: Some(Nic { host_if: tap.clone(), mac: "02:00:00:00:00:01".into(), bridge: String::new(), mtu: 1500 }),
        };
        // With templates, the cache's VMs are restored too: ~50 ms of work each instead of a boot, and they share
        // the template's RAM while they wait. The tap stays unplugged until a start takes the VM.
        let started = d.prepare_host(&cfg, &share, false).and_then(|_| d.start_guest(&cfg, Boot::Park));
        let (pid, start, restored) = started.inspect_err(|_| remove_from_host(&dir, Some(&tap)))?;
        log::debug!("VM cache: {id} (QEMU {pid}) boots");
        Ok(Parked { dir, pid, start, tap, restored })
    }

    /// Hands a cached VM to the sandbox `cfg` when it has the cache's shape: its directory becomes `cfg.dir`, its
    /// tap `cfg.nic`'s, plugged. Returns its QEMU's pid and start time, and the name the VM had in the cache
    /// (QEMU's `-name hyper-NAME` stays). None: the cache had none that fits (or failed to hand one over).
    pub fn take(&self, cfg: &SandboxConfig) -> Option<Taken> {
        let nic = cfg.nic.as_ref()?;
        if self.o.size == 0 || cfg.vcpu != self.o.vcpu || cfg.memory_mb != self.o.memory_mb {
            return None;
        }
        self.prune();
        let got = self.parked.lock().unwrap_or_else(|e| e.into_inner()).pop();
        // Also when the cache was empty: a refill that failed (a QEMU that would not start) is tried again.
        self.refill(REFILL_DELAY);
        let got = got?;
        match hand_over(&got, cfg, nic) {
            Ok(()) => {
                log::debug!("sandbox {}: took cached VM {} (QEMU {})", cfg.id, got.dir.display(), got.pid);
                let name = got.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                Some(Taken { pid: got.pid, start: got.start, name, restored: got.restored })
            }
            Err(e) => {
                log::warn!("sandbox {}: handing over cached VM {} failed, booting instead: {e}", cfg.id, got.dir.display());
                // The tap under either name (the rename may have happened); the directory moves last, so a failure
                // leaves it where it was.
                discard(&got);
                let _ = crate::unplug(&nic.host_if);
                None
            }
        }
    }

    /// Forgets (and cleans up after) the cached VMs whose QEMU died; whether there were any.
    fn prune(&self) -> bool {
        let dead: Vec<Parked> = {
            let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
            let (alive, dead) = std::mem::take(&mut *parked).into_iter().partition(|p| process_alive(p.pid, p.start));
            *parked = alive;
            dead
        };
        for p in &dead {
            log::warn!("VM cache: QEMU {} of {} died while waiting (see {})", p.pid, p.dir.display(), p.dir.join("qemu.log").display());
            discard(p);
        }
        !dead.is_empty()
    }

    /// The cache for `hyper info` (a VM found dead is replaced).
    pub fn describe(&self) -> String {
        if self.o.size == 0 {
            return "off (every VM boots)".into();
        }
        if self.prune() {
            self.refill(REFILL_DELAY);
        }
        let parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        let ready = parked.iter().filter(|p| p.restored || is_parked(&p.dir)).count();
        format!(
            "{} of {} VMs ({} vCPU, {} MiB): {ready} waiting for a pod, {} booting, in {}",
            parked.len(),
            self.o.size,
            self.o.vcpu,
            self.o.memory_mb,
            parked.len() - ready + self.booting.load(Ordering::SeqCst),
            self.o.dir.display()
        )
    }

    /// Kills every cached VM (the daemon stops: nobody would take them).
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // A VM being started now is killed by the refill that starts it, once it sees the cache closed.
        let _g = self.filling.lock().unwrap_or_else(|e| e.into_inner());
        let all: Vec<Parked> = std::mem::take(&mut *self.parked.lock().unwrap_or_else(|e| e.into_inner()));
        for p in &all {
            discard(p);
        }
    }
}

/// Whether a cached VM's agent got to its port (it says so on the console, as a template's does).
fn is_parked(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("console.log")).is_ok_and(|c| c.contains(agent_proto::VM_PARKED_MARK))
}

/// Where a cached VM's directory says what its tap is being renamed to: a daemon killed between the tap's
/// rename and the directory's finds the tap by it (`clean`).
const HANDED_TAP: &str = "handed-tap";

fn hand_over(p: &Parked, cfg: &SandboxConfig, nic: &Nic) -> Result<(), SandboxError> {
    let index = netlink::link_index(&p.tap).ok_or_else(|| err(format!("tap {} vanished", p.tap)))?;
    std::fs::write(p.dir.join(HANDED_TAP), &nic.host_if).map_err(io_err(format!("writing {}", p.dir.join(HANDED_TAP).display())))?;
    let mut nl = netlink::Netlink::open().map_err(io_err("netlink"))?;
    nl.set_name(index, &nic.host_if).map_err(io_err(format!("renaming tap {} to {}", p.tap, nic.host_if)))?;
    crate::plug(nic)?;
    if let Some(parent) = cfg.dir.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
    }
    std::fs::rename(&p.dir, &cfg.dir).map_err(io_err(format!("moving {} to {}", p.dir.display(), cfg.dir.display())))
}

/// Kills a cached VM and removes its tap, mounts and directory.
fn discard(p: &Parked) {
    kill_spawned(p.pid, p.start);
    remove_from_host(&p.dir, Some(&p.tap));
}

/// The tap of the cached VM `id` (`vc-` and 10 letters): `hc` and the same letters.
fn tap_of(id: &str) -> String {
    format!("hc{}", id.strip_prefix("vc-").unwrap_or(id))
}

/// Removes the cached VMs a daemon before this one left behind (killed, or still running), also those it was
/// still starting: their QEMU recorded itself as it started, their tap is named after them.
fn clean(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        let (pid, start) = crate::recorded_process(&path).unwrap_or((0, 0));
        let handed = std::fs::read_to_string(path.join(HANDED_TAP)).ok();
        discard(&Parked { dir: path.clone(), pid, start, tap: tap_of(&e.file_name().to_string_lossy()), restored: false });
        // Killed while handing the VM over: the tap may already have its sandbox's name.
        if let Some(tap) = handed.filter(|t| !t.is_empty() && t.len() < 16 && !t.contains('/')) {
            let _ = crate::unplug(&tap);
        }
        log::info!("VM cache: removed {} of an earlier daemon", path.display());
    }
}
