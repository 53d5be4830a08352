//! Control messages (JSON in `Request`, `Response` and `Event` frames).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A request from hyperd, with the id its response will carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    pub id: u64,
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// First request on every connection. Answered with [`Reply::Hello`].
    Hello {
        version: u8,
        /// The host's wall clock, in ns since the epoch. A VM's agent sets the guest's clock from it when they
        /// differ by more than a second (a VM restored from a template starts with the template's clock).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_ns: Option<u64>,
        /// Fresh randomness for a VM's kernel random generator, which reseeds from it: VMs restored from one
        /// template all start with the same generator state.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        entropy: Vec<u8>,
        /// A fresh random number, echoed in the answer's [`Response::nonce`]. A VM's port is one stream across
        /// daemons, and a new daemon can find at its start the rest of a frame the agent wrote for the one before:
        /// a container's output, in which the container can write what looks like the hello's answer. Only the
        /// true answer carries the nonce, which nothing in the guest but the agent ever sees.
        #[serde(default)]
        nonce: u64,
    },
    /// Creates the pod's shared namespaces and pod-init if they do not exist yet, and (re)writes the pod's
    /// hostname and /etc files. Sent again by `replace` with the new pod's values.
    SetupPod(PodSetup),
    /// Creates a container (its mount namespace and root filesystem) and starts its main process.
    StartContainer(ContainerConfig),
    /// Sends a signal to a container's main process, or to every process of the container with `all`.
    SignalContainer { id: String, signal: i32, all: bool },
    /// Stops a container: `signal` to its main process, then SIGKILL to all its processes after `timeout_ms`.
    /// Its restart policy no longer applies. Answered at once; the `Exited` event follows. A timeout beyond
    /// [`MAX_STOP_TIMEOUT_MS`] counts as that.
    StopContainer { id: String, signal: i32, timeout_ms: u64 },
    /// Forgets an exited container; kills whatever of it is left.
    RemoveContainer { id: String },
    /// Runs a process in a running container's namespaces.
    Exec { id: String, container: String, process: ProcessConfig },
    /// Sends a signal to an exec'd process.
    SignalExec { id: String, signal: i32 },
    /// Forgets an exited exec'd process.
    RemoveExec { id: String },
    /// Resizes the terminal of a container's main process or of an exec'd process.
    Resize { id: String, rows: u16, cols: u16 },
    /// Sets where output streams resume (the daemon has everything below `offset`), after a reconnection.
    Attach { streams: Vec<StreamPosition> },
    /// The agent's whole state.
    State,
    /// Kills every process of the pod (pod-init excepted) and forgets all containers; the sandbox stays.
    ResetPod,
    /// Kills everything and ends the sandbox (a VM powers off).
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    pub stream: u32,
    pub offset: u64,
}

/// A response to the request with the same id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    /// The hello's nonce, in the answer to a hello (whatever its result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<u64>,
    pub result: ResponseResult,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseResult {
    Ok(Reply),
    Err(AgentError),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Done,
    Hello { version: u8, agent: String, state: AgentState },
    Started { pid: i32 },
    State(AgentState),
}

/// An error the agent reports; `kind` is stable, `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    pub kind: AgentErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentErrorKind {
    /// The request names a container or process that does not exist.
    NotFound,
    /// The request conflicts with the current state (a container id in use, no pod set up).
    Conflict,
    /// The request is malformed.
    Invalid,
    /// Setting up or starting a process failed (bad rootfs, missing executable, ...).
    Failed,
}

impl AgentError {
    pub fn new(kind: AgentErrorKind, message: impl Into<String>) -> AgentError {
        AgentError { kind, message: message.into() }
    }
}

/// Events the agent sends on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A container's main process or an exec'd process ended, after its output streams were drained.
    Exited { id: String, exec: bool, pid: i32, status: ExitStatus },
    /// A container was restarted by its restart policy.
    Restarted { id: String, pid: i32, restarts: u32 },
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code, or 128 + signal for a process killed by a signal (as shells report it).
    pub code: i32,
    pub signal: Option<i32>,
}

/// The pod-wide settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSetup {
    pub hostname: String,
    /// Contents of the pod's /etc/hosts and /etc/resolv.conf, bind-mounted into every container.
    pub hosts: String,
    pub resolv_conf: String,
    /// Size of the pod's shared /dev/shm, in bytes.
    pub shm_size: u64,
    /// Network interfaces to configure (VMs); empty for none.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
}

/// A network interface the agent configures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Matched by MAC address.
    pub mac: String,
    /// Name to give it.
    pub name: String,
    /// `10.0.0.2/24`.
    pub address: String,
    pub gateway: String,
    pub mtu: u32,
}

/// Where a container's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Rootfs {
    /// The agent mounts an overlay: `lower` top first.
    Overlay { lower: Vec<String>, upper: String, work: String },
    /// A directory prepared by the host (a VM's shared directory).
    Bind { path: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// A path in the agent's view.
    pub source: String,
    /// An absolute path in the container.
    pub destination: String,
    pub read_only: bool,
}

/// Content to write into the container before it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectedFile {
    pub path: String,
    /// Base64.
    pub content: String,
    pub mode: u32,
    /// User and group, by name (resolved in the container) or number; empty = root.
    pub user: String,
    pub group: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    #[default]
    Never,
    OnFailure,
    Always,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub id: String,
    pub rootfs: Rootfs,
    pub read_only: bool,
    pub mounts: Vec<Mount>,
    pub files: Vec<InjectedFile>,
    pub sysctl: BTreeMap<String, String>,
    pub restart: Restart,
    pub process: ProcessConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessConfig {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// A user name or uid (resolved in the container's /etc/passwd), optionally `user:group`.
    pub user: String,
    /// A group name or gid; empty = the user's primary group.
    pub group: String,
    pub additional_groups: Vec<String>,
    pub terminal: bool,
    /// Stream ids; `stdin` only when the process gets input, `stderr` only without a terminal.
    pub stdin: Option<u32>,
    pub stdout: u32,
    pub stderr: Option<u32>,
    /// (resource number, soft, hard)
    pub rlimits: Vec<(u32, u64, u64)>,
    /// `user`, `group`, `additional_groups` and the program of `args[0]`, already looked up in the container's
    /// root filesystem by the daemon (a VM's agent would pay a round trip to the host for every file it
    /// reads). Absent: the agent looks them up itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Resolved>,
}

/// A process's identity and program, as found in its container's /etc/passwd, /etc/group and `$PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub exe: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

/// Everything the agent knows, for a daemon that (re)connects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    pub pod_ready: bool,
    pub hostname: String,
    pub containers: Vec<ProcessState>,
    pub execs: Vec<ProcessState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessState {
    pub id: String,
    /// For an exec'd process, its container.
    #[serde(default)]
    pub container: String,
    pub pid: i32,
    /// None while it runs.
    pub exit: Option<ExitStatus>,
    pub restarts: u32,
    pub stdin: Option<u32>,
    pub stdout: u32,
    pub stderr: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json() {
        let r = RequestEnvelope { id: 3, request: Request::SignalContainer { id: "c".into(), signal: 15, all: false } };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(j, r#"{"id":3,"request":{"op":"signal_container","id":"c","signal":15,"all":false}}"#);
        assert_eq!(serde_json::from_str::<RequestEnvelope>(&j).unwrap(), r);
        let resp = Response { id: 3, nonce: None, result: ResponseResult::Ok(Reply::Started { pid: 7 }) };
        let back: Response = serde_json::from_str(&serde_json::to_string(&resp).unwrap()).unwrap();
        assert_eq!(back, resp);
    }
}
