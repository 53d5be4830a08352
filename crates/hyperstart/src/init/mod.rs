//! `hyperstart container-init`: the first moments of a container's (or exec'd) process.
//!
//! The agent starts this mode in the pod's PID, IPC and UTS namespaces with the process's stdio already in
//! place and a unix socket on fd 3. Over the socket it receives an [`InitConfig`]; it builds the container
//! (mount namespace, root filesystem, /proc, /dev, volumes, files, sysctls), or joins a running container's
//! mount namespace for an exec, drops privileges, reports `ready` (with the pty master when there is a
//! terminal) and execs the program. An error at any step goes back over the socket; a successful exec closes
//! the socket (close-on-exec), which is how the agent knows the program runs.

pub mod caps;
mod container;
pub mod seccomp;
pub mod users;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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

pub fn read_msg<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 16 << 20 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "message too large"));
    }
    let mut b = vec![0; len];
    r.read_exact(&mut b)?;
    serde_json::from_slice(&b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Entry point of `hyperstart container-init`. Never returns on success (the program is exec'd).
pub fn main() -> i32 {
    // SAFETY: fd 3 was set up by the agent for this process and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(3) };
    let _ = crate::sys::set_cloexec(sock.as_raw_fd(), true);
    // A panic (a bug) must still reach the agent as an error, not as a silent death.
    std::panic::set_hook(Box::new(|info| {
        // SAFETY: fd 3 stays open until exec; wrapping it without taking ownership (ManuallyDrop) closes nothing.
        let s = std::mem::ManuallyDrop::new(unsafe { std::os::unix::net::UnixStream::from_raw_fd(3) });
        let _ = write_msg(&mut &*s, &InitReply::Error(format!("container-init panicked: {info}")));
    }));
    let mut stream = std::os::unix::net::UnixStream::from(sock);

    let config: InitConfig = match read_msg(&mut stream) {
        Ok(c) => c,
        Err(e) => {
            let _ = write_msg(&mut stream, &InitReply::Error(format!("reading the init configuration: {e}")));
            return 125;
        }
    };
    let err = match config {
        InitConfig::Create { container, root, pod_dir, shm, hostname } => {
            container::create(&container, &root, &pod_dir, &shm, &hostname, &mut stream)
        }
        InitConfig::Exec { target_pid, process, hostname } => container::exec(target_pid, &process, &hostname, &mut stream),
    };
    let _ = write_msg(&mut stream, &InitReply::Error(err));
    127
}
