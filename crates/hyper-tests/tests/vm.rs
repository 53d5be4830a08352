//! What only VM pods have: the guest kernel, the VM's memory, QEMU's life and death.

use std::time::Duration;

use hyper_tests::daemon::{Daemon, sandbox_processes};
use hyper_tests::wait_until;
use serde_json::{Value, json};

fn kernel_release(d: &Daemon) -> String {
    let info = d.json(&["info"]);
    let pairs = info["driver_status"].as_array().unwrap();
    let kernel = pairs.iter().find(|p| p[0] == "Kernel").unwrap()[1].as_str().unwrap().to_string();
    // "/path/vmlinuz (6.1.158 (root@host) #1 ...)": the release is the first word of the version.
    kernel.split('(').nth(1).unwrap().split_whitespace().next().unwrap().to_string()
}

#[test]
fn info_names_the_kernel_initrd_and_accelerator() {
    let d = Daemon::with_driver("qemu", &[]);
    let info = d.json(&["info"]);
    assert_eq!(info["driver"], "qemu");
    let keys: Vec<&str> = info["driver_status"].as_array().unwrap().iter().map(|p| p[0].as_str().unwrap()).collect();
    for k in ["Kernel", "Initrd", "Accelerator", "Accelerator reason"] {
        assert!(keys.contains(&k), "hyper info lacks {k}: {info}");
    }
    let reason = info["driver_status"].as_array().unwrap().iter().find(|p| p[0] == "Accelerator reason").unwrap()[1].clone();
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        let accel = info["driver_status"].as_array().unwrap().iter().find(|p| p[0] == "Accelerator").unwrap()[1].clone();
        assert_eq!(accel, "tcg", "a PVM KVM cannot boot our guest: TCG");
        assert!(reason.as_str().unwrap().contains("PVM"), "{reason}");
    }
    assert!(kernel_release(&d).starts_with("6.1"), "{info}");
}

#[test]
fn a_vm_pod_runs_the_guest_kernel_with_the_podfile_memory() {
    let d = Daemon::with_driver("qemu", &[]);
    let pf = d.podfile("vm.json", &json!({"id": "vm", "resource": {"vcpu": 2, "memory": 192},
        "containers": [{"image": "busybox", "command": ["sleep", "1000"]}]}));
    d.ok(&["run", "-d", &pf]);
    assert_eq!(d.sh("vm", "uname -r").trim(), kernel_release(&d), "the container runs on the guest kernel");
    assert_ne!(d.sh("vm", "uname -r").trim(), std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap().trim());
    let mem: u64 = d.sh("vm", "awk '/MemTotal/ {print $2}' /proc/meminfo").trim().parse().unwrap();
    assert!(mem > 150 * 1024 && mem <= 192 * 1024, "MemTotal {mem} kB for a 192 MiB pod");
    assert_eq!(d.sh("vm", "grep -c ^processor /proc/cpuinfo").trim(), "2", "2 vCPUs");
    assert_eq!(d.sh("vm", "nproc").trim(), "2");

    d.ok(&["rm", "-f", "vm"]);
}

#[test]
fn qemu_killed_from_outside_fails_the_pod_and_start_works_again() {
    let d = Daemon::with_driver("qemu", &[]);
    let pf = d.podfile("k.json", &json!({"id": "victim", "containers": [{"image": "busybox", "command": ["sleep", "1000"]}]}));
    d.ok(&["run", "-d", &pf]);
    let inspect: Value = d.inspect("victim");
    let pid = inspect["sandbox"]["pid"].as_i64().unwrap() as i32;
    let sb = inspect["sandbox"]["id"].as_str().unwrap().to_string();
    // SAFETY: kill has no memory arguments; the pid is the QEMU of this test's pod.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(20), || d.inspect("victim")["state"] == "failed"), "the pod becomes failed");
    let failure = d.inspect("victim")["failure"].as_str().unwrap().to_string();
    assert!(failure.contains("died") && failure.contains(&pid.to_string()), "the reason names QEMU: {failure}");
    assert!(wait_until(Duration::from_secs(10), || sandbox_processes(&sb).is_empty()));
    assert!(!d.root.join("sandboxes").join(&sb).exists(), "the dead sandbox's files are gone");
    assert_eq!(d.json(&["version"])["server"]["version"], json!(env!("CARGO_PKG_VERSION")), "the daemon stays healthy");
    d.ok(&["start", "victim"]);
    assert_eq!(d.inspect("victim")["state"], "running");
    assert_eq!(d.sh("victim", "echo back").trim(), "back");
    d.ok(&["rm", "-f", "victim"]);
}

#[test]
fn a_hypervisor_that_dies_at_start_fails_the_run_with_its_own_message() {
    // A user's mistake QEMU itself rejects: a --kernel that is not a kernel. QEMU exits at once; the start
    // must say why (QEMU's words) without waiting out the agent timeout, and leave the pod startable.
    let bad = std::env::temp_dir().join(format!("hyper-not-a-kernel-{}", std::process::id()));
    std::fs::write(&bad, b"this is not a bzImage\n").unwrap();
    let d = Daemon::with_driver("qemu", &["--accel", "tcg", "--kernel", bad.to_str().unwrap()]);
    let pf = d.podfile("bad.json", &json!({"id": "nokernel", "containers": [{"image": "busybox", "command": ["true"]}]}));
    let err = d.fails(&["run", "-d", &pf]);
    assert!(err.contains("hypervisor log: qemu") && err.contains("kernel"), "QEMU's own message is in the error: {err}");
    assert!(!err.contains("sandbox: sandbox:"), "{err}");
    // Like `docker run`, a run whose start fails leaves the pod created, ready for another start.
    assert_eq!(d.inspect("nokernel")["state"], "created");
    let err = d.fails(&["start", "nokernel"]);

    let _ = std::fs::remove_file(&bad);
    assert!(err.contains("hypervisor log: qemu"), "{err}");
    assert!(!err.contains("timed out") && !err.contains("connecting to the agent"), "QEMU's death is noticed, not waited out: {err}");
    let pod = d.inspect("nokernel");

    assert_eq!(pod["state"], "created", "the pod is kept, ready for another start: {pod}");
    assert!(d.entries("sandboxes").is_empty(), "no sandbox directory is left behind");
    d.ok(&["rm", "nokernel"]);
}
