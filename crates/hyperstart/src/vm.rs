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
    let r = boot_inner();
    dump_trace();
    match r {
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
/// Where traces go: a close-on-exec file in the initramfs, which stays reachable through this descriptor after
/// the root moves. Printing each line on the (emulated serial) console would cost ~1.5 ms under TCG and skew
/// what is measured; [`dump_trace`] prints the lot when the VM is about to go. Container-init, forked from the
/// agent, traces through the same descriptor.
static TRACE_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);
/// /proc/uptime, opened once: its second field is the time the guest's CPUs sat idle, which tells the time
/// the guest waited for the host from the time it worked.
static UPTIME_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

fn start_tracing() {
    use std::os::fd::IntoRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let trace = std::fs::OpenOptions::new().create(true).append(true).read(true).custom_flags(libc::O_CLOEXEC).open("/hyperstart.trace");
    if let Ok(f) = trace {
        TRACE_FD.store(f.into_raw_fd(), std::sync::atomic::Ordering::Relaxed);
    }
    if let Ok(f) = std::fs::File::open("/proc/uptime") {
        UPTIME_FD.store(f.into_raw_fd(), std::sync::atomic::Ordering::Relaxed);
    }
    DEBUG.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The guest's idle CPU time so far, in ms (the kernel counts it in ticks).
fn idle_ms() -> Option<u64> {
    let fd = UPTIME_FD.load(std::sync::atomic::Ordering::Relaxed);
    let mut buf = [0u8; 64];
    // SAFETY: pread into our own buffer, of at most its length.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    let text = std::str::from_utf8(buf.get(..usize::try_from(n).ok()?)?).ok()?;
    let idle: f64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((idle * 1000.0) as u64)
}

/// With `hyper.debug` on the kernel command line, records an event (boot stages, requests, container set-up
/// steps) with the guest's uptime and idle time.
pub fn trace(what: &str) {
    // The file waits in the guest's RAM to be printed, ~0.2 ms a character: tracing pauses at 64 KiB (a pod's
    // start is ~3 KiB) until the next print.
    let fd = TRACE_FD.load(std::sync::atomic::Ordering::Relaxed);
    // SAFETY: lseek on our own descriptor (or -1: an error, which stops nothing).
    if DEBUG.load(std::sync::atomic::Ordering::Relaxed) && unsafe { libc::lseek(fd, 0, libc::SEEK_END) } < 64 << 10 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes into the timespec we pass.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        let idle = idle_ms().map_or("?".to_string(), |i| i.to_string());
        let line = format!("hyperstart: [{}.{:06}] (idle {idle} ms) {what}\n", ts.tv_sec, ts.tv_nsec / 1000);
        // SAFETY: write from our own buffer to the descriptor start_tracing opened (or -1: EBADF).
        unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
    }
}

/// Prints the traces recorded so far on the console, and forgets them. The emulated UART takes ~0.2 ms a
/// character under TCG: a pod's traces hold up its reset or the VM's power-off by about half a second.
pub fn dump_trace() {
    let fd = TRACE_FD.load(std::sync::atomic::Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: pread into our own buffer, of at most its length.
        let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), out.len() as libc::off_t) };
        match usize::try_from(n) {
            Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    use std::io::Write;
    let _ = std::io::stderr().write_all(&out);
    // SAFETY: ftruncate of our own descriptor; appends go on at the new end.
    unsafe { libc::ftruncate(fd, 0) };
}

fn boot_inner() -> Result<(), String> {
    m("proc", "/proc", "proc", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, None)?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let flag = |f: &str| cmdline.split_whitespace().any(|w| w == f);
    if flag("hyper.debug") {
        start_tracing();
    }
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
    // share is mounted, and a template is saved right here. This line tells the host the guest got here
    // (only a template's guest: each character on the emulated UART costs ~0.2 ms under TCG).
    if flag(agent_proto::VM_TEMPLATE_FLAG) {
        eprintln!("{}", agent_proto::VM_PARKED_MARK);
    }
    let mut a = Agent::new(Options { transport: Transport::Port(port), work: PathBuf::from(WORK_DIR) })
        .map_err(|e| format!("starting the agent: {e}"))?;
    a.run().map_err(|e| format!("agent loop: {e}"))
}
