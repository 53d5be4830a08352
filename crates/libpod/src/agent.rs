//! The daemon's side of the agent protocol: requests with responses, and everything else (events, stream data,
//! acknowledgements) delivered in order on a channel.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agent_proto::{AgentError, AgentErrorKind, Decoder, Event, Frame, FrameKind, Reply, Request, RequestEnvelope, Response, ResponseResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{Mutex, mpsc, oneshot};

/// What arrives from the agent besides responses.
#[derive(Debug)]
pub enum Inbound {
    Event(Event),
    Data { stream: u32, offset: u64, data: Vec<u8> },
    Close { stream: u32, offset: u64 },
    Ack { stream: u32, offset: u64 },
    /// The connection ended (the agent or its sandbox is gone, or the daemon is closing it).
    Disconnected(String),
}

/// How much the agent may have sent that the daemon has not taken in yet (a message is taken in once the pump
/// is done with it: written to a log, handed to an exec's forwarder, whose queue the exec's window bounds),
/// counting 64 bytes per message besides its data. Only a pump that cannot keep up lets this grow; an agent
/// past it is cut off rather than grow the daemon without bound.
pub const INBOUND_LIMIT: u64 = 64 << 20;

/// A received message's share of [`INBOUND_LIMIT`], given back when dropped: when the daemon is done with the
/// message.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<AtomicU64>,
    cost: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.cost, Ordering::SeqCst);
    }
}

/// What the agent sends besides responses, in order, each with its [`Charge`].
#[derive(Debug)]
pub struct Inbox(mpsc::UnboundedReceiver<(Inbound, Charge)>);

impl Inbox {
    pub async fn recv(&mut self) -> Option<(Inbound, Charge)> {
        self.0.recv().await
    }
}

/// The requests waiting for their responses, and why the connection ended once it has: a request sent after
/// that fails at once (no reader is left to answer it).
#[derive(Default, Debug)]
struct Waiters {
    by_id: HashMap<u64, oneshot::Sender<Result<Reply, AgentError>>>,
    ended: Option<String>,
}

type Pending = Arc<Mutex<Waiters>>;

/// The response to a request sent with [`AgentClient::send`], to be waited for.
pub struct PendingReply(Option<oneshot::Receiver<Result<Reply, AgentError>>>);

/// The longest any request waits for its answer: beyond the agent's own limit on a container's set-up (2
/// minutes), an agent that has not answered is stuck (a frozen guest), and what waits holds the pod's lock.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(180);

impl PendingReply {
    pub async fn wait(self) -> Result<Reply, AgentError> {
        self.wait_timeout(ANSWER_LIMIT).await
    }

    async fn wait_unbounded(self) -> Result<Reply, AgentError> {
        match self.0 {
            Some(r) => r.await.unwrap_or_else(|_| Err(lost("closed"))),
            None => Err(lost("closed")),
        }
    }

    /// Like [`PendingReply::wait`] but gives up after `timeout`.
    pub async fn wait_timeout(self, timeout: Duration) -> Result<Reply, AgentError> {
        match tokio::time::timeout(timeout, self.wait_unbounded()).await {
            Ok(r) => r,
            Err(_) => Err(AgentError::new(AgentErrorKind::Failed, format!("the agent did not answer within {}s", timeout.as_secs()))),
        }
    }
}

/// Fresh random bytes from the kernel.
fn random_bytes(buf: &mut [u8]) -> Result<(), String> {
    // SAFETY: getrandom writes at most buf.len() bytes into the buffer we own.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == buf.len() as isize { Ok(()) } else { Err(format!("getrandom: {}", std::io::Error::last_os_error())) }
}

/// The id of the first request on a connection, which must be the hello ([`hello`]).
const HELLO_ID: u64 = 1;

/// A connection to an agent. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentClient {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    pending: Pending,
    next: Arc<AtomicU64>,
    /// What the hello's answer must carry ([`Request::Hello`]'s `nonce`).
    nonce: u64,
    /// Whether the answer taken carried it.
    echoed: Arc<std::sync::atomic::AtomicBool>,
}

fn lost(msg: &str) -> AgentError {
    AgentError::new(AgentErrorKind::Failed, format!("agent connection lost: {msg}"))
}

impl AgentClient {
    /// Connects to the agent's socket, retrying until `timeout` (a VM's agent needs its guest to boot) or until
    /// `alive` says the sandbox process is gone. The first request sent must be the hello: what the agent sends
    /// before answering it is skipped.
    ///
    /// With `require_nonce`, only an answer that echoes the hello's nonce is taken; without it (an agent from
    /// before the nonce, in a sandbox an older daemon started), one without a nonce is too.
    pub async fn connect(
        socket: &Path,
        timeout: Duration,
        alive: impl Fn() -> bool,
        require_nonce: bool,
    ) -> Result<(AgentClient, Inbox), String> {
        let end = tokio::time::Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(socket).await {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() >= end => return Err(format!("connecting to the agent at {}: {e}", socket.display())),
                Err(_) if !alive() => return Err("the sandbox exited before its agent answered".to_string()),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };

        let mut nonce = [0u8; 8];
        random_bytes(&mut nonce).map_err(|e| format!("a nonce for the agent's hello: {e}"))?;
        let nonce = u64::from_ne_bytes(nonce);

        let echoed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let echoed2 = echoed.clone();
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
        let (itx, irx) = mpsc::unbounded_channel::<(Inbound, Charge)>();
        let budget = Arc::new(AtomicU64::new(0));
        let (itx2, budget2) = (itx.clone(), budget.clone());
        // Queues a message with its charge; false once the agent is past its limit.
        let deliver = move |msg: Inbound, data_len: usize| {
            let cost = 64 + data_len as u64;
            let total = budget.fetch_add(cost, Ordering::SeqCst) + cost;
            let charge = Charge { budget: budget.clone(), cost };
            if total > INBOUND_LIMIT {
                return false;
            }
            let _ = itx.send((msg, charge));
            true
        };
        let flooded = || format!("the agent sent more than {} MiB that the daemon had not taken in yet (it ignores its flow control)", INBOUND_LIMIT >> 20);
        let pending: Pending = Arc::new(Mutex::new(Waiters::default()));
        tokio::spawn(async move {
            while let Some(mut buf) = wrx.recv().await {
                // Coalesce what is queued into one write.
                while let Ok(more) = wrx.try_recv() {
                    buf.extend_from_slice(&more);
                }
                if wr.write_all(&buf).await.is_err() {
                    break;
                }
            }
        });
        let p2 = pending.clone();
        tokio::spawn(async move {
            let mut dec = Decoder::new();
            let mut buf = vec![0u8; 64 << 10];
            // What came before the answer to the hello. A VM's virtio port is one stream across hosts: a
            // host can find at its start the rest of what the agent wrote for the previous one (a frame cut
            // by that host's death). Everything before the hello's answer is skipped; the hello makes the
            // agent send again whatever this host has not acknowledged. Those bytes can be a container's output
            // made to look like the answer: only the true one carries the hello's nonce.
            let mut before_hello = Some(agent_proto::Resync::new());
            let reason = 'outer: loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) => break "the agent closed the connection".to_string(),
                    Ok(n) => n,
                    Err(e) => break format!("reading from the agent: {e}"),
                };
                match &mut before_hello {
                    Some(sync) => {
                        // Whether the answer taken carried the nonce (an agent from before it answers without).
                        let carried = std::cell::Cell::new(false);
                        let is_hello_answer = |p: &[u8]| {
                            serde_json::from_slice::<Response>(p).is_ok_and(|r| {
                                let taken = r.id == HELLO_ID && (r.nonce == Some(nonce) || (!require_nonce && r.nonce.is_none()));
                                carried.set(taken && r.nonce.is_some());
                                taken
                            })
                        };
                        let Some((stream, skipped)) = sync.push(&buf[..n], FrameKind::Response, is_hello_answer) else { continue };
                        if skipped > 0 {
                            log::debug!("agent connection: skipped {skipped} bytes of an earlier connection before the hello's answer");
                        }
                        echoed2.store(carried.get(), Ordering::SeqCst);
                        dec.feed(&stream);
                        before_hello = None;
                    }
                    None => dec.feed(&buf[..n]),
                }
                loop {
                    match dec.next_frame() {
                        Ok(Some(Frame::Response(b))) => match serde_json::from_slice::<Response>(&b) {
                            Ok(r) => {
                                if let Some(w) = p2.lock().await.by_id.remove(&r.id) {
                                    let _ = w.send(match r.result {
                                        ResponseResult::Ok(x) => Ok(x),
                                        ResponseResult::Err(e) => Err(e),
                                    });
                                }
                            }
                            Err(e) => break 'outer format!("malformed response from the agent: {e}"),
                        },
                        Ok(Some(Frame::Event(b))) => match serde_json::from_slice::<Event>(&b) {
                            Ok(e) => {
                                if !deliver(Inbound::Event(e), b.len()) {
                                    break 'outer flooded();
                                }
                            }
                            Err(e) => break 'outer format!("malformed event from the agent: {e}"),
                        },
                        Ok(Some(Frame::Data { stream, offset, data })) => {
                            let len = data.len();
                            if !deliver(Inbound::Data { stream, offset, data }, len) {
                                break 'outer flooded();
                            }
                        }
                        Ok(Some(Frame::Close { stream, offset })) => {
                            if !deliver(Inbound::Close { stream, offset }, 0) {
                                break 'outer flooded();
                            }
                        }
                        Ok(Some(Frame::Ack { stream, offset })) => {
                            if !deliver(Inbound::Ack { stream, offset }, 0) {
                                break 'outer flooded();
                            }
                        }
                        Ok(Some(Frame::Request(_))) => break 'outer "the agent sent a request".to_string(),
                        Ok(None) => break,
                        Err(e) => break 'outer format!("protocol error: {e}"),
                    }
                }
            };
            {
                let mut waiters = p2.lock().await;
                for (_, w) in waiters.by_id.drain() {
                    let _ = w.send(Err(lost(&reason)));
                }
                waiters.ended = Some(reason.clone());
            }
            // (Past the limit or not: the end is always told.)
            let _ = itx2.send((Inbound::Disconnected(reason), Charge { budget: budget2, cost: 0 }));
        });
        Ok((AgentClient { tx, pending, next: Arc::new(AtomicU64::new(HELLO_ID)), nonce, echoed }, Inbox(irx)))
    }

    /// The first request on every connection: the protocol version, the host's clock, fresh randomness (a VM
    /// restored from a template has the template's clock and random generator state) and this connection's nonce.
    pub fn hello(&self) -> Request {
        let time_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_nanos() as u64);
        let mut entropy = vec![0u8; 32];
        if random_bytes(&mut entropy).is_err() {
            entropy.clear();
        }
        Request::Hello { version: agent_proto::VERSION, time_ns, entropy, nonce: self.nonce }
    }

    /// Whether the agent's answer to the hello carried its nonce (an agent from before the nonce answers without).
    pub fn nonce_echoed(&self) -> bool {
        self.echoed.load(Ordering::SeqCst)
    }

    /// Sends a request and waits for its response.
    pub async fn call(&self, request: Request) -> Result<Reply, AgentError> {
        self.send(request).await.wait().await
    }

    /// Sends a request now, and returns what waits for its response. The agent answers requests one at a
    /// time, in the order they were sent, so requests sent back to back are pipelined: each starts as soon as
    /// the one before it ends, without a round trip through the daemon in between.
    pub async fn send(&self, request: Request) -> PendingReply {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (w, r) = oneshot::channel();
        {
            let mut waiters = self.pending.lock().await;
            if let Some(reason) = &waiters.ended {
                let _ = w.send(Err(lost(reason)));
                return PendingReply(Some(r));
            }
            waiters.by_id.insert(id, w);
        }
        let json = serde_json::to_vec(&RequestEnvelope { id, request }).expect("serialisable");
        let mut frame = Vec::with_capacity(json.len() + 12);
        agent_proto::encode(&mut frame, FrameKind::Request, &json);
        if self.tx.send(frame).is_err() {
            self.pending.lock().await.by_id.remove(&id);
            return PendingReply(None);
        }
        PendingReply(Some(r))
    }

    /// Sends a request whose answer nobody waits for (nothing is kept for it: an agent that never answers
    /// costs nothing).
    pub fn notify(&self, request: Request) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let json = serde_json::to_vec(&RequestEnvelope { id, request }).expect("serialisable");
        let mut frame = Vec::with_capacity(json.len() + 12);
        agent_proto::encode(&mut frame, FrameKind::Request, &json);
        let _ = self.tx.send(frame);
    }

    /// Like [`AgentClient::call`] but gives up after `timeout`.
    pub async fn call_timeout(&self, request: Request, timeout: Duration) -> Result<Reply, AgentError> {
        self.send(request).await.wait_timeout(timeout).await
    }

    pub fn send_data(&self, stream: u32, offset: u64, data: &[u8]) {
        let mut f = Vec::with_capacity(data.len() + 20);
        agent_proto::encode_data(&mut f, stream, offset, data);
        let _ = self.tx.send(f);
    }

    pub fn send_ack(&self, stream: u32, offset: u64) {
        let mut f = Vec::with_capacity(20);
        agent_proto::encode_ack(&mut f, stream, offset);
        let _ = self.tx.send(f);
    }

    pub fn send_close(&self, stream: u32, offset: u64) {
        let mut f = Vec::with_capacity(20);
        agent_proto::encode_close(&mut f, stream, offset);
        let _ = self.tx.send(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_proto::AgentState;
    use std::io::{Read, Write};

    fn answer(agent: &str, nonce: Option<u64>) -> Vec<u8> {
        let state = AgentState { pod_ready: true, hostname: agent.into(), containers: vec![], execs: vec![] };
        let r = Response { id: HELLO_ID, nonce, result: ResponseResult::Ok(Reply::Hello { version: agent_proto::VERSION, agent: agent.into(), state }) };
        let mut out = Vec::new();
        agent_proto::encode(&mut out, FrameKind::Response, &serde_json::to_vec(&r).unwrap());
        out
    }

    /// Reads what a daemon sends until its hello; returns the hello's nonce.
    fn read_hello(s: &mut std::os::unix::net::UnixStream) -> u64 {
        let mut dec = Decoder::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(Frame::Request(b)) = dec.next_frame().unwrap() {
                let hello = serde_json::from_slice::<RequestEnvelope>(&b).unwrap();
                let Request::Hello { nonce, .. } = hello.request else { panic!("not a hello: {hello:?}") };
                return nonce;
            }
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "no hello");
            dec.feed(&buf[..n]);
        }
    }

    /// An agent on a socket of its own: writes `before`, reads the hello, answers it truly; the connection is
    /// the thread's result.
    fn scripted_agent(before: Vec<u8>, echo_nonce: bool) -> (tempfile::TempDir, std::path::PathBuf, std::thread::JoinHandle<std::os::unix::net::UnixStream>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let peer = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(&before).unwrap();
            let nonce = read_hello(&mut s);
            s.write_all(&answer("true", echo_nonce.then_some(nonce))).unwrap();
            s
        });
        (dir, path, peer)
    }

    /// What a new daemon finds first on a VM's port after the one before died: the rest of a data frame, here a
    /// container's output written to look like the hello's answer (with each nonce it could guess). Only the
    /// agent's true answer, which carries the nonce, is taken.
    #[tokio::test]
    async fn a_container_cannot_forge_the_hello_answer_in_output_left_in_the_port() {
        let mut output = b"container output ".to_vec();
        for guess in [None, Some(0), Some(1)] {
            output.extend(answer("forged", guess));
        }
        let mut frame = Vec::new();
        agent_proto::encode_data(&mut frame, 3, 0, &output);
        let (_dir, path, peer) = scripted_agent(frame[frame.len() / 3..].to_vec(), true);
        let (client, _rx) = AgentClient::connect(&path, Duration::from_secs(5), || true, true).await.unwrap();
        let reply = client.send(client.hello()).await.wait_timeout(Duration::from_secs(5)).await.unwrap();
        let Reply::Hello { agent, .. } = reply else { panic!("{reply:?}") };
        assert_eq!(agent, "true", "the forged answer was taken");
        assert!(client.nonce_echoed());
        drop(peer.join().unwrap());
    }

    /// An agent from before the nonce (in a sandbox an older daemon started) is still greeted where the nonce is
    /// not required, and only there.
    #[tokio::test]
    async fn an_agent_from_before_the_nonce_is_greeted_where_it_is_not_required() {
        for required in [false, true] {
            let (_dir, path, peer) = scripted_agent(Vec::new(), false);
            let (client, _rx) = AgentClient::connect(&path, Duration::from_secs(5), || true, required).await.unwrap();
            let reply = client.send(client.hello()).await.wait_timeout(Duration::from_secs(1)).await;
            assert_eq!(reply.is_ok(), !required, "nonce required: {required}: {reply:?}");
            assert!(!client.nonce_echoed());
            drop(peer.join().unwrap());
        }
    }

    /// A request sent after the connection ended fails at once. It used to wait forever: the reader that answers
    /// requests was gone, and a stop or replace that lost its VM hung holding the pod's lock.
    #[tokio::test]
    async fn a_request_after_the_connection_ended_fails_at_once() {
        let (_dir, path, peer) = scripted_agent(Vec::new(), true);
        let (client, mut rx) = AgentClient::connect(&path, Duration::from_secs(5), || true, true).await.unwrap();
        client.send(client.hello()).await.wait_timeout(Duration::from_secs(5)).await.unwrap();
        drop(peer.join().unwrap()); // the sandbox dies
        loop {
            match rx.recv().await.map(|(m, _)| m) {
                Some(Inbound::Disconnected(_)) | None => break,
                Some(_) => {}
            }
        }
        let r = tokio::time::timeout(Duration::from_secs(5), client.call(Request::ResetPod)).await;
        let e = r.expect("the request fails at once, not when the pod's lock is given up").unwrap_err();
        assert!(e.message.contains("agent connection lost"), "{e}");
    }

    /// An agent that ignores its flow control and sends faster than the daemon takes in is cut off at
    /// INBOUND_LIMIT; it used to queue in the daemon without bound.
    #[tokio::test]
    async fn an_agent_that_floods_the_daemon_is_cut_off() {
        let (_dir, path, peer) = scripted_agent(Vec::new(), true);
        let (client, mut rx) = AgentClient::connect(&path, Duration::from_secs(5), || true, true).await.unwrap();
        client.send(client.hello()).await.wait_timeout(Duration::from_secs(5)).await.unwrap();
        let mut s = peer.join().unwrap();
        let writer = std::thread::spawn(move || {
            let chunk = vec![b'x'; 32 << 10];
            let mut frames = Vec::new();
            for i in 0..8u64 {
                agent_proto::encode_data(&mut frames, 7, i * chunk.len() as u64, &chunk);
            }
            // 4096 writes of 256 KiB: 1 GiB, far past the limit; the daemon stops reading and closes.
            for _ in 0..4096 {
                if s.write_all(&frames).is_err() {
                    return true;
                }
            }
            false
        });
        // Nobody takes the messages in (a pump stuck on a slow disk, say) until the connection is cut: a request
        // fails at once from then on (this agent answers none).
        let cut = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let e = client.send(Request::ResetPod).await.wait_timeout(Duration::from_millis(50)).await.unwrap_err();
            if e.message.contains("agent connection lost") {
                break;
            }
            assert!(tokio::time::Instant::now() < cut, "never cut off: {e}");
        }
        let mut queued = 0u64;
        let reason = loop {
            match rx.recv().await {
                Some((Inbound::Disconnected(r), _)) => break r,
                Some((Inbound::Data { data, .. }, _)) => queued += data.len() as u64,
                Some(_) => {}
                None => panic!("no end told"),
            }
        };
        assert!(reason.contains("ignores its flow control"), "{reason}");
        assert!(queued <= INBOUND_LIMIT, "{queued} bytes were queued");
        // (The daemon then ends the sandbox; here, the connection's last user goes.)
        drop((client, rx));
        let closed = tokio::task::spawn_blocking(move || writer.join().unwrap()).await.unwrap();
        assert!(closed, "the connection is closed");
    }
}
