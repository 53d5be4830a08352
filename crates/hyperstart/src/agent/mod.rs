//! The agent: one single-threaded poll loop over the daemon connection, process stdio and signals.
//!
//! Single-threaded on purpose: forking is then always safe, and there is no locking. Everything that can block
//! for long (a container's setup) happens in a child process.

mod net;
mod spawn;
pub mod streams;

pub use spawn::adopt as spawn_adopt;

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent_proto::{
    AgentError, AgentErrorKind as K, AgentState, ContainerConfig, Decoder, Event, ExitStatus, Frame, FrameKind,
    PodSetup, ProcessConfig, ProcessState, Reply, Request, RequestEnvelope, Response, ResponseResult, Restart,
};

use crate::init::InitConfig;
use crate::sys;
use streams::{In, Out};

/// How the agent reaches the daemon.
pub enum Transport {
    /// A listening unix socket (ns driver); a new connection replaces the previous one.
    Listener(OwnedFd),
    /// A virtio-serial port device (VMs); reopened when the host side goes away.
    Port(PathBuf),
}

pub struct Options {
    pub transport: Transport,
    /// Private scratch directory (a tmpfs the agent mounts).
    pub work: PathBuf,
}

struct Conn {
    fd: OwnedFd,
    dec: Decoder,
    out: Vec<u8>,
    out_pos: usize,
    /// A virtio port that read EOF: no host is connected (or not yet known to be). It is not polled (it would
    /// report POLLHUP at once, again and again) until SIGIO or the retry delay says to look again.
    idle: bool,
    /// The port read EOF since the last frame decoded: a host may have died in the middle of a frame, and a new
    /// host's hello may sit behind the rest of it.
    host_may_have_changed: bool,
}

impl Conn {
    fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }
}

struct Pod {
    init_pid: i32,
    pidns: String,
    hostname: String,
    dir: PathBuf,
    shm: PathBuf,
    shm_size: u64,
}

struct Proc {
    container: String,
    pid: i32,
    exit: Option<ExitStatus>,
    exited_at: Option<Instant>,
    event_sent: bool,
    restarts: u32,
    stdin: Option<u32>,
    stdout: u32,
    stderr: Option<u32>,
    master: Option<OwnedFd>,
    config: Option<ContainerConfig>,
    mnt_ns: Option<MntNs>,
    stopping: bool,
    restart_at: Option<Instant>,
    /// When its current run started, and how many restarts in a row followed runs shorter than
    /// [`RESTART_RESET_AFTER`] (the restart delay doubles with each).
    started_at: Instant,
    quick_failures: u32,
}

/// A container's mount namespace, held open: a namespace's id is an inode number the kernel gives to another
/// namespace once this one is freed, and the container's processes are found by that id.
struct MntNs {
    id: String,
    _hold: std::fs::File,
}

impl MntNs {
    fn of(pid: i32) -> Option<MntNs> {
        let hold = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).ok()?;
        // The id of the namespace held (the process may have moved on since: it would show another).
        let id = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&hold))).ok()?;
        Some(MntNs { id: id.to_string_lossy().into_owned(), _hold: hold })
    }
}

impl Proc {
    /// A process of `container` with `process`'s streams, not started yet.
    fn new(container: String, process: &ProcessConfig, pid: i32, master: Option<OwnedFd>, config: Option<ContainerConfig>) -> Proc {
        Proc {
            container,
            pid,
            exit: None,
            exited_at: None,
            event_sent: false,
            restarts: 0,
            stdin: process.stdin,
            stdout: process.stdout,
            stderr: process.stderr,
            master,
            config,
            mnt_ns: None,
            stopping: false,
            restart_at: None,
            started_at: Instant::now(),
            quick_failures: 0,
        }
    }

    /// Its output streams (stderr is absent with a terminal).
    fn outputs(&self) -> impl Iterator<Item = u32> {
        [Some(self.stdout), self.stderr].into_iter().flatten()
    }

    /// Records the exit of `pid` if it is still this process's; says whether it was.
    fn exited(&mut self, pid: i32, status: ExitStatus) -> bool {
        if self.pid != pid {
            return false;
        }
        self.exit = Some(status);
        self.exited_at = Some(Instant::now());
        self.master = None;
        true
    }
}

/// The process side of `p`'s outputs is done: once what is buffered is sent, they close.
fn end_outputs(outs: &mut BTreeMap<u32, Out>, p: &Proc) {
    for s in p.outputs() {
        if let Some(o) = outs.get_mut(&s) {
            o.eof = true;
        }
    }
}

#[derive(Clone, Debug)]
enum Owner {
    Container(String),
    Exec(String),
    PodInit,
}

enum Timer {
    Kill(String),
    Restart(String),
}

pub struct Agent {
    opts: Options,
    conn: Option<Conn>,
    sigfd: OwnedFd,
    pod: Option<Pod>,
    /// The latest `SetupPod` succeeded. The daemon sends a pod's container starts right behind its set-up,
    /// without waiting for the answer: after a failed set-up they are refused.
    set_up: bool,
    containers: BTreeMap<String, Proc>,
    execs: BTreeMap<String, Proc>,
    outs: BTreeMap<u32, Out>,
    ins: BTreeMap<u32, In>,
    owners: HashMap<i32, Owner>,
    timers: Vec<(Instant, Timer)>,
    shutdown: bool,
    port_backoff: Duration,
    next_port_try: Instant,
    /// A host sent a request at least once: until then the port is tried every PORT_RETRY_MIN, so that a VM
    /// restored from a template (saved while its agent waited for a host) connects at once.
    ever_connected: bool,
}

/// A pipe still open this long after its process exits no longer delays the exit event (a background child may
/// hold it open forever).
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// Connection output beyond which stream data waits.
const CONN_HIGH_WATER: usize = 4 << 20;
/// The longest delay before a container is restarted, and how long a run must last for the delay to start again
/// from 100 ms (Docker's values).
const RESTART_DELAY_MAX: Duration = Duration::from_secs(60);
const RESTART_RESET_AFTER: Duration = Duration::from_secs(10);
/// How often a restart held back by output the host has not taken looks again.
const RESTART_WHILE_FULL: Duration = Duration::from_secs(1);
/// How often a VM's agent looks at its port again while no host is connected, from every 10 ms to every
/// 500 ms. The port signals (SIGIO) when a host connects, and the agent looks at once then; these delays
/// cover a signal that came before the agent asked for it.
const PORT_RETRY_MIN: Duration = Duration::from_millis(10);
const PORT_RETRY_MAX: Duration = Duration::from_millis(500);

fn err(kind: K, msg: impl Into<String>) -> AgentError {
    AgentError::new(kind, msg)
}

impl Agent {
    pub fn new(opts: Options) -> std::io::Result<Agent> {
        let sigfd = sys::signal_fd()?;
        Ok(Agent {
            opts,
            conn: None,
            sigfd,
            pod: None,
            set_up: false,
            containers: BTreeMap::new(),
            execs: BTreeMap::new(),
            outs: BTreeMap::new(),
            ins: BTreeMap::new(),
            owners: HashMap::new(),
            timers: Vec::new(),
            shutdown: false,
            port_backoff: PORT_RETRY_MIN,
            next_port_try: Instant::now(),
            ever_connected: false,
        })
    }

    /// Runs until a `Shutdown` request.
    pub fn run(&mut self) -> std::io::Result<()> {
        loop {
            if self.no_host() && Instant::now() >= self.next_port_try {
                if let Transport::Port(p) = &self.opts.transport {
                    // Without a host on the other side the port reads EOF at once: look again later (or at
                    // SIGIO), each time a little later, so an agent without a daemon costs (next to) nothing.
                    self.next_port_try = Instant::now() + self.port_backoff;
                    if self.ever_connected {
                        self.port_backoff = (self.port_backoff * 2).min(PORT_RETRY_MAX);
                    }
                    if let Some(c) = self.conn.as_mut() {
                        let _ = sys::set_async(c.fd.as_raw_fd(), false);
                        c.idle = false;
                    } else if let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open(p) {
                        let _ = sys::set_nonblocking(f.as_raw_fd(), true);
                        self.connected(OwnedFd::from(f));
                    }
                }
            }
            let mut fds: Vec<libc::pollfd> = Vec::new();
            let mut tags: Vec<Tag> = Vec::new();
            let mut add = |fd: RawFd, events: libc::c_short, tag: Tag| {
                fds.push(libc::pollfd { fd, events, revents: 0 });
                tags.push(tag);
            };
            add(self.sigfd.as_raw_fd(), libc::POLLIN, Tag::Signal);
            if let Transport::Listener(l) = &self.opts.transport {
                add(l.as_raw_fd(), libc::POLLIN, Tag::Listener);
            }
            if let Some(c) = self.conn.as_ref().filter(|c| !c.idle) {
                let ev = libc::POLLIN | if c.pending() > 0 { libc::POLLOUT } else { 0 };
                add(c.fd.as_raw_fd(), ev, Tag::Conn);
            }
            for (id, o) in &self.outs {
                if o.wants_read() {
                    add(o.fd.as_ref().expect("wants_read implies fd").as_raw_fd(), libc::POLLIN, Tag::Out(*id));
                }
            }
            for (id, i) in &self.ins {
                if i.wants_write() {
                    add(i.fd.as_ref().expect("wants_write implies fd").as_raw_fd(), libc::POLLOUT, Tag::In(*id));
                }
            }
            let timeout = self.poll_timeout();
            sys::poll(&mut fds, timeout)?;
            for (pfd, tag) in fds.iter().zip(tags) {
                if pfd.revents == 0 {
                    continue;
                }
                match tag {
                    Tag::Signal => {
                        sys::drain_signalfd(self.sigfd.as_raw_fd());
                        self.reap();
                        if self.conn.as_ref().is_some_and(|c| c.idle) {
                            // SIGIO: maybe a host connected to the idle port. Look now.
                            self.next_port_try = Instant::now();
                        }
                    }
                    Tag::Listener => self.accept(),
                    Tag::Conn => {
                        if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                            self.read_conn();
                        }
                    }
                    Tag::Out(id) => {
                        if let Some(o) = self.outs.get_mut(&id) {
                            o.read_some();
                        }
                    }
                    Tag::In(id) => {
                        if let Some(i) = self.ins.get_mut(&id) {
                            i.write_some();
                        }
                    }
                }
            }
            self.after_io();
            self.fire_timers();
            self.flush_conn();
            if self.shutdown && self.conn.as_ref().is_none_or(|c| c.pending() == 0) {
                return Ok(());
            }
        }
    }

    /// No host to talk to: no connection, or an idle port.
    fn no_host(&self) -> bool {
        self.conn.as_ref().is_none_or(|c| c.idle)
    }

    fn poll_timeout(&self) -> i32 {
        let now = Instant::now();
        let mut next: Option<Instant> = self.timers.iter().map(|(t, _)| *t).min();
        // An exit waits for its output for a while, but only matters when there is a daemon to tell.
        if !self.no_host() {
            for p in self.containers.values().chain(self.execs.values()) {
                if let (Some(at), false) = (p.exited_at, p.event_sent) {
                    let t = (at + EXIT_GRACE).max(now);
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
        }
        if self.no_host() && matches!(self.opts.transport, Transport::Port(_)) {
            // Quick retries right after a disconnection (a daemon restarting), then slower ones.
            let t = self.next_port_try.max(now);
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        match next {
            None => -1,
            Some(t) => t.saturating_duration_since(now).as_millis().min(60_000) as i32 + 1,
        }
    }

    fn accept(&mut self) {
        let Transport::Listener(l) = &self.opts.transport else { return };
        // SAFETY: accept4 on our listening socket; NULL address pointers are allowed.
        let fd = unsafe { libc::accept4(l.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) };
        if fd >= 0 {
            self.connected(spawn::adopt(fd));
        }
    }

    /// A new daemon connection replaces the old one; every unacknowledged byte will be sent again.
    fn connected(&mut self, fd: OwnedFd) {
        crate::vm::trace("connected");
        self.conn = Some(Conn { fd, dec: Decoder::new(), out: Vec::new(), out_pos: 0, idle: false, host_may_have_changed: false });
        self.rewind();
    }

    /// Everything not acknowledged goes again, and exits are reported again: a (new) daemon is listening. Done
    /// on every connection and on every `hello` (a virtio port does not always tell a new host connection apart).
    fn rewind(&mut self) {
        for o in self.outs.values_mut() {
            o.rewind();
        }
        for i in self.ins.values_mut() {
            i.acked = 0;
        }
        for p in self.containers.values_mut().chain(self.execs.values_mut()) {
            p.event_sent = false;
        }
    }

    fn disconnected(&mut self) {
        self.conn = None;
    }

    fn read_conn(&mut self) {
        let Some(c) = &mut self.conn else { return };
        let mut buf = [0u8; 64 << 10];
        loop {
            match sys::read(c.fd.as_raw_fd(), &mut buf) {
                // A virtio port stays open without a host: the guest discards what a port holds when it is
                // closed, and QEMU hands a new host's bytes to the guest as soon as it connects, so a close
                // here could lose them. The decoder stays too: a host's first bytes can even arrive before
                // the guest learns that the host connected (another queue), and then read EOF right after
                // them; they are decoded and answered below. Output not yet written stays as well: an EOF is
                // not always news of a new host (the port's open/close notices travel apart from the data,
                // so a stale "host gone" can be read after the host came back), and dropping a frame half
                // written would then cut the same host's stream. A new host skips what comes before the
                // answer to its hello, and the hello rewinds the streams.
                Ok(0) if matches!(self.opts.transport, Transport::Port(_)) => {
                    let _ = sys::set_async(c.fd.as_raw_fd(), true);
                    c.idle = true;
                    c.host_may_have_changed = true;
                    break;
                }
                Ok(0) => {
                    self.disconnected();
                    return;
                }
                Ok(n) => c.dec.feed(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.disconnected();
                    return;
                }
            }
        }
        loop {
            let Some(c) = &mut self.conn else { return };
            match c.dec.next_frame() {
                Ok(Some(f)) => {
                    c.host_may_have_changed = false;
                    self.frame(f)
                }
                Ok(None) if c.host_may_have_changed && c.dec.pending() > 0 => {
                    // A frame that does not end, after a host went away: if a new host's hello follows, what
                    // comes before it is the rest of a frame the dead host cut off (its new hellos would
                    // otherwise be taken for that frame's bytes, and fed to a container's stdin).
                    let is_hello = |p: &[u8]| serde_json::from_slice::<RequestEnvelope>(p).is_ok_and(|e| matches!(e.request, Request::Hello { .. }));
                    match c.dec.skip_to_control_frame(FrameKind::Request, is_hello) {
                        Some(n) => eprintln!("hyperstart: skipped {n} bytes of a frame the previous host left unfinished"),
                        None => break,
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("hyperstart: protocol error, dropping the connection: {e}");
                    self.disconnected();
                    return;
                }
            }
        }
    }

    fn send(&mut self, kind: FrameKind, json: &[u8]) {
        if let Some(c) = &mut self.conn {
            agent_proto::encode(&mut c.out, kind, json);
        }
    }

    fn flush_conn(&mut self) {
        let Some(c) = &mut self.conn else { return };
        while c.pending() > 0 {
            match sys::write(c.fd.as_raw_fd(), &c.out[c.out_pos..]) {
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.disconnected();
                    return;
                }
            }
        }
        if c.out_pos == c.out.len() {
            c.out.clear();
            c.out_pos = 0;
        } else if c.out_pos > 1 << 20 {
            c.out.drain(..c.out_pos);
            c.out_pos = 0;
        }
        if self.shutdown {
            // Nothing else will run: push the last answers out even if the daemon reads slowly.
            let _ = sys::set_nonblocking(c.fd.as_raw_fd(), false);
            let _ = sys::write(c.fd.as_raw_fd(), &c.out[c.out_pos..]).map(|n| c.out_pos += n);
        }
    }

    fn frame(&mut self, f: Frame) {
        match f {
            Frame::Request(b) => {
                crate::vm::trace("request");
                self.port_backoff = PORT_RETRY_MIN;
                self.ever_connected = true;

                let (id, nonce, result) = match serde_json::from_slice::<RequestEnvelope>(&b) {
                    Ok(env) => {
                        let nonce = match &env.request {
                            Request::Hello { nonce, .. } => Some(*nonce),
                            _ => None,
                        };
                        (env.id, nonce, self.request(env.request))
                    }
                    Err(e) => (0, None, Err(err(K::Invalid, format!("malformed request: {e}")))),
                };
                let result = match result {
                    Ok(r) => ResponseResult::Ok(r),
                    Err(e) => ResponseResult::Err(e),
                };
                let json = serde_json::to_vec(&Response { id, nonce, result }).expect("serialisable");
                crate::vm::trace("reply");
                self.send(FrameKind::Response, &json);
                // Out at once, not after the requests queued behind this one: the daemon pipelines a booted VM's
                // set-up behind its hello and prepares the containers' starts when the hello is answered.
                self.flush_conn();
            }
            Frame::Data { stream, offset, data } => {
                if let Some(i) = self.ins.get_mut(&stream) {
                    i.receive(offset, &data);
                }
            }
            Frame::Ack { stream, offset } => {
                if let Some(o) = self.outs.get_mut(&stream) {
                    o.ack(offset);
                }
            }
            Frame::Close { stream, .. } => {
                if let Some(i) = self.ins.get_mut(&stream) {
                    i.close = true;
                    if i.pending.is_empty() {
                        i.fd = None;
                    }
                }
            }
            Frame::Response(_) | Frame::Event(_) => {}
        }
    }

    /// Stream housekeeping after I/O: acknowledge input, send output, close finished streams, report exits.
    fn after_io(&mut self) {
        // Without a host, streams keep their data and exits wait: the next host's hello rewinds them.
        let Some(c) = self.conn.as_mut().filter(|c| !c.idle) else { return };
        for (id, i) in self.ins.iter_mut() {
            if i.written > i.acked {
                agent_proto::encode_ack(&mut c.out, *id, i.written);
                i.acked = i.written;
            }
        }
        let mut progress = true;
        while progress && c.pending() < CONN_HIGH_WATER {
            progress = false;
            for (id, o) in self.outs.iter_mut() {
                if let Some((off, data)) = o.next_chunk() {
                    agent_proto::encode_data(&mut c.out, *id, off, &data);
                    progress = true;
                }
            }
        }
        for (id, o) in self.outs.iter_mut() {
            if o.fd.is_none() && o.eof && o.all_sent() && !o.close_sent {
                agent_proto::encode_close(&mut c.out, *id, o.end());
                o.close_sent = true;
            }
        }
        // Exit events, once the process's output has been sent (or the grace time passed).
        let now = Instant::now();
        let mut events = Vec::new();
        for (exec, map) in [(false, &mut self.containers), (true, &mut self.execs)] {
            for (id, p) in map.iter_mut() {
                let (Some(status), Some(at), false) = (p.exit, p.exited_at, p.event_sent) else { continue };
                if p.restart_at.is_some() {
                    continue;
                }
                let drained = p.outputs().all(|s| {
                    self.outs.get(&s).is_none_or(|o| o.fd.is_none() && o.all_sent())
                });
                // A pipe another process holds open (a background child) may never end: the grace time bounds
                // the wait for it. Output held back only until the host acknowledges it (the host does as its
                // client reads) goes first: the exit event must not overtake it.
                let held_open = p.outputs().any(|s| self.outs.get(&s).is_some_and(|o| o.fd.is_some()));
                if drained || (held_open && now >= at + EXIT_GRACE) {
                    p.event_sent = true;
                    events.push(Event::Exited { id: id.clone(), exec, pid: p.pid, status });
                }
            }
        }
        for e in events {
            let json = serde_json::to_vec(&e).expect("serialisable");
            self.send(FrameKind::Event, &json);
        }
    }

    fn reap(&mut self) {
        while let Ok(Some((pid, status))) = sys::reap() {
            let (code, signal) = sys::decode_status(status);
            let status = ExitStatus { code, signal };
            match self.owners.remove(&pid) {
                Some(Owner::Container(id)) => self.container_exited(&id, pid, status),
                Some(Owner::Exec(id)) => {
                    if let Some(p) = self.execs.get_mut(&id) {
                        p.exited(pid, status);
                    }
                }
                Some(Owner::PodInit) => {
                    eprintln!("hyperstart: pod-init exited ({code})");
                    self.pod = None;
                }
                None => {} // an orphan the agent inherited (VM init) or a failed container-init
            }
        }
    }

    fn container_exited(&mut self, id: &str, pid: i32, status: ExitStatus) {
        let Some(p) = self.containers.get_mut(id) else { return };
        if !p.exited(pid, status) {
            return;
        }
        // The container ends with its program: what that left running in it (a background child, an exec)
        // goes too, before a restart makes a new mount namespace that would hide them from later stops. Only
        // processes of the pod, in the namespace held since the start.
        if let (Some(ns), Some(pod)) = (p.mnt_ns.take(), &self.pod) {
            kill_until_gone(|pid| sys::ns_id(pid, "pid").as_deref() == Some(pod.pidns.as_str()) && sys::ns_id(pid, "mnt").as_deref() == Some(ns.id.as_str()));
        }
        let Some(p) = self.containers.get_mut(id) else { return };
        let policy = p.config.as_ref().map(|c| c.restart).unwrap_or_default();
        let again = !p.stopping
            && !self.shutdown
            && self.pod.is_some()
            && (policy == Restart::Always || (policy == Restart::OnFailure && status.code != 0));
        if again {
            // As Docker's restart manager: from 100 ms, doubling after each run that ended within 10 s, up to a
            // minute; a run that lasted longer starts the count again.
            if p.started_at.elapsed() >= RESTART_RESET_AFTER {
                p.quick_failures = 0;
            }
            let delay = Duration::from_millis(100u64 << p.quick_failures.min(10)).min(RESTART_DELAY_MAX);
            p.quick_failures += 1;
            let at = Instant::now() + delay;
            p.restart_at = Some(at);
            self.timers.push((at, Timer::Restart(id.to_string())));
        } else {
            end_outputs(&mut self.outs, p);
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.timers).into_iter().partition(|(t, _)| *t <= now);
        self.timers = keep;
        for (_, t) in due {
            match t {
                Timer::Kill(id) => {
                    if self.containers.get(&id).is_some_and(|p| p.exit.is_none()) {
                        self.kill_container_processes(&id, libc::SIGKILL);
                    }
                }
                Timer::Restart(id) => self.restart(&id),
            }
        }
    }

    fn restart(&mut self, id: &str) {
        let Some(p) = self.containers.get_mut(id) else { return };
        if p.restart_at.take().is_none() || p.stopping {
            return;
        }
        // Each run's last output is kept whole, beyond the streams' bound (take_rest): while no host takes
        // it (hyperd away), a container that keeps failing would pile up a pipe's worth per run until the
        // guest runs out of memory. Past twice the bound (~16 runs), it restarts once the host has taken some.
        if p.outputs().any(|s| self.outs.get(&s).is_some_and(|o| o.holds_restarts())) {
            let at = Instant::now() + RESTART_WHILE_FULL;
            p.restart_at = Some(at);
            self.timers.push((at, Timer::Restart(id.to_string())));
            return;
        }
        let Some(mut config) = p.config.clone() else { return };
        // The container may have changed its /etc/passwd or $PATH since the daemon looked: look again.
        config.process.resolved = None;
        let restarts = p.restarts + 1;
        match self.start_container_process(&config) {
            Ok(pid) => {
                if let Some(p) = self.containers.get_mut(id) {
                    p.restarts = restarts;
                    p.exit = None;
                    p.exited_at = None;
                    p.event_sent = false;
                    p.started_at = Instant::now();
                }
                let json = serde_json::to_vec(&Event::Restarted { id: id.to_string(), pid, restarts }).expect("serialisable");
                self.send(FrameKind::Event, &json);
            }
            Err(e) => {
                eprintln!("hyperstart: restarting container {id} failed: {}", e.message);
                if let Some(p) = self.containers.get_mut(id) {
                    p.restarts = restarts;
                    end_outputs(&mut self.outs, p);
                }
            }
        }
    }

    /// Signals every process living in the container's mount namespace (its main process and execs included).
    fn kill_container_processes(&mut self, id: &str, sig: i32) {
        let Some(p) = self.containers.get(id) else { return };
        if p.exit.is_none() {
            let _ = sys::kill(p.pid, sig);
        }
        let Some(ns) = &p.mnt_ns else { return };
        for pid in sys::all_pids() {
            if sys::ns_id(pid, "mnt").as_deref() == Some(ns.id.as_str()) {
                let _ = sys::kill(pid, sig);
            }
        }
    }

    /// SIGKILLs every process of the pod but pod-init, pass after pass until none is left: a process that forked
    /// while a pass went through the list has a child the list did not have (a process with SIGKILL pending
    /// forks no more). Bounded: a process stuck in the kernel may take long to die.
    fn kill_pod_processes(&mut self) {
        let Some(pod) = &self.pod else { return };
        kill_until_gone(|pid| pid != pod.init_pid && sys::ns_id(pid, "pid").as_deref() == Some(pod.pidns.as_str()));
    }

    fn request(&mut self, r: Request) -> Result<Reply, AgentError> {
        match r {
            Request::Hello { version, time_ns, entropy, .. } => {
                if version != agent_proto::VERSION {
                    return Err(err(K::Invalid, format!("protocol version {version} not supported (agent speaks {})", agent_proto::VERSION)));
                }
                if matches!(self.opts.transport, Transport::Port(_)) {
                    crate::vm::hello(time_ns, &entropy).map_err(|e| err(K::Failed, e))?;
                }
                self.rewind();
                Ok(Reply::Hello { version: agent_proto::VERSION, agent: env!("CARGO_PKG_VERSION").into(), state: self.state() })
            }
            Request::SetupPod(s) => {
                self.set_up = false;
                self.setup_pod(s)?;
                self.set_up = true;
                Ok(Reply::Done)
            }
            Request::StartContainer(c) => self.start_container(c).map(|pid| Reply::Started { pid }),
            Request::SignalContainer { id, signal, all } => {
                let p = self.containers.get(&id).ok_or_else(|| err(K::NotFound, format!("no container {id}")))?;
                if p.exit.is_some() {
                    return Err(err(K::Conflict, format!("container {id} is not running")));
                }
                if all {
                    self.kill_container_processes(&id, signal);
                } else {
                    sys::kill(p.pid, signal).map_err(|e| err(K::Failed, format!("signal {signal} to {id}: {e}")))?;
                }
                Ok(Reply::Done)
            }
            Request::StopContainer { id, signal, timeout_ms } => {
                let p = self.containers.get_mut(&id).ok_or_else(|| err(K::NotFound, format!("no container {id}")))?;
                p.stopping = true;
                if p.restart_at.take().is_some() {
                    // Waiting to restart: it simply stays stopped.
                    end_outputs(&mut self.outs, p);
                    return Ok(Reply::Done);
                }
                if p.exit.is_none() {
                    let _ = sys::kill(p.pid, signal);
                    let grace = Duration::from_millis(timeout_ms.min(agent_proto::MAX_STOP_TIMEOUT_MS));
                    self.timers.push((Instant::now() + grace, Timer::Kill(id)));
                }
                Ok(Reply::Done)
            }
            Request::RemoveContainer { id } => {
                let p = self.containers.get_mut(&id).ok_or_else(|| err(K::NotFound, format!("no container {id}")))?;
                p.stopping = true;
                self.kill_container_processes(&id, libc::SIGKILL);
                let p = self.containers.remove(&id).expect("checked");
                self.drop_streams(&p);
                let _ = std::fs::remove_dir(self.opts.work.join("containers").join(&id).join("root"));
                let _ = std::fs::remove_dir(self.opts.work.join("containers").join(&id));
                Ok(Reply::Done)
            }
            Request::Exec { id, container, process } => self.exec(id, container, process).map(|pid| Reply::Started { pid }),
            Request::SignalExec { id, signal } => {
                let p = self.execs.get(&id).ok_or_else(|| err(K::NotFound, format!("no exec {id}")))?;
                if p.exit.is_none() {
                    sys::kill(p.pid, signal).map_err(|e| err(K::Failed, format!("signal {signal} to exec {id}: {e}")))?;
                }
                Ok(Reply::Done)
            }
            Request::RemoveExec { id } => {
                let p = self.execs.remove(&id).ok_or_else(|| err(K::NotFound, format!("no exec {id}")))?;
                if p.exit.is_none() {
                    let _ = sys::kill(p.pid, libc::SIGKILL);
                }
                self.drop_streams(&p);
                Ok(Reply::Done)
            }
            Request::Resize { id, rows, cols } => {
                let p = self.containers.get(&id).or_else(|| self.execs.get(&id)).ok_or_else(|| err(K::NotFound, format!("no process {id}")))?;
                if let Some(m) = &p.master {
                    sys::set_winsize(m.as_raw_fd(), rows, cols).map_err(|e| err(K::Failed, format!("resize: {e}")))?;
                }
                Ok(Reply::Done)
            }
            Request::Attach { streams } => {
                for s in streams {
                    if let Some(o) = self.outs.get_mut(&s.stream) {
                        o.ack(s.offset);
                        o.sent = o.base.max(s.offset.min(o.end()));
                    }
                }
                Ok(Reply::Done)
            }
            Request::State => Ok(Reply::State(self.state())),
            Request::ResetPod => {
                crate::vm::dump_trace();
                self.set_up = false;
                for p in self.containers.values_mut() {
                    p.stopping = true;
                }
                self.kill_pod_processes();
                let procs: Vec<Proc> = std::mem::take(&mut self.containers).into_values().chain(std::mem::take(&mut self.execs).into_values()).collect();
                for p in &procs {
                    self.drop_streams(p);
                }
                self.timers.clear();
                let _ = std::fs::remove_dir_all(self.opts.work.join("containers"));
                if let Some(pod) = &self.pod {
                    // A fresh /dev/shm for the next pod.
                    let _ = sys::umount(&pod.shm, libc::MNT_DETACH);
                    let _ = mount_shm(&pod.shm, pod.shm_size);
                }
                Ok(Reply::Done)
            }
            Request::Shutdown => {
                self.shutdown = true;
                for p in self.containers.values_mut() {
                    p.stopping = true;
                }
                self.kill_pod_processes();
                if let Some(pod) = &self.pod {
                    let _ = sys::kill(pod.init_pid, libc::SIGKILL);
                }
                Ok(Reply::Done)
            }
        }
    }

    fn drop_streams(&mut self, p: &Proc) {
        for s in p.outputs() {
            self.outs.remove(&s);
        }
        if let Some(s) = p.stdin {
            self.ins.remove(&s);
        }
    }

    fn state(&self) -> AgentState {
        let ps = |id: &String, p: &Proc| ProcessState {
            id: id.clone(),
            container: p.container.clone(),
            pid: p.pid,
            exit: if p.restart_at.is_some() { None } else { p.exit },
            restarts: p.restarts,
            stdin: p.stdin,
            stdout: p.stdout,
            stderr: p.stderr,
        };
        AgentState {
            pod_ready: self.pod.is_some(),
            hostname: self.pod.as_ref().map(|p| p.hostname.clone()).unwrap_or_default(),
            containers: self.containers.iter().map(|(i, p)| ps(i, p)).collect(),
            execs: self.execs.iter().map(|(i, p)| ps(i, p)).collect(),
        }
    }

    fn setup_pod(&mut self, s: PodSetup) -> Result<(), AgentError> {
        if self.pod.is_none() {
            let me = sys::ns_id(std::process::id() as i32, "pid");
            let children = sys::ns_id(std::process::id() as i32, "pid_for_children");
            if me == children {
                // Nobody made the pod's namespaces for us (inside a VM): make them now.
                sys::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS)
                    .map_err(|e| err(K::Failed, format!("creating the pod's namespaces: {e}")))?;
            }
            crate::vm::trace("setup: namespaces");
            let (init_pid, ready) = spawn::pod_init(&self.opts.work).map_err(|e| err(K::Failed, format!("starting pod-init: {e}")))?;
            spawn::pod_init_ready(ready).map_err(|e| err(K::Failed, e))?;
            crate::vm::trace("setup: pod-init");
            self.owners.insert(init_pid, Owner::PodInit);
            let pidns = sys::ns_id(init_pid, "pid").ok_or_else(|| err(K::Failed, "pod-init vanished"))?;
            let dir = self.opts.work.join("pod");
            let shm = self.opts.work.join("shm");
            std::fs::create_dir_all(&dir).and_then(|_| std::fs::create_dir_all(&shm)).map_err(|e| err(K::Failed, format!("creating pod directories: {e}")))?;
            mount_shm(&shm, s.shm_size).map_err(|e| err(K::Failed, format!("mounting the pod's /dev/shm: {e}")))?;
            self.pod = Some(Pod { init_pid, pidns, hostname: String::new(), dir, shm, shm_size: s.shm_size });
        }
        let pod = self.pod.as_mut().expect("created above");
        sys::sethostname(&s.hostname).map_err(|e| err(K::Failed, format!("setting the hostname: {e}")))?;
        pod.hostname = s.hostname.clone();
        // Rewritten in place: containers bind-mount these very files.
        for (name, content) in [("hosts", s.hosts.as_str()), ("hostname", &format!("{}\n", s.hostname)), ("resolv.conf", s.resolv_conf.as_str())] {
            std::fs::write(pod.dir.join(name), content).map_err(|e| err(K::Failed, format!("writing /etc/{name}: {e}")))?;
        }
        crate::vm::trace("setup: files");
        net::configure(&s.interfaces).map_err(|e| err(K::Failed, e))?;
        crate::vm::trace("setup: network");

        Ok(())
    }

    fn new_streams(&mut self, p: &ProcessConfig, master: Option<&OwnedFd>, pipes: StdioPipes) -> Result<(), AgentError> {
        let dupm = |m: &OwnedFd| sys::dup(m.as_raw_fd()).map_err(|e| err(K::Failed, format!("dup: {e}")));
        let (out_fd, err_fd, in_fd) = match master {
            Some(m) => (Some(dupm(m)?), None, p.stdin.map(|_| dupm(m)).transpose()?),
            None => (pipes.stdout, pipes.stderr, pipes.stdin),
        };
        for fd in [&out_fd, &err_fd, &in_fd].into_iter().flatten() {
            let _ = sys::set_nonblocking(fd.as_raw_fd(), true);
        }
        let out = self.outs.entry(p.stdout).or_default();
        out.take_rest();
        out.fd = out_fd;
        out.eof = false;
        if let Some(s) = p.stderr {
            let o = self.outs.entry(s).or_default();
            o.take_rest();
            o.fd = err_fd;
            o.eof = false;
        }
        if let Some(s) = p.stdin {
            let i = self.ins.entry(s).or_default();
            i.fd = in_fd;
        }
        Ok(())
    }

    fn start_container(&mut self, c: ContainerConfig) -> Result<i32, AgentError> {
        if self.pod.is_none() || !self.set_up {
            return Err(err(K::Conflict, "the pod is not set up"));
        }
        if self.containers.contains_key(&c.id) {
            return Err(err(K::Conflict, format!("container {} exists", c.id)));
        }
        self.containers.insert(c.id.clone(), Proc::new(c.id.clone(), &c.process, 0, None, Some(c.clone())));
        match self.start_container_process(&c) {
            Ok(pid) => Ok(pid),
            Err(e) => {
                if let Some(p) = self.containers.remove(&c.id) {
                    self.drop_streams(&p);
                }
                Err(e)
            }
        }
    }

    /// Creates the container's stdio, runs container-init, wires the streams. Used for starts and restarts.
    fn start_container_process(&mut self, c: &ContainerConfig) -> Result<i32, AgentError> {
        let pod = self.pod.as_ref().ok_or_else(|| err(K::Conflict, "the pod is not set up"))?;
        let root = self.opts.work.join("containers").join(&c.id).join("root");
        std::fs::create_dir_all(&root).map_err(|e| err(K::Failed, format!("creating {}: {e}", root.display())))?;
        let (child, pipes) = make_stdio(&c.process)?;
        let init = InitConfig::Create {
            container: c.clone(),
            root: root.to_string_lossy().into_owned(),
            pod_dir: pod.dir.to_string_lossy().into_owned(),
            shm: pod.shm.to_string_lossy().into_owned(),
            hostname: pod.hostname.clone(),
        };
        let (pid, master) = spawn::container_init(&init, child).map_err(|e| err(K::Failed, e))?;
        self.owners.insert(pid, Owner::Container(c.id.clone()));
        self.new_streams(&c.process, master.as_ref(), pipes)?;
        if let Some(p) = self.containers.get_mut(&c.id) {
            p.pid = pid;
            p.master = master;
            p.mnt_ns = MntNs::of(pid);
        }
        Ok(pid)
    }

    fn exec(&mut self, id: String, container: String, process: ProcessConfig) -> Result<i32, AgentError> {
        if self.execs.get(&id).is_some_and(|p| p.exit.is_none()) {
            return Err(err(K::Conflict, format!("exec {id} exists")));
        }
        let target = self.containers.get(&container).ok_or_else(|| err(K::NotFound, format!("no container {container}")))?;
        if target.exit.is_some() || target.restart_at.is_some() {
            return Err(err(K::Conflict, format!("container {container} is not running")));
        }
        let init = InitConfig::Exec {
            target_pid: target.pid,
            process: process.clone(),
            hostname: self.pod.as_ref().map(|p| p.hostname.clone()).unwrap_or_default(),
        };
        let (child, pipes) = make_stdio(&process)?;
        let (pid, master) = spawn::container_init(&init, child).map_err(|e| err(K::Failed, e))?;
        self.owners.insert(pid, Owner::Exec(id.clone()));
        self.new_streams(&process, master.as_ref(), pipes)?;
        self.execs.insert(id, Proc::new(container, &process, pid, master, None));
        Ok(pid)
    }
}

enum Tag {
    Signal,
    Listener,
    Conn,
    Out(u32),
    In(u32),
}

/// The agent's ends of a non-terminal process's pipes.
#[derive(Default)]
struct StdioPipes {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

/// The child's stdio and the agent's ends. With a terminal, the child opens the pty itself (in its own
/// /dev/pts) and its stdio starts as /dev/null.
fn make_stdio(p: &ProcessConfig) -> Result<(spawn::Stdio3, StdioPipes), AgentError> {
    let e = |x: std::io::Error| err(K::Failed, format!("creating stdio: {x}"));
    if p.terminal {
        return Ok((spawn::Stdio3 { stdin: None, stdout: None, stderr: None }, StdioPipes::default()));
    }
    let (out_r, out_w) = sys::pipe().map_err(e)?;
    let (err_r, err_w) = match p.stderr {
        Some(_) => {
            let (r, w) = sys::pipe().map_err(e)?;
            (Some(r), w)
        }
        None => (None, sys::dup(out_w.as_raw_fd()).map_err(e)?),
    };
    let (in_w, in_r) = match p.stdin {
        Some(_) => {
            let (r, w) = sys::pipe().map_err(e)?;
            (Some(w), Some(r))
        }
        None => (None, None),
    };
    Ok((
        spawn::Stdio3 { stdin: in_r, stdout: Some(out_w), stderr: Some(err_w) },
        StdioPipes { stdin: in_w, stdout: Some(out_r), stderr: err_r },
    ))
}

fn mount_shm(dir: &Path, size: u64) -> std::io::Result<()> {
    let size = if size == 0 { 64 << 20 } else { size };
    sys::mount(Some("shm"), dir, Some("tmpfs"), libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, Some(&format!("mode=1777,size={size}")))
}

/// SIGKILLs the processes `matches` picks, pass after pass until none is left (see `kill_pod_processes`).
fn kill_until_gone(matches: impl Fn(i32) -> bool) {
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        let mut left = 0;
        for pid in sys::all_pids() {
            if matches(pid) && !sys::has_ended(pid) {
                let _ = sys::kill(pid, libc::SIGKILL);
                left += 1;
            }
        }
        if left == 0 || Instant::now() >= end {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
