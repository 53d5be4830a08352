//! Test infrastructure: real daemons, real registries, test images.
//!
//! Every fixture starts a real process (hyperd, docker-registry) on loopback with its own temporary
//! directory and kills it when dropped. Tests run as root inside a private network namespace
//! (scripts/test.sh), so loopback is theirs alone and nothing can leave the machine.

pub mod daemon;
pub mod image;
pub mod pty;
pub mod registry;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The directory holding the built binaries (`target/debug`), found from the test executable's path.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("deps dir").parent().expect("target dir").to_path_buf();
    assert!(dir.join("hyperd").is_file(), "{} has no hyperd: run scripts/build.sh (or scripts/test.sh) first", dir.display());
    dir
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("local addr").port()
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Fails the test unless it runs as root (the suite needs mounts, namespaces and device nodes).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the end-to-end tests must run as root (see scripts/test.sh)");
}

/// The test-data directory prepared by scripts/build.sh (busybox image and friends).
pub fn fixtures_dir() -> PathBuf {
    let d = bin_dir().join("fixtures");
    assert!(d.join("busybox.tar").is_file(), "{} lacks busybox.tar: run scripts/build.sh", d.display());
    d
}

/// Runs a command and returns its stdout, panicking with its stderr when it fails.
pub fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
