//! The `ns` driver: the agent runs in fresh host namespaces (PID, IPC, UTS, network, mount) inside a cgroup
//! that carries the pod's limits. For hosts without virtualisation, and for fast tests.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use agent_proto::Rootfs;

use crate::cgroups::{Cgroup, Limits};
use crate::{ContainerStorage, Driver, SandboxConfig, SandboxError, SandboxState, io_err, now_rfc3339};

#[derive(Debug)]
pub struct NsDriver {
    /// The static hyperstart binary.
    agent: PathBuf,
}

impl NsDriver {
    pub fn new(agent: PathBuf) -> NsDriver {
        NsDriver { agent }
    }
}

impl Driver for NsDriver {
    fn name(&self) -> &'static str {
        "ns"
    }

    fn info(&self) -> Vec<(String, String)> {
        vec![
            ("Agent".into(), self.agent.display().to_string()),
            ("Isolation".into(), "host namespaces (pid, ipc, uts, net, mount), seccomp, capabilities".into()),
            ("Cgroups".into(), if crate::cgroups::is_v2() { "v2".into() } else { "v1".into() }),
        ]
    }

    fn start(&self, cfg: &SandboxConfig) -> Result<SandboxState, SandboxError> {
        let socket = crate::agent_socket(&cfg.dir)?;
        // The pod's network namespace is made on another core while the directories and the cgroup are.
        let netns = new_netns()?;
        std::fs::create_dir_all(&cfg.dir).map_err(io_err(format!("creating {}", cfg.dir.display())))?;
        let _ = std::fs::remove_file(&socket);
        let t = std::time::Instant::now();
        // A failure before the agent's spawn leaves nothing but the directory to remove.
        let undo = |e: SandboxError| {
            crate::discard_dir(&cfg.dir);
            e
        };
        let listener = std::os::unix::net::UnixListener::bind(&socket).map_err(io_err(format!("binding {}", socket.display()))).map_err(undo)?;
        let limits = Limits { memory_bytes: u64::from(cfg.memory_mb) << 20, vcpu: cfg.vcpu, pids: 32768 };
        let cgroup = Cgroup::create(&cfg.id, limits).map_err(undo)?;
        let t_cg = t.elapsed();
        // The veth pair is built on another core while the agent is forked and exec'd into the namespace:
        // both are on the critical path of every pod start.
        let result = netns.join().and_then(|netns| {
            std::thread::scope(|s| {
                let veth = cfg.nic.as_ref().map(|nic| {
                    let netns = netns.as_raw_fd();
                    s.spawn(move || -> Result<u128, SandboxError> {
                        // The veth's far end goes straight into the pod's network namespace, as eth0.
                        let mac = netlink::parse_mac(&nic.mac).ok_or_else(|| SandboxError::Setup(format!("invalid MAC {}", nic.mac)))?;
                        let mut nl = netlink::Netlink::open().map_err(io_err("opening netlink"))?;
                        nl.create_veth(&nic.host_if, "eth0", Some(mac), Some(netns)).map_err(io_err(format!("creating veth {}", nic.host_if)))?;
                        crate::plug(nic)?;
                        Ok(t.elapsed().as_micros())
                    })
                });
                let spawned = self.spawn_agent(cfg, &listener, &cgroup, netns.as_raw_fd());
                let t_spawn = t.elapsed();
                let t_veth = match veth.map(|h| h.join()) {
                    None => 0,
                    Some(Ok(r)) => r?,
                    Some(Err(_)) => return Err(SandboxError::Setup("the veth thread panicked".into())),
                };
                log::debug!(
                    "ns sandbox {}: cgroup {} us, agent ready at {} us, veth ready at {} us",
                    cfg.id,
                    t_cg.as_micros(),
                    t_spawn.as_micros(),
                    t_veth
                );
                spawned
            })
        });

        drop(listener);
        match result {
            Ok((pid, start_time)) => {
                let mut details = std::collections::BTreeMap::new();
                if let Some(nic) = &cfg.nic {
                    details.insert("host_if".into(), nic.host_if.clone());
                }
                details.insert("cgroups".into(), cgroup.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(","));
                details.insert("log".into(), cfg.dir.join("agent.log").display().to_string());

                Ok(SandboxState {
                    id: cfg.id.clone(),
                    driver: "ns".into(),
                    pid,
                    start_time,
                    boot_id: crate::boot_id(),
                    socket,
                    dir: cfg.dir.clone(),
                    started: now_rfc3339(),
                    details,
                })
            }
            Err(e) => {
                if let Some(nic) = &cfg.nic {
                    let _ = crate::unplug(&nic.host_if);
                }
                cgroup.kill_all(Duration::from_secs(2));
                cgroup.remove();
                Err(undo(e))
            }
        }
    }

    fn attach_rootfs(&self, _s: &SandboxState, c: &ContainerStorage) -> Result<Rootfs, SandboxError> {
        // The agent's mount namespace is a copy of the host's: it mounts the overlay itself, inside the
        // container's own mount namespace, so nothing is mounted on the host.
        Ok(Rootfs::Overlay {
            lower: c.lowers.iter().rev().map(|p| p.display().to_string()).collect(),
            upper: c.upper.display().to_string(),
            work: c.work.display().to_string(),
        })
    }

    fn detach_rootfs(&self, _s: &SandboxState, _id: &str) -> Result<(), SandboxError> {
        Ok(())
    }

    fn share_dir(&self, _s: &SandboxState, _name: &str, host: &Path) -> Result<String, SandboxError> {
        Ok(host.display().to_string())
    }

    fn unshare_dir(&self, _s: &SandboxState, _name: &str) -> Result<(), SandboxError> {
        Ok(())
    }

    fn is_alive(&self, s: &SandboxState) -> bool {
        s.process_alive()
    }

    fn destroy(&self, s: &SandboxState) -> Result<(), SandboxError> {
        let mut errors = Vec::new();
        let cgroup = Cgroup::named(&s.id);
        // Everything the sandbox ran lives in its cgroup: the agent, pod-init, every container process.
        if !cgroup.kill_all(Duration::from_secs(10)) {
            errors.push(format!("processes still alive in {:?}", cgroup.paths));
        }
        if s.process_alive() {
            // SAFETY: kill has no memory arguments; the pid was checked against its start time just above.
            unsafe { libc::kill(s.pid, libc::SIGKILL) };
        }
        errors.extend(cgroup.remove());
        crate::finish_destroy(s, errors)
    }
}

/// A new, empty network namespace in the making; [`NewNetns::join`] gives its descriptor (close-on-exec).
/// Dropped unjoined, the namespace goes with the thread's result.
struct NewNetns(std::thread::JoinHandle<std::io::Result<OwnedFd>>);

fn new_netns() -> Result<NewNetns, SandboxError> {
    let h = std::thread::Builder::new()
        .name("netns".into())
        .stack_size(64 << 10)
        .spawn(|| -> std::io::Result<OwnedFd> {
            // SAFETY: unshare takes no pointers. It moves only this short-lived thread into the new namespace;
            // the rest of the daemon stays where it is.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(std::fs::File::open("/proc/thread-self/ns/net")?.into())
        })
        .map_err(io_err("starting a thread"))?;
    Ok(NewNetns(h))
}

impl NewNetns {
    fn join(self) -> Result<OwnedFd, SandboxError> {
        let made = self.0.join().map_err(|_| SandboxError::Setup("the network namespace thread panicked".into()))?;
        made.map_err(io_err("creating the pod's network namespace"))
    }
}

fn cstring(p: &Path) -> Result<CString, SandboxError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| SandboxError::Setup(format!("path {} contains NUL", p.display())))
}

impl NsDriver {
    /// Starts the agent in `cgroup`, in the network namespace `netns` and in new PID, IPC, UTS and mount
    /// namespaces.
    fn spawn_agent(&self, cfg: &SandboxConfig, listener: &std::os::unix::net::UnixListener, cgroup: &Cgroup, netns: RawFd) -> Result<(i32, u64), SandboxError> {
        let log_path = cfg.dir.join("agent.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(io_err(format!("opening {}", log_path.display())))?;
        let procs: Vec<CString> = cgroup.join_files().iter().map(|p| cstring(p)).collect::<Result<_, _>>()?;

        let listen_fd = listener.as_raw_fd();
        let mut cmd = Command::new(&self.agent);
        cmd.arg("agent")
            .arg("--listen-fd")
            .arg("3")
            .arg("--work")
            .arg(cfg.dir.join("agent"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_err("dup log"))?)
            .stderr(log);
        crate::record_on_start(&mut cmd, cfg)?;
        // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe system
        // calls (setsid, open, write, close, dup2, fcntl, setns, unshare) on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // A forked child has one thread: joining with it (see Cgroup::join_files) joins the process.
                for p in &procs {
                    let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);

                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let r = libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                    if r < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::dup2(listen_fd, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::setns(netns, libc::CLONE_NEWNET) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let flags = libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWPID;
                if libc::unshare(flags) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(io_err(format!("starting the agent {}", self.agent.display())))?;
        crate::adopt(child, cfg)
    }
}
