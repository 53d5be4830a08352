//! Semantic checks of a parsed podfile. Each error names the field.

use std::collections::{HashMap, HashSet};

use base64::Engine as _;

use crate::{PodSpec, Resource, SpecError};

/// Sysctl prefixes that are namespaced (they affect only the pod's own namespaces).
pub const SYSCTL_PREFIXES: &[&str] =
    &["net.", "kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.", "kernel.domainname", "kernel.hostname"];

/// A pod or container name: `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}`.
pub fn is_valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A hostname: dot-separated labels of letters, digits and inner dashes, 64 characters at most.
pub fn is_valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn unsupported(path: &str, what: &str) -> SpecError {
    SpecError::new(path, format!("{what} is not supported by hyper"))
}

/// Hyper's disk cache modes (QEMU's, for root filesystems and volumes on block devices). Ours reach a VM through
/// its 9p share, with the host's page cache: a mode is accepted as Hyper wrote it, and changes nothing.
const CACHE_MODES: [&str; 6] = ["off", "none", "directsync", "writeback", "unsafe", "writethrough"];

fn check_cache_mode(v: &Option<serde_json::Value>, at: &str) -> Result<(), SpecError> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(serde_json::Value::String(m)) if m.is_empty() || CACHE_MODES.contains(&m.as_str()) => Ok(()),
        Some(other) => Err(SpecError::new(at, format!("unknown cache mode {other} (one of {})", CACHE_MODES.join(", ")))),
    }
}

fn present(v: &Option<serde_json::Value>) -> bool {
    match v {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Array(a)) => !a.is_empty(),
        Some(serde_json::Value::Object(o)) => !o.is_empty(),
        Some(serde_json::Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let a: u16 = a.parse().ok()?;
    let b: u16 = b.parse().ok()?;
    (a >= 1 && a <= b).then_some((a, b))
}

pub fn validate(p: &PodSpec) -> Result<(), SpecError> {
    if !p.id.is_empty() && !is_valid_name(&p.id) {
        return Err(SpecError::new("id", format!("invalid pod name {:?}: use letters, digits, '_', '.', '-' (63 at most), starting with a letter or digit", p.id)));
    }
    if !p.hostname.is_empty() && !is_valid_hostname(&p.hostname) {
        return Err(SpecError::new("hostname", format!("invalid hostname {:?}: dot-separated labels of letters, digits and inner '-', 64 characters at most", p.hostname)));
    }
    if present(&p.portmapping_white_lists) {
        return Err(unsupported("portmappingWhiteLists", "a port-mapping whitelist"));
    }
    if present(&p.services) {
        return Err(unsupported("services", "in-pod service load balancing"));
    }
    if present(&p.interfaces) {
        return Err(unsupported("interfaces", "explicit interface configuration (hyper gives each pod one NIC on its bridge)"));
    }
    if present(&p.log) {
        return Err(unsupported("log", "a log driver (hyper always keeps CRI-format logs)"));
    }
    if let Some(k) = &p.kind {
        if present(&Some(k.clone())) && k.as_str() != Some("pod") {
            return Err(unsupported("type", &format!("pod type {k}")));
        }
    }
    if p.containers.is_empty() {
        return Err(SpecError::new("containers", "a pod needs at least one container"));
    }
    if p.resource.is_some() {
        validate_resource(&p.resource())?;
    }

    let mut files = HashSet::new();
    for (i, f) in p.files.iter().enumerate() {
        let at = format!("files[{i}]");
        if f.name.is_empty() {
            return Err(SpecError::new(format!("{at}.name"), "a file needs a name"));
        }
        if !files.insert(f.name.as_str()) {
            return Err(SpecError::new(format!("{at}.name"), format!("duplicate file name {:?}", f.name)));
        }
        match f.encoding.to_ascii_lowercase().as_str() {
            "" | "raw" => {}
            "base64" => {
                if f.uri.is_empty() {
                    base64::engine::general_purpose::STANDARD
                        .decode(f.content.trim())
                        .map_err(|e| SpecError::new(format!("{at}.content"), format!("invalid base64: {e}")))?;
                }
            }
            other => return Err(SpecError::new(format!("{at}.encoding"), format!("unknown encoding {other:?} (raw or base64)"))),
        }
        if !f.uri.is_empty() {
            if !f.content.is_empty() {
                return Err(SpecError::new(at, "give either content or uri, not both"));
            }
            if !(f.uri.starts_with("file:///") || f.uri.starts_with("http://") || f.uri.starts_with("https://")) {
                return Err(SpecError::new(format!("{at}.uri"), format!("unsupported URI {:?} (file:///, http:// or https://)", f.uri)));
            }
        }
    }

    let mut volumes = HashMap::new();
    for (i, v) in p.volumes.iter().enumerate() {
        let at = format!("volumes[{i}]");
        if !is_valid_name(&v.name) {
            return Err(SpecError::new(format!("{at}.name"), format!("invalid volume name {:?}", v.name)));
        }
        if volumes.insert(v.name.as_str(), v).is_some() {
            return Err(SpecError::new(format!("{at}.name"), format!("duplicate volume name {:?}", v.name)));
        }
        match (v.source.as_str(), v.format.as_str()) {
            ("", "" | "vfs") => {}
            (src, "vfs") => {
                if !src.starts_with('/') {
                    return Err(SpecError::new(format!("{at}.source"), format!("a vfs volume's source must be an absolute host path, not {src:?}")));
                }
            }
            (_, "") => return Err(SpecError::new(format!("{at}.format"), "a volume with a source needs a format (vfs for a host directory)")),
            (_, other) => return Err(unsupported(&format!("{at}.format"), &format!("volume format {other:?}"))),
        }
        if present(&v.option) {
            return Err(unsupported(&format!("{at}.option"), "volume options"));
        }
        check_cache_mode(&v.cache, &format!("{at}.cache"))?;
        if !matches!(v.fstype.as_str(), "" | "dir") {
            // Only block and network volumes (not supported) have a filesystem type to choose; Hyper called a
            // directory's "dir".
            return Err(unsupported(&format!("{at}.fstype"), &format!("filesystem type {:?} for a directory volume", v.fstype)));
        }
    }

    let mut names = HashSet::new();
    for (i, c) in p.containers.iter().enumerate() {
        let at = format!("containers[{i}]");
        if c.image.trim().is_empty() {
            return Err(SpecError::new(format!("{at}.image"), "missing image"));
        }
        if c.image.chars().any(char::is_whitespace) {
            return Err(SpecError::new(format!("{at}.image"), format!("invalid image reference {:?}", c.image)));
        }
        if !c.name.is_empty() {
            if !is_valid_name(&c.name) {
                return Err(SpecError::new(format!("{at}.name"), format!("invalid container name {:?}", c.name)));
            }
            if !names.insert(c.name.as_str()) {
                return Err(SpecError::new(format!("{at}.name"), format!("duplicate container name {:?}", c.name)));
            }
        }
        if !c.workdir.is_empty() && !c.workdir.starts_with('/') {
            return Err(SpecError::new(format!("{at}.workdir"), format!("{:?} is not an absolute path", c.workdir)));
        }
        let mut envs = HashSet::new();
        for (j, e) in c.envs.iter().enumerate() {
            if e.env.is_empty() || e.env.contains('=') || e.env.contains('\0') || e.value.contains('\0') {
                return Err(SpecError::new(format!("{at}.envs[{j}].env"), format!("invalid variable name {:?}", e.env)));
            }
            if !envs.insert(e.env.as_str()) {
                return Err(SpecError::new(format!("{at}.envs[{j}].env"), format!("duplicate variable {:?}", e.env)));
            }
        }
        let mut paths = HashSet::new();
        for (j, m) in c.volumes.iter().enumerate() {
            let mat = format!("{at}.volumes[{j}]");
            if !volumes.contains_key(m.volume.as_str()) {
                return Err(SpecError::new(format!("{mat}.volume"), format!("no pod volume named {:?}", m.volume)));
            }
            if !m.path.starts_with('/') || m.path.split('/').any(|s| s == "..") {
                return Err(SpecError::new(format!("{mat}.path"), format!("{:?} is not an absolute path", m.path)));
            }
            if m.path == "/" {
                return Err(SpecError::new(format!("{mat}.path"), "a volume cannot be mounted at /"));
            }
            if !paths.insert(m.path.trim_end_matches('/')) {
                return Err(SpecError::new(format!("{mat}.path"), format!("two volumes at {:?}", m.path)));
            }
            if present(&m.detail) {
                return Err(unsupported(&format!("{mat}.detail"), "an inline volume detail"));
            }
        }
        for (j, f) in c.files.iter().enumerate() {
            let fat = format!("{at}.files[{j}]");
            if !files.contains(f.filename.as_str()) {
                return Err(SpecError::new(format!("{fat}.filename"), format!("no pod file named {:?}", f.filename)));
            }
            if !f.path.starts_with('/') || f.path.split('/').any(|s| s == "..") {
                return Err(SpecError::new(format!("{fat}.path"), format!("{:?} is not an absolute path", f.path)));
            }
            if !f.perm.is_empty() {
                let ok = f.perm.len() == 4 && f.perm.starts_with('0') && f.perm[1..].bytes().all(|b| (b'0'..=b'7').contains(&b));
                if !ok {
                    return Err(SpecError::new(format!("{fat}.perm"), format!("{:?} is not an octal mode like \"0644\"", f.perm)));
                }
            }
            if present(&f.detail) {
                return Err(unsupported(&format!("{fat}.detail"), "an inline file detail"));
            }
        }
        for (k, _) in &c.sysctl {
            if !SYSCTL_PREFIXES.iter().any(|p| k.starts_with(p)) {
                return Err(SpecError::new(
                    format!("{at}.sysctl.{k}"),
                    "not a namespaced sysctl (allowed: net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)",
                ));
            }
            if k.contains('/') || k.contains("..") {
                return Err(SpecError::new(format!("{at}.sysctl.{k}"), "invalid sysctl name"));
            }
        }
        for (j, u) in c.ulimits.iter().enumerate() {
            if crate::types_ulimit_known(&u.name).is_none() {
                return Err(SpecError::new(format!("{at}.ulimits[{j}].Name"), format!("unknown resource {:?}", u.name)));
            }
            if u.soft > u.hard {
                return Err(SpecError::new(format!("{at}.ulimits[{j}]"), "soft limit above hard limit"));
            }
        }
        if let Some(s) = &c.stop_signal {
            if crate::signal_number(s).is_none() {
                return Err(SpecError::new(format!("{at}.StopSignal"), format!("unknown signal {s:?}")));
            }
        }
        if present(&c.ports) {
            return Err(unsupported(&format!("{at}.ports"), "container-level ports (use the pod's portmappings)"));
        }
        check_cache_mode(&c.cache, &format!("{at}.cache"))?;
        if present(&c.log_path) {
            return Err(unsupported(&format!("{at}.logPath"), "a custom log path"));
        }
        if present(&c.id) {
            return Err(unsupported(&format!("{at}.id"), "a preset container id"));
        }
    }

    let mut host_ports = HashSet::new();
    for (i, m) in p.portmappings.iter().enumerate() {
        let at = format!("portmappings[{i}]");
        let (c0, c1) = parse_port_range(&m.container_port)
            .ok_or_else(|| SpecError::new(format!("{at}.containerPort"), format!("invalid port or range {:?}", m.container_port)))?;
        let host = if m.host_port.is_empty() { &m.container_port } else { &m.host_port };
        let (h0, h1) = parse_port_range(host)
            .ok_or_else(|| SpecError::new(format!("{at}.hostPort"), format!("invalid port or range {host:?}")))?;
        let (cn, hn) = (c1 - c0, h1 - h0);
        if cn != hn && cn != 0 {
            return Err(SpecError::new(at, "a container port range must be as long as the host port range, or a single port"));
        }
        let proto = m.protocol.to_ascii_lowercase();
        if !matches!(proto.as_str(), "" | "tcp" | "udp") {
            return Err(SpecError::new(format!("{at}.protocol"), format!("unknown protocol {:?} (tcp or udp)", m.protocol)));
        }
        if !m.host_ip.is_empty() && m.host_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(SpecError::new(format!("{at}.hostIP"), format!("invalid address {:?}", m.host_ip)));
        }
        for h in h0..=h1 {
            if !host_ports.insert((if proto.is_empty() { "tcp".to_string() } else { proto.clone() }, h)) {
                return Err(SpecError::new(format!("{at}.hostPort"), format!("host port {h} is mapped twice")));
            }
        }
    }
    for (i, d) in p.dns.iter().enumerate() {
        if d.parse::<std::net::IpAddr>().is_err() {
            return Err(SpecError::new(format!("dns[{i}]"), format!("{d:?} is not an IP address")));
        }
    }
    for (i, d) in p.dns_search.iter().enumerate() {
        if !is_valid_hostname(d) {
            return Err(SpecError::new(format!("dnsSearch[{i}]"), format!("{d:?} is not a domain name")));
        }
    }
    for (i, d) in p.dns_options.iter().enumerate() {
        if d.is_empty() || d.chars().any(char::is_whitespace) {
            return Err(SpecError::new(format!("dnsOptions[{i}]"), format!("invalid resolver option {d:?}")));
        }
    }
    Ok(())
}

/// A pod's vCPUs and memory, within what a sandbox can be given.
pub fn validate_resource(r: &Resource) -> Result<(), SpecError> {
    if r.vcpu == 0 || r.vcpu > 64 {
        return Err(SpecError::new("resource.vcpu", format!("{} vCPUs: must be between 1 and 64", r.vcpu)));
    }
    if r.memory < 32 || r.memory > 256 * 1024 {
        return Err(SpecError::new("resource.memory", format!("{} MiB: must be between 32 and 262144", r.memory)));
    }
    Ok(())
}
