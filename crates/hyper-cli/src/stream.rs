//! Interactive sessions: the upgraded connection to hyperd, the local terminal in raw mode, resizes.

use std::io::{IsTerminal, Read, Write};

use bytes::Bytes;
use http::{Method, StatusCode, header};
use hyper_api::stream as st;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{Client, empty};

/// Puts the terminal on fd 0 in raw mode until dropped.
pub struct RawMode {
    saved: Option<libc::termios>,
}

impl RawMode {
    pub fn enable() -> RawMode {
        if !std::io::stdin().is_terminal() {
            return RawMode { saved: None };
        }
        // SAFETY: termios is a plain C struct; tcgetattr fills it from fd 0.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to a termios; fd 0 is a terminal (checked above).
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return RawMode { saved: None };
        }
        let saved = t;
        // SAFETY: cfmakeraw only edits the struct; tcsetattr applies it to fd 0.
        unsafe {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
        }
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            // SAFETY: restores the attributes saved from the same fd.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
        }
    }
}

/// The size of the terminal on fd 1 (or 0), if there is one.
pub fn term_size() -> Option<(u16, u16)> {
    for fd in [1, 0] {
        // SAFETY: winsize is a plain C struct filled by TIOCGWINSZ.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes a winsize through the valid pointer.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}

fn resize_frame() -> Option<Vec<u8>> {
    term_size().map(|(r, c)| {
        let mut p = r.to_be_bytes().to_vec();
        p.extend_from_slice(&c.to_be_bytes());
        st::encode(st::RESIZE, &p)
    })
}

/// Opens an upgraded session at `path` and runs it: local stdin (if `stdin`) goes to the process, its output to
/// local stdout/stderr; with `tty`, the local terminal is raw and resizes follow. Returns the exit code.
pub async fn session(c: &Client, method: Method, path: &str, stdin: bool, tty: bool) -> Result<i32, Box<dyn std::error::Error>> {
    let resp = c.request(method, path, empty(), &[(header::CONNECTION, "Upgrade"), (header::UPGRADE, st::UPGRADE)]).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(Box::new(crate::client::error_from(resp).await));
    }
    let up = hyper::upgrade::on(resp).await?;
    let (mut rd, mut wr) = tokio::io::split(TokioIo::new(up));
    // Raw only when keystrokes go to the process's terminal, which makes the signals of ^C and co there.
    // Without input they would go nowhere: the local terminal keeps its signals, and ^C ends this client.
    // Killed, hung up or interrupted from outside while raw: the terminal is given back as it was, then we
    // go. The handlers are in place before the terminal is raw.
    // (Only then: once caught, these signals no longer end the client by themselves.)
    use tokio::signal::unix::{SignalKind, signal};
    let raw_wanted = tty && stdin && std::io::stdin().is_terminal();
    let signals = raw_wanted.then(|| (signal(SignalKind::terminate()), signal(SignalKind::hangup()), signal(SignalKind::interrupt())));
    let raw = raw_wanted.then(RawMode::enable);
    if let (Some(saved), Some((Ok(mut term), Ok(mut hup), Ok(mut int)))) = (raw.as_ref().and_then(|r| r.saved), signals) {
        tokio::spawn(async move {
            let sig = tokio::select! {
                _ = term.recv() => libc::SIGTERM,
                _ = hup.recv() => libc::SIGHUP,
                _ = int.recv() => libc::SIGINT,
            };
            // SAFETY: restores the attributes saved from the same fd.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &saved) };
            std::process::exit(128 + sig);
        });
    }

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    if tty {
        if let Some(f) = resize_frame() {
            let _ = tx.send(f).await;
        }
        let tx2 = tx.clone();
        tokio::spawn(async move {
            let Ok(mut winch) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) else { return };
            while winch.recv().await.is_some() {
                if let Some(f) = resize_frame() {
                    if tx2.send(f).await.is_err() {
                        break;
                    }
                }
            }
        });
    }
    if stdin {
        let tx3 = tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 << 10];
            let mut input = std::io::stdin().lock();
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx3.blocking_send(st::encode(st::STDIN_CLOSE, &[]));
                        break;
                    }
                    Ok(n) => {
                        if tx3.blocking_send(st::encode(st::STDIN, &buf[..n])).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    drop(tx);
    tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if wr.write_all(&f).await.is_err() {
                break;
            }
        }
    });
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 64 << 10];
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    loop {
        while let Some((kind, payload)) = st::decode(&mut buf)? {
            match kind {
                st::STDOUT => {
                    out.write_all(&payload)?;
                    out.flush()?;
                }
                st::STDERR => {
                    err.write_all(&payload)?;
                    err.flush()?;
                }
                st::EXIT if payload.len() == 4 => return Ok(i32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])),
                st::ERROR => return Err(String::from_utf8_lossy(&payload).into_owned().into()),
                _ => {}
            }
        }
        let n = rd.read(&mut tmp).await?;
        if n == 0 {
            return Err("the daemon closed the session without an exit code".into());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Reads a framed (non-upgraded) body, e.g. logs, to stdout/stderr.
pub async fn print_framed(mut resp: http::Response<hyper::body::Incoming>) -> Result<(), Box<dyn std::error::Error>> {
    use http_body_util::BodyExt;
    let mut buf = Vec::new();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    while let Some(frame) = resp.body_mut().frame().await {
        let frame = frame?;
        let Ok(data): Result<Bytes, _> = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some((kind, payload)) = st::decode(&mut buf)? {
            match kind {
                st::STDOUT => out.write_all(&payload)?,
                st::STDERR => err.write_all(&payload)?,
                _ => {}
            }
        }
        out.flush()?;
    }
    Ok(())
}
