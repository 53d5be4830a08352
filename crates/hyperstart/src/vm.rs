//! Inside a VM: hyperstart is /init, PID 1. It prepares the guest (filesystems, the host's shared directory,
//! loopback), finds its virtio-serial port, runs the agent, and powers the VM off when told to shut down.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::agent::{Agent, Options, Transport};
use crate::sys;

use agent_proto::{GUEST_SHARE, SHARE_TAG};
const WORK_DIR: &str = "/run/hyperstart";

fn m(src: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: Option<&str>) -> Result<(), String> {
    let t = Path::new(target);
    std::fs::create_dir_all(t).map_err(|e| format!("creating {target}: {e}"))?;
    sys::mount(Some(src), t, Some(fstype), flags, data).map_err(|e| format!("mounting {fstype} on {target}: {e}"))
}

/// Moves the root from the initramfs (which cannot be pivot_root'ed away from) to a tmpfs, so that containers
/// can pivot_root into their own roots as on any host.
fn leave_initramfs() -> Result<(), String> {
    m("root", "/newroot", "tmpfs", libc::MS_NOSUID, Some("mode=0755"))?;
    for d in ["proc", "sys", "dev"] {
        let target = format!("/newroot/{d}");
        std::fs::create_dir_all(&target).map_err(|e| format!("creating {target}: {e}"))?;
        sys::mount(Some(&format!("/{d}")), Path::new(&target), None, libc::MS_MOVE, None).map_err(|e| format!("moving /{d}: {e}"))?;
    }
    std::env::set_current_dir("/newroot").map_err(|e| format!("chdir /newroot: {e}"))?;
    sys::mount(Some("."), Path::new("/"), None, libc::MS_MOVE, None).map_err(|e| format!("moving the new root: {e}"))?;
    let dot = sys::cstr(".").map_err(|e| e.to_string())?;
    // SAFETY: chroot with a valid C string.
    if unsafe { libc::chroot(dot.as_ptr()) } != 0 {
        return Err(format!("chroot: {}", std::io::Error::last_os_error()));
    }
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))
}

/// The device of the virtio-serial port named `name`, waiting up to `timeout` for it to appear.
fn find_port(name: &str, timeout: Duration) -> Result<PathBuf, String> {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(rd) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in rd.flatten() {
                let n = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if n.trim() == name {
                    return Ok(Path::new("/dev").join(e.file_name()));
                }
            }
        }
        if Instant::now() > end {
            return Err(format!("no virtio-serial port named {name}"));
        }
        // The port appears once the device and QEMU have exchanged their control messages, a moment after the
        // driver loads: a few ms under TCG, less under KVM, where a 10 ms nap would be a tenth of the boot.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// PID 1 of a VM. Returns only with an error (after which the kernel panics and QEMU exits).
pub fn boot() -> String {
    match boot_inner() {
        Ok(()) => {
            // SAFETY: sync and reboot take no pointers. QEMU runs with -no-reboot, so a reboot ends the VM.
            unsafe {
                libc::sync();
                libc::reboot(libc::RB_AUTOBOOT);
            }
            "reboot failed".into()
        }
        Err(e) => e,
    }
}

static SHARE_MOUNTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The largest 9p message: 256 KiB per read or write.
const SHARE_MSIZE: usize = 256 << 10;

/// Gives the share read-ahead. Uncached (`cache=none`), 9p reads ahead nothing: every page a container maps
/// (its program, its libraries) costs one 4 KiB round trip to the host when first touched, ~0.3-0.5 ms under
/// TCG, and a new container's files are never in the guest's cache. One message's worth per miss: the start
/// of a 2-container busybox pod in `replace` went from ~85 to ~65 ms.
/// The share is the guest's only 9p mount, so its backing device is the only `9p-N` one.
fn share_read_ahead() {
    let Ok(dir) = std::fs::read_dir("/sys/class/bdi") else { return };
    for e in dir.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("9p-")) {
        if let Err(err) = std::fs::write(e.path().join("read_ahead_kb"), (SHARE_MSIZE >> 10).to_string()) {
            eprintln!("hyperstart: setting the share's read-ahead: {err}");
        }
    }
}

/// What a VM's agent does on each `hello`: mounts the host's share the first time, sets the clock from the
/// host's when they differ by more than a second, and reseeds the kernel's random generator.
pub fn hello(time_ns: Option<u64>, entropy: &[u8]) -> Result<(), String> {
    use std::sync::atomic::Ordering;
    if !SHARE_MOUNTED.load(Ordering::Relaxed) {
        m(SHARE_TAG, GUEST_SHARE, "9p", libc::MS_NODEV, Some(&format!("trans=virtio,version=9p2000.L,msize={SHARE_MSIZE}")))?;
        SHARE_MOUNTED.store(true, Ordering::Relaxed);
        share_read_ahead();
        trace("share mounted");
    }
    if let Some(t) = time_ns {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        if now.abs_diff(t) > 1_000_000_000 {
            sys::set_realtime(t).map_err(|e| format!("setting the clock: {e}"))?;
        }
    }
    if !entropy.is_empty() {
        sys::add_entropy(entropy).map_err(|e| format!("reseeding the random generator: {e}"))?;
    }
    Ok(())
}

static DEBUG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// With `hyper.debug` on the kernel command line, prints an event (boot stages, requests) to the console with
/// the guest's uptime.
pub fn trace(what: &str) {
    if DEBUG.load(std::sync::atomic::Ordering::Relaxed) {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes into the timespec we pass.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        eprintln!("hyperstart: [{}.{:06}] {what}", ts.tv_sec, ts.tv_nsec / 1000);
    }
}

fn boot_inner() -> Result<(), String> {
    m("proc", "/proc", "proc", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, None)?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let flag = |f: &str| cmdline.split_whitespace().any(|w| w == f);
    DEBUG.store(flag("hyper.debug"), std::sync::atomic::Ordering::Relaxed);
    trace("init");

    m("sysfs", "/sys", "sysfs", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, None)?;
    m("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, Some("mode=0755"))?;
    if flag("hyper.probe") {
        // The accelerator probe only wants to know the guest got this far.
        use std::io::Write;
        let _ = std::fs::OpenOptions::new().write(true).open("/dev/console").and_then(|mut c| c.write_all(b"HYPER-PROBE-OK\n"));
        return Ok(());
    }
    leave_initramfs()?;
    trace("left the initramfs");

    m("tmpfs", "/run", "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, Some("mode=0755"))?;
    m("tmpfs", "/tmp", "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, Some("mode=1777"))?;
    let _ = std::fs::write("/proc/sys/kernel/printk", "1");
    // Free page reporting hands pages the guest does not use back to the host. Linux 6.1 forces the reporting
    // order to pageblock_order (4 MiB) when the balloon registers, and only reports while 32 blocks of that
    // order sit above the low watermark: 128 MiB free, more than a small pod VM ever has. 128 KiB blocks
    // need 4 MiB free, so QEMU gets back what boot and freed page cache leave behind.
    let _ = std::fs::write("/sys/module/page_reporting/parameters/page_reporting_order", "5");

    sys::link_up("lo").map_err(|e| format!("bringing lo up: {e}"))?;
    trace("lo up");
    let port = find_port(agent_proto::VIRTIO_PORT_NAME, Duration::from_secs(10))?;
    trace(&format!("port {}", port.display()));

    std::fs::create_dir_all(WORK_DIR).map_err(|e| format!("creating {WORK_DIR}: {e}"))?;
    // The host's share is mounted when the host first says hello, not now: QEMU cannot save a VM whose 9p
    // share is mounted, and a template is saved right here. This line tells the host the guest got here.
    eprintln!("{}", agent_proto::VM_PARKED_MARK);
    let mut a = Agent::new(Options { transport: Transport::Port(port), work: PathBuf::from(WORK_DIR) })
        .map_err(|e| format!("starting the agent: {e}"))?;
    a.run().map_err(|e| format!("agent loop: {e}"))
}
