//! Choosing the accelerator: KVM only where it can really run our guest, TCG otherwise, and why.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// What `--accel` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelRequest {
    Auto,
    Kvm,
    Tcg,
}

impl std::str::FromStr for AccelRequest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(AccelRequest::Auto),
            "kvm" => Ok(AccelRequest::Kvm),
            "tcg" => Ok(AccelRequest::Tcg),
            _ => Err(format!("unknown accelerator {s:?} (auto, kvm or tcg)")),
        }
    }
}

/// Marker the agent prints on the console when booted with `hyper.probe` on its command line.
pub const PROBE_MARKER: &str = "HYPER-PROBE-OK";

/// Picks the accelerator; the string says why (for `hyper info`).
pub fn choose(req: AccelRequest, qemu: &Path, kernel: &Path, initrd: &Path) -> (Accel, String) {
    match req {
        AccelRequest::Tcg => (Accel::Tcg, "tcg requested (--accel tcg)".into()),
        AccelRequest::Kvm if pvm_backend() => {
            let why = format!("kvm requested (--accel kvm), but {PVM_CANNOT_BOOT}: VMs will not start (--accel auto uses TCG here)");
            log::warn!("qemu driver: {why}");
            (Accel::Kvm, why)
        }
        AccelRequest::Kvm => (Accel::Kvm, "kvm requested (--accel kvm)".into()),
        AccelRequest::Auto => {
            if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
                return (Accel::Tcg, format!("KVM unavailable (/dev/kvm: {e}); using TCG"));
            }
            if pvm_backend() {
                return (Accel::Tcg, format!("{PVM_CANNOT_BOOT}; using TCG"));
            }
            match probe(qemu, kernel, initrd, Duration::from_secs(10)) {
                Ok(t) => (Accel::Kvm, format!("KVM booted the guest kernel in {} ms", t.as_millis())),
                Err(e) => (Accel::Tcg, format!("KVM could not boot the guest kernel ({e}); using TCG")),
            }
        }
    }
}

const PVM_CANNOT_BOOT: &str = "/dev/kvm is the PVM backend (kvm_pvm), which cannot boot a standard guest kernel";

/// Whether KVM here is the PVM backend (KVM in a VM without hardware virtualisation), under which a stock guest
/// kernel hangs early in its boot.
fn pvm_backend() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// Boots the guest under KVM until the agent reports on the console (or `timeout` passes).
fn probe(qemu: &Path, kernel: &Path, initrd: &Path, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut cmd = Command::new(qemu);
    // SAFETY: prctl in the forked child, an async-signal-safe system call. A probe that hangs ends with the
    // daemon that waits for it (this thread waits until it ends it).
    unsafe {
        cmd.pre_exec(|| match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) {
            r if r < 0 => Err(std::io::Error::last_os_error()),
            _ => Ok(()),
        });
    }
    let mut child = cmd
        .args(["-machine", &format!("{},accel=kvm", super::MACHINE), "-cpu", "host", "-m", "128", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
        .args(["-serial", "stdio", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &format!("{} hyper.probe", super::KERNEL_CMDLINE)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", qemu.display()))?;
    let mut out = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&all).contains(PROBE_MARKER) {
                let _ = tx.send(());
                break;
            }
        }
    });
    let r = rx.recv_timeout(timeout);
    let _ = child.kill();
    let _ = child.wait();
    r.map(|_| start.elapsed()).map_err(|_| format!("no sign of life within {}s", timeout.as_secs()))
}

/// The host's TSC frequency in kHz, rounded to the MHz (so that it is the same at every daemon start: it is
/// part of a VM template's key). A TCG guest's TSC counts at the host's rate, and on `microvm` the guest
/// kernel has nothing to calibrate it against (no PIT calibration, HPET or ACPI PM timer): told nothing, it
/// marks the TSC unstable, and about one boot in four hangs.
pub fn host_tsc_khz() -> u64 {
    fn tsc() -> u64 {
        // SAFETY: RDTSC reads a counter; it touches no memory.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    let (c0, t0) = (tsc(), Instant::now());
    std::thread::sleep(Duration::from_millis(50));
    let (c1, t1) = (tsc(), Instant::now());
    let khz = c1.wrapping_sub(c0) as f64 / (t1 - t0).as_secs_f64() / 1000.0;
    (khz / 1000.0).round() as u64 * 1000
}
