//! container-init: the first moments of a container's (or exec'd) process.
//!
//! The agent forks (it is single-threaded, so the child can do anything) in the pod's PID, IPC and UTS
//! namespaces with the process's stdio already in place and a unix socket to the agent. From its
//! [`InitConfig`] the child builds the container
//! (mount namespace, root filesystem, /proc, /dev, volumes, files, sysctls), or joins a running container's
//! mount namespace for an exec, drops privileges, reports `ready` (with the pty master when there is a
//! terminal) and execs the program. An error at any step goes back over the socket; a successful exec closes
//! the socket (close-on-exec), which is how the agent knows the program runs.

pub mod caps;
mod container;
pub mod seccomp;
mod root;

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};

use agent_proto::{ContainerConfig, ProcessConfig};
use serde::{Deserialize, Serialize};

/// What container-init is asked to do.
#[derive(Debug, Serialize, Deserialize)]
pub enum InitConfig {
    Create {
        container: ContainerConfig,
        /// Empty directory the root filesystem is mounted on.
        root: String,
        /// Directory holding the pod's hosts, hostname and resolv.conf.
        pod_dir: String,
        /// The pod's shared /dev/shm.
        shm: String,
        hostname: String,
    },
    Exec { target_pid: i32, process: ProcessConfig, hostname: String },
}

/// Container-init's answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum InitReply {
    Ready,
    Error(String),
}

pub fn write_msg(w: &mut impl Write, v: &impl Serialize) -> std::io::Result<()> {
    let b = serde_json::to_vec(v).expect("serialisable");
    w.write_all(&(b.len() as u32).to_be_bytes())?;
    w.write_all(&b)
}

/// The child side of a container or exec start, right after the agent forked: builds the container (or joins
/// it) and execs the program. Never returns: on failure the error goes to the agent over `stream` and the
/// process exits. A panic (a bug) must neither be silent nor unwind into the agent's code this process inherited.
pub fn run_child(config: &InitConfig, mut stream: std::os::unix::net::UnixStream) -> ! {
    // Not dumpable until the exec: no other process of the pod (root in another container, with the same
    // capabilities) may ptrace it while it still holds every capability and no seccomp filter (as runc,
    // since CVE-2016-9962). The exec makes the program dumpable again.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // No descriptor of the agent's reaches the program, whether or not it was opened close-on-exec.
    // SAFETY: close_range with integer arguments; CLOSE_RANGE_CLOEXEC only marks.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 4u32 /* CLOSE_RANGE_CLOEXEC */) };
    // SAFETY: umask has no failure mode.
    unsafe { libc::umask(0o022) };
    let fd = stream.as_raw_fd();
    std::panic::set_hook(Box::new(move |info| {
        // SAFETY: fd stays open until exec; ManuallyDrop keeps this wrapper from closing it.
        let s = std::mem::ManuallyDrop::new(unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) });
        let _ = write_msg(&mut &*s, &InitReply::Error(format!("container-init panicked: {info}")));
    }));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match config {
        InitConfig::Create { container, root, pod_dir, shm, hostname } => {
            container::create(container, root, pod_dir, shm, hostname, &mut stream)
        }
        InitConfig::Exec { target_pid, process, hostname } => container::exec(*target_pid, process, hostname, &mut stream),
    }));
    if let Ok(err) = r {
        let _ = write_msg(&mut stream, &InitReply::Error(err));
    }
    // SAFETY: _exit ends this forked child at once, without running the agent's destructors or atexit hooks.
    unsafe { libc::_exit(127) }
}
