//! A real hyperd on a temporary root and socket, and the real `hyper` CLI talking to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::{bin_dir, wait_until};

/// A running hyperd. Killed (SIGKILL) when dropped; its log is printed if the test panicked.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub socket: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Daemon {
    /// Starts hyperd with extra flags.
    pub fn start(args: &[&str]) -> Daemon {
        crate::require_root();
        let dir = tempfile::Builder::new().prefix("hyperd-test-").tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let socket = dir.path().join("hyper.sock");
        let mut d = Daemon { root, socket, args: args.iter().map(|s| s.to_string()).collect(), child: None, dir };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("log file");
        let child = Command::new(bin_dir().join("hyperd"))
            .arg("--root")
            .arg(&self.root)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--log-level")
            .arg("debug")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn hyperd");
        self.child = Some(child);
        let sock = self.socket.clone();
        let ok = wait_until(Duration::from_secs(20), || std::os::unix::net::UnixStream::connect(&sock).is_ok());
        assert!(ok, "hyperd did not start listening:\n{}", self.log());
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("hyperd.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILLs the daemon (as a crash would) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the daemon again on the same root and socket.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A `hyper` command aimed at this daemon.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_dir().join("hyper"));
        c.env("HYPER_HOST", format!("unix://{}", self.socket.display())).args(args);
        c
    }

    /// Runs `hyper ARGS`, returning the whole output.
    pub fn hyper(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().expect("run hyper")
    }

    /// Runs `hyper ARGS` and returns stdout, panicking (with the daemon log) if it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.hyper(args);
        assert!(
            out.status.success(),
            "hyper {args:?} failed ({}):\nstdout: {}\nstderr: {}\n--- hyperd log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `hyper ARGS`, expects failure, and returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.hyper(args);
        assert!(
            !out.status.success(),
            "hyper {args:?} should have failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `hyper ARGS --format json` parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("JSON output")
    }

    pub fn image_root(&self) -> PathBuf {
        self.root.join("image")
    }

    /// Names of the entries of a directory under the root (empty if it does not exist).
    pub fn entries(&self, rel: &str) -> Vec<String> {
        list(&self.root.join(rel))
    }
}

pub fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- hyperd log ({}) ---\n{}", self.log_path().display(), self.log());
        }
    }
}
