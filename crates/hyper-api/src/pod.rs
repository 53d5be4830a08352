//! Pod routes: create, start, stop, replace, remove, kill, list, inspect, logs, attach, exec.

use serde::{Deserialize, Serialize};

/// `POST /v1/pods`: the podfile (as parsed JSON) and options. Streams pull progress, then [`CreatedPod`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRequest {
    /// The podfile, in JSON form (the CLI converts YAML). Validated by the daemon.
    pub spec: serde_json::Value,
    /// Remove the pod when all its containers have exited.
    #[serde(default)]
    pub auto_remove: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedPod {
    pub id: String,
    pub name: String,
}

/// `POST /v1/pods/ports?pod=`: mappings as `[HOSTIP:]HOSTPORT[-END]:CONTAINERPORT[-END][/udp]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PortsRequest {
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// A port mapping (`GET /v1/pods/ports?pod=`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortMapping {
    pub protocol: String,
    pub host_ip: Option<String>,
    pub host_ports: String,
    pub container_ports: String,
}

/// `POST /v1/pods/replace`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplaceRequest {
    pub old: String,
    pub new: String,
}

/// A pod in `GET /v1/pods`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodSummary {
    pub id: String,
    pub name: String,
    /// `created`, `running` or `failed`.
    pub state: String,
    pub driver: String,
    pub created: String,
    pub containers: usize,
}

/// A container in `GET /v1/containers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub pod_id: String,
    pub pod_name: String,
    pub image: String,
    pub state: String,
    pub exit_code: Option<i32>,
}

/// `GET /v1/pods/inspect?pod=`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodInspect {
    pub id: String,
    pub name: String,
    /// `created`, `running` or `failed`.
    pub state: String,
    /// Why the pod failed (the sandbox died, a container could not start, ...).
    pub failure: Option<String>,
    pub created: String,
    pub hostname: String,
    pub resource: Resource,
    pub sandbox: Option<SandboxInfo>,
    /// The pod's address while it runs with networking.
    pub ip: Option<String>,
    pub ports: Vec<PortMapping>,
    pub containers: Vec<ContainerInspect>,

    pub labels: std::collections::BTreeMap<String, String>,
    pub auto_remove: bool,
    /// The podfile as given.
    pub spec: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resource {
    pub vcpu: u32,
    pub memory: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub id: String,
    pub driver: String,
    /// The agent's pid (ns) or QEMU's (qemu), on the host.
    pub pid: i32,
    pub started: String,
    /// Driver-specific details.
    pub details: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerInspect {
    pub id: String,
    pub name: String,
    pub image: String,
    pub image_id: String,
    /// `created`, `running` or `exited`.
    pub state: String,
    /// In the sandbox's PID namespace view of the agent (host pid for the ns driver).
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    pub restarts: u32,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub command: Vec<String>,
    pub workdir: String,
    pub env: Vec<String>,
    pub user: String,
    pub tty: bool,
    /// Its input stays open for `attach` (a terminal, or the podfile's `stdin`).
    #[serde(default)]
    pub stdin: bool,
    pub log_path: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}
