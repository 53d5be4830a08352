//! start, stop, replace, remove, kill, and keeping records true when processes exit or sandboxes die.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_proto::{AgentError, ContainerConfig, Mount, PodSetup, ProcessConfig, Reply, Request, StreamPosition};
use sandbox::{ContainerStorage, SandboxConfig, SandboxState};
use tokio::sync::mpsc;

use crate::agent::{AgentClient, PendingReply};
use crate::io::Chunk;
use crate::logs::{LogWriter, Source};
use crate::runtime::{self, ContainerRt, Route, Runtime};
use crate::store::{ContainerRecord, PodRecord, PodState};
use crate::{Engine, PodError, chain, now, random_id};

/// Extra time, beyond a stop's grace period, for the agent to report exits.
const EXIT_SLACK: Duration = Duration::from_secs(10);

/// The sandbox detail that says its agent echoes the hello's nonce (absent in sandboxes older daemons started).
const HELLO_NONCE: &str = "hello_nonce";

/// How long a stop waits for containers to end after their stop signal, unless told otherwise.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn agent_err(what: &str, e: AgentError) -> PodError {
    PodError::Sandbox(format!("{what}: {}", e.message))
}

/// A subscriber registered on a container before the pod starts (`run -t` must not miss the first byte).
pub(crate) struct Preattach {
    pub container: String,
    pub output: mpsc::Sender<Chunk>,
    pub exit: tokio::sync::oneshot::Sender<i32>,
}

/// Adds the last lines of the sandbox's logs (the hypervisor's own, then the guest console) to a start error.
fn with_log_tail(e: PodError, s: &SandboxState) -> PodError {
    let mut parts = Vec::new();
    for (key, label) in [("hypervisor_log", "hypervisor log"), ("log", "sandbox log")] {
        let Some(path) = s.details.get(key) else { continue };
        let tail = sandbox::log_tail(std::path::Path::new(path), 5);
        if !tail.is_empty() {
            parts.push(format!("{label}: {}", tail.join(" | ")));
        }
    }
    if parts.is_empty() {
        return e;
    }
    with_note(e, &format!(" ({})", parts.join("; ")))
}

/// `e` with `note` appended to its message, as a sandbox error.
fn with_note(e: PodError, note: &str) -> PodError {
    let msg = match &e {
        PodError::Sandbox(m) => m.clone(),
        other => chain(other),
    };
    PodError::Sandbox(format!("{msg}{note}"))
}

/// A container's stdout, stderr and stdin streams.
type Streams = (u32, Option<u32>, Option<u32>);

fn hosts_file(hostname: &str, ip: Option<&str>) -> String {
    let me = ip.unwrap_or("127.0.1.1");
    format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{me}\t{hostname}\n")
}

/// A nameserver on the host's loopback (systemd-resolved's 127.0.0.53, a local dnsmasq) that a pod, in a network
/// namespace or a VM of its own, cannot reach.
fn is_loopback_nameserver(addr: &str) -> bool {
    addr.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// The host's resolver configuration as a pod gets it: where /etc/resolv.conf names only loopback nameservers,
/// systemd-resolved's list of the real ones (what Docker does).
fn host_resolv_conf() -> String {
    let etc = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let servers: Vec<&str> = etc.lines().filter_map(|l| l.strip_prefix("nameserver")).map(str::trim).collect();
    if !servers.is_empty() && servers.iter().all(|s| is_loopback_nameserver(s)) {
        if let Ok(upstream) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            return upstream;
        }
    }
    etc
}

/// A pod's /etc/resolv.conf: the host's nameservers, search domains and options (loopback nameservers left out),
/// each replaced by the podfile's `dns`, `dnsSearch` or `dnsOptions` when it gives them.
fn resolv_conf(host: &str, dns: &[String], search: &[String], options: &[String]) -> String {
    let mut host_servers = Vec::new();
    let (mut host_search, mut host_options) = (None, Vec::new());
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => host_servers.extend(words.next().filter(|a| !is_loopback_nameserver(a))),
            Some("search") | Some("domain") => host_search = Some(words.collect::<Vec<_>>().join(" ")),
            Some("options") => host_options.extend(words),
            _ => {}
        }
    }
    let mut s = String::new();
    if dns.is_empty() {
        host_servers.iter().for_each(|d| s.push_str(&format!("nameserver {d}\n")));
    } else {
        dns.iter().for_each(|d| s.push_str(&format!("nameserver {d}\n")));
    }
    match (search.is_empty(), host_search) {
        (false, _) => s.push_str(&format!("search {}\n", search.join(" "))),
        (true, Some(h)) if !h.is_empty() => s.push_str(&format!("search {h}\n")),
        _ => {}
    }
    if !options.is_empty() {
        s.push_str(&format!("options {}\n", options.join(" ")));
    } else if !host_options.is_empty() {
        s.push_str(&format!("options {}\n", host_options.join(" ")));
    }
    s
}

/// The pod-wide setup for the agent: hostname, /etc files, and the sandbox's interface if it has one.
fn pod_setup(rec: &PodRecord, sb: &SandboxState) -> PodSetup {
    let ip = sb.details.get("ip").map(String::as_str);
    let interfaces = match (ip, sb.details.get("mac"), sb.details.get("prefix")) {
        (Some(ip), Some(mac), Some(prefix)) => vec![agent_proto::Interface {
            mac: mac.clone(),
            name: "eth0".into(),
            address: format!("{ip}/{prefix}"),
            gateway: sb.details.get("gateway").cloned().unwrap_or_default(),
            mtu: sb.details.get("mtu").and_then(|m| m.parse().ok()).unwrap_or(1500),
        }],
        _ => vec![],
    };
    PodSetup {
        hostname: rec.hostname.clone(),
        hosts: hosts_file(&rec.hostname, ip),
        resolv_conf: resolv_conf(&host_resolv_conf(), &rec.dns, &rec.dns_search, &rec.dns_options),
        shm_size: 64 << 20,
        interfaces,
    }
}

impl Engine {
    /// Starts a Created (or Failed) pod: a new sandbox, then its containers.
    pub async fn start(&self, key: &str) -> Result<PodRecord, PodError> {
        self.start_with(key, None).await
    }

    pub(crate) async fn start_with(&self, key: &str, pre: Option<Preattach>) -> Result<PodRecord, PodError> {
        let id = self.store.resolve(key)?.id;
        let lock = self.lock_for(&id);
        let _g = lock.lock().await;
        let mut rec = self.store.resolve(&id)?;
        if rec.state == PodState::Running {
            return Err(PodError::Conflict(format!("pod {} is already running", rec.name)));
        }
        let t0 = Instant::now();
        let (rt, setup) = self.start_sandbox(&mut rec).await?;
        let t1 = t0.elapsed();
        let started = self.set_up_and_start(&mut rec, &rt, pre, setup).await;
        let t2 = t0.elapsed();
        self.settle_start(&mut rec, &rt, started).await?;
        log::info!(
            "started pod {} ({}) in sandbox {} (sandbox {} ms, containers {} ms, total {} ms)",
            rec.id,
            rec.name,
            rt.sandbox.id,
            t1.as_millis(),
            (t2 - t1).as_millis(),
            t0.elapsed().as_millis()
        );
        Ok(rec)
    }

    /// The end of a start (or of a replace's second half): Running if the containers started; otherwise the
    /// sandbox ends and the pod is Created again, and the error carries the sandbox's last words.
    async fn settle_start(&self, rec: &mut PodRecord, rt: &Arc<Runtime>, started: Result<(), PodError>) -> Result<(), PodError> {
        if let Err(e) = started {
            let e = with_log_tail(e, &rt.sandbox);
            self.teardown(rec, rt).await;
            rec.state = PodState::Created;
            // The start's failure is the answer: a failure to record the pod is added to it, not put in its place.
            if let Err(save) = self.save(&[rec]).await {
                return Err(with_note(e, &format!("; and recording the pod as created failed: {save}")));
            }
            return Err(e);
        }
        rec.state = PodState::Running;
        rec.failure = None;
        // Containers that already ended (their exit came before this record said Running) are recorded as
        // such, under the same lock as container_exited's, so that no exit falls between the two.
        let saved = {
            let _g = self.records.lock().await;
            let early = std::mem::take(&mut rt.lock().early_exits);
            for c in rec.containers.iter_mut() {
                if let Some(&code) = early.get(&c.id) {
                    set_exited(c, code);
                }
            }
            self.store.put(&[rec]).map(|()| !early.is_empty() && rec.containers.iter().all(|c| c.status.state != "running"))
        };
        let all_done = match saved {
            Ok(done) => done,
            Err(e) => {
                // Not on record as Running, the pod could be started again over this sandbox, which nothing
                // would then end: the start fails instead, as when a container fails.
                self.teardown(rec, rt).await;
                rec.state = PodState::Created;
                let _ = self.save(&[rec]).await;
                return Err(e);
            }
        };
        if all_done {
            self.finish_later(&rec.id, &rt.sandbox.id);
        }
        Ok(())
    }

    /// Writes records (read-modify-write safe with the other writers).
    async fn save(&self, recs: &[&PodRecord]) -> Result<(), PodError> {
        let _g = self.records.lock().await;
        self.store.put(recs)
    }

    /// A new sandbox with a connected agent, and what waits for the answer to the pod's set-up when that was
    /// sent right behind the hello. The sandbox is recorded at once, so a daemon that dies half way finds it
    /// (and cleans it up) when it starts again. A VM taken from the cache that does not answer (it died while it
    /// waited: a QEMU killed from outside can look alive, and take a connection, until its last thread is gone)
    /// is ended and replaced once, the way a start without the cache would have gone.
    async fn start_sandbox(&self, rec: &mut PodRecord) -> Result<(Arc<Runtime>, Option<PendingReply>), PodError> {
        match self.start_sandbox_once(rec).await {
            Err((e, true)) => {
                log::warn!("pod {}: the VM taken from the cache did not answer ({}); starting another", rec.id, chain(&e));
                self.start_sandbox_once(rec).await.map_err(|(e, _)| e)
            }
            other => other.map_err(|(e, _)| e),
        }
    }

    /// One try of [`Engine::start_sandbox`]; an error says whether the sandbox came from the VM cache.
    async fn start_sandbox_once(&self, rec: &mut PodRecord) -> Result<(Arc<Runtime>, Option<PendingReply>), (PodError, bool)> {
        let sbid = random_id("sb-");
        let endpoint = match &self.network {
            Some(n) => Some(n.endpoint(&sbid, &host_if_of(&sbid)).map_err(|e| (e.into(), false))?),
            None => None,
        };
        let nic = endpoint.as_ref().map(|e| sandbox::Nic { host_if: e.host_if.clone(), mac: e.mac.clone(), bridge: e.bridge.clone(), mtu: e.mtu });
        let cfg = SandboxConfig { id: sbid.clone(), dir: self.cfg.root.join("sandboxes").join(&sbid), vcpu: rec.vcpu, memory_mb: rec.memory, nic };
        let driver = self.driver.clone();
        let t0 = Instant::now();
        let started = tokio::task::spawn_blocking(move || driver.start(&cfg)).await.map_err(|e| (PodError::Internal(e.to_string()), false))?;
        log::debug!("sandbox {sbid}: driver start {} ms", t0.elapsed().as_millis());

        let mut state = match started {
            Ok(s) => s,
            Err(e) => {
                if let Some(n) = &self.network {
                    let _ = n.release(&sbid);
                }
                return Err((e.into(), false));
            }
        };
        if let Some(e) = &endpoint {
            state.details.insert("ip".into(), e.address.to_string());
            state.details.insert("prefix".into(), e.prefix.to_string());
            state.details.insert("gateway".into(), e.gateway.to_string());
            state.details.insert("mac".into(), e.mac.clone());
            state.details.insert("mtu".into(), e.mtu.to_string());
        }
        rec.sandbox = Some(state.clone());
        let connected = async {
            // A store that refuses the record fails the start, and the sandbox goes (below).
            self.save(&[rec]).await?;

            let restored = state.details.get("boot").is_some_and(|b| b == "template");
            // A restored agent answers within tens of ms. A booted one gets the pod's set-up right behind its
            // hello (a restored one may need the hello again, on a new connection).
            let setup = (!restored).then(|| Request::SetupPod(pod_setup(rec, &state)));
            let (client, rx, _, setup) = self.greet_agent(&state, restored.then_some(Duration::from_millis(300)), self.cfg.agent_timeout, setup).await?;
            log::info!("sandbox {} ({}): agent ready {} ms after start", state.id, state.driver, t0.elapsed().as_millis());
            // An agent that echoes the hello's nonce: from now on only an answer with it is taken (an older
            // agent, from an older --initrd, is greeted as before). On record with the start's result.
            if client.nonce_echoed() {
                state.details.insert(HELLO_NONCE.into(), "yes".into());
                if let Some(sb) = rec.sandbox.as_mut() {
                    sb.details.insert(HELLO_NONCE.into(), "yes".into());
                }
            }

            let rt = Arc::new(Runtime::new(&rec.id, state.clone(), client, 1));
            tokio::spawn(runtime::pump(self.arc(), rt.clone(), rx));
            Ok::<_, PodError>((rt, setup))
        }
        .await;
        match connected {
            Ok((rt, setup)) => {
                self.running.lock().unwrap_or_else(|e| e.into_inner()).insert(rec.id.clone(), rt.clone());
                Ok((rt, setup))
            }
            Err(e) => {
                let cached = state.details.get("boot").is_some_and(|b| b == "cache");
                let e = with_log_tail(e, &state);
                self.destroy_sandbox(&state).await;
                rec.sandbox = None;
                if let Err(save) = self.save(&[rec]).await {
                    return Err((with_note(e, &format!("; and recording the pod without its sandbox failed: {save}")), false));
                }
                Err((e, cached))
            }
        }
    }

    /// Connects to a sandbox's agent and says hello; returns the client, the agent's inbound messages and its
    /// hello reply.
    ///
    /// An agent that closes its virtio port while no host is connected loses the first request of a host
    /// that connects just then (the guest discards what a closed port holds). Today's agent keeps the port
    /// open; a VM still running an older agent (a daemon coming back to it) is exposed, and a restored VM meets
    /// its host at that very moment. For both, the hello is tried again on a fresh connection, `retry` apart,
    /// until `limit`. A booting VM's agent opens its port long after the daemon connected.
    /// `then`, when given and the hello is not to be retried, is sent right behind the hello, without waiting
    /// for its answer; what waits for its answer comes back with the hello's (None: it was not sent).
    async fn greet_agent(
        &self,
        state: &SandboxState,
        retry: Option<Duration>,
        limit: Duration,
        mut then: Option<Request>,
    ) -> Result<(AgentClient, crate::agent::Inbox, Reply, Option<PendingReply>), PodError> {
        let end = tokio::time::Instant::now() + limit;
        let mut attempt = 1;
        loop {
            // A sandbox that died on the way up (a bad hypervisor option, a guest panic) fails the start now,
            // not when the agent timeout expires.
            let (driver, probe) = (self.driver.clone(), state.clone());
            let alive = move || driver.is_alive(&probe);
            let require_nonce = state.details.contains_key(HELLO_NONCE);
            let (client, rx) = AgentClient::connect(&state.socket, limit, alive, require_nonce).await.map_err(PodError::Sandbox)?;
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            let wait = retry.map_or(left, |r| r.min(left));
            let hello = client.send(client.hello()).await;
            // Only where the hello is not tried again: `then` would be lost with a connection given up on.
            let next = match then.take_if(|_| retry.is_none()) {
                Some(r) => Some(client.send(r).await),
                None => None,
            };
            match hello.wait_timeout(wait).await {
                Ok(reply) => return Ok((client, rx, reply, next)),
                Err(e) if retry.is_some() && tokio::time::Instant::now() < end && e.message.contains("did not answer") => {
                    log::warn!("sandbox {}: no answer to hello on connection {attempt}, connecting again", state.id);
                    attempt += 1;
                }
                Err(e) => return Err(agent_err("greeting the agent", e)),
            }
        }
    }

    /// Sets the pod up in its sandbox and starts its containers. The agent sets the pod up (hostname, network:
    /// tens of ms in a VM under emulation) while the host prepares the containers' storage, logs and port
    /// mappings. The containers' starts are sent as soon as they are prepared, in the podfile's order: the
    /// agent takes requests one at a time, so they queue behind the set-up (which must succeed for them to
    /// run) and behind each other, and the guest goes from one to the next without waiting for the daemon.
    async fn set_up_and_start(&self, rec: &mut PodRecord, rt: &Arc<Runtime>, pre: Option<Preattach>, setup: Option<PendingReply>) -> Result<(), PodError> {
        let setup = match setup {
            Some(s) => s,
            None => rt.agent.send(Request::SetupPod(pod_setup(rec, &rt.sandbox))).await,
        };
        let host = async {
            self.apply_ports(rec, &rt.sandbox)?;
            let prepared = self.prepare_containers(rec, rt, pre).await?;
            let mut starts = Vec::new();
            for (config, log_base) in prepared {
                let streams = (config.process.stdout, config.process.stderr, config.process.stdin);
                starts.push((rt.agent.send(Request::StartContainer(config)).await, streams, log_base));
            }
            Ok::<_, PodError>(starts)
        };
        let (setup, starts) = tokio::join!(setup.wait(), host);
        setup.map_err(|e| agent_err("setting up the pod", e))?;
        self.record_starts(rec, starts?).await
    }

    /// The host's side of each container's start: its storage attached to the sandbox, its volumes shared, its
    /// log and streams ready. Returns what the agent is asked to start, with where each log starts.
    async fn prepare_containers(&self, rec: &PodRecord, rt: &Arc<Runtime>, mut pre: Option<Preattach>) -> Result<Vec<(ContainerConfig, (u64, u64))>, PodError> {
        let pod_dir = self.pod_dir(&rec.id);
        let mut prepared = Vec::new();
        for c in &rec.containers {
            let storage = ContainerStorage {
                id: c.id.clone(),
                lowers: c.lowers.iter().map(Into::into).collect(),
                upper: pod_dir.join("containers").join(&c.id).join("upper"),
                work: pod_dir.join("containers").join(&c.id).join("work"),
            };
            let (driver, sb) = (self.driver.clone(), rt.sandbox.clone());
            let rootfs = tokio::task::spawn_blocking(move || driver.attach_rootfs(&sb, &storage))
                .await
                .map_err(|e| PodError::Internal(e.to_string()))??;
            let mut mounts = Vec::new();
            for (vol, path, ro) in &c.volumes {
                let v = rec.volumes.iter().find(|v| &v.name == vol).ok_or_else(|| PodError::Internal(format!("volume {vol} vanished")))?;
                let source = self.driver.share_dir(&rt.sandbox, &share_name(&rec.id, vol), std::path::Path::new(&v.host_path))?;
                mounts.push(Mount { source, destination: path.clone(), read_only: *ro });
            }
            let log = LogWriter::open(&self.log_path(&rec.id, &c.name), self.cfg.log_max_size).map_err(|e| PodError::Internal(format!("opening the log of {}: {e}", c.name)))?;
            let base = (log.stdout, log.stderr);
            let stdout = rt.stream_id();
            let stderr = (!c.tty).then(|| rt.stream_id());
            let stdin = c.stdin.then(|| rt.stream_id());
            {
                let mut inner = rt.lock();
                let mut crt = ContainerRt { log: Arc::new(tokio::sync::Mutex::new(log)), subscribers: vec![], exit_waiters: vec![], stdin };
                if pre.as_ref().is_some_and(|p| p.container == c.name) {
                    let p = pre.take().expect("checked");
                    crt.subscribers.push(p.output);
                    crt.exit_waiters.push(p.exit);
                }
                inner.containers.insert(c.id.clone(), crt);
                inner.routes.insert(stdout, Route::Log { container: c.id.clone(), source: Source::Stdout, base: base.0 });
                if let Some(s) = stderr {
                    inner.routes.insert(s, Route::Log { container: c.id.clone(), source: Source::Stderr, base: base.1 });
                }
            }
            if let Some(s) = stdin {
                rt.add_input(s);
            }
            let mut config = ContainerConfig {
                id: c.id.clone(),
                rootfs,
                read_only: c.read_only,
                mounts,
                files: c.files.clone(),
                sysctl: c.sysctl.clone(),
                restart: c.restart,
                process: ProcessConfig {
                    args: c.args.clone(),
                    env: c.env.clone(),
                    cwd: c.workdir.clone(),
                    user: c.user.clone(),
                    group: c.group.clone(),
                    additional_groups: c.additional_groups.clone(),
                    terminal: c.tty,
                    stdin,
                    stdout,
                    stderr,
                    rlimits: c.rlimits.clone(),
                    resolved: None,
                },
            };
            // Files and volumes are put in place inside the sandbox, after this, and may change what a lookup
            // finds: with any, the agent looks for itself.
            let host_root = self.driver.open_rootfs_on_host(&rt.sandbox, &c.id).filter(|_| config.files.is_empty() && config.mounts.is_empty());
            if let Some(dir) = host_root {
                let p = config.process.clone();
                config.process.resolved =
                    tokio::task::spawn_blocking(move || crate::hostroot::resolve(dir, &p)).await.map_err(|e| PodError::Internal(e.to_string()))?;
            }
            prepared.push((config, base));
        }
        if let Some(p) = pre {
            return Err(PodError::NotFound(format!("pod {} has no container {}", rec.name, p.container)));
        }
        Ok(prepared)
    }

    /// Waits for the containers' starts, in the podfile's order, and records them running. The first failure
    /// is the answer (the caller ends the sandbox, and with it whatever started after).
    async fn record_starts(&self, rec: &mut PodRecord, starts: Vec<(PendingReply, Streams, (u64, u64))>) -> Result<(), PodError> {
        // One limit for all of them: the agent answers in order, and one that never does would otherwise hold
        // the pod's lock for the limit once per container. (Half a minute more for each container after the
        // first: a start is seconds at most.)
        let more = Duration::from_secs(30) * (rec.containers.len().saturating_sub(1) as u32);
        let deadline = tokio::time::Instant::now() + crate::agent::ANSWER_LIMIT + more;
        for (c, (reply, (stdout, stderr, stdin), log_base)) in rec.containers.iter_mut().zip(starts) {
            let pid = match reply.wait_timeout(deadline.saturating_duration_since(tokio::time::Instant::now())).await {
                Ok(Reply::Started { pid }) => pid,
                Ok(other) => return Err(PodError::Internal(format!("unexpected agent reply {other:?}"))),
                Err(e) => return Err(PodError::Sandbox(format!("starting container {}: {}", c.name, e.message))),
            };
            let s = &mut c.status;
            s.state = "running".into();
            s.pid = Some(pid);
            s.exit_code = None;
            s.started = Some(now());
            s.finished = None;
            s.restarts = 0;
            s.stdout_stream = Some(stdout);
            s.stderr_stream = stderr;
            s.stdin_stream = stdin;
            s.log_base = log_base;
        }
        Ok(())
    }

    /// Stops every running container of the pod: its stop signal, then SIGKILL after `grace`. Waits for the exits.
    async fn stop_containers(&self, rec: &PodRecord, rt: &Arc<Runtime>, grace: Duration) {
        // Exit waiters first, then the statuses: an exit in between is then seen by one or the other.
        let mut pending = Vec::new();
        {
            let mut inner = rt.lock();
            for c in &rec.containers {
                if let Some(crt) = inner.containers.get_mut(&c.id) {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    crt.exit_waiters.push(tx);
                    pending.push((c, rx));
                }
            }
        }
        let latest = self.store.get(&rec.id).ok().flatten();
        let mut waits = Vec::new();
        // The agent answers a stop at once (the exit comes later): one that does not is stuck, and the
        // teardown that follows ends its sandbox.
        let answered_by = tokio::time::Instant::now() + EXIT_SLACK;
        for (c, rx) in pending {
            let running = latest.as_ref().and_then(|r| r.containers.iter().find(|x| x.id == c.id)).is_some_and(|x| x.status.state == "running");
            if !running {
                continue;
            }
            let req = Request::StopContainer { id: c.id.clone(), signal: c.stop_signal, timeout_ms: grace.as_millis() as u64 };
            match rt.agent.call_timeout(req, answered_by.saturating_duration_since(tokio::time::Instant::now())).await {
                Ok(_) => waits.push(rx),
                Err(e) => log::warn!("pod {}: stopping container {}: {}", rec.id, c.name, e.message),
            }
        }
        let all = futures_join(waits);
        if tokio::time::timeout(grace + EXIT_SLACK, all).await.is_err() {
            log::warn!("pod {}: containers did not report their exit in time", rec.id);
        }
    }

    /// Ends a pod's sandbox and forgets its runtime; marks its running containers exited.
    async fn teardown(&self, rec: &mut PodRecord, rt: &Arc<Runtime>) {
        rt.set_closing();
        let _ = rt.agent.call_timeout(Request::Shutdown, Duration::from_secs(5)).await;
        self.detach_storage(rec, &rt.sandbox);
        self.destroy_sandbox(&rt.sandbox).await;
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&rec.id);
        rec.sandbox = None;
        self.mark_exited(rec);
    }

    /// Takes the pod's root filesystems and volumes out of its sandbox.
    fn detach_storage(&self, rec: &PodRecord, sb: &SandboxState) {
        for c in &rec.containers {
            let _ = self.driver.detach_rootfs(sb, &c.id);
        }
        for v in &rec.volumes {
            let _ = self.driver.unshare_dir(sb, &share_name(&rec.id, &v.name));
        }
    }

    /// Takes the containers' latest statuses (exits the pump recorded) and marks those still running exited.
    fn mark_exited(&self, rec: &mut PodRecord) {
        if let Ok(Some(latest)) = self.store.get(&rec.id) {
            for (c, l) in rec.containers.iter_mut().zip(latest.containers) {
                if l.id == c.id {
                    c.status = l.status;
                }
            }
        }
        for c in &mut rec.containers {
            if c.status.state == "running" {
                c.status.state = "exited".into();
                c.status.pid = None;
                c.status.finished = Some(now());
            }
        }
    }

    /// Installs the pod's port mappings for its sandbox's address.
    fn apply_ports(&self, rec: &PodRecord, sb: &SandboxState) -> Result<(), PodError> {
        let (Some(n), Some(ip)) = (&self.network, sb.details.get("ip")) else {
            return if rec.ports.is_empty() {
                Ok(())
            } else {
                Err(PodError::Conflict(format!("pod {} maps ports but this daemon runs without networking", rec.name)))
            };
        };
        if rec.ports.is_empty() && n.ports_of(&sb.id)?.is_empty() {
            return Ok(()); // nothing to install, nothing to remove
        }
        let ip = ip.parse().map_err(|_| PodError::Internal(format!("bad sandbox address {ip}")))?;
        n.set_ports(&sb.id, ip, &rec.ports)?;
        Ok(())
    }

    /// Ends a sandbox: its port mappings go first (no new traffic reaches it), its address last, once its link
    /// is off the bridge. An address given to the next pod while the dying sandbox still answered on it (and on
    /// its MAC, made from it) would split the pods' traffic; a mapping that could not be removed would send the
    /// next holder of the address this one's connections. Either failure keeps the address until the daemon's
    /// next start, which reconciles.
    async fn destroy_sandbox(&self, s: &SandboxState) {
        let mut release = true;
        if let Some(n) = &self.network {
            if let Err(e) = n.clear_ports(&s.id) {
                log::error!("sandbox {}: removing port mappings: {}; its address is kept", s.id, chain(&e));
                release = false;
            }
        }
        let (driver, s2) = (self.driver.clone(), s.clone());
        match tokio::task::spawn_blocking(move || driver.destroy(&s2)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                log::error!("{}; its address is kept", chain(&e));
                release = false;
            }
            Err(e) => {
                log::error!("destroying sandbox {}: {e}; its address is kept", s.id);
                release = false;
            }
        }
        if let Some(n) = self.network.as_ref().filter(|_| release) {
            if let Err(e) = n.release(&s.id) {
                log::error!("sandbox {}: releasing its address: {}", s.id, chain(&e));
            }
        }
    }

    /// Stops a Running pod: containers get their stop signal, then SIGKILL after `grace`; the sandbox ends;
    /// the pod is Created again with its storage intact.
    pub async fn stop(&self, key: &str, grace: Duration) -> Result<PodRecord, PodError> {
        // Any longer grace is the longest the agent honours: ours is an instant too, which must not overflow.
        let grace = grace.min(Duration::from_millis(agent_proto::MAX_STOP_TIMEOUT_MS));
        let id = self.store.resolve(key)?.id;
        let lock = self.lock_for(&id);
        let _g = lock.lock().await;
        self.stop_locked(&id, grace).await
    }

    async fn stop_locked(&self, id: &str, grace: Duration) -> Result<PodRecord, PodError> {
        let mut rec = self.store.resolve(id)?;
        if rec.state != PodState::Running {
            return Err(PodError::Conflict(format!("pod {} is not running", rec.name)));
        }
        match self.runtime(&rec.id) {
            Some(rt) => {
                self.stop_containers(&rec, &rt, grace).await;
                self.teardown(&mut rec, &rt).await;
            }
            None => {
                if let Some(sb) = rec.sandbox.take() {
                    self.destroy_sandbox(&sb).await;
                }
            }
        }
        rec.state = PodState::Created;
        self.save(&[&rec]).await?;
        log::info!("stopped pod {} ({})", rec.id, rec.name);
        Ok(rec)
    }

    /// Removes a pod and everything it owns (writable layers, pod volumes, logs). A running pod is stopped first,
    /// as `stop` does ([`DEFAULT_STOP_TIMEOUT`] for its containers to end); with `force` its containers are
    /// killed at once.
    pub async fn remove(&self, key: &str, force: bool) -> Result<PodRecord, PodError> {
        let id = self.store.resolve(key)?.id;
        let lock = self.lock_for(&id);
        let _g = lock.lock().await;
        let mut rec = self.store.resolve(&id)?;
        if rec.state == PodState::Running {
            rec = self.stop_locked(&id, if force { Duration::ZERO } else { DEFAULT_STOP_TIMEOUT }).await?;
        }
        if let Some(sb) = &rec.sandbox {
            self.destroy_sandbox(sb).await;
        }
        let dir = self.pod_dir(&rec.id);
        sandbox::remove_unmounted_dir(&dir).map_err(PodError::Internal)?;
        {
            let _g = self.records.lock().await;
            self.store.delete(&rec)?;
        }
        if let Err(e) = self.images.release(&format!("pod:{}", rec.id)).await {
            log::warn!("releasing the images of pod {}: {}", rec.id, chain(&e));
        }
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).remove(&rec.id);
        log::info!("removed pod {} ({})", rec.id, rec.name);
        Ok(rec)
    }

    /// Hands `from`'s sandbox (its containers gone) to `to`: `from` is Created again, on record with its containers
    /// exited; `to` is not started yet.
    fn hand_sandbox(&self, from: &mut PodRecord, to: &mut PodRecord, rt: &Arc<Runtime>) {
        self.mark_exited(from);
        from.state = PodState::Created;
        from.sandbox = None;
        to.sandbox = Some(rt.sandbox.clone());
        rt.hand_over(&to.id);
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.remove(&from.id);
        running.insert(to.id.clone(), rt.clone());
    }

    /// NEW failed to start in the sandbox `replace` handed it: OLD gets the sandbox back and starts again in it, so
    /// that a replace that fails loses no pod. Returns NEW's error, saying whether OLD runs again.
    async fn give_back(&self, old: &mut PodRecord, new: &mut PodRecord, rt: &Arc<Runtime>, e: PodError) -> PodError {
        let e = with_log_tail(e, &rt.sandbox);
        log::warn!("replace: pod {} failed to start in sandbox {} ({}); pod {} takes it back", new.id, rt.sandbox.id, chain(&e), old.id);
        // NEW's processes go (they never were on record as running).
        if let Err(r) = rt.agent.call_timeout(Request::ResetPod, EXIT_SLACK).await {
            log::warn!("replace: resetting sandbox {} for pod {}: {}", rt.sandbox.id, old.id, r.message);
            let _ = self.settle_start(new, rt, Err(PodError::Internal(String::new()))).await;
            return with_note(e, &format!("; the sandbox could not be reset for pod {} and is gone", old.name));
        }
        self.detach_storage(new, &rt.sandbox);
        self.hand_sandbox(new, old, rt);
        let again = match self.save(&[&*old, &*new]).await {
            Ok(()) => {
                let started = self.set_up_and_start(old, rt, None, None).await;
                self.settle_start(old, rt, started).await
            }
            // OLD is not on record with the sandbox: end it, as a failed start would.
            Err(e) => self.settle_start(old, rt, Err(e)).await,
        };
        let note = match again {
            Ok(()) => format!("pod {} runs again in its sandbox", old.name),
            Err(a) => format!("pod {} could not start again either: {}", old.name, chain(&a)),
        };
        log::info!("replace of pod {} by {} failed: {note}", old.id, new.id);
        with_note(e, &format!("; {note}"))
    }

    /// Runs NEW in OLD's sandbox: OLD's containers stop and OLD is Created again; the same sandbox (same
    /// pod-init, same namespaces) then runs NEW's containers with NEW's hostname.
    pub async fn replace(&self, old_key: &str, new_key: &str) -> Result<PodRecord, PodError> {
        let old_id = self.store.resolve(old_key)?.id;
        let new_id = self.store.resolve(new_key)?.id;
        if old_id == new_id {
            return Err(PodError::InvalidArgument("a pod cannot replace itself".into()));
        }
        // Always lock in id order, so two replaces of the same pair cannot deadlock.
        let (first, second) = if old_id < new_id { (&old_id, &new_id) } else { (&new_id, &old_id) };
        let (l1, l2) = (self.lock_for(first), self.lock_for(second));
        let _g1 = l1.lock().await;
        let _g2 = l2.lock().await;
        let mut old = self.store.resolve(&old_id)?;
        let mut new = self.store.resolve(&new_id)?;
        if old.state != PodState::Running {
            return Err(PodError::Conflict(format!("pod {} is not running: replace needs a running pod to take the sandbox from", old.name)));
        }
        if new.state != PodState::Created {
            return Err(PodError::Conflict(format!("pod {} is {}: only a created pod can replace another", new.name, new.state.as_str())));
        }
        if (old.vcpu, old.memory) != (new.vcpu, new.memory) {
            return Err(PodError::Conflict(format!(
                "pods {} ({} vCPU, {} MiB) and {} ({} vCPU, {} MiB) have different resources",
                old.name, old.vcpu, old.memory, new.name, new.vcpu, new.memory
            )));
        }
        let rt = self.runtime(&old.id).ok_or_else(|| PodError::Conflict(format!("pod {} has no live sandbox", old.name)))?;

        let t0 = Instant::now();
        self.stop_containers(&old, &rt, DEFAULT_STOP_TIMEOUT).await;
        let stopped = t0.elapsed();
        rt.agent.call_timeout(Request::ResetPod, EXIT_SLACK).await.map_err(|e| agent_err("resetting the sandbox", e))?;
        self.detach_storage(&old, &rt.sandbox);
        let reset = t0.elapsed();
        self.hand_sandbox(&mut old, &mut new, &rt);
        if let Err(e) = self.save(&[&old, &new]).await {
            // Not on record with the sandbox: OLD takes it back (or it ends).
            return Err(self.give_back(&mut old, &mut new, &rt, e).await);
        }
        let handed = t0.elapsed();
        let started = self.set_up_and_start(&mut new, &rt, None, None).await;
        if let Err(e) = started {
            return Err(self.give_back(&mut old, &mut new, &rt, e).await);
        }
        self.settle_start(&mut new, &rt, Ok(())).await?;
        log::info!(
            "replaced pod {} with {} in sandbox {} (stop {} ms, reset {} ms, hand-over {} ms, start {} ms)",
            old.id,
            new.id,
            rt.sandbox.id,
            stopped.as_millis(),
            (reset - stopped).as_millis(),
            (handed - reset).as_millis(),
            (t0.elapsed() - handed).as_millis()
        );

        Ok(new)
    }

    /// Sends a signal to the main process of every running container of the pod.
    pub async fn kill(&self, key: &str, signal: i32) -> Result<PodRecord, PodError> {
        let rec = self.store.resolve(key)?;
        if rec.state != PodState::Running {
            return Err(PodError::Conflict(format!("pod {} is not running", rec.name)));
        }
        let rt = self.runtime(&rec.id).ok_or_else(|| PodError::Conflict(format!("pod {} has no live sandbox", rec.name)))?;
        for c in rec.containers.iter().filter(|c| c.status.state == "running") {
            match rt.agent.call_timeout(Request::SignalContainer { id: c.id.clone(), signal, all: false }, EXIT_SLACK).await {
                Ok(_) => {}
                // Between two runs of its restart policy: nothing to signal.
                Err(e) if e.kind == agent_proto::AgentErrorKind::Conflict => {}
                Err(e) => return Err(agent_err(&format!("signalling {}", c.name), e)),
            }
        }

        Ok(rec)
    }

    /// A container's main process ended (reported by the agent).
    pub(crate) async fn container_exited(&self, rt: &Runtime, container_id: &str, code: i32) {
        let pod_id = rt.pod_id();
        let all_done = {
            let _g = self.records.lock().await;
            let Ok(Some(mut rec)) = self.store.get(&pod_id) else { return };
            if rec.state == PodState::Created && rec.sandbox.as_ref().is_some_and(|s| s.id == rt.sandbox.id) {
                // The pod is still starting: its record does not have this container running yet.
                rt.lock().early_exits.insert(container_id.to_string(), code);
                return;
            }
            let Some(c) = rec.containers.iter_mut().find(|c| c.id == container_id) else { return };
            set_exited(c, code);
            log::info!("pod {pod_id}: container {} exited with {code}", c.name);
            let done = rec.state == PodState::Running && rec.containers.iter().all(|c| c.status.state != "running");
            if let Err(e) = self.store.put(&[&rec]) {
                log::error!("recording the exit of {container_id}: {e}");
            }
            done
        };
        if all_done {
            self.finish_later(&pod_id, &rt.sandbox.id);
        }
    }

    /// Every container ended: the sandbox has nothing left to do. Stops the pod once whoever holds its lock
    /// is done.
    fn finish_later(&self, pod_id: &str, sandbox_id: &str) {
        let (e, pod_id, sandbox_id) = (self.arc(), pod_id.to_string(), sandbox_id.to_string());
        tokio::spawn(async move { e.finish(&pod_id, &sandbox_id).await });
    }

    /// Stops (and with auto-remove, removes) a pod whose containers have all exited.
    async fn finish(&self, pod_id: &str, sandbox_id: &str) {
        let lock = self.lock_for(pod_id);
        let g = lock.lock().await;
        let Ok(Some(rec)) = self.store.get(pod_id) else { return };
        let same = rec.sandbox.as_ref().is_some_and(|s| s.id == sandbox_id);
        if rec.state != PodState::Running || !same || rec.containers.iter().any(|c| c.status.state == "running") {
            return;
        }
        if let Err(e) = self.stop_locked(pod_id, Duration::from_secs(1)).await {
            log::warn!("pod {pod_id}: stopping after its containers exited: {e}");
            return;
        }
        drop(g);
        if rec.auto_remove {
            if let Err(e) = self.remove(pod_id, false).await {
                log::warn!("pod {pod_id}: auto-remove: {e}");
            }
        }
    }

    pub(crate) async fn container_restarted(&self, rt: &Runtime, container_id: &str, pid: i32, restarts: u32) {
        let _g = self.records.lock().await;
        let Ok(Some(mut rec)) = self.store.get(&rt.pod_id()) else { return };
        if let Some(c) = rec.containers.iter_mut().find(|c| c.id == container_id) {
            c.status.state = "running".into();
            c.status.pid = Some(pid);
            c.status.restarts = restarts;
            c.status.exit_code = None;
            c.status.started = Some(now());
            c.status.finished = None;
            let _ = self.store.put(&[&rec]);
        }
    }

    /// The sandbox of a running pod died under us: the pod is Failed, with the reason.
    pub(crate) async fn sandbox_lost(&self, rt: &Arc<Runtime>, reason: &str) {
        let pod_id = rt.pod_id();
        let lock = self.lock_for(&pod_id);
        let _g = lock.lock().await;
        let Ok(Some(mut rec)) = self.store.get(&pod_id) else { return };
        if rec.state != PodState::Running || rec.sandbox.as_ref().is_none_or(|s| s.id != rt.sandbox.id) {
            return;
        }
        // A process killed from outside closes its sockets a moment before it is gone (it frees its memory
        // first): give it that moment, so that the reason says what happened.
        let mut alive = self.driver.is_alive(&rt.sandbox);
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        while alive && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
            alive = self.driver.is_alive(&rt.sandbox);
        }
        self.teardown(&mut rec, rt).await;
        rec.state = PodState::Failed;
        rec.failure = Some(if alive {
            format!("lost the connection to the agent ({reason})")
        } else {
            format!("the sandbox ({} {}) died: {reason}", rt.sandbox.driver, rt.sandbox.pid)
        });
        let _ = self.save(&[&rec]).await;
        log::warn!("pod {pod_id} failed: {}", rec.failure.as_deref().unwrap_or(""));
    }

    /// After a daemon restart: reconnects to every running pod's agent, resumes logs where they stopped,
    /// and cleans up sandboxes of starts that were interrupted.
    pub async fn recover(&self) -> Result<(), PodError> {
        // A driver reaches only into its own sandboxes: another's would be stopped without its mounts or its
        // processes (the ns driver's pod-init outlives its agent), or its files removed through its mounts.
        let mine = self.driver.name();
        let pods = self.store.all().unwrap_or_default();
        let foreign: Vec<String> = (pods.iter())
            .filter_map(|p| p.sandbox.as_ref().filter(|s| s.driver != mine && s.process_alive()).map(|s| (p, s)))
            .map(|(p, s)| format!("{} ({} sandbox, pid {})", p.name, s.driver, s.pid))
            .collect();
        if !foreign.is_empty() {
            return Err(PodError::Conflict(format!(
                "pods run in sandboxes of another driver than {mine}: {}; run hyperd with that driver (and stop them there before switching)",
                foreign.join(", ")
            )));
        }
        self.recover_pods().await;
        // Recovery changes records, never which pods exist.
        self.release_orphan_leases(&pods).await;
        // The sandboxes of the pods that run on: every other one is gone, or goes now.
        let live: Vec<String> = self.store.all().unwrap_or_default().into_iter().filter_map(|p| p.sandbox.map(|s| s.id)).collect();
        self.remove_unrecorded_sandboxes(&live).await;
        // Addresses and port mappings of sandboxes that are gone (a crash mid-start, a sandbox that died).
        if let Some(n) = &self.network {
            if let Err(e) = n.reconcile(&live) {
                log::warn!("network: reconciling after restart: {}", chain(&e));
            }
        }
        Ok(())
    }

    /// Releases the image leases of pods that do not exist: a daemon killed between a pod's lease and its record
    /// (a create), or between its record's removal and its release (an rm), left them, and the images they hold
    /// would never be collected.
    async fn release_orphan_leases(&self, pods: &[PodRecord]) {
        let holders: std::collections::HashSet<String> = pods.iter().map(|p| format!("pod:{}", p.id)).collect();
        for holder in self.images.lease_holders().unwrap_or_default() {
            if holder.starts_with("pod:") && !holders.contains(&holder) {
                log::info!("images: releasing the lease of {holder}, which no longer exists");
                if let Err(e) = self.images.release(&holder).await {
                    log::warn!("images: releasing {holder}: {}", chain(&e));
                }
            }
        }
    }

    /// Removes the sandboxes no pod's record names (`live` are those it names): hyperd was killed after it
    /// started their process and before it recorded them. Their processes, mounts, links and directories go; the driver wrote each process's pid
    /// and start time into the sandbox's directory as it started it. Runs before the API serves, so no start is
    /// under way.
    async fn remove_unrecorded_sandboxes(&self, live: &[String]) {
        let Ok(entries) = std::fs::read_dir(self.cfg.root.join("sandboxes")) else { return };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if live.contains(&id) || !e.path().is_dir() {
                continue;
            }
            let dir = e.path();
            let (pid, start_time) = sandbox::recorded_process(&dir).unwrap_or((0, 0));
            let process = if pid > 0 { format!("process {pid}") } else { "no process recorded".to_string() };
            log::warn!("removing sandbox {id}: no pod records it (hyperd was killed while starting it; {process})");
            let s = SandboxState {
                id: id.clone(),
                driver: self.driver.name().to_string(),
                pid,
                start_time,
                // (recorded_process names only a process of this boot.)
                boot_id: sandbox::boot_id(),
                socket: dir.join("agent.sock"),
                dir,
                started: String::new(),
                details: [("host_if".to_string(), host_if_of(&id))].into(),
            };
            self.destroy_sandbox(&s).await;
        }
    }

    /// Recovers every pod at once: one whose agent is slow to answer (or never does) holds up only itself.
    async fn recover_pods(&self) {
        let Ok(all) = self.store.all() else { return };
        futures_util::future::join_all(all.into_iter().map(|rec| self.recover_one(rec))).await;
    }

    async fn recover_one(&self, mut rec: PodRecord) {
        match rec.state {
            PodState::Running => {
                if let Err(e) = self.recover_pod(&rec).await {
                    log::warn!("pod {}: cannot resume: {e}", rec.id);
                    if let Some(sb) = rec.sandbox.take() {
                        self.destroy_sandbox(&sb).await;
                    }
                    rec.state = PodState::Failed;
                    rec.failure = Some(format!("lost while hyperd was not running: {e}"));
                    for c in &mut rec.containers {
                        if c.status.state == "running" {
                            c.status.state = "exited".into();
                            c.status.pid = None;
                        }
                    }
                    let _ = self.store.put(&[&rec]);
                }
            }
            _ => {
                if let Some(sb) = rec.sandbox.take() {
                    log::info!("pod {}: removing sandbox {} of an interrupted start", rec.id, sb.id);
                    self.destroy_sandbox(&sb).await;
                    let _ = self.store.put(&[&rec]);
                }
            }
        }
    }

    async fn recover_pod(&self, rec: &PodRecord) -> Result<(), PodError> {
        /// (An agent that answered its hello answers the rest at once.)
        const RECOVERY_ANSWER_LIMIT: Duration = Duration::from_secs(60);
        let sb = rec.sandbox.clone().ok_or_else(|| PodError::Internal("running without a sandbox".into()))?;
        if !self.driver.is_alive(&sb) {
            return Err(PodError::Sandbox(format!("the sandbox ({} pid {}) is gone", sb.driver, sb.pid)));
        }
        // A VM's agent from before it kept its port open looks at it again up to every 500 ms.
        let retry = (sb.driver == "qemu").then_some(Duration::from_secs(1));
        let (client, rx, reply, _) = self.greet_agent(&sb, retry, Duration::from_secs(10), None).await?;
        let state = match reply {
            Reply::Hello { state, .. } => state,
            other => return Err(PodError::Internal(format!("unexpected agent reply {other:?}"))),
        };
        let max_stream = state
            .containers
            .iter()
            .chain(&state.execs)
            .flat_map(|p| [p.stdin, Some(p.stdout), p.stderr])
            .flatten()
            .max()
            .unwrap_or(0);
        let next_stream = max_stream.checked_add(1).ok_or_else(|| PodError::Internal(format!("the agent of pod {} names stream {max_stream}, the last there is", rec.name)))?;
        let rt = Arc::new(Runtime::new(&rec.id, sb.clone(), client, next_stream));
        let mut positions = Vec::new();
        // Containers the agent no longer knows: gone, with whatever they printed.
        let mut exited = Vec::new();
        for c in &rec.containers {
            let Some(p) = state.containers.iter().find(|p| p.id == c.id) else {
                if c.status.state == "running" {
                    exited.push((c.id.clone(), 255));
                }
                continue;
            };
            let log = LogWriter::open(&self.log_path(&rec.id, &c.name), self.cfg.log_max_size).map_err(|e| PodError::Internal(format!("opening the log of {}: {e}", c.name)))?;
            let base = c.status.log_base;
            positions.push(StreamPosition { stream: p.stdout, offset: log.stdout.saturating_sub(base.0) });
            if let Some(e) = p.stderr {
                positions.push(StreamPosition { stream: e, offset: log.stderr.saturating_sub(base.1) });
            }
            let mut inner = rt.lock();
            inner.routes.insert(p.stdout, Route::Log { container: c.id.clone(), source: Source::Stdout, base: base.0 });
            if let Some(e) = p.stderr {
                inner.routes.insert(e, Route::Log { container: c.id.clone(), source: Source::Stderr, base: base.1 });
            }
            inner.containers.insert(c.id.clone(), ContainerRt { log: Arc::new(tokio::sync::Mutex::new(log)), subscribers: vec![], exit_waiters: vec![], stdin: p.stdin });
            drop(inner);
            if let Some(s) = p.stdin {
                rt.add_input(s);
            }
            // A container that ended while no daemon listened: the agent reports its exit again once the
            // output it still holds has been sent (the hello rewound its events), and that is when the pod may
            // finish. Finishing now would end the agent before the rest of that output reached the log.
        }
        // Execs started by clients of the previous daemon: their output has nobody to go to.
        for e in &state.execs {
            let mut inner = rt.lock();
            for s in [Some(e.stdout), e.stderr].into_iter().flatten() {
                inner.routes.insert(s, Route::Discard);
            }
            drop(inner);
            positions.push(StreamPosition { stream: e.stdout, offset: 0 });
            if e.exit.is_some() {
                // Not waited for: an agent that never answers must not hold up the daemon's start, once per exec.
                rt.agent.notify(Request::RemoveExec { id: e.id.clone() });
            }
        }
        self.running.lock().unwrap_or_else(|e| e.into_inner()).insert(rec.id.clone(), rt.clone());
        tokio::spawn(runtime::pump(self.arc(), rt.clone(), rx));
        // The daemon serves only once every pod is recovered: an agent gets a short while to answer.
        rt.agent.call_timeout(Request::Attach { streams: positions }, RECOVERY_ANSWER_LIMIT).await.map_err(|e| agent_err("resuming streams", e))?;
        for (id, code) in exited {
            self.container_exited(&rt, &id, code).await;
        }
        // Restarts while no daemon listened (the agent tells them to a host that is there only): the agent's
        // count and pid are the truth.
        {
            let _g = self.records.lock().await;
            if let Ok(Some(mut latest)) = self.store.get(&rec.id) {
                let mut changed = false;
                for c in latest.containers.iter_mut().filter(|c| c.status.state == "running") {
                    // Only forward: a restart reported since the hello (the events flow already) is newer.
                    if let Some(p) = state.containers.iter().find(|p| p.id == c.id && p.exit.is_none() && p.restarts > c.status.restarts) {
                        changed = true;
                        c.status.pid = Some(p.pid);
                        c.status.restarts = p.restarts;
                    }
                }
                if changed {
                    if let Err(e) = self.store.put(&[&latest]) {
                        log::warn!("pod {}: recording restarts while hyperd was away: {e}", rec.id);
                    }
                }
            }
        }
        log::info!("pod {}: resumed (sandbox {})", rec.id, sb.id);
        Ok(())
    }
}

/// Waits for every receiver (ignoring dropped senders).
async fn futures_join(rxs: Vec<tokio::sync::oneshot::Receiver<i32>>) {
    for r in rxs {
        let _ = r.await;
    }
}

/// `hyper ports`: the mappings of a pod, applied at once when it runs.
impl Engine {
    pub fn ports(&self, key: &str) -> Result<Vec<network::PortMapping>, PodError> {
        Ok(self.store.resolve(key)?.ports)
    }

    /// Adds (`add`) or removes mappings; a running pod's rules change at once (or nothing changes).
    pub async fn change_ports(&self, key: &str, add: Vec<network::PortMapping>, remove: Vec<network::PortMapping>) -> Result<Vec<network::PortMapping>, PodError> {
        let id = self.store.resolve(key)?.id;
        let lock = self.lock_for(&id);
        let _g = lock.lock().await;
        let mut rec = self.store.resolve(&id)?;
        let mut ports = rec.ports.clone();
        for r in &remove {
            let before = ports.len();
            ports.retain(|p| !(p.protocol == r.protocol && p.host_port == r.host_port && p.container_port == r.container_port));
            if ports.len() == before {
                return Err(PodError::NotFound(format!("pod {} has no mapping {r}", rec.name)));
            }
        }
        for a in add {
            if ports.iter().any(|p| p.protocol == a.protocol && ranges_overlap((p.host_port, p.host_port_end), (a.host_port, a.host_port_end))) {
                return Err(PodError::Conflict(format!("pod {} already maps host port {}/{}", rec.name, a.host_port, a.protocol.name())));
            }
            ports.push(a);
        }
        // `rec` is this call's copy: on an error below nothing is saved.
        rec.ports = ports;
        if rec.state == PodState::Running {
            if let Some(sb) = &rec.sandbox {
                self.apply_ports(&rec, sb)?;
            }
        }
        self.save(&[&rec]).await?;
        Ok(rec.ports)
    }
}

/// Records that a container's main process ended with `code`.
fn set_exited(c: &mut ContainerRecord, code: i32) {
    c.status.state = "exited".into();
    c.status.exit_code = Some(code);
    c.status.pid = None;
    c.status.finished = Some(now());
}

fn ranges_overlap(a: (u16, u16), b: (u16, u16)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

/// The name under which a pod's volume is shared into its sandbox.
fn share_name(pod: &str, volume: &str) -> String {
    format!("{pod}-{volume}")
}

/// The host end of sandbox `id`'s network link (a tap or a veth): `hv` and the id's random part.
fn host_if_of(id: &str) -> String {
    format!("hv{}", id.get(2..).unwrap_or(id))
}

#[cfg(test)]
mod tests {
    use super::resolv_conf;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    const HOST: &str = "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch corp.example\noptions edns0 trust-ad\n";

    #[test]
    fn the_host_resolver_without_its_loopback_nameservers() {
        assert_eq!(resolv_conf(HOST, &[], &[], &[]), "nameserver 192.0.2.1\nsearch corp.example\noptions edns0 trust-ad\n");
    }

    /// A podfile with only dnsSearch used to get a resolv.conf with no nameserver at all.
    #[test]
    fn each_podfile_field_replaces_its_own_part_only() {
        assert_eq!(resolv_conf(HOST, &[], &v(&["pod.local"]), &[]), "nameserver 192.0.2.1\nsearch pod.local\noptions edns0 trust-ad\n");
        assert_eq!(resolv_conf(HOST, &[], &[], &v(&["ndots:2"])), "nameserver 192.0.2.1\nsearch corp.example\noptions ndots:2\n");
        assert_eq!(resolv_conf(HOST, &v(&["198.51.100.7"]), &[], &[]), "nameserver 198.51.100.7\nsearch corp.example\noptions edns0 trust-ad\n");
        assert_eq!(resolv_conf("", &v(&["198.51.100.7"]), &v(&["a", "b"]), &v(&["rotate"])), "nameserver 198.51.100.7\nsearch a b\noptions rotate\n");
    }

}
