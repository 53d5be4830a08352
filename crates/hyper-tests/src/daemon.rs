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
    /// Which bridge and subnet this daemon uses (unique per test process).
    pub net_id: u32,
    /// Whether hyperd sees a cgroup v2 hierarchy (a private cgroup2 mount) at /sys/fs/cgroup, as on a host with
    /// only v2, whatever the host has.
    cgroup2_view: bool,
}

static NET_IDS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Daemon {
    /// The bridge this daemon's pods are attached to.
    pub fn bridge(&self) -> String {
        format!("hyt{}", self.net_id)
    }
    /// The first three octets of this daemon's pod subnet.
    pub fn subnet_prefix(&self) -> String {
        format!("10.{}.{}", 100 + self.net_id / 250, self.net_id % 250)
    }
}

impl Daemon {
    /// Starts hyperd with extra flags.
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::start_with(args, false)
    }

    /// Starts hyperd in a mount namespace of its own where /sys/fs/cgroup is a cgroup2 mount, as on a host with
    /// only cgroup v2. (On a hybrid host the v1 controllers stay bound to their hierarchies: the v2 mount has
    /// none of them, but cgroup BPF programs work on it.)
    pub fn start_seeing_cgroup2(args: &[&str]) -> Daemon {
        Daemon::start_with(args, true)
    }

    fn start_with(args: &[&str], cgroup2_view: bool) -> Daemon {
        crate::require_root();
        let dir = tempfile::Builder::new().prefix("hyperd-test-").tempdir().expect("tempdir");
        // A test may give its own root (a symlink, say); the daemon's temporary directory's otherwise.
        // Spelled as hyperd and the kernel spell it (through symlinks), so that the clean-up after a failed test
        // finds the sandboxes' processes and mounts by it.
        let root = match args.iter().position(|a| *a == "--root").and_then(|i| args.get(i + 1)) {
            Some(r) => {
                std::fs::create_dir_all(r).expect("the test's root");
                std::fs::canonicalize(r).expect("the test's root")
            }
            None => dir.path().join("root"),
        };
        let socket = dir.path().join("hyper.sock");
        // Unique across test binaries running at once too: mix in the process id.
        let net_id = (std::process::id() % 40) * 100 + NET_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100;
        let mut d = Daemon { root, socket, args: args.iter().map(|s| s.to_string()).collect(), child: None, dir, net_id, cgroup2_view };

        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("log file");
        // Daemons of parallel tests share the test's network namespace: each gets its own bridge and subnet.
        let mut net_args: Vec<String> = vec![];
        if !self.args.iter().any(|a| a == "--bridge") {
            let n = self.net_id;
            net_args = vec!["--bridge".into(), format!("hyt{n}"), "--pod-cidr".into(), format!("10.{}.{}.0/24", 100 + n / 250, n % 250)];
        }
        let mut own_root: Vec<&Path> = vec![];
        if !self.args.iter().any(|a| a == "--root") {
            own_root = vec![Path::new("--root"), &self.root];
        }
        let mut command = Command::new(bin_dir().join("hyperd"));
        if self.cgroup2_view {
            command = Command::new("unshare");
            command.args(["--mount", "--propagation", "private", "sh", "-c", "mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec \"$0\" \"$@\""]).arg(bin_dir().join("hyperd"));
        }
        let child = command
            .args(own_root)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--log-level")
            .arg("debug")
            .args(&net_args)
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

    /// Starts the daemon again on the same root and socket, with other flags (the same driver unless given).
    pub fn restart_with(&mut self, args: &[&str]) {
        let driver = self.args.iter().position(|a| a == "--driver").map(|i| self.args[i..i + 2].to_vec()).unwrap_or_default();
        self.args = driver.into_iter().chain(args.iter().map(|s| s.to_string())).collect();
        self.restart();
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
        // Pods outlive their daemon by design: a test that ends (or fails) early must not leave them running.
        if self.child.is_some() {
            let ids = self.hyper(&["list", "-q"]);
            for id in String::from_utf8_lossy(&ids.stdout).lines() {
                let _ = self.hyper(&["rm", "-f", id]);
            }
        }
        self.kill();
        self.reap_leftovers();
        if std::thread::panicking() {
            eprintln!("--- hyperd log ({}) ---\n{}", self.log_path().display(), self.log());
        }
    }
}

impl Daemon {
    /// Kills whatever still runs out of this daemon's root, unmounts what is mounted under it, and removes
    /// its sandboxes' cgroups and its bridge (a daemon killed without cleaning up leaves these by design).
    fn reap_leftovers(&self) {
        let root = self.root.display().to_string();
        let sandboxes = list(&self.root.join("sandboxes"));
        for _ in 0..50 {
            let mut found = false;
            for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
                let cmd = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).into_owned();
                let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                if cmd.contains(&root) || sandboxes.iter().any(|s| cg.contains(s.as_str())) {
                    // SAFETY: kill has no memory arguments.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    found = true;
                }
            }
            if !found {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut mounts = mounts_mentioning(&root);
        mounts.reverse();
        for m in mounts {
            if let Some(target) = m.split(' ').nth(4) {
                let _ = Command::new("umount").args(["-l", target]).status();
            }
        }
        for s in &sandboxes {
            // v1 controllers, a hybrid host's v2 mount (a daemon seeing only cgroup2 used it), a v2 host.
            for c in ["memory", "cpu", "pids", "devices", "unified", ""] {
                let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(c).join("hyper").join(s));
            }
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge()]).stderr(Stdio::null()).status();
    }
}

impl Daemon {
    /// Starts hyperd with a sandbox driver and loads the busybox and toolbox test images.
    pub fn with_driver(driver: &str, extra: &[&str]) -> Daemon {
        let mut args = vec!["--driver", driver];
        args.extend_from_slice(extra);
        let d = Daemon::start(&args);
        for img in ["busybox.tar", "toolbox.tar"] {
            let p = crate::fixtures_dir().join(img);
            d.ok(&["load", "-i", p.to_str().expect("utf-8 path")]);
        }
        d
    }

    /// `hyper inspect POD` parsed.
    pub fn inspect(&self, pod: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["inspect", pod])).expect("inspect JSON")
    }

    /// Writes a podfile into the daemon's temporary directory; returns its path.
    pub fn podfile(&self, name: &str, content: &serde_json::Value) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, serde_json::to_vec_pretty(content).expect("json")).expect("write podfile");
        p.display().to_string()
    }

    /// Runs a shell command in a pod's container and returns its stdout (panics on failure).
    pub fn sh(&self, target: &str, script: &str) -> String {
        self.ok(&["exec", target, "sh", "-c", script])
    }
}

/// Host processes that belong to a sandbox: its id in their command line or in their cgroup.
pub fn sandbox_processes(sandbox_id: &str) -> Vec<i32> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        if !zombie && (String::from_utf8_lossy(&cmd).contains(sandbox_id) || cg.contains(sandbox_id)) {
            out.push(pid);
        }
    }
    out
}

/// Host mounts whose source or target mentions `needle`.
pub fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
}
