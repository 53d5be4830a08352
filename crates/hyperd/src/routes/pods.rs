//! Pod routes, and the interactive sessions (attach, exec, run -t) over upgraded connections.

use std::sync::Arc;
use std::time::Duration;

use ::http::{Response, StatusCode, header};
use bytes::Bytes;
use hyper_api::pod as api;
use hyper_api::stream as st;
use hyper_api::{ApiError, ErrorKind, StreamLine};
use hyper_util::rt::TokioIo;
use image_store::ProgressSink;
use libpod::{AttachHandle, Chunk, InputHandle, PodRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::daemon::Daemon;
use crate::errors::pod_error;
use crate::routes::images::progress_line;
use crate::web::{self, Req, Resp, api_error};

fn summary(p: &PodRecord, driver: &str) -> api::PodSummary {
    api::PodSummary {
        id: p.id.clone(),
        name: p.name.clone(),
        state: p.state.as_str().into(),
        driver: p.sandbox.as_ref().map(|s| s.driver.clone()).unwrap_or_else(|| driver.to_string()),
        created: p.created.clone(),
        containers: p.containers.len(),
    }
}

pub async fn create(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    let body: api::CreateRequest = web::read_json(req).await?;
    let (tx, resp) = web::ndjson_stream();
    tokio::spawn(async move {
        let t2 = tx.clone();
        let progress = ProgressSink::new(move |p| t2.try_line::<hyper_api::image::Progress, api::CreatedPod>(&StreamLine::Progress(progress_line(p))));
        let line = match d.engine.create(body.spec, body.auto_remove, progress).await {
            Ok(p) => StreamLine::Result(api::CreatedPod { id: p.id, name: p.name }),
            Err(e) => StreamLine::Error(pod_error(&e)),
        };
        tx.line::<hyper_api::image::Progress, api::CreatedPod>(&line).await;
    });
    Ok(resp)
}

fn pod_param(q: &std::collections::HashMap<String, Vec<String>>) -> Result<String, ApiError> {
    web::require(q, "pod")
}

/// A session route acts (starts a process, a pod) only for a client that asked for the session's protocol: for
/// any other, the process would run with nobody to take its output.
fn require_upgrade(req: &Req) -> Result<(), ApiError> {
    let asked = req.headers().get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(st::UPGRADE.as_bytes()));
    if asked { Ok(()) } else { Err(api_error(ErrorKind::InvalidArgument, format!("this request needs \"Upgrade: {}\"", st::UPGRADE))) }
}

pub async fn start(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    let q = web::query(&req);
    let pod = pod_param(&q)?;
    if web::query_bool(&q, "attach") {
        require_upgrade(&req)?;
        let container = web::query_one(&q, "container");
        let h = d.engine.start_attached(&pod, container.as_deref()).await.map_err(|e| pod_error(&e))?;
        return Ok(upgrade(req, Session { output: h.output, exit: h.exit, input: SessionInput { input: h.input, owned: false }, eof_closes_input: true }));
    }
    let p = d.engine.start(&pod).await.map_err(|e| pod_error(&e))?;
    Ok(web::ok(&summary(&p, d.engine.driver().name())))
}

pub async fn stop(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    let q = web::query(&req);
    let pod = pod_param(&q)?;
    let secs: u64 = match web::query_one(&q, "time") {
        Some(t) => t.parse().map_err(|_| api_error(ErrorKind::InvalidArgument, format!("invalid time {t:?}")))?,
        None => libpod::DEFAULT_STOP_TIMEOUT.as_secs(),
    };
    let p = d.engine.stop(&pod, Duration::from_secs(secs)).await.map_err(|e| pod_error(&e))?;
    Ok(web::ok(&summary(&p, d.engine.driver().name())))
}

pub async fn remove(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    let q = web::query(&req);
    let pod = pod_param(&q)?;
    let p = d.engine.remove(&pod, web::query_bool(&q, "force")).await.map_err(|e| pod_error(&e))?;
    Ok(web::ok(&summary(&p, d.engine.driver().name())))
}

pub async fn replace(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    let body: api::ReplaceRequest = web::read_json(req).await?;
    let p = d.engine.replace(&body.old, &body.new).await.map_err(|e| pod_error(&e))?;
    Ok(web::ok(&summary(&p, d.engine.driver().name())))
}

pub async fn kill(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    let q = web::query(&req);
    let pod = pod_param(&q)?;
    let sig = web::query_one(&q, "signal").unwrap_or_else(|| "KILL".into());
    let n = podspec::signal_number(&sig).ok_or_else(|| api_error(ErrorKind::InvalidArgument, format!("unknown signal {sig:?}")))?;
    let p = d.engine.kill(&pod, n).await.map_err(|e| pod_error(&e))?;
    Ok(web::ok(&summary(&p, d.engine.driver().name())))
}

pub async fn list(d: Arc<Daemon>) -> Result<Resp, ApiError> {
    let pods = d.engine.list().map_err(|e| pod_error(&e))?;
    let driver = d.engine.driver().name();
    Ok(web::ok(&pods.iter().map(|p| summary(p, driver)).collect::<Vec<_>>()))
}

pub async fn containers(d: Arc<Daemon>) -> Result<Resp, ApiError> {
    let pods = d.engine.list().map_err(|e| pod_error(&e))?;
    let mut out = Vec::new();
    for p in &pods {
        for c in &p.containers {
            out.push(api::ContainerSummary {
                id: c.id.clone(),
                name: c.name.clone(),
                pod_id: p.id.clone(),
                pod_name: p.name.clone(),
                image: c.image.clone(),
                state: c.status.state.clone(),
                exit_code: c.status.exit_code,
            });
        }
    }
    Ok(web::ok(&out))
}

pub fn inspect_pod(d: &Daemon, key: &str) -> Result<api::PodInspect, ApiError> {
    let p = d.engine.get(key).map_err(|e| pod_error(&e))?;
    Ok(api::PodInspect {
        id: p.id.clone(),
        name: p.name.clone(),
        state: p.state.as_str().into(),
        failure: p.failure.clone(),
        created: p.created.clone(),
        hostname: p.hostname.clone(),
        resource: api::Resource { vcpu: p.vcpu, memory: p.memory },
        ip: p.sandbox.as_ref().and_then(|s| s.details.get("ip").cloned()),
        ports: wire_ports(&p.ports),
        sandbox: p.sandbox.as_ref().map(|s| api::SandboxInfo {

            id: s.id.clone(),
            driver: s.driver.clone(),
            pid: s.pid,
            started: s.started.clone(),
            details: s.details.clone(),
        }),
        containers: p
            .containers
            .iter()
            .map(|c| api::ContainerInspect {
                id: c.id.clone(),
                name: c.name.clone(),
                image: c.image.clone(),
                image_id: c.image_id.clone(),
                state: c.status.state.clone(),
                pid: c.status.pid,
                exit_code: c.status.exit_code,
                restarts: c.status.restarts,
                started: c.status.started.clone(),
                finished: c.status.finished.clone(),
                command: c.args.clone(),
                workdir: c.workdir.clone(),
                env: c.env.clone(),
                user: c.user.clone(),
                tty: c.tty,
                stdin: c.stdin,
                log_path: d.engine.log_path(&p.id, &c.name).display().to_string(),
                labels: c.labels.clone(),
            })
            .collect(),
        labels: p.labels.clone(),
        auto_remove: p.auto_remove,
        spec: p.spec.clone(),
    })
}

pub async fn inspect(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    let q = web::query(&req);
    Ok(web::ok(&inspect_pod(&d, &pod_param(&q)?)?))
}

pub async fn logs(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    let q = web::query(&req);
    let pod = pod_param(&q)?;
    let tail = match web::query_one(&q, "tail") {
        Some(t) if t == "all" => None,
        Some(t) => Some(t.parse::<usize>().map_err(|_| api_error(ErrorKind::InvalidArgument, format!("invalid --tail {t:?}")))?),
        None => None,
    };
    let opts = libpod::LogOptions {
        container: web::query_one(&q, "container"),
        follow: web::query_bool(&q, "follow"),
        tail,
        timestamps: web::query_bool(&q, "timestamps"),
    };
    let mut rx = d.engine.logs(&pod, opts).await.map_err(|e| pod_error(&e))?;
    let (tx, brx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        loop {
            // A client that leaves a quiet log ends this at once: the log's reader stops when `rx` goes.
            let next = tokio::select! {
                n = rx.recv() => n,
                _ = tx.closed() => return,
            };
            let Some((chunk, ts)) = next else { return };
            let (kind, data) = match chunk {
                Chunk::Stdout(b) => (st::STDOUT, b),
                Chunk::Stderr(b) => (st::STDERR, b),
                Chunk::Lagged => continue, // a log reader takes what the log holds, at its own pace
            };
            let payload = match ts {
                Some(t) => [t.as_bytes(), b" ", &data].concat(),
                None => data.to_vec(),
            };
            if tx.send(Bytes::from(st::encode(kind, &payload))).await.is_err() {
                return;
            }
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/vnd.hyper.stream")
        .body(http_body_util::BodyExt::boxed_unsync(web::ChannelBody(brx)))
        .expect("valid response"))
}

pub async fn attach(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    require_upgrade(&req)?;
    let q = web::query(&req);
    let pod = pod_param(&q)?;
    let container = web::query_one(&q, "container");
    let h: AttachHandle = d.engine.attach(&pod, container.as_deref()).await.map_err(|e| pod_error(&e))?;
    Ok(upgrade(req, Session { output: h.output, exit: h.exit, input: SessionInput { input: h.input, owned: false }, eof_closes_input: false }))
}

pub async fn exec(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    require_upgrade(&req)?;
    let q = web::query(&req);
    let pod = pod_param(&q)?;
    let container = web::query_one(&q, "container");
    let cmd: Vec<String> = serde_json::from_str(&web::require(&q, "cmd")?)
        .map_err(|e| api_error(ErrorKind::InvalidArgument, format!("cmd must be a JSON array of strings: {e}")))?;
    let tty = web::query_bool(&q, "tty");
    let stdin = web::query_bool(&q, "stdin");
    let h = d.engine.exec(&pod, container.as_deref(), cmd, tty, stdin).await.map_err(|e| pod_error(&e))?;
    Ok(upgrade(req, Session { output: h.output, exit: h.exit, input: SessionInput { input: Some(h.input), owned: true }, eof_closes_input: true }))
}

struct Session {
    output: mpsc::Receiver<Chunk>,
    exit: oneshot::Receiver<i32>,
    input: SessionInput,
    /// The client's end of input ends the process's input (`run -i`, an exec: the client started it with its
    /// input). An attach to a running container only stops sending: later clients can still send.
    eof_closes_input: bool,
}

/// A session's handle on its process's input. The input is `owned` when it is this client's alone (an exec's):
/// it is then closed when the session ends, however it ends (the client gone before or during the session, a
/// bad frame, a failed write to the client), as a terminal's would be, so that a shell left by its client sees
/// its end of input. A container's input is not closed when one of its clients goes.
struct SessionInput {
    input: Option<InputHandle>,
    owned: bool,
}

impl Drop for SessionInput {
    fn drop(&mut self) {
        if let Some(i) = self.input.as_mut().filter(|_| self.owned) {
            i.close();
        }
    }
}

/// Answers 101 and serves the session on the upgraded connection.
fn upgrade(req: Req, s: Session) -> Resp {
    let on = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match on.await {
            Ok(up) => serve(TokioIo::new(up), s).await,
            // The client went before its session began (dropping the session closes an exec's input).
            Err(e) => log::debug!("upgrade failed: {e}"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, st::UPGRADE)
        .body(web::full(Bytes::new()))
        .expect("valid response")
}

async fn serve<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static>(io: IO, s: Session) {
    let (mut rd, mut wr) = tokio::io::split(io);
    // Client -> process: stdin, resizes, close.
    let Session { mut output, mut exit, input: mut guard, eof_closes_input } = s;
    let reader = tokio::spawn(async move {
        let input = &mut guard.input;
        let mut input_ended = false;
        let mut buf = Vec::new();
        let mut tmp = vec![0u8; 32 << 10];
        loop {
            let n = match rd.read(&mut tmp).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.extend_from_slice(&tmp[..n]);
            loop {
                match st::decode(&mut buf) {
                    Ok(Some((st::STDIN, data))) => {
                        if let Some(i) = input.as_mut().filter(|_| !input_ended) {
                            if i.write(&data).await.is_err() {
                                *input = None;
                            }
                        }
                    }
                    Ok(Some((st::STDIN_CLOSE, _))) => {
                        // The client sends no more; an attach keeps its handle for resizes.
                        input_ended = true;
                        if let Some(i) = input.as_mut().filter(|_| eof_closes_input) {
                            i.close();
                        }
                    }
                    Ok(Some((st::RESIZE, p))) if p.len() == 4 => {
                        if let Some(i) = input.as_ref() {
                            let _ = i.resize(u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]])).await;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
    });
    // Process -> client: output, then the exit code.
    let code = loop {
        tokio::select! {
            biased;
            chunk = output.recv() => match chunk {
                Some(c) => {
                    if wr.write_all(&session_frame(c)).await.is_err() {
                        reader.abort();
                        return;
                    }
                }
                None => break (&mut exit).await.ok(),
            },
            code = &mut exit => {
                // Output that arrived before the exit is still queued: send it first.
                while let Ok(c) = output.try_recv() {
                    if wr.write_all(&session_frame(c)).await.is_err() {
                        break;
                    }
                }
                break code.ok();
            }
        }
    };
    let frame = match code {
        Some(c) => st::encode(st::EXIT, &c.to_be_bytes()),
        None => st::encode(st::ERROR, b"the session ended without an exit code (the sandbox went away)"),
    };
    let _ = wr.write_all(&frame).await;
    let _ = wr.shutdown().await;
    reader.abort();
}

/// A session's frame for a piece of output.
fn session_frame(c: Chunk) -> Vec<u8> {
    match c {
        Chunk::Stdout(b) => st::encode(st::STDOUT, &b),
        Chunk::Stderr(b) => st::encode(st::STDERR, &b),
        Chunk::Lagged => st::encode(
            st::STDERR,
            b"\r\nhyper: this client fell behind the container's output and is cut off from it; the container runs on, and `hyper logs` has all of its output\r\n",
        ),
    }
}

fn wire_ports(ports: &[network::PortMapping]) -> Vec<api::PortMapping> {
    let range = |a: u16, b: u16| if a == b { a.to_string() } else { format!("{a}-{b}") };
    ports
        .iter()
        .map(|p| api::PortMapping {
            protocol: p.protocol.name().into(),
            host_ip: p.host_ip.map(|i| i.to_string()),
            host_ports: range(p.host_port, p.host_port_end),
            container_ports: range(p.container_port, p.container_port_end),
        })
        .collect()
}

pub async fn ports(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    let q = web::query(&req);
    let pod = pod_param(&q)?;
    let ports = d.engine.ports(&pod).map_err(|e| pod_error(&e))?;
    Ok(web::ok(&wire_ports(&ports)))
}

pub async fn change_ports(d: Arc<Daemon>, req: Req) -> Result<Resp, ApiError> {
    let q = web::query(&req);
    let pod = pod_param(&q)?;
    let body: api::PortsRequest = web::read_json(req).await?;
    let parse = |v: &[String]| -> Result<Vec<network::PortMapping>, ApiError> {
        v.iter().map(|s| network::parse_spec(s).map_err(|e| api_error(ErrorKind::InvalidArgument, e))).collect()
    };
    let ports = d.engine.change_ports(&pod, parse(&body.add)?, parse(&body.remove)?).await.map_err(|e| pod_error(&e))?;
    Ok(web::ok(&wire_ports(&ports)))
}
