//! VM templates (`hyperd --vm-templates`): a guest booted once, then saved the moment its agent waits for a host
//! (before it mounts anything from the host); new VMs of the same shape restore it instead of booting.
//!
//! ```text
//! <template dir>/<key>/mem     the guest's RAM at the save (restored VMs map it private and read-only)
//! <template dir>/<key>/state   QEMU's device state (`x-ignore-shared`: the RAM stays in `mem`)
//! ```
//!
//! The key covers everything the saved guest depends on: QEMU, kernel, initrd (path, size, mtime), the kernel
//! command line, machine, accelerator, vCPUs, memory and whether there is a NIC. Each restored guest gets the
//! host's clock and fresh randomness from the daemon's `hello`, and its own MAC from the pod setup.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Boot, QemuDriver, kill_spawned, qmp};
use crate::{Nic, SandboxConfig, SandboxError, process_alive};

/// How long a template's boot may take, and its save.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const SAVE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a restore may take until the guest runs.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Templates {
    dir: PathBuf,
    /// One template of a key is made (or discarded) at a time; starts of other shapes go on meanwhile.
    making: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// Removes the half-made templates in `dir` of a daemon that died while making them, and ends the QEMU that was
/// making one. Whether this daemon uses templates or not: nothing else would end that QEMU.
pub fn remove_half_made(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().contains(".tmp-") {
            if let Some((pid, start)) = crate::recorded_process(&e.path()) {
                kill_spawned(pid, start);
                log::info!("VM templates: killed QEMU {pid}, which was making a template for an earlier daemon");
            }
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A saved guest.
pub struct Template {
    pub dir: PathBuf,
    pub mem: PathBuf,
    pub state: PathBuf,
}

fn err(msg: impl Into<String>) -> SandboxError {
    SandboxError::Setup(msg.into())
}

impl Templates {
    pub fn new(dir: PathBuf) -> Templates {
        Templates { dir, making: Mutex::new(HashMap::new()) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock_for(&self, key: &str) -> Arc<Mutex<()>> {
        self.making.lock().unwrap_or_else(|e| e.into_inner()).entry(key.to_string()).or_default().clone()
    }

    /// The template for sandboxes like `cfg`, made now if there is none yet.
    pub fn get(&self, d: &QemuDriver, cfg: &SandboxConfig) -> Result<Template, SandboxError> {
        let key = key(d, cfg);
        let dir = self.dir.join(&key);
        let t = Template { mem: dir.join("mem"), state: dir.join("state"), dir };
        let made = || t.state.is_file() && t.mem.is_file();
        if made() {
            return Ok(t);
        }
        let lock = self.lock_for(&key);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        if made() {
            return Ok(t);
        }
        let started = Instant::now();
        let tmp = self.dir.join(format!("{key}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let made = make(d, cfg, &tmp);
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let _ = std::fs::remove_dir_all(&t.dir);
        std::fs::rename(&tmp, &t.dir).map_err(|e| err(format!("keeping the template: {e}")))?;
        log::info!("VM template {} made in {} ms", t.dir.display(), started.elapsed().as_millis());
        Ok(t)
    }

    /// Forgets a template that failed to restore; the next start makes it again.
    pub fn discard(&self, t: &Template) {
        let key = t.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let lock = self.lock_for(&key);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        let _ = std::fs::remove_dir_all(&t.dir);
    }

    /// Removes the templates made for another QEMU, kernel, initrd or command line than this driver's: nothing
    /// would ever restore them, and each holds a guest's RAM on disk.
    pub fn remove_stale(&self, d: &QemuDriver) {
        let suffix = format!("-{}", key_hash(d));
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.contains(".tmp-") && !name.ends_with(&suffix) && e.path().join("state").exists() {
                match std::fs::remove_dir_all(e.path()) {
                    Ok(()) => log::info!("VM templates: removed {name}, made for another QEMU, kernel, initrd or command line"),
                    Err(err) => log::warn!("VM templates: removing {}: {err}", e.path().display()),
                }
            }
        }
    }
}

/// What every template of this driver depends on, as a hash.
fn key_hash(d: &QemuDriver) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in [&d.qemu, &d.kernel, &d.initrd] {
        p.hash(&mut h);
        if let Ok(m) = std::fs::metadata(p) {
            m.len().hash(&mut h);
            m.modified().ok().hash(&mut h);
        }
    }
    (&d.cmdline, &d.machine, d.accel.name()).hash(&mut h);
    format!("{:016x}", h.finish())
}

/// What a template depends on, as a file name.
fn key(d: &QemuDriver, cfg: &SandboxConfig) -> String {
    format!("{}c-{}m-{}-{}", cfg.vcpu, cfg.memory_mb, if cfg.nic.is_some() { "net" } else { "nonet" }, key_hash(d))
}

/// Boots a guest shaped like `cfg` in `dir` and saves it once its agent waits for a host.
fn make(d: &QemuDriver, cfg: &SandboxConfig, dir: &Path) -> Result<(), SandboxError> {
    // Longer than a sandbox's: a --root that fits a sandbox's socket may not fit this one.
    crate::agent_socket(dir)?;
    std::fs::create_dir_all(dir.join("share")).map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
    let tcfg = SandboxConfig {
        id: format!("template-{}", dir.file_name().and_then(|n| n.to_str()).unwrap_or("")),
        dir: dir.to_path_buf(),
        vcpu: cfg.vcpu,
        memory_mb: cfg.memory_mb,
        nic: cfg.nic.as_ref().map(|n| Nic { host_if: String::new(), mac: "02:00:00:00:00:01".into(), bridge: String::new(), mtu: n.mtu }),
    };
    let mem = dir.join("mem");
    let (pid, start) = d.spawn(&tcfg, Boot::MakeTemplate { mem: &mem })?;
    let saved = save(dir, pid, start);
    kill_spawned(pid, start);
    saved?;
    for f in ["qmp.sock", "agent.sock", "process"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let _ = std::fs::remove_dir(dir.join("share"));
    Ok(())
}

/// Waits for the agent's mark on the console, then stops the guest and saves its device state.
fn save(dir: &Path, pid: i32, start: u64) -> Result<(), SandboxError> {
    let console = dir.join("console.log");
    let end = Instant::now() + BOOT_TIMEOUT;
    loop {
        if std::fs::read_to_string(&console).is_ok_and(|c| c.contains(agent_proto::VM_PARKED_MARK)) {
            break;
        }
        if !process_alive(pid, start) {
            // (The directory goes with the failure: quote the logs.)
            return Err(err(format!("the template's QEMU exited during its boot: {}", super::logs_tail(dir))));
        }
        if Instant::now() > end {
            return Err(err("the template's guest did not get to its agent in time"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut q = qmp::Qmp::connect_while(&dir.join("qmp.sock"), SAVE_TIMEOUT, || process_alive(pid, start))?;
    q.execute("stop", None)?;
    ignore_shared(&mut q)?;
    q.execute("migrate", Some(json!({"uri": format!("exec:cat > {}", shell_quote(&dir.join("state")))})))?;
    let end = Instant::now() + SAVE_TIMEOUT;
    loop {
        let r = q.execute("query-migrate", None)?;
        match r["status"].as_str() {
            Some("completed") => break,
            Some("failed") | Some("cancelled") => {
                return Err(err(format!("saving the template failed: {}", r["error-desc"].as_str().unwrap_or("no reason given"))));
            }
            _ if Instant::now() > end => return Err(err("saving the template took too long")),
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    let _ = q.execute("quit", None);
    Ok(())
}

/// Loads a template's state into a QEMU started with `-incoming defer` and lets the guest run.
pub fn resume(qmp_sock: &Path, state: &Path, pid: i32, start: u64) -> Result<(), SandboxError> {
    let mut q = qmp::Qmp::connect_while(qmp_sock, RESTORE_TIMEOUT, || process_alive(pid, start))?;
    ignore_shared(&mut q)?;
    q.execute("migrate-incoming", Some(json!({"uri": format!("exec:cat {}", shell_quote(state))})))?;
    let end = Instant::now() + RESTORE_TIMEOUT;
    loop {
        if !process_alive(pid, start) {
            return Err(err("QEMU exited while restoring the template"));
        }
        let r = q.execute("query-status", None)?;
        match r["status"].as_str() {
            Some("running") => return Ok(()),
            Some("paused") | Some("postmigrate") | Some("prelaunch") => {
                q.execute("cont", None)?;
                return Ok(());
            }
            Some("inmigrate") if Instant::now() < end => std::thread::sleep(Duration::from_millis(2)),
            other => return Err(err(format!("the restored VM is {}", other.unwrap_or("in an unknown state")))),
        }
    }
}

/// The RAM stays out of the migration stream (it is the template's file), on both sides.
fn ignore_shared(q: &mut qmp::Qmp) -> Result<(), SandboxError> {
    q.execute("migrate-set-capabilities", Some(json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}))).map(|_| ())
}

/// `p` as one word for /bin/sh (QEMU runs `exec:` URIs through it).
fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}
