//! The podfile's types, with Hyper's JSON field names.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A pod: containers that share one logical host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    /// The pod's name (Hyper called it `id`); generated if empty.
    #[serde(default)]
    pub id: String,
    /// Defaults to the name, truncated to 63 characters.
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub containers: Vec<ContainerSpec>,
    #[serde(default)]
    pub resource: Option<Resource>,
    /// Contents injected into containers (`containers[].files` refer to them by name).
    #[serde(default)]
    pub files: Vec<FileSpec>,
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    #[serde(default)]
    pub portmappings: Vec<PortMapping>,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default, rename = "dnsOptions")]
    pub dns_options: Vec<String>,
    #[serde(default, rename = "dnsSearch")]
    pub dns_search: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Pod-level default for `containers[].tty` (Hyper before 0.7).
    #[serde(default)]
    pub tty: bool,
    /// Pod-level default for `containers[].restartPolicy`.
    #[serde(default, rename = "restartPolicy")]
    pub restart_policy: Option<RestartPolicy>,

    // Hyper fields hyper does not implement: accepted by the parser so the error can name them.
    #[serde(default, rename = "portmappingWhiteLists", skip_serializing_if = "Option::is_none")]
    pub portmapping_white_lists: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<Value>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<Value>,
}

/// One application of the pod, from one image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// Unique in the pod; generated from the image name if empty.
    #[serde(default)]
    pub name: String,
    pub image: String,
    /// Arguments; with `entrypoint` (or the image's) in front. Empty: the image's `Cmd`.
    #[serde(default)]
    pub command: Vec<String>,
    /// Replaces the image's `Entrypoint` when given (even empty).
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Default: the image's `WorkingDir`, else `/`.
    #[serde(default)]
    pub workdir: String,
    #[serde(default)]
    pub envs: Vec<EnvVar>,
    #[serde(default)]
    pub tty: Option<bool>,
    /// Keeps the container's standard input open for clients to write (as Kubernetes' `stdin`); a terminal
    /// always has one. Otherwise it reads /dev/null.
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    #[serde(default)]
    pub files: Vec<FileMount>,
    #[serde(default)]
    pub user: Option<User>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, rename = "restartPolicy")]
    pub restart_policy: Option<RestartPolicy>,
    /// A read-only root filesystem (volumes stay as mounted).
    #[serde(default, rename = "readOnly")]
    pub read_only: bool,
    /// Namespaced sysctls (`net.*`, `kernel.shm*`, ...).
    #[serde(default)]
    pub sysctl: BTreeMap<String, String>,
    /// Signal `stop` sends first (default: the image's, else SIGTERM).
    #[serde(default, rename = "StopSignal", alias = "stopSignal")]
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub ulimits: Vec<Ulimit>,

    // Hyper fields hyper does not implement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Value>,
    #[serde(default, rename = "logPath", skip_serializing_if = "Option::is_none")]
    pub log_path: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub env: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    #[serde(default = "default_vcpu")]
    pub vcpu: u32,
    /// MiB.
    #[serde(default = "default_memory")]
    pub memory: u32,
}

pub const DEFAULT_VCPU: u32 = 1;
pub const DEFAULT_MEMORY_MB: u32 = 128;

fn default_vcpu() -> u32 {
    DEFAULT_VCPU
}
fn default_memory() -> u32 {
    DEFAULT_MEMORY_MB
}

impl Default for Resource {
    fn default() -> Self {
        Resource { vcpu: DEFAULT_VCPU, memory: DEFAULT_MEMORY_MB }
    }
}

/// A file's content, given inline (raw or base64) or by URI (`file:///...`, `http(s)://...`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub name: String,
    #[serde(default)]
    pub encoding: String,
    #[serde(default)]
    pub uri: String,
    #[serde(default)]
    pub content: String,
}

/// A pod volume: `source` empty = created with the pod and removed with it; `format: vfs` = a host directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    pub name: String,
    #[serde(default)]
    pub source: String,
    #[serde(default, alias = "driver")]
    pub format: String,
    #[serde(default)]
    pub fstype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    pub volume: String,
    pub path: String,
    #[serde(default, rename = "readOnly")]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// Puts pod file `filename` at `path` (a path ending in `/` gets the file's name appended).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMount {
    pub filename: String,
    pub path: String,
    /// Octal, `0[0-7]{3}`; default 0755 as in Hyper.
    #[serde(default)]
    pub perm: String,
    /// A user name (from the container's /etc/passwd) or a uid.
    #[serde(default)]
    pub user: String,
    /// A group name (from the container's /etc/group) or a gid.
    #[serde(default)]
    pub group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// Who the container's processes run as. Names resolve in the container's /etc/passwd and /etc/group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub group: String,
    #[serde(default, rename = "additionalGroups")]
    pub additional_groups: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum RestartPolicy {
    #[default]
    #[serde(rename = "never")]
    Never,
    #[serde(rename = "onFailure")]
    OnFailure,
    #[serde(rename = "always")]
    Always,
}

impl<'de> Deserialize<'de> for RestartPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "" | "never" | "no" => Ok(RestartPolicy::Never),
            "onfailure" => Ok(RestartPolicy::OnFailure),
            "always" => Ok(RestartPolicy::Always),
            _ => Err(serde::de::Error::custom(format!("invalid restart policy {s:?} (never, onFailure or always)"))),
        }
    }
}

/// A resource limit for the container's processes (`nofile`, `nproc`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ulimit {
    #[serde(rename = "Name", alias = "name")]
    pub name: String,
    #[serde(rename = "Hard", alias = "hard")]
    pub hard: u64,
    #[serde(rename = "Soft", alias = "soft")]
    pub soft: u64,
}

/// Host port(s) forwarded to container port(s); ports are numbers or strings, ranges `"8000-8010"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    #[serde(rename = "containerPort", deserialize_with = "port_string")]
    pub container_port: String,
    #[serde(rename = "hostPort", default, deserialize_with = "port_string")]
    pub host_port: String,
    #[serde(default)]
    pub protocol: String,
    /// Host address to bind (hyper extension; default all).
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

fn port_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!("expected a port number or range, got {other}"))),
    }
}

impl PodSpec {
    /// The pod's vCPUs and memory; a 0 means the default, as in Hyper, whose Go tools wrote 0 for a value not set.
    pub fn resource(&self) -> Resource {
        let r = self.resource.unwrap_or_default();
        let or = |v: u32, default: u32| if v == 0 { default } else { v };
        Resource { vcpu: or(r.vcpu, DEFAULT_VCPU), memory: or(r.memory, DEFAULT_MEMORY_MB) }
    }
}

impl ContainerSpec {
    /// The container's tty setting, defaulting to the pod's.
    pub fn tty(&self, pod: &PodSpec) -> bool {
        self.tty.unwrap_or(pod.tty)
    }
    pub fn restart_policy(&self, pod: &PodSpec) -> RestartPolicy {
        self.restart_policy.or(pod.restart_policy).unwrap_or_default()
    }
}
