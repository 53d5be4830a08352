//! `hyperstart`: the pod agent.
//!
//! Modes (the first argument):
//! - `agent --listen-fd N --work DIR`: the agent of an ns-driver sandbox; hyperd connects to the listening
//!   socket it passed as fd N.
//! - `pod-init`: PID 1 of the pod's PID namespace; reaps orphans.

mod agent;
mod init;
mod sys;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: hyperstart agent --listen-fd N --work DIR | pod-init");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        // /init of a VM (pod-init is PID 1 too, of the pod's namespace, but it says so in its arguments).
        _ if std::process::id() == 1 && args.get(1).map(String::as_str) != Some("pod-init") => {
            let e = vm::boot();
            eprintln!("hyperstart: {e}");
            ExitCode::FAILURE
        }

        Some("pod-init") => pod_init(),
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
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hyperstart: {e}");
                    ExitCode::FAILURE
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

/// PID 1 of the pod's PID namespace: reaps every orphan, ignores every signal it can.
fn pod_init() -> ExitCode {
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
