//! The `qemu` driver: one QEMU process per running pod; the agent is the VM's /init.
//!
//! ```text
//! <sandbox dir>/qmp.sock      QMP control socket
//! <sandbox dir>/agent.sock    the agent's virtio-serial port (QEMU listens, hyperd connects)
//! <sandbox dir>/console.log   the guest's serial console
//! <sandbox dir>/qemu.log      QEMU's own output
//! <sandbox dir>/share/        exported to the guest over 9p (tag hyper-share, at /run/hyper/share, uncached;
//!                             each overlay in it is a device of its own: QEMU remaps inode numbers):
//!     <container>/rootfs        the container's overlay, mounted here on the host
//!     vol-<pod>-<name>          volumes, bind-mounted here
//! ```

pub mod accel;
mod cache;
pub mod console;
mod qmp;
mod template;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_proto::Rootfs;

pub use accel::{Accel, AccelRequest};
pub use cache::CacheOptions;

use crate::guestdir::GuestDir;
use crate::{ContainerStorage, Driver, SandboxConfig, SandboxError, SandboxState, io_err, now_rfc3339, process_alive, sys};

use agent_proto::GUEST_SHARE;

/// QEMU's machine: `microvm`, a PC without PCI, firmware or legacy devices beyond a serial port, interrupt
/// controllers and a clock. Its virtio devices sit on virtio-mmio transports that its ACPI tables list (as
/// they list the vCPUs). Under TCG it boots the guest to /init ~150 ms sooner than `pc`, and probing the
/// pod's four virtio devices costs ~30 ms instead of ~150 ms of PCI configuration cycles.
pub const MACHINE: &str = "microvm";

/// The mount points every container gets (its /proc, /sys and /dev; the pod's /etc files), which the driver
/// makes in a container's root before the guest sees it.
const MOUNT_POINT_DIRS: [&str; 3] = ["proc", "sys", "dev"];
const MOUNT_POINT_FILES: [(&str, &str); 3] = [("etc", "hosts"), ("etc", "hostname"), ("etc", "resolv.conf")];

/// The guest kernel's command line (`pci=off`: the machine has no PCI bus to scan).
pub const KERNEL_CMDLINE: &str = "console=ttyS0 panic=-1 reboot=t quiet loglevel=3 8250.nr_uarts=1 no_timer_check pci=off";

#[derive(Debug)]
pub struct QemuDriver {
    qemu: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    accel: Accel,
    accel_reason: String,
    /// QEMU's -machine type.
    machine: String,
    cmdline: String,
    tb_size_mib: u32,
    /// The kernel's version string, read once.
    kernel_version: Option<String>,
    /// VM templates, when enabled.
    templates: Option<template::Templates>,
    /// VMs booted ahead of time.
    cache: Option<cache::VmCache>,
    /// Keeps the VMs' console logs short.
    console: Arc<console::Trimmer>,
}

/// How a QEMU process starts its guest.
#[derive(Debug, Clone, Copy)]
enum Boot<'a> {
    /// Boots the kernel.
    Cold,
    /// Boots the kernel for the VM cache: the agent says on the console when it waits for a host.
    Park,
    /// Boots the kernel to make a template: its RAM is the file `mem`, written through; no host network.
    MakeTemplate { mem: &'a Path },
    /// Restores the template whose RAM is `mem` (mapped private: the file never changes).
    Restore { mem: &'a Path },
}

#[derive(Debug, Clone)]
pub struct QemuOptions {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub accel: AccelRequest,
    /// Appended to the guest kernel's command line (`hyper.debug` traces the agent's boot and requests).
    pub kernel_append: String,
    /// TCG's translation cache per VM (MiB); ignored under KVM.
    pub tcg_tb_size_mib: u32,
    /// Where VM templates are kept (half-made ones an earlier daemon left are removed, used or not).
    pub template_dir: PathBuf,
    /// Whether VMs start from templates; otherwise every VM boots.
    pub vm_templates: bool,
    /// The VM cache; None: no cache, and none of an earlier daemon is looked for.
    pub vm_cache: Option<CacheOptions>,
}

/// The translation cache of each emulated VM. QEMU's `info jit`: booting and starting a 2-container busybox
/// pod translate ~34 MB of code, and a `replace` after it ~3 MB more. With 32 MiB the cache filled and was
/// flushed near the end of the start, so the start and, above all, the first `replace` after it translated
/// again what the flush threw away: alternating runs, `run -d` 1114 vs 1019 ms and the first `replace` 267 vs
/// 121 ms against 64 MiB, which 48 MiB matched. Only what is used becomes resident, so an idle pod costs about
/// the same (~34 MB); a VM that runs much varied code keeps up to the whole cache. 16 MiB: 229 ms replaces.
pub const DEFAULT_TCG_TB_SIZE_MIB: u32 = 48;

/// A kernel's version string: from a bzImage's setup header, or from the banner of an uncompressed ELF
/// vmlinux ("Linux version 6.1.158 (builder) ... #1 ..." gives "6.1.158 (builder) ... #1 ...").
pub fn kernel_version(kernel: &Path) -> Option<String> {
    let b = std::fs::read(kernel).ok()?;
    if b.len() >= 0x210 && &b[0x202..0x206] == b"HdrS" {
        let off = u16::from_le_bytes([b[0x20e], b[0x20f]]) as usize + 0x200;
        let s = b.get(off..off + 256)?;
        let end = s.iter().position(|&c| c == 0)?;
        return Some(String::from_utf8_lossy(&s[..end]).to_string());
    }
    if b.starts_with(b"\x7fELF") {
        const BANNER: &[u8] = b"Linux version ";
        let at = b.windows(BANNER.len()).position(|w| w == BANNER)? + BANNER.len();
        let s = b.get(at..(at + 256).min(b.len()))?;
        let end = s.iter().position(|&c| c == 0 || c == b'\n')?;
        return Some(String::from_utf8_lossy(&s[..end]).to_string());
    }
    None
}

impl QemuDriver {
    /// Checks the kernel, initrd and QEMU, and picks the accelerator (probing KVM when it has to).
    pub fn new(o: QemuOptions) -> Result<QemuDriver, SandboxError> {
        for (what, p) in [("guest kernel", &o.kernel), ("initrd", &o.initrd), ("QEMU", &o.qemu)] {
            if !p.is_file() {
                return Err(SandboxError::Setup(format!("{what} {} does not exist (run scripts/setup.sh and scripts/build.sh)", p.display())));
            }
        }
        let (accel, accel_reason) = accel::choose(o.accel, &o.qemu, &o.kernel, &o.initrd);
        log::info!("qemu driver: accelerator {}: {accel_reason}", accel.name());
        let mut cmdline = KERNEL_CMDLINE.to_string();
        if accel == Accel::Tcg {
            // microvm has no timer to calibrate the TSC against; under TCG the guest's TSC counts at the host's.
            cmdline.push_str(&format!(" tsc_early_khz={}", accel::host_tsc_khz()));
        }
        let cmdline = format!("{cmdline} {}", o.kernel_append).trim().to_string();
        let kernel_version = kernel_version(&o.kernel);
        template::remove_half_made(&o.template_dir);
        let templates = o.vm_templates.then(|| template::Templates::new(o.template_dir));
        let cache = o.vm_cache.map(cache::VmCache::new);
        Ok(QemuDriver {
            qemu: o.qemu,
            kernel: o.kernel,
            initrd: o.initrd,
            accel,
            accel_reason,
            machine: MACHINE.into(),
            cmdline,
            tb_size_mib: o.tcg_tb_size_mib,
            kernel_version,
            templates,
            cache,
            console: console::Trimmer::start(),
        })
    }

    /// The driver, shared; the VM cache (if any) starts filling.
    pub fn shared(self) -> Arc<QemuDriver> {
        if let Some(t) = &self.templates {
            t.remove_stale(&self);
        }
        let d = Arc::new(self);
        if let Some(c) = &d.cache {
            c.start(&d);
        }
        d
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// Makes the share a private mount and creates the tap (`plug`: into its bridge, and up).
    fn prepare_host(&self, cfg: &SandboxConfig, share: &Path, plug: bool) -> Result<(), SandboxError> {
        // The share directory is a private mount of its own: what the driver mounts in it goes nowhere else.
        // nodev and nosuid: the guest can make device nodes and setuid files in the share (9p passthrough makes
        // them real), which must mean nothing on the host, QEMU's opens included.
        sys::mount(&share.display().to_string(), share, None, libc::MS_BIND, None)
            .and_then(|_| sys::mount(&share.display().to_string(), share, None, GUEST_WRITABLE_REMOUNT, None))
            .and_then(|_| sys::propagation(share, libc::MS_PRIVATE))
            .map_err(io_err(format!("making {} a private mount", share.display())))?;
        if let Some(nic) = &cfg.nic {
            netlink::create_tap(&nic.host_if).map_err(io_err(format!("creating tap {}", nic.host_if)))?;
            if plug {
                crate::plug(nic)?;
            }
        }
        Ok(())
    }

    /// Starts QEMU: restoring a template when there is one (booting, as `boot` says, when the restore fails);
    /// returns its pid, start time and whether it was restored.
    fn start_guest(&self, cfg: &SandboxConfig, boot: Boot) -> Result<(i32, u64, bool), SandboxError> {
        self.console.watch(&cfg.dir);
        if let Some(t) = &self.templates {
            match t.get(self, cfg) {
                Ok(tpl) => match self.restore(cfg, &tpl) {
                    Ok((pid, start)) => return Ok((pid, start, true)),
                    Err(e) => {
                        log::warn!("sandbox {}: restoring template {} failed, booting instead: {e}", cfg.id, tpl.dir.display());
                        t.discard(&tpl);
                    }
                },
                Err(e) => log::warn!("sandbox {}: no VM template, booting: {e}", cfg.id),
            }
        }
        let (pid, start) = self.spawn(cfg, boot)?;
        Ok((pid, start, false))
    }

    /// Starts QEMU restoring template `tpl`, and waits until the guest runs again.
    /// On failure QEMU is gone, and so are its sockets' names: the boot that follows in the same directory binds
    /// its own, and until it does a connection must not reach the failed QEMU's. Its main thread can already be a
    /// zombie while another thread still holds the listening socket open: a connection then succeeds (queued,
    /// never accepted) and is reset when that thread ends (a `run -d` failed so in CI, once).
    fn restore(&self, cfg: &SandboxConfig, tpl: &template::Template) -> Result<(i32, u64), SandboxError> {
        let (pid, start) = self.spawn(cfg, Boot::Restore { mem: &tpl.mem })?;
        template::resume(&cfg.dir.join("qmp.sock"), &tpl.state, pid, start).inspect_err(|_| {
            kill_spawned(pid, start);
            for f in ["agent.sock", "qmp.sock"] {
                let _ = std::fs::remove_file(cfg.dir.join(f));
            }
        })?;
        Ok((pid, start))
    }

    /// Starts QEMU for the sandbox (or template) in `cfg.dir`.
    fn spawn(&self, cfg: &SandboxConfig, boot: Boot) -> Result<(i32, u64), SandboxError> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(cfg.dir.join("qemu.log")).map_err(io_err("opening qemu.log"))?;
        let mut cmd = Command::new(&self.qemu);
        cmd.args(self.args(cfg, boot)).stdin(Stdio::null()).stdout(log.try_clone().map_err(io_err("dup log"))?).stderr(log);
        crate::record_on_start(&mut cmd, cfg)?;
        let no_huge_pages = self.accel == Accel::Tcg;
        // SAFETY: setsid and prctl in the forked child, both async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                if no_huge_pages {
                    // QEMU asks for transparent huge pages for the guest's RAM and its translation cache. A
                    // guest touches its memory here and there, and each 4 KiB it touches can then cost the host
                    // 2 MiB: 4-6 MB more resident per idle pod (alternating runs, PSS after 10 replaces: 124.3
                    // vs 118.8 MB, 86.9 vs 83.2 MB restored from a template), for no speed under TCG (run -d
                    // 944 vs 919 ms, replace 108 vs 100 ms without). Under KVM huge pages speed the guest up.
                    // Kept across exec.
                    libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(io_err(format!("starting {}", self.qemu.display())))?;
        crate::adopt(child, cfg)
    }

    /// QEMU's command line for a sandbox.
    fn args(&self, cfg: &SandboxConfig, boot: Boot) -> Vec<String> {
        let d = cfg.dir.display();
        let mem = match boot {
            Boot::Cold | Boot::Park => None,
            Boot::MakeTemplate { mem } => Some((mem, "share=on")),
            Boot::Restore { mem } => Some((mem, "share=off")),
        };
        let mut a: Vec<String> = vec![
            "-name".into(),
            format!("hyper-{}", cfg.id),
            "-machine".into(),
            match mem {
                None => self.machine.clone(),
                Some(_) => format!("{},memory-backend=mem", self.machine),
            },
            "-accel".into(),
            match self.accel {
                Accel::Tcg => format!("tcg,tb-size={}", self.tb_size_mib),
                Accel::Kvm => "kvm".into(),
            },
        ];
        if self.accel == Accel::Kvm {
            a.extend(["-cpu".into(), "host".into()]);
        }
        a.extend([
            "-smp".into(),
            cfg.vcpu.to_string(),
            "-m".into(),
            format!("{}M", cfg.memory_mb),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            "-kernel".into(),
            self.kernel.display().to_string(),
            "-initrd".into(),
            self.initrd.display().to_string(),
            "-append".into(),
            match boot {
                Boot::Cold => self.cmdline.clone(),
                Boot::Park | Boot::MakeTemplate { .. } | Boot::Restore { .. } => format!("{} {}", self.cmdline, agent_proto::VM_TEMPLATE_FLAG),
            },
            // Appended, so that the console's trimmer can cut the file under QEMU (console.rs).
            "-chardev".into(),
            format!("file,id=serial0,path={d}/{},append=on", console::FILE),
            "-serial".into(),
            "chardev:serial0".into(),
            "-qmp".into(),
            format!("unix:{d}/qmp.sock,server=on,wait=off"),
            "-device".into(),
            "virtio-serial-device,id=vser0".into(),
            "-chardev".into(),
            format!("socket,id=agent,path={d}/agent.sock,server=on,wait=off"),
            "-device".into(),
            format!("virtserialport,bus=vser0.0,chardev=agent,name={}", agent_proto::VIRTIO_PORT_NAME),
            "-fsdev".into(),
            format!("local,id=share,path={d}/share,security_model=passthrough,multidevs=remap"),
            "-device".into(),
            format!("virtio-9p-device,fsdev=share,mount_tag={}", agent_proto::SHARE_TAG),
        ]);
        match mem {
            None => a.extend(["-device".into(), "virtio-balloon-device,free-page-reporting=on".into()]),
            // No balloon with templates: QEMU 7.2 discards a reported page by punching a hole in the RAM's
            // file, even in a private mapping (the template's), and the next restore would read zeros there.
            Some((path, how)) => a.extend([
                "-object".into(),
                format!("memory-backend-file,id=mem,size={}M,mem-path={},{how}", cfg.memory_mb, path.display()),
            ]),
        }
        if let Boot::Restore { .. } = boot {
            a.extend(["-incoming".into(), "defer".into()]);
        }
        if let Some(nic) = &cfg.nic {
            let netdev = match boot {
                // A template never configures its network: a hub port that leads nowhere stands in.
                Boot::MakeTemplate { .. } => "hubport,id=net0,hubid=0".to_string(),
                _ => format!("tap,id=net0,ifname={},script=no,downscript=no", nic.host_if),
            };
            a.extend(["-netdev".into(), netdev, "-device".into(), format!("virtio-net-device,netdev=net0,mac={}", nic.mac)]);
        }
        a
    }

    fn share(s: &SandboxState) -> PathBuf {
        s.dir.join("share")
    }

    /// The share, whose content the guest controls.
    fn guest_share(s: &SandboxState) -> Result<GuestDir, SandboxError> {
        let share = Self::share(s);
        GuestDir::open(&share).map_err(io_err(format!("opening {}", share.display())))
    }
}

impl Driver for QemuDriver {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn info(&self) -> Vec<(String, String)> {
        vec![
            ("Kernel".into(), format!("{} ({})", self.kernel.display(), self.kernel_version.as_deref().unwrap_or("unknown version"))),
            ("Initrd".into(), self.initrd.display().to_string()),
            ("QEMU".into(), format!("{} (-machine {})", self.qemu.display(), self.machine)),
            ("Accelerator".into(), self.accel.name().into()),
            ("Accelerator reason".into(), self.accel_reason.clone()),
            ("VM templates".into(), self.templates.as_ref().map_or("off (every VM boots)".into(), |t| format!("on, in {}", t.dir().display()))),
            ("VM cache".into(), self.cache.as_ref().map_or("off (every VM boots)".into(), |c| c.describe())),
        ]
    }

    fn start(&self, cfg: &SandboxConfig) -> Result<SandboxState, SandboxError> {
        let socket = crate::agent_socket(&cfg.dir)?;
        let cached = self.cache.as_ref().and_then(|c| c.take(cfg));
        let mut details = BTreeMap::new();
        let (pid, start_time, how) = match cached {
            Some(t) => {
                details.insert("cached_as".into(), t.name);
                details.insert("cached_from".into(), if t.restored { "template" } else { "boot" }.into());
                (t.pid, t.start, "cache")
            }
            None => {
                let share = cfg.dir.join("share");
                std::fs::create_dir_all(&share).map_err(io_err(format!("creating {}", share.display())))?;
                let started = self.prepare_host(cfg, &share, true).and_then(|_| self.start_guest(cfg, Boot::Cold));
                // Whatever step failed, nothing of the sandbox stays on the host.
                let (pid, start_time, restored) = started.inspect_err(|_| remove_from_host(&cfg.dir, cfg.nic.as_ref().map(|n| n.host_if.as_str())))?;
                (pid, start_time, if restored { "template" } else { "boot" })
            }
        };
        details.insert("accelerator".into(), self.accel.name().into());
        details.insert("boot".into(), how.into());
        details.insert("log".into(), cfg.dir.join("console.log").display().to_string());
        details.insert("hypervisor_log".into(), cfg.dir.join("qemu.log").display().to_string());
        details.insert("qmp".into(), cfg.dir.join("qmp.sock").display().to_string());
        details.insert("vcpu".into(), cfg.vcpu.to_string());
        details.insert("memory_mb".into(), cfg.memory_mb.to_string());
        if let Some(nic) = &cfg.nic {
            details.insert("host_if".into(), nic.host_if.clone());
        }
        Ok(SandboxState { id: cfg.id.clone(), driver: "qemu".into(), pid, start_time, boot_id: crate::boot_id(), socket, dir: cfg.dir.clone(), started: now_rfc3339(), details })
    }

    fn attach_rootfs(&self, s: &SandboxState, c: &ContainerStorage) -> Result<Rootfs, SandboxError> {
        // The host assembles the overlay (whiteouts, xattrs and all) and the guest sees the result over 9p. The
        // guest can change what the share holds: nothing in it is followed (`GuestDir`).
        let share = Self::guest_share(s)?;
        let rel = format!("{}/rootfs", c.id);
        let at = share.path().join(&rel);
        let dir = share.make_dir(&rel).map_err(io_err(format!("creating {}", at.display())))?;
        let lower: Vec<String> = c.lowers.iter().rev().map(|p| p.display().to_string()).collect();
        let data = format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), c.upper.display(), c.work.display());
        if !share.is_mounted(&rel).map_err(io_err(format!("looking at {}", at.display())))? {
            GuestDir::mount_on(&dir, "overlay", Some("overlay"), libc::MS_NODEV | libc::MS_NOSUID, Some(&data))
                .map_err(io_err(format!("mounting the overlay of {}", c.id)))?;
        }
        // Made here, while the guest sets the pod up: over 9p, each mount point the guest has to look for and
        // create costs it a few round trips and ms of emulated kernel work.
        let root = share.open_beneath(&rel, libc::O_PATH | libc::O_DIRECTORY, 0).map(crate::rootdir::RootDir::from_fd).map_err(io_err(format!("opening {}", at.display())))?;
        for f in root.make_mount_points(&MOUNT_POINT_DIRS, &MOUNT_POINT_FILES) {
            log::debug!("container {}: mount point {f} left to the agent", c.id);
        }
        Ok(Rootfs::Bind { path: format!("{GUEST_SHARE}/{}/rootfs", c.id) })
    }

    fn open_rootfs_on_host(&self, s: &SandboxState, id: &str) -> Option<std::os::fd::OwnedFd> {
        Self::guest_share(s).ok()?.open_beneath(&format!("{id}/rootfs"), libc::O_PATH | libc::O_DIRECTORY, 0).ok()
    }

    fn detach_rootfs(&self, s: &SandboxState, id: &str) -> Result<(), SandboxError> {
        let share = Self::guest_share(s)?;
        let errors = share.unmount_all(id);
        if !errors.is_empty() {
            return Err(SandboxError::Setup(errors.join("; ")));
        }
        share.remove(id).map_err(SandboxError::Setup)
    }

    fn share_dir(&self, s: &SandboxState, name: &str, host: &Path) -> Result<String, SandboxError> {
        let share = Self::guest_share(s)?;
        let rel = format!("vol-{name}");
        let at = share.path().join(&rel);
        let is_dir = std::fs::metadata(host).map_err(io_err(format!("sharing {}", host.display())))?.is_dir();
        // A file (Hyper's file volumes) is bind-mounted onto a file of its own in the share.
        let target = if is_dir { share.make_dir(&rel) } else { share.make_file(&rel) }.map_err(io_err(format!("creating {}", at.display())))?;
        if !share.is_mounted(&rel).map_err(io_err(format!("looking at {}", at.display())))? {
            GuestDir::mount_on(&target, &host.display().to_string(), None, libc::MS_BIND | libc::MS_REC, None)
                .and_then(|_| {
                    // The bind's root now (`target` is the directory it covers).
                    let top = share.open_beneath(&rel, libc::O_PATH, 0)?;
                    GuestDir::mount_on(&top, "none", None, GUEST_WRITABLE_REMOUNT, None)
                })
                .map_err(io_err(format!("sharing {}", host.display())))?;
        }
        Ok(format!("{GUEST_SHARE}/vol-{name}"))
    }

    fn unshare_dir(&self, s: &SandboxState, name: &str) -> Result<(), SandboxError> {
        let share = Self::guest_share(s)?;
        let rel = format!("vol-{name}");
        let errors = share.unmount_all(&rel);
        if !errors.is_empty() {
            return Err(SandboxError::Setup(errors.join("; ")));
        }
        share.remove(&rel).map_err(SandboxError::Setup)
    }

    fn is_alive(&self, s: &SandboxState) -> bool {
        // (A VM found again by a restarted daemon is looked at first here.)
        self.console.watch(&s.dir);
        s.process_alive()
    }

    fn shutdown(&self) {
        if let Some(c) = &self.cache {
            c.shutdown();
        }
    }

    fn destroy(&self, s: &SandboxState) -> Result<(), SandboxError> {
        let mut errors = Vec::new();
        if s.process_alive() {
            // Ask QEMU to quit; if it does not within a moment, kill it.
            let _ = qmp::Qmp::connect(&s.dir.join("qmp.sock"), Duration::from_millis(500)).and_then(|mut q| q.execute("quit", None));
            if !gone_within(s.pid, s.start_time, Duration::from_secs(3)) {
                // SAFETY: kill has no memory arguments; the pid was checked against its start time.
                unsafe { libc::kill(s.pid, libc::SIGKILL) };
                if !gone_within(s.pid, s.start_time, Duration::from_secs(5)) {
                    errors.push(format!("QEMU {} did not die", s.pid));
                }
            }
        }
        errors.extend(umount_all(&s.dir));
        crate::finish_destroy(s, errors)
    }
}

/// The last lines of a VM directory's QEMU log and console (for an error about a directory that is removed with
/// the failure).
fn logs_tail(dir: &Path) -> String {
    let parts: Vec<String> = [("qemu.log", "QEMU"), (console::FILE, "console")]
        .iter()
        .filter_map(|(file, label)| {
            let lines = crate::log_tail(&dir.join(file), 3);
            (!lines.is_empty()).then(|| format!("{label}: {}", lines.join(" | ")))
        })
        .collect();
    if parts.is_empty() { "its logs are empty".into() } else { parts.join("; ") }
}

/// Kills a QEMU this driver started a moment ago (a failed restore, a template once saved) and waits for it.
fn kill_spawned(pid: i32, start: u64) {
    if process_alive(pid, start) {
        // SAFETY: kill has no memory arguments; the pid was checked against its start time.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = gone_within(pid, start, Duration::from_secs(5));
    }
}

/// Whether process `pid` (started at `start`) is gone, waiting up to `limit`.
fn gone_within(pid: i32, start: u64, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while process_alive(pid, start) {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// The flags of what the guest can write to, on the host: its device nodes and setuid files mean nothing there.
const GUEST_WRITABLE_REMOUNT: libc::c_ulong = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NODEV | libc::MS_NOSUID;

/// Removes what a VM that failed to start (or was discarded) had on the host: its tap, its mounts, its directory.
fn remove_from_host(dir: &Path, tap: Option<&str>) {
    if let Some(tap) = tap {
        let _ = crate::unplug(tap);
    }
    umount_all(dir);
    crate::discard_dir(dir);
}

/// Unmounts everything mounted at or below a sandbox directory, deepest first; returns the failures. The mounts
/// in its share are reached only through the share (`GuestDir`): its guest may have left symlinks there.
fn umount_all(dir: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    let share = dir.join("share");
    let real_share = share.canonicalize().ok();
    if let Some(real) = &real_share {
        match GuestDir::open(real) {
            Ok(g) => errors.extend(g.unmount_all("")),
            Err(e) => errors.push(format!("opening {}: {e}", real.display())),
        }
    }
    for m in sys::mounts_under(dir) {
        if real_share.as_ref().is_some_and(|r| m.starts_with(r)) {
            errors.push(format!("{} is still mounted", m.display()));
        } else if let Err(e) = sys::umount_detach(&m) {
            errors.push(format!("unmounting {}: {e}", m.display()));
        }
    }
    errors
}
