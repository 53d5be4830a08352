//! A running pod: its agent connection and where each stream's bytes go.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use agent_proto::Event;
use bytes::Bytes;
use sandbox::SandboxState;
use tokio::sync::{mpsc, oneshot, watch};

use crate::agent::{AgentClient, Inbound};
use crate::io::Chunk;
use crate::logs::{LogWriter, Source};
use crate::Engine;

/// Where an output stream goes.
#[derive(Debug, Clone)]
pub(crate) enum Route {
    /// A container's stdout/stderr: its log, then attached clients.
    Log { container: String, source: Source, base: u64 },
    /// An exec'd process's output: its client.
    Exec { exec: String, stderr: bool },
    /// Nobody wants it (an exec whose client went away with the previous daemon).
    Discard,
}

#[derive(Debug)]
pub(crate) struct ContainerRt {
    pub log: Arc<tokio::sync::Mutex<LogWriter>>,
    pub subscribers: Vec<mpsc::Sender<Chunk>>,
    pub exit_waiters: Vec<oneshot::Sender<i32>>,
    pub stdin: Option<u32>,
}

/// An exec'd process's way to its client, through its forwarder (see [`exec_forwarder`]).
#[derive(Debug)]
pub(crate) struct ExecRt {
    pub forward: mpsc::UnboundedSender<ExecMsg>,
    /// What the forwarder has acknowledged of the exec's stdout and stderr: the agent may be at most a window
    /// ahead, and output beyond is refused (the forwarder's queue is bounded by the window, not by the agent).
    pub acked: Arc<[std::sync::atomic::AtomicU64; 2]>,
    /// Its streams (output, and input if it has one), forgotten when it ends.
    pub streams: Vec<u32>,
}

#[derive(Debug)]
pub(crate) enum ExecMsg {
    /// Output, and the stream offset to acknowledge once the client has it.
    Data { chunk: Chunk, stream: u32, end: u64 },
    /// The exit code, after the output; `remove`: tell the agent to forget the exec once it is delivered.
    Exit { code: i32, remove: bool },
}

/// Carries one exec's output to its client, in order, and acknowledges each piece to the agent only once the
/// client has taken it: a client that reads slowly holds back its own exec (the agent sends a stream at most a
/// window ahead of its acknowledgements) and nothing else of the pod. The exit code follows the output.
pub(crate) fn exec_forwarder(
    agent: crate::agent::AgentClient,
    id: String,
    out: mpsc::Sender<Chunk>,
    exit: oneshot::Sender<i32>,
    acked: Arc<[std::sync::atomic::AtomicU64; 2]>,
) -> mpsc::UnboundedSender<ExecMsg> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut out = Some(out);
        while let Some(m) = rx.recv().await {
            match m {
                ExecMsg::Data { chunk, stream, end } => {
                    let which = usize::from(matches!(chunk, Chunk::Stderr(_)));
                    if let Some(o) = &out {
                        if o.send(chunk).await.is_err() {
                            out = None; // the client went away: the rest is acknowledged and dropped
                        }
                    }
                    agent.send_ack(stream, end);
                    acked[which].fetch_max(end, std::sync::atomic::Ordering::SeqCst);
                }
                ExecMsg::Exit { code, remove } => {
                    let _ = exit.send(code);
                    if remove {
                        let _ = agent.call(agent_proto::Request::RemoveExec { id }).await;
                    }
                    return;
                }
            }
        }
    });
    tx
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub routes: HashMap<u32, Route>,
    /// Input streams: acknowledged offset.
    pub inputs: HashMap<u32, watch::Sender<u64>>,
    pub containers: HashMap<String, ContainerRt>,
    pub execs: HashMap<String, ExecRt>,
    /// The daemon is ending this sandbox: a lost connection is expected.
    pub closing: bool,
    /// Exit codes of containers that ended while their pod was still starting (its record does not say
    /// Running yet); the end of the start records them.
    pub early_exits: HashMap<String, i32>,
}

#[derive(Debug)]
pub struct Runtime {
    /// The pod using this sandbox (`replace` hands it to another pod).
    pod_id: Mutex<String>,
    pub sandbox: SandboxState,
    pub agent: AgentClient,
    pub(crate) inner: Mutex<Inner>,
    next_stream: AtomicU32,
}

impl Runtime {
    pub(crate) fn new(pod_id: &str, sandbox: SandboxState, agent: AgentClient, first_stream: u32) -> Runtime {
        Runtime {
            pod_id: Mutex::new(pod_id.to_string()),
            sandbox,
            agent,
            inner: Mutex::new(Inner::default()),
            next_stream: AtomicU32::new(first_stream.max(1)),
        }
    }

    pub fn pod_id(&self) -> String {
        self.pod_id.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Hands the sandbox to another pod, forgetting the streams and processes of the previous one.
    pub(crate) fn hand_over(&self, pod_id: &str) {
        *self.pod_id.lock().unwrap_or_else(|e| e.into_inner()) = pod_id.to_string();
        let mut inner = self.lock();
        inner.routes.clear();
        inner.inputs.clear();
        inner.containers.clear();
        inner.execs.clear();
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stream_id(&self) -> u32 {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers an input stream; returns the watch of its acknowledged offset.
    pub(crate) fn add_input(&self, stream: u32) -> watch::Receiver<u64> {
        let (tx, rx) = watch::channel(0);
        self.lock().inputs.insert(stream, tx);
        rx
    }

    /// Forgets an exec and its streams (it ended, or never started).
    pub(crate) fn forget_exec(&self, id: &str) -> Option<ExecRt> {
        let mut inner = self.lock();
        let e = inner.execs.remove(id);
        for s in e.iter().flat_map(|e| &e.streams) {
            inner.routes.remove(s);
            inner.inputs.remove(s);
        }
        e
    }

    pub(crate) fn set_closing(&self) {
        self.lock().closing = true;
    }
}

/// Consumes everything the agent sends besides responses, in order, for one running pod.
pub(crate) async fn pump(engine: Arc<Engine>, rt: Arc<Runtime>, mut rx: crate::agent::Inbox) {
    // Each message's charge is given back when the daemon is done with it (see agent::INBOUND_LIMIT), at the
    // end of its turn here. (An exec's output waits for its client in its forwarder, bounded by the window.)
    while let Some((msg, _charge)) = rx.recv().await {
        match msg {
            Inbound::Data { stream, offset, data } => {
                // The agent's numbers are not trusted: a bogus offset must not overflow.
                let end = offset.saturating_add(data.len() as u64);
                let route = rt.lock().routes.get(&stream).cloned().unwrap_or(Route::Discard);
                match route {
                    Route::Log { container, source, base } => {
                        let (log, subs) = {
                            let inner = rt.lock();
                            match inner.containers.get(&container) {
                                Some(c) => (c.log.clone(), c.subscribers.clone()),
                                None => {
                                    rt.agent.send_ack(stream, end);
                                    continue;
                                }
                            }
                        };
                        let mut log = log.lock().await;
                        // The log holds every run of the container; this run's stream starts at `base`.
                        let have = log.len(source).saturating_sub(base);
                        // Resent after a reconnection: keep only what the log lacks.
                        if end <= have {
                            rt.agent.send_ack(stream, have);
                            continue;
                        }
                        if offset > have {
                            // Bytes the agent counts as sent never came: say so rather than lose them quietly.
                            log::error!("pod {}: {source:?} of container {container}: bytes {have}..{offset} never arrived", rt.pod_id());
                        }
                        let fresh = &data[(have.saturating_sub(offset) as usize).min(data.len())..];
                        if let Err(e) = log.write(source, fresh) {
                            log::error!("pod {}: writing log {}: {e}", rt.pod_id(), log.path().display());
                        }
                        let new_have = log.len(source).saturating_sub(base);
                        drop(log);
                        rt.agent.send_ack(stream, new_have);
                        if subs.is_empty() {
                            continue; // nobody attached: the usual case
                        }
                        let chunk = match source {
                            Source::Stdout => Chunk::Stdout(Bytes::copy_from_slice(fresh)),
                            Source::Stderr => Chunk::Stderr(Bytes::copy_from_slice(fresh)),
                        };
                        // Attached clients get a copy (the log has it all). One that falls 64 pieces behind is
                        // cut off, told so once it catches up, rather than hold up every stream of the pod.
                        let mut drop_them = Vec::new();
                        for (i, s) in subs.iter().enumerate() {
                            match s.try_send(chunk.clone()) {
                                Ok(()) => {}
                                Err(mpsc::error::TrySendError::Closed(_)) => drop_them.push(i),
                                Err(mpsc::error::TrySendError::Full(_)) => {
                                    drop_them.push(i);
                                    log::warn!("pod {}: an attached client of container {container} reads too slowly: its output is cut off", rt.pod_id());
                                    let s = s.clone();
                                    tokio::spawn(async move {
                                        let _ = s.send(Chunk::Lagged).await;
                                    });
                                }
                            }
                        }
                        if !drop_them.is_empty() {
                            if let Some(c) = rt.lock().containers.get_mut(&container) {
                                c.subscribers.retain(|s| !drop_them.iter().any(|&i| subs[i].same_channel(s)));
                            }
                        }
                    }
                    Route::Exec { exec, stderr } => {
                        let chunk = if stderr { Chunk::Stderr(Bytes::from(data)) } else { Chunk::Stdout(Bytes::from(data)) };
                        let target = rt.lock().execs.get(&exec).map(|e| (e.forward.clone(), e.acked.clone()));
                        if let Some((_, acked)) = &target {
                            let got = acked[usize::from(stderr)].load(std::sync::atomic::Ordering::SeqCst);
                            if end > got.saturating_add(agent_proto::WINDOW) {
                                log::error!("pod {}: exec {exec} sent output past its window ({end} with {got} acknowledged): dropped", rt.pod_id());
                                continue;
                            }
                        }
                        // Acknowledged by the exec's forwarder once its client has it.
                        if target.is_none_or(|(f, _)| f.send(ExecMsg::Data { chunk, stream, end }).is_err()) {
                            rt.agent.send_ack(stream, end);
                        }
                    }
                    Route::Discard => rt.agent.send_ack(stream, end),
                }
            }
            Inbound::Close { stream, offset } => {
                // Output streams end on their own; the exit event that follows is what sessions wait for.
                log::trace!("pod {}: stream {stream} closed at {offset}", rt.pod_id());
            }
            Inbound::Ack { stream, offset } => {
                if let Some(w) = rt.lock().inputs.get(&stream) {
                    w.send_modify(|v| *v = (*v).max(offset));
                }
            }
            Inbound::Event(Event::Exited { id, exec: false, status, .. }) => {
                // The record first: whoever registers a waiter after the waiters are taken sees it exited.
                engine.container_exited(&rt, &id, status.code).await;
                let waiters = {
                    let mut inner = rt.lock();
                    match inner.containers.get_mut(&id) {
                        Some(c) => {
                            c.subscribers.clear();
                            std::mem::take(&mut c.exit_waiters)
                        }
                        None => vec![],
                    }
                };
                for w in waiters {
                    let _ = w.send(status.code);
                }
            }
            Inbound::Event(Event::Exited { id, exec: true, status, .. }) => {
                // After the output queued before it; the forwarder then has the agent forget the exec.
                let e = rt.forget_exec(&id);
                if e.is_none_or(|e| e.forward.send(ExecMsg::Exit { code: status.code, remove: true }).is_err()) {
                    // (Not waited for: an agent could report exits of made-up execs without end.)
                    rt.agent.notify(agent_proto::Request::RemoveExec { id });
                }
            }
            Inbound::Event(Event::Restarted { id, pid, restarts }) => {
                engine.container_restarted(&rt, &id, pid, restarts).await;
            }
            Inbound::Disconnected(reason) => {
                let expected = rt.lock().closing;
                if !expected {
                    log::warn!("pod {}: lost its sandbox: {reason}", rt.pod_id());
                    let e = engine.clone();
                    let rt2 = rt.clone();
                    tokio::spawn(async move { e.sandbox_lost(&rt2, &reason).await });
                }
                // Wake everyone waiting on this pod.
                let mut inner = rt.lock();
                for c in inner.containers.values_mut() {
                    c.subscribers.clear();
                    for w in c.exit_waiters.drain(..) {
                        let _ = w.send(137);
                    }
                }
                for (_, e) in inner.execs.drain() {
                    let _ = e.forward.send(ExecMsg::Exit { code: 137, remove: false });
                }
                return;
            }
        }
    }
}
