//! The podfile: Hyper's pod format, in JSON or YAML.
//!
//! ```json
//! { "id": "web", "hostname": "web",
//!   "containers": [{"name": "app", "image": "busybox", "command": ["httpd", "-f"],
//!                   "envs": [{"env": "MODE", "value": "prod"}],
//!                   "volumes": [{"volume": "data", "path": "/data", "readOnly": false}],
//!                   "files": [{"filename": "cfg", "path": "/etc/app.conf", "perm": "0644"}]}],
//!   "resource": {"vcpu": 1, "memory": 128},
//!   "files": [{"name": "cfg", "encoding": "raw", "content": "x=1"}],
//!   "volumes": [{"name": "data", "source": "", "format": ""}] }
//! ```
//!
//! [`parse`] gives a [`PodSpec`] or a [`SpecError`] naming the field (`containers[1].image: ...`). Keys match
//! case-insensitively (as Go's encoding/json did for Hyper), unknown keys are errors with a did-you-mean, and
//! Hyper fields hyper does not implement are refused by name rather than ignored.

mod keys;
mod types;
mod validate;

pub use types::*;
pub use validate::{SYSCTL_PREFIXES, is_valid_hostname, is_valid_name, validate_resource};

/// What is wrong with a podfile, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct SpecError {
    /// `containers[1].image`, or empty for the whole document.
    pub path: String,
    pub message: String,
}

impl SpecError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError { path: path.into(), message: message.into() }
    }
}

/// The podfile's syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// By file name: `.yaml`/`.yml` are YAML, anything else JSON.
    pub fn from_path(path: &str) -> Format {
        if path.ends_with(".yaml") || path.ends_with(".yml") { Format::Yaml } else { Format::Json }
    }
}

/// Parses and validates a podfile.
pub fn parse(text: &str, format: Format) -> Result<PodSpec, SpecError> {
    let value: serde_json::Value = match format {
        Format::Json => serde_json::from_str(text).map_err(|e| SpecError::new("", format!("malformed JSON: {e}")))?,
        Format::Yaml => serde_yaml::from_str(text).map_err(|e| SpecError::new("", format!("malformed YAML: {e}")))?,
    };
    if !value.is_object() {
        return Err(SpecError::new("", "a podfile must be an object"));
    }
    let spec: PodSpec = keys::deserialize(value)?;
    validate::validate(&spec)?;
    Ok(spec)
}

#[cfg(test)]
mod tests;

/// The `setrlimit` resource of a ulimit name (`nofile`, `RLIMIT_NOFILE`, ...), as its Linux number.
pub fn types_ulimit_known(name: &str) -> Option<u32> {
    let n = name.to_ascii_lowercase();
    let n = n.strip_prefix("rlimit_").unwrap_or(&n);
    Some(match n {
        "cpu" => 0,
        "fsize" => 1,
        "data" => 2,
        "stack" => 3,
        "core" => 4,
        "rss" => 5,
        "nproc" => 6,
        "nofile" => 7,
        "memlock" => 8,
        "as" => 9,
        "locks" => 10,
        "sigpending" => 11,
        "msgqueue" => 12,
        "nice" => 13,
        "rtprio" => 14,
        "rttime" => 15,
        _ => return None,
    })
}

/// A signal by name (`SIGTERM`, `TERM`, `term`) or number, as its Linux number.
pub fn signal_number(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let u = s.to_ascii_uppercase();
    let n = u.strip_prefix("SIG").unwrap_or(&u);
    Some(match n {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "TRAP" => 5,
        "ABRT" | "IOT" => 6,
        "BUS" => 7,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        "STKFLT" => 16,
        "CHLD" => 17,
        "CONT" => 18,
        "STOP" => 19,
        "TSTP" => 20,
        "TTIN" => 21,
        "TTOU" => 22,
        "URG" => 23,
        "XCPU" => 24,
        "XFSZ" => 25,
        "VTALRM" => 26,
        "PROF" => 27,
        "WINCH" => 28,
        "IO" | "POLL" => 29,
        "PWR" => 30,
        "SYS" => 31,
        _ => {
            if let Some(k) = n.strip_prefix("RTMIN+") {
                return k.parse::<i32>().ok().filter(|k| (0..=30).contains(k)).map(|k| 34 + k);
            }
            return None;
        }
    })
}

/// Converts YAML text to JSON (for clients that send podfiles as JSON).
pub fn yaml_to_json(text: &str) -> Result<serde_json::Value, String> {
    serde_yaml::from_str(text).map_err(|e| e.to_string())
}
