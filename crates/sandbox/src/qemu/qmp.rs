//! A minimal QMP client: quitting QEMU, and saving and restoring VM templates.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::SandboxError;

/// A QMP session in command mode.
pub struct Qmp {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

fn err(msg: String) -> SandboxError {
    SandboxError::Setup(msg)
}

impl Qmp {
    /// Connects to the socket (waiting up to `timeout` for QEMU to create it) and leaves negotiation mode.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Qmp, SandboxError> {
        Qmp::connect_while(socket, timeout, || true)
    }

    /// Like [`Qmp::connect`], giving up as soon as `alive` says QEMU is gone (it never will listen then).
    pub fn connect_while(socket: &Path, timeout: Duration, alive: impl Fn() -> bool) -> Result<Qmp, SandboxError> {
        let end = Instant::now() + timeout;
        let s = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() > end => return Err(err(format!("connecting to QMP at {}: {e}", socket.display()))),
                Err(_) if !alive() => return Err(err("QEMU exited before its QMP socket answered".into())),
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        };
        s.set_read_timeout(Some(timeout)).and_then(|_| s.set_write_timeout(Some(timeout))).map_err(|e| err(format!("QMP: {e}")))?;
        let r = BufReader::new(s.try_clone().map_err(|e| err(format!("QMP: {e}")))?);
        let mut q = Qmp { r, w: s };
        q.line()?; // greeting
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    fn line(&mut self) -> Result<Value, SandboxError> {
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(0) => Err(err("QMP: QEMU closed the connection".into())),
            Ok(_) => serde_json::from_str(&line).map_err(|e| err(format!("QMP: bad message {line:?}: {e}"))),
            Err(e) => Err(err(format!("QMP: {e}"))),
        }
    }

    /// Runs a command; returns its `return` value, or its error as ours. Events in between are skipped.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, SandboxError> {
        let mut msg = serde_json::json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut b = serde_json::to_vec(&msg).expect("serialisable");
        b.push(b'\n');
        self.w.write_all(&b).map_err(|e| err(format!("QMP {command}: {e}")))?;
        loop {
            let v = self.line()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(err(format!("QMP {command}: {}", e["desc"].as_str().unwrap_or("failed"))));
            }
        }
    }
}
