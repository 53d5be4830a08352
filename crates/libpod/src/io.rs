//! Interactive I/O: exec, attach, run-and-attach, and logs.

use std::sync::Arc;
use std::time::Duration;

use agent_proto::{ProcessConfig, Reply, Request, WINDOW};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::logs::{self, Source};
use crate::runtime::{ExecRt, Route, Runtime};
use crate::store::{ContainerRecord, PodRecord, PodState};
use crate::{Engine, PodError, random_id};

/// A piece of a process's output.
#[derive(Debug, Clone)]
pub enum Chunk {
    Stdout(Bytes),
    Stderr(Bytes),
    /// An attached client fell too far behind: its output stops here (the container's log has all of it).
    Lagged,
}

/// Writes a process's input and resizes its terminal. Input is flow-controlled end to end: `write` waits while
/// the agent has a window's worth unacknowledged.
#[derive(Debug)]
pub struct InputHandle {
    rt: Arc<Runtime>,
    /// The process (container id or exec id) for resizes.
    process: String,
    stream: Option<u32>,
    offset: u64,
    acked: Option<watch::Receiver<u64>>,
}

impl InputHandle {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), PodError> {
        let (Some(stream), Some(acked)) = (self.stream, self.acked.as_mut()) else { return Ok(()) };
        for chunk in data.chunks(32 << 10) {
            while self.offset + chunk.len() as u64 > acked.borrow().saturating_add(WINDOW) {
                if acked.changed().await.is_err() {
                    return Err(PodError::Conflict("the process's input is closed".into()));
                }
            }
            self.rt.agent.send_data(stream, self.offset, chunk);
            self.offset += chunk.len() as u64;
        }
        Ok(())
    }

    /// No more input (EOF for the process's stdin).
    pub fn close(&mut self) {
        if let Some(s) = self.stream.take() {
            self.rt.agent.send_close(s, self.offset);
        }
    }

    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), PodError> {
        self.rt
            .agent
            .call(Request::Resize { id: self.process.clone(), rows, cols })
            .await
            .map(|_| ())
            .map_err(|e| PodError::Sandbox(e.message))
    }
}

/// An exec'd process: its output, its exit code, its input.
#[derive(Debug)]
pub struct ExecHandle {
    pub output: mpsc::Receiver<Chunk>,
    pub exit: oneshot::Receiver<i32>,
    pub input: InputHandle,
}

/// A container's live output and exit, and its input when it has one.
#[derive(Debug)]
pub struct AttachHandle {
    pub output: mpsc::Receiver<Chunk>,
    pub exit: oneshot::Receiver<i32>,
    pub input: Option<InputHandle>,
}

#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub container: Option<String>,
    pub follow: bool,
    pub tail: Option<usize>,
    pub timestamps: bool,
}

fn pick<'a>(rec: &'a PodRecord, container: Option<&str>) -> Result<&'a ContainerRecord, PodError> {
    match container {
        None => rec.containers.first().ok_or_else(|| PodError::NotFound(format!("pod {} has no containers", rec.name))),
        Some(n) => rec
            .containers
            .iter()
            .find(|c| c.name == n || c.id == n)
            .ok_or_else(|| PodError::NotFound(format!("pod {} has no container {n}", rec.name))),
    }
}

impl Engine {
    /// The pod and container a client names: a pod (and maybe one of its containers), or, as Hyper's
    /// `exec`, `attach` and `logs` took, a container id alone.
    pub(crate) fn resolve_target(&self, key: &str, container: Option<&str>) -> Result<(PodRecord, Option<String>), PodError> {
        match self.store.resolve(key) {
            Ok(rec) => Ok((rec, container.map(str::to_string))),
            Err(PodError::NotFound(e)) if container.is_none() => self
                .store
                .all()?
                .into_iter()
                .find(|p| p.containers.iter().any(|c| c.id == key))
                .map(|p| (p, Some(key.to_string())))
                .ok_or(PodError::NotFound(format!("{e}, nor a container with that id"))),
            Err(e) => Err(e),
        }
    }

    fn running_rt(&self, rec: &PodRecord) -> Result<Arc<Runtime>, PodError> {
        if rec.state != PodState::Running {
            return Err(PodError::Conflict(format!("pod {} is not running", rec.name)));
        }
        self.runtime(&rec.id).ok_or_else(|| PodError::Conflict(format!("pod {} has no live sandbox", rec.name)))
    }

    /// Runs a process in a running container of the pod (the first container by default).
    pub async fn exec(&self, key: &str, container: Option<&str>, args: Vec<String>, tty: bool, stdin: bool) -> Result<ExecHandle, PodError> {
        if args.is_empty() {
            return Err(PodError::InvalidArgument("no command to execute".into()));
        }
        let (rec, container) = self.resolve_target(key, container)?;
        let c = pick(&rec, container.as_deref())?;
        if c.status.state != "running" {
            return Err(PodError::Conflict(format!("container {} of pod {} is not running", c.name, rec.name)));
        }
        let rt = self.running_rt(&rec)?;
        let id = random_id("exec-");
        let stdout = rt.stream_id();
        let stderr = (!tty).then(|| rt.stream_id());
        let stdin_stream = stdin.then(|| rt.stream_id());
        let (otx, orx) = mpsc::channel(64);
        let (etx, erx) = oneshot::channel();
        {
            let mut inner = rt.lock();
            inner.routes.insert(stdout, Route::Exec { exec: id.clone(), stderr: false });
            if let Some(s) = stderr {
                inner.routes.insert(s, Route::Exec { exec: id.clone(), stderr: true });
            }
            let streams = [Some(stdout), stderr, stdin_stream].into_iter().flatten().collect();
            let acked = Arc::new([std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0)]);
            let forward = crate::runtime::exec_forwarder(rt.agent.clone(), id.clone(), otx, etx, acked.clone());
            inner.execs.insert(id.clone(), ExecRt { forward, acked, streams });
        }
        let acked = stdin_stream.map(|s| rt.add_input(s));
        let process = ProcessConfig {
            args,
            env: c.env.clone(),
            cwd: c.workdir.clone(),
            user: c.user.clone(),
            group: c.group.clone(),
            additional_groups: c.additional_groups.clone(),
            terminal: tty,
            stdin: stdin_stream,
            stdout,
            stderr,
            rlimits: c.rlimits.clone(),
            // An exec looks for itself: the container may have changed its files since it started.
            resolved: None,
        };
        match rt.agent.call(Request::Exec { id: id.clone(), container: c.id.clone(), process }).await {
            Ok(Reply::Started { .. }) => {}
            Ok(other) => {
                rt.forget_exec(&id);
                return Err(PodError::Internal(format!("unexpected agent reply {other:?}")));
            }
            Err(e) => {
                rt.forget_exec(&id);
                // An agent that did not answer in time may still run the exec, with nobody to take its output:
                // it goes (removing a running exec kills it; sent without waiting, behind what holds the agent up).
                drop(rt.agent.send(Request::RemoveExec { id: id.clone() }).await);
                return Err(PodError::Sandbox(format!("exec in {}: {}", c.name, e.message)));
            }
        }
        Ok(ExecHandle { output: orx, exit: erx, input: InputHandle { rt, process: id, stream: stdin_stream, offset: 0, acked } })
    }

    fn subscribe(&self, rt: &Arc<Runtime>, c: &ContainerRecord) -> Result<AttachHandle, PodError> {
        let (otx, orx) = mpsc::channel(64);
        let (etx, erx) = oneshot::channel();
        let stdin = {
            let mut inner = rt.lock();
            let crt = inner.containers.get_mut(&c.id).ok_or_else(|| PodError::Conflict(format!("container {} is not running", c.name)))?;
            // Those of clients gone before the container ended: a container that never ends (restarted on
            // failure) would otherwise keep one per attach ever made.
            crt.subscribers.retain(|s| !s.is_closed());
            crt.exit_waiters.retain(|w| !w.is_closed());
            crt.subscribers.push(otx);
            crt.exit_waiters.push(etx);
            crt.stdin
        };
        let input = stdin.map(|s| {
            let acked = rt.lock().inputs.get(&s).map(|w| w.subscribe());
            // Our offset continues where previous writers stopped: the acknowledged offset is the best we know.
            let offset = acked.as_ref().map(|a| *a.borrow()).unwrap_or(0);
            InputHandle { rt: rt.clone(), process: c.id.clone(), stream: Some(s), offset, acked }
        });
        Ok(AttachHandle { output: orx, exit: erx, input })
    }

    /// Attaches to a running container: its output from now on, its exit code, its input if it has one.
    pub async fn attach(&self, key: &str, container: Option<&str>) -> Result<AttachHandle, PodError> {
        let (rec, container) = self.resolve_target(key, container)?;
        let c = pick(&rec, container.as_deref())?;
        if c.status.state != "running" {
            return Err(PodError::Conflict(format!("container {} of pod {} is not running", c.name, rec.name)));
        }
        let rt = self.running_rt(&rec)?;
        let h = self.subscribe(&rt, c)?;
        // An exit recorded between the look above and the subscription took the waiters before ours was in.
        let now = self.store.resolve(&rec.id)?;
        if pick(&now, Some(&c.name))?.status.state != "running" {
            return Err(PodError::Conflict(format!("container {} of pod {} is not running", c.name, rec.name)));
        }
        Ok(h)
    }

    /// Starts a Created pod with a client attached to one container from its first byte (`run -t`).
    pub async fn start_attached(&self, key: &str, container: Option<&str>) -> Result<AttachHandle, PodError> {
        let rec = self.store.resolve(key)?;
        let c = pick(&rec, container)?.clone();
        let (otx, orx) = mpsc::channel(64);
        let (etx, erx) = oneshot::channel();
        let rec = self.start_with(&rec.id, Some(crate::lifecycle::Preattach { container: c.name.clone(), output: otx, exit: etx })).await?;
        let rt = self.running_rt(&rec)?;
        let c = pick(&rec, Some(&c.name))?;
        let input = c.status.stdin_stream.map(|s| {
            let acked = rt.lock().inputs.get(&s).map(|w| w.subscribe());
            InputHandle { rt: rt.clone(), process: c.id.clone(), stream: Some(s), offset: 0, acked }
        });
        Ok(AttachHandle { output: orx, exit: erx, input })
    }

    /// A container's log: what is recorded, then (with `follow`) what comes while the container runs.
    pub async fn logs(&self, key: &str, opts: LogOptions) -> Result<mpsc::Receiver<(Chunk, Option<String>)>, PodError> {
        let (rec, container) = self.resolve_target(key, opts.container.as_deref())?;
        let c = pick(&rec, container.as_deref())?.clone();
        let path = self.log_path(&rec.id, &c.name);
        let (tx, rx) = mpsc::channel(64);
        let me = self.arc();
        let pod_id = rec.id.clone();
        tokio::spawn(async move {
            // Read in batches: a log can be far larger than what the daemon should hold at once.
            let mut cursor = logs::LogCursor::new(&path);
            // --tail N: skip every full line but the last N (and the pieces of the lines skipped).
            let mut skip = match opts.tail {
                Some(n) => logs::count_full_records(&path).unwrap_or(0).saturating_sub(n as u64),
                None => 0,
            };
            // Without --follow, --tail N shows N lines even if more came since they were counted.
            let mut left = opts.tail.filter(|_| !opts.follow).map(|n| n as u64);
            // Whether the container was still running before the last look found nothing new.
            let mut was_running = true;
            loop {
                let Ok(records) = cursor.next_batch(1 << 20) else { return };
                if records.is_empty() {
                    if !opts.follow || !was_running {
                        return;
                    }
                    was_running = me
                        .store
                        .get(&pod_id)
                        .ok()
                        .flatten()
                        .and_then(|p| p.containers.iter().find(|x| x.id == c.id).map(|x| x.status.state == "running" && p.state == PodState::Running))
                        .unwrap_or(false);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if tx.is_closed() {
                        return;
                    }
                    continue;
                }
                for r in records {
                    if skip > 0 {
                        skip -= u64::from(r.full);
                        continue;
                    }
                    if left == Some(0) {
                        return;
                    }
                    left = left.map(|n| n - u64::from(r.full));
                    let mut data = r.content;
                    if r.full {
                        data.push(b'\n');
                    }
                    let chunk = match r.source {
                        Source::Stdout => Chunk::Stdout(Bytes::from(data)),
                        Source::Stderr => Chunk::Stderr(Bytes::from(data)),
                    };
                    let ts = opts.timestamps.then_some(r.time);
                    if tx.send((chunk, ts)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}
