//! `create`: validate the podfile, pull missing images, resolve every container against its image, allocate
//! storage, and record the pod as Created. Nothing is left behind if any step fails.

use std::collections::BTreeMap;

use base64::Engine as _;
use image_store::{ImageError, ProgressSink, Reference};
use podspec::{PodSpec, RestartPolicy, SpecError};

use crate::store::{ContainerRecord, ContainerStatus, PodRecord, PodState, VolumeRecord};
use crate::{Engine, PodError, now, random_id};

/// Largest file content fetched from a URI.
const MAX_FILE: u64 = 16 << 20;

fn restart(p: RestartPolicy) -> agent_proto::Restart {
    match p {
        RestartPolicy::Never => agent_proto::Restart::Never,
        RestartPolicy::OnFailure => agent_proto::Restart::OnFailure,
        RestartPolicy::Always => agent_proto::Restart::Always,
    }
}

/// A valid hostname from a pod name: invalid characters become '-', at most 63 characters.
fn hostname_from(name: &str) -> String {
    let mut h: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).take(63).collect();
    while h.ends_with('-') {
        h.pop();
    }
    if h.is_empty() { "pod".into() } else { h }
}

fn random_digits() -> String {
    let id = random_id("");
    id.bytes().map(|b| char::from(b'0' + (b - b'a') % 10)).collect()
}

async fn file_content(f: &podspec::FileSpec, at: &str) -> Result<Vec<u8>, PodError> {
    let raw: Vec<u8> = if f.uri.is_empty() {
        f.content.as_bytes().to_vec()
    } else if let Some(path) = f.uri.strip_prefix("file://") {
        let meta = std::fs::metadata(path).map_err(|e| PodError::InvalidArgument(format!("{at}.uri: {path}: {e}")))?;
        if meta.len() > MAX_FILE {
            return Err(PodError::InvalidArgument(format!("{at}.uri: {path} is larger than {MAX_FILE} bytes")));
        }
        std::fs::read(path).map_err(|e| PodError::InvalidArgument(format!("{at}.uri: {path}: {e}")))?
    } else {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| PodError::Internal(format!("HTTP client: {e}")))?;
        let resp = client.get(&f.uri).send().await.map_err(|e| PodError::InvalidArgument(format!("{at}.uri: fetching {}: {e}", f.uri)))?;
        if !resp.status().is_success() {
            return Err(PodError::InvalidArgument(format!("{at}.uri: fetching {}: {}", f.uri, resp.status())));
        }
        if resp.content_length().is_some_and(|l| l > MAX_FILE) {
            return Err(PodError::InvalidArgument(format!("{at}.uri: {} is larger than {MAX_FILE} bytes", f.uri)));
        }
        let b = resp.bytes().await.map_err(|e| PodError::InvalidArgument(format!("{at}.uri: reading {}: {e}", f.uri)))?;
        if b.len() as u64 > MAX_FILE {
            return Err(PodError::InvalidArgument(format!("{at}.uri: {} is larger than {MAX_FILE} bytes", f.uri)));
        }
        b.to_vec()
    };
    if f.encoding.eq_ignore_ascii_case("base64") {
        let text = String::from_utf8_lossy(&raw);
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| PodError::Spec(SpecError::new(format!("{at}.content"), format!("invalid base64: {e}"))))
    } else {
        Ok(raw)
    }
}

impl Engine {
    /// Creates a pod from a podfile (as JSON). Missing images are pulled (progress goes to `progress`).
    pub async fn create(&self, spec_json: serde_json::Value, auto_remove: bool, progress: ProgressSink) -> Result<PodRecord, PodError> {
        // Parsed on a blocking thread: a large podfile takes a while, and the runtime's few threads serve
        // every pod's output meanwhile.
        let text = serde_json::to_string(&spec_json).expect("JSON value serialises");
        let spec: PodSpec = tokio::task::spawn_blocking(move || podspec::parse(&text, podspec::Format::Json))
            .await
            .map_err(|e| PodError::Internal(format!("parsing the podfile: {e}")))??;
        let id = random_id("pod-");
        let name = if spec.id.is_empty() { id.clone() } else { spec.id.clone() };
        match self.store.resolve(&name) {
            Ok(p) if p.name == name => return Err(PodError::AlreadyExists(format!("a pod named {name:?} exists"))),
            // Named after another pod's id, it could only be reached by its own id, and `rm NAME` would remove
            // the other pod.
            Ok(p) if p.id == name => return Err(PodError::AlreadyExists(format!("{name:?} is the id of pod {:?}", p.name))),
            _ => {}
        }
        let hostname = if spec.hostname.is_empty() { hostname_from(&name) } else { spec.hostname.clone() };

        // Images first: nothing is allocated until they are all here.
        let mut images = Vec::new();
        for (i, c) in spec.containers.iter().enumerate() {
            let at = format!("containers[{i}].image");
            let r: Reference = c.image.parse().map_err(|e: image_store::reference::ReferenceError| {
                PodError::Spec(SpecError::new(at.clone(), e.to_string()))
            })?;
            let rec = match self.images.resolve(&r.to_string()) {
                Ok(rec) => rec,
                Err(ImageError::NotFound(_)) => self
                    .images
                    .pull(&r, progress.clone())
                    .await
                    .map_err(|source| PodError::Image { context: format!("{at}: pulling {}", c.image), source })?,
                Err(source) => return Err(PodError::Image { context: at, source }),
            };
            let config = self.images.config(&rec).map_err(|source| PodError::Image { context: format!("{at}: {}", c.image), source })?;
            images.push((r, rec, config));
        }

        let mut files = BTreeMap::new();
        for (i, f) in spec.files.iter().enumerate() {
            files.insert(f.name.clone(), file_content(f, &format!("files[{i}]")).await?);
        }

        let pod_dir = self.pod_dir(&id);
        let mut volumes = Vec::new();
        for v in &spec.volumes {
            if v.source.is_empty() {
                volumes.push(VolumeRecord { name: v.name.clone(), host_path: pod_dir.join("volumes").join(&v.name).display().to_string(), owned: true });
            } else {
                let meta = std::fs::metadata(&v.source)
                    .map_err(|e| PodError::InvalidArgument(format!("volume {:?}: source {}: {e}", v.name, v.source)))?;
                if !meta.is_dir() && !meta.is_file() {
                    return Err(PodError::InvalidArgument(format!("volume {:?}: source {} is neither a directory nor a regular file", v.name, v.source)));
                }
                volumes.push(VolumeRecord { name: v.name.clone(), host_path: v.source.clone(), owned: false });
            }
        }

        let mut containers = Vec::new();
        let mut used_names: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).filter(|n| !n.is_empty()).collect();
        for (c, (r, rec, config)) in spec.containers.iter().zip(&images) {
            let ic = config.config.clone().unwrap_or_default();
            let cname = if c.name.is_empty() {
                let base = r.repository().rsplit('/').next().unwrap_or("container").to_string();
                let mut n;
                loop {
                    n = format!("{base}-{}", random_digits());
                    if !used_names.contains(&n) {
                        break;
                    }
                }
                used_names.push(n.clone());
                n
            } else {
                c.name.clone()
            };
            let entrypoint = c.entrypoint.clone().unwrap_or_else(|| ic.entrypoint.clone().unwrap_or_default());
            let cmd = if !c.command.is_empty() {
                c.command.clone()
            } else if c.entrypoint.is_some() {
                vec![]
            } else {
                ic.cmd.clone().unwrap_or_default()
            };
            let mut env: Vec<String> = ic.env.clone().unwrap_or_default();
            for e in &c.envs {
                env.retain(|x| x.split_once('=').map(|(k, _)| k) != Some(e.env.as_str()));
                env.push(format!("{}={}", e.env, e.value));
            }
            let (user, group, additional) = match &c.user {
                Some(u) => (
                    if u.name.is_empty() { ic.user.clone().unwrap_or_default() } else { u.name.clone() },
                    u.group.clone(),
                    u.additional_groups.clone(),
                ),
                None => (ic.user.clone().unwrap_or_default(), String::new(), vec![]),
            };
            let stop_signal = c
                .stop_signal
                .as_deref()
                .or(ic.stop_signal.as_deref())
                .and_then(podspec::signal_number)
                .unwrap_or(libc::SIGTERM);
            let mut injected = Vec::new();
            for f in &c.files {
                let content = files.get(&f.filename).expect("validated: the file exists");
                let path = if f.path.ends_with('/') { format!("{}{}", f.path, f.filename) } else { f.path.clone() };
                let mode = if f.perm.is_empty() { 0o755 } else { u32::from_str_radix(&f.perm, 8).unwrap_or(0o755) };
                injected.push(agent_proto::InjectedFile {
                    path,
                    content: base64::engine::general_purpose::STANDARD.encode(content),
                    mode,
                    user: f.user.clone(),
                    group: f.group.clone(),
                });
            }
            let tty = c.tty(&spec);
            containers.push(ContainerRecord {
                id: random_id("c-"),
                name: cname,
                image: r.to_string(),
                image_id: rec.id.to_string(),
                lowers: self.images.snapshot_dirs(rec).iter().map(|p| p.display().to_string()).collect(),
                args: entrypoint.into_iter().chain(cmd).collect(),
                env,
                workdir: if !c.workdir.is_empty() { c.workdir.clone() } else { ic.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into()) },
                user,
                group,
                additional_groups: additional,
                tty,
                stdin: tty || c.stdin,
                read_only: c.read_only,
                stop_signal,
                restart: restart(c.restart_policy(&spec)),
                sysctl: c.sysctl.clone(),
                rlimits: c.ulimits.iter().filter_map(|u| podspec::types_ulimit_known(&u.name).map(|r| (r, u.soft, u.hard))).collect(),
                volumes: c.volumes.iter().map(|v| (v.volume.clone(), v.path.clone(), v.read_only)).collect(),
                files: injected,
                labels: c.labels.clone(),
                status: ContainerStatus { state: "created".into(), ..ContainerStatus::default() },
            });
        }

        let mut ports = Vec::new();
        for (i, m) in spec.portmappings.iter().enumerate() {
            let pm = network::parse_mapping(&m.container_port, &m.host_port, &m.protocol, &m.host_ip)
                .map_err(|e| PodError::Spec(SpecError::new(format!("portmappings[{i}]"), e)))?;
            ports.push(pm);
        }
        let resource = spec.resource();
        let record = PodRecord {
            id: id.clone(),
            name,
            hostname,
            vcpu: resource.vcpu,
            memory: resource.memory,
            labels: spec.labels.clone(),
            dns: spec.dns.clone(),
            dns_search: spec.dns_search.clone(),
            dns_options: spec.dns_options.clone(),
            created: now(),
            state: PodState::Created,
            failure: None,
            auto_remove,
            containers,
            volumes,
            sandbox: None,
            ports,
            spec: spec_json,
        };

        let alloc = || -> std::io::Result<()> {
            for c in &record.containers {
                std::fs::create_dir_all(pod_dir.join("containers").join(&c.id).join("upper"))?;
                std::fs::create_dir_all(pod_dir.join("containers").join(&c.id).join("work"))?;
            }
            for v in record.volumes.iter().filter(|v| v.owned) {
                std::fs::create_dir_all(&v.host_path)?;
                // Shared by containers that may run as different users: writable by all, like /tmp.
                std::fs::set_permissions(&v.host_path, std::os::unix::fs::PermissionsExt::from_mode(0o1777))?;
            }

            std::fs::create_dir_all(pod_dir.join("logs"))
        };
        let undo = || {
            let _ = sandbox::remove_unmounted_dir(&pod_dir);
        };
        if let Err(e) = alloc() {
            undo();
            return Err(PodError::Internal(format!("allocating storage under {}: {e}", pod_dir.display())));
        }
        let image_ids: Vec<image_store::Digest> = images.iter().map(|(_, r, _)| r.id.clone()).collect();
        if let Err(source) = self.images.lease(&format!("pod:{id}"), &image_ids) {
            undo();
            return Err(PodError::Image { context: "holding the pod's images".into(), source });
        }
        if let Err(e) = self.store.insert(&record) {
            undo();
            let _ = self.images.release(&format!("pod:{id}")).await;
            return Err(e);
        }
        log::info!("created pod {} ({})", record.id, record.name);
        Ok(record)
    }
}
