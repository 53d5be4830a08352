//! Driving `hyper` through a real pseudo-terminal.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::Daemon;

pub struct Pty {
    master: std::fs::File,
    child: Child,
    seen: Vec<u8>,
}

impl Pty {
    /// Runs `hyper ARGS` with a new terminal as its stdin, stdout and stderr (and controlling terminal).
    pub fn spawn(d: &Daemon, args: &[&str]) -> Pty {
        let (mut m, mut s) = (0, 0);
        let ws = libc::winsize { ws_row: 24, ws_col: 80, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: openpty writes two descriptors; the NULL name and termios pointers are allowed.
        let r = unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(r, 0, "openpty");
        // SAFETY: both descriptors are new and owned here.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        let mut cmd = d.cmd(args);
        cmd.stdin(Stdio::from(slave.try_clone().unwrap())).stdout(Stdio::from(slave.try_clone().unwrap())).stderr(Stdio::from(slave));
        // SAFETY: setsid and TIOCSCTTY in the child before exec; both async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn hyper");
        let master = std::fs::File::from(master);
        // SAFETY: fcntl on our descriptor.
        unsafe {
            let fl = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(master.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        Pty { master, child, seen: Vec::new() }
    }

    /// Reads until `pat` appears (after what earlier expects consumed).
    pub fn expect(&mut self, pat: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(i) = find(&self.seen, pat.as_bytes()) {
                self.seen.drain(..i + pat.len());
                return;
            }
            assert!(Instant::now() < end, "timed out waiting for {pat:?}; terminal shows {:?}", String::from_utf8_lossy(&self.seen));
            match self.master.read(&mut buf) {
                Ok(0) => std::thread::sleep(Duration::from_millis(20)),
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    pub fn send(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).expect("write to the terminal");
    }

    /// Resizes the terminal (the kernel sends SIGWINCH to hyper).
    pub fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads the winsize we pass.
        unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }

    /// The client's process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether the terminal is in raw mode (no line editing, no signals from ^C and co).
    pub fn is_raw(&self) -> bool {
        // SAFETY: termios is a plain C struct; tcgetattr on the master reads the terminal's attributes.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer, our own descriptor.
        assert_eq!(unsafe { libc::tcgetattr(self.master.as_raw_fd(), &mut t) }, 0, "tcgetattr");
        t.c_lflag & (libc::ICANON | libc::ISIG) == 0
    }

    /// Waits for hyper to end; returns how.
    pub fn status(&mut self) -> std::process::ExitStatus {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(Instant::now() < end, "hyper did not exit");
            let mut buf = [0u8; 4096];
            let _ = self.master.read(&mut buf);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for hyper to exit; returns its exit code.
    pub fn wait(&mut self) -> i32 {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s.code().unwrap_or(-1);
            }
            assert!(Instant::now() < end, "hyper did not exit");
            let mut buf = [0u8; 4096];
            let _ = self.master.read(&mut buf);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}
