//! The agent (hyperstart) spoken to directly over its socket, as the ns driver starts it: what the daemon
//! relies on in the protocol itself.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::Duration;

use agent_proto::{
    AgentErrorKind, ContainerConfig, Decoder, Frame, FrameKind, Interface, PodSetup, ProcessConfig, Reply, Request, RequestEnvelope, Response, ResponseResult,
    Restart, Rootfs,
};
use hyper_tests::{bin_dir, require_root};

/// An agent in namespaces of its own (mount, network, UTS, IPC), killed when dropped.
struct Agent {
    child: Child,
    conn: UnixStream,
    dec: Decoder,
    next: u64,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn start() -> Agent {
        require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = UnixListener::bind(dir.path().join("agent.sock")).expect("bind the agent socket");
        let fd = listener.as_raw_fd();
        let mut cmd = Command::new(bin_dir().join("hyperstart"));
        cmd.args(["agent", "--listen-fd", &fd.to_string(), "--work"]).arg(dir.path().join("work"));
        // SAFETY: unshare and fcntl only, both async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The listening socket is handed over across exec.
                libc::fcntl(fd, libc::F_SETFD, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start hyperstart");
        let conn = UnixStream::connect(dir.path().join("agent.sock")).expect("connect to the agent");
        conn.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        drop(listener);
        Agent { child, conn, dec: Decoder::new(), next: 1, _dir: dir }
    }

    /// Sends the requests back to back, in one write, before reading any answer.
    fn send_all(&mut self, requests: Vec<Request>) -> Vec<u64> {
        let mut out = Vec::new();
        let mut ids = Vec::new();
        for request in requests {
            let id = self.next;
            self.next += 1;
            let json = serde_json::to_vec(&RequestEnvelope { id, request }).expect("serialise");
            agent_proto::encode(&mut out, FrameKind::Request, &json);
            ids.push(id);
        }
        self.conn.write_all(&out).expect("write requests");
        ids
    }

    /// The answer to request `id` (events and other answers are skipped).
    fn answer(&mut self, id: u64) -> ResponseResult {
        let mut buf = [0u8; 65536];
        loop {
            while let Some(f) = self.dec.next_frame().expect("a well-formed frame") {
                if let Frame::Response(b) = f {
                    let r: Response = serde_json::from_slice(&b).expect("a response");
                    if r.id == id {
                        return r.result;
                    }
                }
            }
            let n = self.conn.read(&mut buf).expect("read from the agent");
            assert!(n > 0, "the agent closed the connection");
            self.dec.feed(&buf[..n]);
        }
    }
}

fn setup(interfaces: Vec<Interface>) -> Request {
    Request::SetupPod(PodSetup { hostname: "p".into(), hosts: String::new(), resolv_conf: String::new(), shm_size: 1 << 20, interfaces })
}

fn container(root: &str) -> Request {
    Request::StartContainer(ContainerConfig {
        id: "c1".into(),
        rootfs: Rootfs::Bind { path: root.into() },
        read_only: false,
        mounts: vec![],
        files: vec![],
        sysctl: Default::default(),
        restart: Restart::Never,
        process: ProcessConfig {
            args: vec!["/bin/true".into()],
            env: vec![],
            cwd: String::new(),
            user: String::new(),
            group: String::new(),
            additional_groups: vec![],
            terminal: false,
            stdin: None,
            stdout: 1,
            stderr: Some(2),
            rlimits: vec![],
            resolved: None,
        },
    })
}

/// The daemon sends a pod's container starts right behind its set-up, without waiting for the set-up's
/// answer. When the set-up fails, the starts queued behind it must be refused, not run in a half-made pod.
#[test]
fn container_starts_queued_behind_a_failed_set_up_are_refused() {
    let mut a = Agent::start();
    let missing_root = "/nonexistent/hyper-test-root";
    let nic = Interface { mac: "02:00:00:0f:0f:0f".into(), name: "eth0".into(), address: "10.99.0.2/24".into(), gateway: String::new(), mtu: 0 };
    let ids = a.send_all(vec![Request::Hello { version: agent_proto::VERSION, time_ns: None, entropy: vec![], nonce: 7 }, setup(vec![nic]), container(missing_root)]);

    assert!(matches!(a.answer(ids[0]), ResponseResult::Ok(Reply::Hello { .. })));
    match a.answer(ids[1]) {
        ResponseResult::Err(e) => assert!(e.message.contains("no network interface with MAC 02:00:00:0f:0f:0f"), "set-up failed for another reason: {e:?}"),
        other => panic!("a set-up with a NIC that does not exist succeeded: {other:?}"),
    }
    match a.answer(ids[2]) {
        ResponseResult::Err(e) => {
            assert_eq!(e.kind, AgentErrorKind::Conflict, "{e:?}");
            assert!(e.message.contains("the pod is not set up"), "{e:?}");
        }
        other => panic!("a container started after a failed set-up: {other:?}"),
    }

    // After a set-up that succeeds, the same start gets past that check (and fails on its missing root).
    let ids = a.send_all(vec![setup(vec![]), container(missing_root)]);
    assert_eq!(a.answer(ids[0]), ResponseResult::Ok(Reply::Done));
    match a.answer(ids[1]) {
        ResponseResult::Err(e) => {
            assert_eq!(e.kind, AgentErrorKind::Failed, "{e:?}");
            assert!(e.message.contains(missing_root), "{e:?}");
        }
        other => panic!("a container with a missing root started: {other:?}"),
    }

    // The pod goes with its agent: pod-init (given the agent's work directory) used to live on for ever.
    let work = a._dir.path().join("work").display().to_string();
    drop(a);
    let pod_init_left = || hyper_tests::daemon::sandbox_processes(&work);
    assert!(hyper_tests::wait_until(Duration::from_secs(10), || pod_init_left().is_empty()), "left: {:?}", pod_init_left());
}
