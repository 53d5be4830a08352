//! Process stdio streams with the protocol's flow control.
//!
//! An output stream keeps every byte it read until the daemon acknowledges it: after a reconnection the agent
//! resends from the daemon's offset, so nothing is lost while the daemon is away (the process blocks on a full
//! pipe once [`OUT_BUFFER`] bytes wait). An input stream writes what it receives to the process and
//! acknowledges what was written.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};

use agent_proto::WINDOW;

use crate::sys;

/// Bytes an output stream holds (unacknowledged or unsent) before it stops reading its process.
pub const OUT_BUFFER: usize = 1 << 20;
/// Largest data frame.
pub const CHUNK: usize = 64 << 10;

#[derive(Debug, Default)]
pub struct Out {
    pub fd: Option<OwnedFd>,
    /// Bytes from offset `base` on that the daemon has not acknowledged.
    pub buf: VecDeque<u8>,
    pub base: u64,
    /// Offset up to which bytes have been sent on the current connection.
    pub sent: u64,
    /// The process side is closed for good; a `Close` frame goes out once everything is sent.
    pub eof: bool,
    pub close_sent: bool,
}

impl Out {
    /// Holds twice its bound, or more, that the host has not taken: output of earlier runs of a restarting
    /// process, each of which leaves up to a pipe's worth beyond the bound ([`Out::take_rest`]).
    pub fn holds_restarts(&self) -> bool {
        self.buf.len() >= 2 * OUT_BUFFER
    }

    pub fn wants_read(&self) -> bool {
        self.fd.is_some() && self.buf.len() < OUT_BUFFER
    }

    /// Reads what the process wrote; the process side is dropped once it closed (EOF, or EIO from a pty).
    pub fn read_some(&mut self) {
        let Some(fd) = &self.fd else { return };
        let mut tmp = [0u8; CHUNK];
        let room = (OUT_BUFFER - self.buf.len().min(OUT_BUFFER)).clamp(1, CHUNK);
        match sys::read(fd.as_raw_fd(), &mut tmp[..room]) {
            Ok(0) => self.fd = None,
            Ok(n) => self.buf.extend(&tmp[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => self.fd = None,
        }
    }

    /// Takes in what the old process side still holds before a restart replaces it: written before the old
    /// run ended, it is that run's output. At most a pipe's worth, beyond the buffer's bound (and at most 1 MiB
    /// should a writer still be there).
    pub fn take_rest(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        let mut tmp = [0u8; CHUNK];
        let mut taken = 0;
        while taken < 1 << 20 {
            match sys::read(fd.as_raw_fd(), &mut tmp) {
                Ok(n) if n > 0 => {
                    self.buf.extend(&tmp[..n]);
                    taken += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                _ => return,
            }
        }
    }

    pub fn end(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    pub fn all_sent(&self) -> bool {
        self.sent >= self.end()
    }

    /// The next chunk to send under the window, as (offset, bytes).
    pub fn next_chunk(&mut self) -> Option<(u64, Vec<u8>)> {
        let limit = self.end().min(self.base + WINDOW);
        if self.sent >= limit {
            return None;
        }
        let n = ((limit - self.sent) as usize).min(CHUNK);
        let start = (self.sent - self.base) as usize;
        let data: Vec<u8> = self.buf.range(start..start + n).copied().collect();
        let off = self.sent;
        self.sent += n as u64;
        Some((off, data))
    }

    /// The daemon has everything below `offset`.
    pub fn ack(&mut self, offset: u64) {
        if offset <= self.base {
            return;
        }
        let n = ((offset - self.base) as usize).min(self.buf.len());
        self.buf.drain(..n);
        self.base += n as u64;
        if self.sent < self.base {
            self.sent = self.base;
        }
    }

    /// A new connection: resend everything not acknowledged.
    pub fn rewind(&mut self) {
        self.sent = self.base;
        self.close_sent = false;
    }
}

#[derive(Debug, Default)]
pub struct In {
    pub fd: Option<OwnedFd>,
    pub pending: VecDeque<u8>,
    /// Next offset expected from the daemon.
    pub next: u64,
    /// Offset written to the process so far (acknowledged).
    pub written: u64,
    pub acked: u64,
    /// Close the process side once `pending` is written.
    pub close: bool,
}

impl In {
    /// Takes data at `offset`; duplicates (after a resend) are skipped.
    pub fn receive(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        if end <= self.next || offset > self.next {
            return;
        }
        let skip = (self.next - offset) as usize;
        self.pending.extend(&data[skip..]);
        self.next = end;
    }

    pub fn wants_write(&self) -> bool {
        self.fd.is_some() && !self.pending.is_empty()
    }

    pub fn write_some(&mut self) {
        let Some(fd) = &self.fd else {
            // Nobody to write to (process gone): consume so the sender is not stuck.
            self.written += self.pending.len() as u64;
            self.pending.clear();
            return;
        };
        let (a, _) = self.pending.as_slices();
        let n = a.len().min(CHUNK);
        match sys::write(fd.as_raw_fd(), &a[..n]) {
            Ok(w) => {
                self.pending.drain(..w);
                self.written += w as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                // EPIPE: the process closed its stdin; drop what is left.
                self.written += self.pending.len() as u64;
                self.pending.clear();
                self.fd = None;
            }
        }
        if self.pending.is_empty() && self.close {
            self.fd = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_ack_and_rewind() {
        let mut o = Out::default();
        o.buf.extend(vec![7u8; (WINDOW as usize) + 10]);
        let mut sent = 0;
        while let Some((off, d)) = o.next_chunk() {
            assert_eq!(off, sent);
            sent += d.len() as u64;
        }
        assert_eq!(sent, WINDOW, "never more than a window in flight");
        o.ack(100);
        assert_eq!((o.base, o.buf.len() as u64), (100, WINDOW + 10 - 100));
        assert_eq!(o.next_chunk().map(|(off, d)| (off, d.len())), Some((WINDOW, 10)));
        o.rewind();
        assert_eq!(o.next_chunk().map(|(off, _)| off), Some(100), "resend from the acknowledged offset");
    }

    #[test]
    fn input_skips_duplicates() {
        let mut i = In::default();
        i.receive(0, b"hello");
        i.receive(0, b"hello world");
        i.receive(20, b"gap");
        assert_eq!(i.pending.iter().copied().collect::<Vec<_>>(), b"hello world");
        assert_eq!(i.next, 11);
    }
}
