//! `hyperstart`: the pod agent.
//!
//! Modes (the first argument):
//! - `agent --listen-fd N --work DIR`: the agent of an ns-driver sandbox; hyperd connects to the listening
//!   socket it passed as fd N.
//! - `pod-init DIR`: PID 1 of the pod's PID namespace, in an empty root mounted on DIR; reaps orphans.

// Our own C `main`, not Rust's runtime start: see `main` below. (Unit tests keep the test harness's.)
#![cfg_attr(not(test), no_main)]

mod agent;
mod init;
mod sys;
mod vm;

use std::path::PathBuf;

const SUCCESS: i32 = 0;
const FAILURE: i32 = 1;

fn usage() -> i32 {
    eprintln!("usage: hyperstart agent --listen-fd N --work DIR | pod-init DIR");
    2
}

/// The entry point, called by the C runtime. Rust's runtime start (`fn main`) first looks up the main thread's
/// stack in /proc/self/maps, puts stack-overflow handlers on an alternate signal stack and polls the standard
/// descriptors: kernel and libc code that runs nowhere else in a VM's boot, and under emulation each piece of
/// code costs its translation the first time. A bare boot to this binary's first line took ~24 ms longer than
/// to a C program's (alternating boots, medians of 12), and the agent starts twice in every VM (/init, then
/// pod-init). What of that start the agent needs is done here: SIGPIPE ignored, so that a write to a closed
/// pipe fails with EPIPE instead of killing the agent. (Arguments work as ever: std takes them from the C
/// runtime's initialisers.) A stack overflow now kills the agent with SIGSEGV, without std's message.
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: signal() with a constant disposition; nothing else runs yet.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    run()
}

#[cfg_attr(test, allow(dead_code))]
fn run() -> i32 {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        // /init of a VM (pod-init is PID 1 too, of the pod's namespace, but it says so in its arguments).
        _ if std::process::id() == 1 && args.get(1).map(String::as_str) != Some("pod-init") => {
            let e = vm::boot();
            eprintln!("hyperstart: {e}");
            FAILURE
        }

        Some("pod-init") => match args.get(2) {
            Some(dir) => pod_init(std::path::Path::new(dir)),
            None => usage(),
        },
        Some("agent") => {
            let mut listen = None;
            let mut work = None;
            let mut it = args[2..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--listen-fd" => listen = it.next().and_then(|v| v.parse::<i32>().ok()),
                    "--work" => work = it.next().map(PathBuf::from),
                    _ => return usage(),
                }
            }
            let (Some(fd), Some(work)) = (listen, work) else { return usage() };
            match ns_agent(fd, work) {
                Ok(()) => SUCCESS,
                Err(e) => {
                    eprintln!("hyperstart: {e}");
                    FAILURE
                }
            }
        }
        _ => usage(),
    }
}

/// The agent of a sandbox made of host namespaces (the daemon created them before exec'ing us).
fn ns_agent(listen_fd: i32, work: PathBuf) -> Result<(), String> {
    use std::path::Path;
    // Our mounts must never propagate back to the host.
    sys::mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_SLAVE, None).map_err(|e| format!("making / a slave mount: {e}"))?;
    std::fs::create_dir_all(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;
    sys::mount(Some("hyperstart"), &work, Some("tmpfs"), libc::MS_NOSUID | libc::MS_NODEV, Some("mode=700,size=16m"))
        .map_err(|e| format!("mounting the work directory: {e}"))?;
    sys::link_up("lo").map_err(|e| format!("bringing lo up: {e}"))?;
    // sysfs shows the network namespace of whoever mounted it: ours must show our interfaces.
    sys::mount(Some("sysfs"), Path::new("/sys"), Some("sysfs"), libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, None)
        .map_err(|e| format!("mounting /sys: {e}"))?;

    // The daemon handed the listening socket over without close-on-exec: containers must not inherit it.
    sys::set_cloexec(listen_fd, true).map_err(|e| format!("fd {listen_fd}: {e}"))?;
    let listener = agent::Transport::Listener(agent::spawn_adopt(listen_fd));
    let mut a = agent::Agent::new(agent::Options { transport: listener, work }).map_err(|e| format!("starting: {e}"))?;
    a.run().map_err(|e| format!("agent loop: {e}"))
}

/// pod-init's root: an empty, read-only tmpfs, alone in a mount namespace of its own (mounted on `dir`, the
/// agent's work directory, then made the root with `pivot_root`, the agent's tree detached). Every process of
/// the pod sees `/proc/1/root`; it must not lead to the agent's root (the host's in the ns driver, every
/// container's share in a VM), nor up out of it with `..` (a chroot would leave the tree above it reachable),
/// while a container's set-up still runs with every capability. Holding no copy of the agent's mounts, it also
/// keeps none of them (a replaced pod's /dev/shm) alive.
fn empty_root(dir: &std::path::Path) -> std::io::Result<()> {
    use std::path::Path;
    sys::unshare(libc::CLONE_NEWNS)?;
    sys::mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    sys::mount(Some("tmpfs"), dir, Some("tmpfs"), libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, Some("size=4k,mode=0555"))?;
    sys::pivot_into(dir)?;
    let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    sys::mount(None, Path::new("/"), None, flags, None)
}

/// PID 1 of the pod's PID namespace: reaps every orphan, ignores every signal it can.
fn pod_init(dir: &std::path::Path) -> i32 {
    // The pod does not outlive its agent (the kernel ends the pod's PID namespace with its init). A sandbox's
    // end kills both anyway; an agent killed alone left pod-init and the pod running for ever.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // Standard output is the agent's pipe: `ok` once out of the agent's root, else why not; then closed.
    use std::io::Write;
    let said = match empty_root(dir) {
        Ok(()) => std::io::stdout().write_all(b"ok"),
        Err(e) => {
            let _ = std::io::stdout().write_all(format!("leaving the agent's root: {e}").as_bytes());
            return 1;
        }
    };
    let _ = said.and_then(|()| std::io::stdout().flush());
    // SAFETY: closes our own standard output; nothing writes to it again.
    unsafe { libc::close(1) };
    // SAFETY: sigset manipulation, prctl and waits on our own process; no memory is shared.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"pod-init".as_ptr() as libc::c_ulong, 0, 0, 0);

        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut chld: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        loop {
            let mut status = 0;
            while libc::waitpid(-1, &mut status, libc::WNOHANG) > 0 {}
            libc::sigwaitinfo(&chld, std::ptr::null_mut());
        }
    }
}
