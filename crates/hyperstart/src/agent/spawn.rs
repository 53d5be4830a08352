//! Starting processes in the pod: pod-init, and container-init for containers and execs.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::init::{InitConfig, InitReply};
use crate::sys;

/// How long a container may take to set itself up before the agent gives up on it.
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);

/// The standard streams a new process gets.
pub struct Stdio3 {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Starts `hyperstart pod-init` (PID 1 of the pod's PID namespace), which mounts its empty root on `dir` (in a
/// mount namespace of its own). Returns its pid and the pipe on which it says it is ready (see [`pod_init_ready`]).
pub fn pod_init(dir: &std::path::Path) -> std::io::Result<(i32, OwnedFd)> {
    // No pre_exec hook, so that std spawns with posix_spawn (a vfork: nothing of the agent is copied, and
    // under TCG, 8 starts each way, set-up took ~2.5 ms less than with a fork). The child still starts with
    // every signal unblocked and SIGPIPE at its default, as after a fork: std asks posix_spawn for that.
    let mut c = Command::new("/proc/self/exe");
    // Its standard error is /dev/null, not ours: a runner waiting for the end of the agent's output would
    // wait for pod-init's too (its errors come back on the pipe).
    c.arg0("pod-init").arg("pod-init").arg(dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = c.spawn()?;
    let ready = child.stdout.take().ok_or_else(|| std::io::Error::other("pod-init's pipe"))?;
    Ok((child.id() as i32, OwnedFd::from(ready)))
}

/// Waits until pod-init has left the agent's root (it writes `ok`), or says why it could not. No container may
/// start before: its set-up, with every capability, would find the agent's root behind `/proc/1/root`.
pub fn pod_init_ready(ready: OwnedFd) -> Result<(), String> {
    let mut p = libc::pollfd { fd: ready.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd of ours, for the duration of the call.
    if unsafe { libc::poll(&mut p, 1, 10_000) } <= 0 {
        return Err("pod-init did not get ready within 10 s".into());
    }
    let mut msg = Vec::new();
    let _ = std::fs::File::from(ready).take(4096).read_to_end(&mut msg);
    match msg.as_slice() {
        b"ok" => Ok(()),
        b"" => Err("pod-init ended before it was ready".into()),
        other => Err(format!("pod-init: {}", String::from_utf8_lossy(other).trim())),
    }
}

/// Forks container-init for `config`; returns its pid and, for a terminal, the pty master once it is ready.
/// On failure the child is killed (the agent reaps it later) and the error says what went wrong inside.
pub fn container_init(config: &InitConfig, stdio: Stdio3) -> Result<(i32, Option<OwnedFd>), String> {
    let (parent, child) = sys::socketpair().map_err(|e| format!("socketpair: {e}"))?;
    // Everything the child needs is prepared before the fork.
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    // SAFETY: the agent is single-threaded, so the child may allocate and run any code; it never returns into
    // the agent's code (run_child ends in exec or _exit).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(parent);
        for (fd, target) in [(&stdio.stdin, 0), (&stdio.stdout, 1), (&stdio.stderr, 2)] {
            let src = fd.as_ref().map_or(null.as_raw_fd(), |f| f.as_raw_fd());
            if sys::dup2(src, target).is_err() {
                // SAFETY: leaving the forked child at once.
                unsafe { libc::_exit(126) };
            }
        }
        crate::init::run_child(config, UnixStream::from(child));
    }
    drop(child);
    drop(stdio);
    let fail = |msg: String| {
        let _ = sys::kill(pid, libc::SIGKILL);
        Err(msg)
    };
    let mut s = UnixStream::from(parent);
    let _ = s.set_read_timeout(Some(SETUP_TIMEOUT));
    // First message: Ready (maybe with the pty master) or an error.
    let mut len = [0u8; 4];
    let (n, fd) = match sys::recv_with_fd(s.as_raw_fd(), &mut len) {
        Ok(v) => v,
        Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => (0, None),
        Err(e) => return fail(format!("waiting for container-init: {e}")),
    };
    if n == 0 {
        let mut status = 0;
        // SAFETY: waiting for our own child; status is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        let how = if r == pid {
            match sys::decode_status(status) {
                (_, Some(sig)) => format!("killed by signal {sig}"),
                (code, None) => format!("exited with {code}"),
            }
        } else {
            "vanished".into()
        };
        return Err(format!("container-init died during setup ({how})"));
    }

    if n < 4 && s.read_exact(&mut len[n..]).is_err() {
        return fail("container-init sent a truncated message".into());
    }
    let reply = match read_body(&mut s, u32::from_be_bytes(len)) {
        Ok(r) => r,
        Err(e) => return fail(format!("reading container-init's answer: {e}")),
    };
    match reply {
        InitReply::Error(e) => return fail(e),
        InitReply::Ready => crate::vm::trace("container: ready received"),
    }
    // Then either EOF (the program was exec'd: the socket was close-on-exec) or the exec error.
    let mut more = [0u8; 4];
    match s.read(&mut more) {
        Ok(0) => {
            crate::vm::trace("container: program exec'd");
            Ok((pid, fd))
        }
        Ok(n) => {
            if n < 4 && s.read_exact(&mut more[n..]).is_err() {
                return fail("container-init failed to exec".into());
            }
            match read_body(&mut s, u32::from_be_bytes(more)) {
                Ok(InitReply::Error(e)) => fail(e),
                _ => fail("container-init failed to exec".into()),
            }
        }
        Err(e) => fail(format!("waiting for the program to start: {e}")),
    }
}

fn read_body(s: &mut UnixStream, len: u32) -> std::io::Result<InitReply> {
    if len > 1 << 20 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "message too large"));
    }
    let mut b = vec![0; len as usize];
    s.read_exact(&mut b)?;
    serde_json::from_slice(&b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Wraps a raw descriptor we were handed at startup.
pub fn adopt(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller passes a descriptor inherited for this purpose and owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
