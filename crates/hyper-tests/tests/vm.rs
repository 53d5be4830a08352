//! What only VM pods have: the guest kernel, the VM's memory, QEMU's life and death.

use std::time::Duration;

use hyper_tests::daemon::{Daemon, mounts_mentioning, sandbox_processes};
use hyper_tests::image::{Compression, Entry, Layout};
use hyper_tests::wait_until;
use serde_json::{Value, json};

/// Runs a pod `name` of one busybox container that sleeps; returns its `inspect`.
fn run_sleeper(d: &Daemon, name: &str) -> Value {
    let pf = d.podfile(&format!("{name}.json"), &json!({"id": name, "containers": [{"image": "busybox", "command": ["sleep", "1000"]}]}));
    d.ok(&["run", "-d", &pf]);
    d.inspect(name)
}

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
    let qemu = info["driver_status"].as_array().unwrap().iter().find(|p| p[0] == "QEMU").unwrap()[1].clone();
    assert!(qemu.as_str().unwrap().ends_with("(-machine microvm)"), "{qemu}");
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
    // Its NIC and loopback, nothing else (no sit0 tunnel device from the guest kernel).
    assert_eq!(d.sh("vm", "ls /sys/class/net").split_whitespace().collect::<Vec<_>>(), ["eth0", "lo"]);

    // The guest keeps time at the host's rate: under TCG its TSC is the host's, whose frequency the driver
    // measured and passed on (microvm gives the guest nothing to calibrate against).
    let uptime = || -> f64 { d.sh("vm", "cut -d' ' -f1 /proc/uptime").trim().parse().unwrap() };
    let (guest0, host0) = (uptime(), std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (guest, host) = (uptime() - guest0, host0.elapsed().as_secs_f64());
    assert!((guest - host).abs() < 0.3, "guest uptime advanced {guest:.2} s while the host's clock advanced {host:.2} s");
    let guest_now: i64 = d.sh("vm", "date +%s").trim().parse().unwrap();
    let host_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((guest_now - host_now).abs() <= 2, "guest clock {guest_now}, host clock {host_now}");
    // Under TCG, QEMU runs without transparent huge pages (each 4 KiB the guest touched cost 2 MiB).
    let info = d.json(&["info"]);
    let accel = info["driver_status"].as_array().unwrap().iter().find(|p| p[0] == "Accelerator").unwrap()[1].as_str().unwrap().to_string();
    let qemu = d.inspect("vm")["sandbox"]["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{qemu}/status")).unwrap();
    assert_eq!(status.contains("THP_enabled:\t0"), accel == "tcg", "QEMU's huge pages with {accel}: {status}");
    // The share reads ahead one 9p message per miss.
    assert_eq!(d.sh("vm", "cat /sys/class/bdi/9p-*/read_ahead_kb").trim(), "256");
    // Nothing the guest makes in its share means anything on the host: the share and the container's overlay
    // in it are nodev and nosuid there.
    let sb = d.inspect("vm")["sandbox"]["id"].as_str().unwrap().to_string();
    let share = mounts_mentioning(&format!("{sb}/share"));
    assert!(share.len() >= 2 && share.iter().all(|m| m.split(' ').nth(5).is_some_and(|o| o.contains("nodev") && o.contains("nosuid"))), "{share:#?}");
    // The console log is the guest's to fill: once past 1 MiB it is cut to its end (here the test writes it, as
    // QEMU would for a guest writing its console in a loop).
    let console = std::path::PathBuf::from(d.inspect("vm")["sandbox"]["details"]["log"].as_str().unwrap());
    {
        use std::io::Write;
        let flood: String = (0..40_000).map(|i| format!("guest console flood {i:>8} ..................\n")).collect();
        // One write, as a trim in the middle of many could leave a log between the two sizes for good.
        std::fs::OpenOptions::new().append(true).open(&console).unwrap().write_all(flood.as_bytes()).unwrap();
    }
    // (Read once the cut is whole: the file is empty for a moment while it is cut.)
    let cut_whole = || std::fs::read_to_string(&console).is_ok_and(|c| c.len() <= 300 << 10 && c.contains("[hyper: console log cut to its last"));
    assert!(wait_until(Duration::from_secs(20), cut_whole), "{} bytes", std::fs::metadata(&console).unwrap().len());
    let cut = std::fs::read_to_string(&console).unwrap();
    assert!(cut.contains("guest console flood    39999 ..................\n"), "{}", cut.chars().take(300).collect::<String>());
    assert!(!cut.contains("guest console flood        0 "), "the start of the flood is gone");

    d.ok(&["rm", "-f", "vm"]);
}

/// The driver makes each container's mount points (/proc, /etc/hosts...) on the host, in the container's root,
/// before the guest sees it. An image whose /etc is an absolute symlink must get them where the symlink leads
/// inside the image, never in the host directory of the same name.
#[test]
fn mount_points_made_on_the_host_stay_inside_the_image() {
    let target = format!("/tmp/hyper-escape-mountpoint-{}", std::process::id());
    std::fs::create_dir_all(&target).unwrap();
    let d = Daemon::with_driver("qemu", &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut l = Layout::new(&dir.path().join("oci"));
    let busybox = Entry::File { path: "bin/busybox".into(), data: std::fs::read("/bin/busybox").unwrap(), mode: 0o755, uid: 0, gid: 0, xattrs: vec![] };
    let inner = target.trim_start_matches('/');
    let entries = vec![Entry::dir("bin"), busybox, Entry::dir("tmp"), Entry::dir(inner), Entry::symlink("etc", &target)];
    let m = l.image(&[(entries, Compression::Gzip)], json!({"Cmd": ["/bin/busybox", "sleep", "1000"]}), "amd64");
    l.tag(&m, "test/etc-link:1");
    d.ok(&["load", "-i", l.dir.to_str().unwrap()]);
    let pf = d.podfile("mp.json", &json!({"id": "mp", "hostname": "mphost", "containers": [{"name": "c", "image": "test/etc-link:1"}]}));
    d.ok(&["run", "-d", &pf]);

    let hosts = d.ok(&["exec", "mp/c", "/bin/busybox", "cat", "/etc/hosts"]);
    assert!(hosts.contains("mphost"), "the pod's /etc/hosts is mounted through the image's /etc link: {hosts}");
    assert_eq!(hyper_tests::daemon::list(std::path::Path::new(&target)), Vec::<String>::new(), "files were made in the host's {target}");
    d.ok(&["rm", "-f", "mp"]);
    std::fs::remove_dir(&target).unwrap();
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

/// hyperd told to stop (SIGTERM, as `systemctl restart` does) while a start boots a VM: the start completes and
/// answers its client before the daemon goes, and the next daemon finds the pod running in that VM. The daemon
/// used to go at once: the client lost its connection, and the VM ran on, on no record, until the next daemon
/// ended it.
#[test]
fn a_daemon_told_to_stop_finishes_the_start_under_way() {
    let mut d = Daemon::with_driver("qemu", &[]);
    let pf = d.podfile("t.json", &json!({"id": "term", "containers": [{"image": "busybox", "command": ["sleep", "1000"]}]}));
    d.ok(&["create", &pf]);
    let sandboxes = d.root.join("sandboxes").display().to_string();
    let start = d.cmd(&["start", "term"]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    assert!(wait_until(Duration::from_secs(30), || !sandbox_processes(&sandboxes).is_empty()), "the VM boots:\n{}", d.log());
    // SAFETY: a signal to the daemon this test started.
    unsafe { libc::kill(d.pid() as i32, libc::SIGTERM) };
    let out = start.wait_with_output().unwrap();
    assert!(out.status.success(), "the start answers before the daemon goes: {}\n{}", String::from_utf8_lossy(&out.stderr), d.log());
    let pid = sandbox_processes(&sandboxes);
    d.restart();
    assert_eq!(d.inspect("term")["state"], "running", "{}", d.log());
    assert_eq!(vec![d.inspect("term")["sandbox"]["pid"].as_i64().unwrap() as i32], pid, "in the VM that start booted");
    assert_eq!(d.sh("term", "echo up").trim(), "up");
    d.ok(&["rm", "-f", "term"]);
}

/// A client that goes away in the middle of a start (Ctrl-C on `hyper start`, while the VM boots): the start runs
/// to its end anyway, so the pod is Running in the one VM it booted, and `stop` ends that VM. The daemon used to
/// drop the start where it was: the VM ran on, named by no pod, and the pod stayed Created.
#[test]
fn a_start_whose_client_goes_away_still_completes() {
    let d = Daemon::with_driver("qemu", &[]);
    let pf = d.podfile("g.json", &json!({"id": "gone", "containers": [{"image": "busybox", "command": ["sleep", "1000"]}]}));
    d.ok(&["create", &pf]);
    let sandboxes = d.root.join("sandboxes").display().to_string();
    let mut start = d.cmd(&["start", "gone"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    assert!(wait_until(Duration::from_secs(30), || !sandbox_processes(&sandboxes).is_empty()), "the VM boots:\n{}", d.log());
    start.kill().unwrap();
    start.wait().unwrap();
    assert!(wait_until(Duration::from_secs(60), || d.inspect("gone")["state"] == "running"), "the start completes:\n{}", d.log());
    let pid = d.inspect("gone")["sandbox"]["pid"].as_i64().unwrap() as i32;
    assert_eq!(sandbox_processes(&sandboxes), vec![pid], "one VM, the pod's");
    assert_eq!(d.sh("gone", "echo up").trim(), "up");
    d.ok(&["stop", "gone"]);
    assert!(wait_until(Duration::from_secs(10), || sandbox_processes(&sandboxes).is_empty()), "no VM left after stop");
    assert!(d.entries("sandboxes").is_empty(), "{:?}", d.entries("sandboxes"));
}

/// hyperd killed in the middle of a frame to a VM's agent (a stdin write, say): the next hyperd takes the pod up
/// again. The guest's end of the port outlives the host's connection, and the agent took the new host's hellos
/// for the rest of the cut frame, so the recovery never got an answer and the running pod was failed.
#[test]
fn a_frame_cut_by_a_dying_daemon_does_not_swallow_the_next_ones_hello() {
    use std::io::Write;
    let mut d = Daemon::with_driver("qemu", &[]);
    let sb = run_sleeper(&d, "cut")["sandbox"]["id"].as_str().unwrap().to_string();
    d.kill();
    // What a daemon killed mid-write leaves in the port: the start of a 1 MiB data frame.
    let mut frame = Vec::new();
    agent_proto::encode_data(&mut frame, 9, 0, &vec![b'x'; 1 << 20]);
    let mut port = std::os::unix::net::UnixStream::connect(d.root.join("sandboxes").join(&sb).join("agent.sock")).unwrap();
    port.write_all(&frame[..4096]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(port);
    d.restart();
    assert_eq!(d.inspect("cut")["state"], "running", "{}", d.log());
    assert_eq!(d.sh("cut", "echo resumed").trim(), "resumed");
    assert!(d.log().contains("resumed"), "{}", d.log());
    d.ok(&["rm", "-f", "cut"]);
}

/// hyperd restarted with the other driver while a pod runs in a sandbox of the first: it refuses to start and says
/// why, and the pod runs on; back on its own driver, the daemon takes the pod up again. The qemu driver used to
/// take the ns pod over, and its stop killed the agent only: pod-init and the containers lived on.
#[test]
fn a_daemon_restarted_with_another_driver_refuses_while_pods_run_in_the_first() {
    let mut d = Daemon::with_driver("ns", &[]);
    let sb = run_sleeper(&d, "other")["sandbox"]["id"].as_str().unwrap().to_string();
    let before = sandbox_processes(&sb);
    d.kill();
    let log = d.dir.path().join("qemu-hyperd.log");
    let mut other = std::process::Command::new(hyper_tests::bin_dir().join("hyperd"))
        .args(["--root", d.root.to_str().unwrap(), "--socket", d.socket.to_str().unwrap(), "--driver", "qemu"])
        .args(["--bridge", &d.bridge(), "--pod-cidr", &format!("{}.0/24", d.subnet_prefix())])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut status = None;
    wait_until(Duration::from_secs(30), || {
        status = other.try_wait().unwrap();
        status.is_some()
    });
    let _ = other.kill();
    let _ = other.wait();
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(status.is_some_and(|s| !s.success()), "hyperd --driver qemu served ({status:?}): {err}");
    assert!(err.contains("other (ns sandbox, pid") && err.contains("another driver than qemu"), "{err}");
    assert_eq!(sandbox_processes(&sb), before, "the pod's processes, untouched");
    d.restart();
    assert_eq!(d.inspect("other")["state"], "running");
    assert_eq!(d.sh("other", "echo still").trim(), "still");
    d.ok(&["rm", "-f", "other"]);
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
    assert!(err.contains("hypervisor log: qemu"), "{err}");
    assert!(!err.contains("timed out") && !err.contains("connecting to the agent"), "QEMU's death is noticed, not waited out: {err}");
    let pod = d.inspect("nokernel");

    assert_eq!(pod["state"], "created", "the pod is kept, ready for another start: {pod}");
    assert!(d.entries("sandboxes").is_empty(), "no sandbox directory is left behind");
    // Making a template fails the same way: its error quotes QEMU (its directory, and the log in it, are gone
    // with the failure; the error used to point there).
    let mut d = d;
    d.restart_with(&["--accel", "tcg", "--kernel", bad.to_str().unwrap(), "--vm-templates"]);
    let _ = d.fails(&["start", "nokernel"]);
    let _ = std::fs::remove_file(&bad);
    assert!(d.log().contains("the template's QEMU exited during its boot: QEMU: qemu"), "{}", d.log());
    assert!(d.entries("vm-templates").is_empty(), "no half-made template is left behind");
    d.ok(&["rm", "nokernel"]);
}

/// `--vm-templates`: the first VM pod of a shape makes a template, later ones restore it instead of booting.
/// Each restored VM has its own randomness, the host's clock, its own MAC and address, and behaves like a
/// booted one through stop, start and replace. A template that fails to restore is thrown away: that start
/// boots, the next one makes the template again.
#[test]
fn vm_templates_restore_independent_vms() {
    let d = Daemon::with_driver("qemu", &["--vm-templates"]);
    let pod = |name: &str, n: u32| {
        d.podfile(&format!("{name}.json"), &json!({"id": name, "resource": {"vcpu": 1, "memory": 128},
            "containers": [{"image": "busybox", "command": ["sleep", (100000 + n).to_string()]}]}))
    };
    for (i, name) in ["t1", "t2"].iter().enumerate() {
        d.ok(&["run", "-d", &pod(name, i as u32)]);
        assert_eq!(d.inspect(name)["sandbox"]["details"]["boot"], "template", "{}", d.inspect(name));
    }
    let templates = d.entries("vm-templates");
    assert_eq!(templates.len(), 1, "one template for one shape: {templates:?}");
    assert!(no_template_qemu(), "the QEMU that made the template is gone");

    let random = |p: &str| d.sh(p, "head -c 16 /dev/urandom | od -An -tx1").trim().to_string();
    assert_ne!(random("t1"), random("t2"), "two VMs restored from one template draw different random numbers");
    let host_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let guest_now: i64 = d.sh("t2", "date +%s").trim().parse().unwrap();
    assert!((guest_now - host_now).abs() < 10, "the guest's clock is the host's: {guest_now} vs {host_now}");
    for p in ["t1", "t2"] {
        let sb = &d.inspect(p)["sandbox"]["details"];
        assert_eq!(d.sh(p, "cat /sys/class/net/eth0/address").trim(), sb["mac"].as_str().unwrap(), "{p} has its own MAC");
        assert!(d.sh(p, "ip -4 addr show eth0").contains(sb["ip"].as_str().unwrap()), "{p} has its own address");
    }
    let t2_ip = d.inspect("t2")["sandbox"]["details"]["ip"].as_str().unwrap().to_string();
    d.sh("t1", &format!("ping -c 1 -W 5 {t2_ip}"));

    // stop, start (restored again), replace in the restored VM
    d.ok(&["stop", "t1"]);
    d.ok(&["start", "t1"]);
    assert_eq!(d.inspect("t1")["sandbox"]["details"]["boot"], "template");
    let qemu_pid = d.inspect("t1")["sandbox"]["pid"].clone();
    d.ok(&["create", "-p", &pod("t3", 3)]);
    d.ok(&["replace", "-o", "t1", "-n", "t3"]);
    assert_eq!(d.inspect("t3")["sandbox"]["pid"], qemu_pid);
    assert_eq!(d.sh("t3", "echo replaced").trim(), "replaced");

    // A template QEMU cannot load: the start boots instead and works; the template is made again next time.
    std::fs::write(d.root.join("vm-templates").join(&templates[0]).join("state"), b"not a VM state").unwrap();
    d.ok(&["run", "-d", &pod("t4", 4)]);
    assert_eq!(d.inspect("t4")["sandbox"]["details"]["boot"], "boot");
    assert_eq!(d.sh("t4", "echo booted").trim(), "booted");
    d.ok(&["run", "-d", &pod("t5", 5)]);
    assert_eq!(d.inspect("t5")["sandbox"]["details"]["boot"], "template");

    let sandboxes: Vec<String> = ["t2", "t3", "t4", "t5"].iter().map(|p| d.inspect(p)["sandbox"]["id"].as_str().unwrap().to_string()).collect();
    d.ok(&["rm", "-f", "t1", "t2", "t3", "t4", "t5"]);
    for sb in &sandboxes {
        assert!(wait_until(Duration::from_secs(10), || sandbox_processes(sb).is_empty()), "{sb} left processes");
    }
    assert!(no_template_qemu());
    assert_eq!(d.entries("sandboxes"), Vec::<String>::new());
    // A daemon started with another kernel command line removes the template it could never restore (each
    // holds a guest's RAM on disk).
    assert_eq!(d.entries("vm-templates").len(), 1);
    let mut d = d;
    d.restart_with(&["--vm-templates", "--kernel-append", "hyper.unused=1"]);
    assert!(d.entries("vm-templates").is_empty(), "{:?}", d.entries("vm-templates"));
}

/// `--vm-cache 1`: a VM boots ahead of time; a pod of the default shape starts in it (its QEMU, its own MAC and
/// address, a working network), another VM boots in its place, and a pod of another shape boots its own. A
/// waiting VM killed from outside is replaced, and a start that fails in a cached VM leaves nothing behind. A
/// daemon that is killed leaves the waiting VM, and the next one on the same root removes it; a daemon that
/// stops kills it.
#[test]
fn vm_cache_starts_pods_in_vms_booted_ahead() {
    let mut d = Daemon::with_driver("qemu", &["--vm-cache", "1"]);
    let root = d.root.display().to_string();
    // The cache's QEMUs (of this daemon's root: other tests run VMs too).
    let cached_qemus = || -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let pid = e.file_name().to_string_lossy().parse::<i32>().ok()?;
                let cmd = String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).ok()?).into_owned();
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let zombie = stat.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
                (!zombie && cmd.contains("hyper-vc-") && cmd.contains(&format!("{root}/vm-cache/"))).then_some(pid)
            })
            .collect()
    };
    let waiting = |d: &Daemon| {
        let info = d.json(&["info"]);
        info["driver_status"].as_array().unwrap().iter().find(|p| p[0] == "VM cache").unwrap()[1].as_str().unwrap().to_string()
    };
    assert!(wait_until(Duration::from_secs(60), || waiting(&d).contains("1 waiting for a pod")), "{}", waiting(&d));
    let parked = cached_qemus();
    assert_eq!(parked.len(), 1, "one VM waits: {parked:?}");

    let pf = d.podfile("c1.json", &json!({"id": "c1", "hostname": "cached",
        "containers": [{"name": "a", "image": "busybox", "command": ["sleep", "1000"]},
                       {"name": "b", "image": "busybox", "command": ["sleep", "1001"]}]}));
    d.ok(&["run", "-d", &pf]);
    let sb = d.inspect("c1")["sandbox"].clone();
    assert_eq!(sb["details"]["boot"], "cache", "{sb}");
    assert_eq!(sb["pid"], parked[0], "the pod runs in the VM that waited");
    assert_eq!(d.sh("c1/a", "hostname").trim(), "cached");
    assert_eq!(d.sh("c1/b", "cat /sys/class/net/eth0/address").trim(), sb["details"]["mac"].as_str().unwrap(), "the pod's own MAC");
    assert!(d.sh("c1/b", "ip -4 addr show eth0").contains(sb["details"]["ip"].as_str().unwrap()));
    assert!(d.sh("c1/a", "ps").contains("sleep 1001"), "one PID namespace");
    let console = std::path::Path::new(sb["details"]["log"].as_str().unwrap());
    assert!(console.starts_with(d.root.join("sandboxes")) && console.is_file(), "the VM's directory moved to its sandbox's: {console:?}");

    // Another VM takes the taken one's place; a pod of another shape boots its own and reaches the first.
    assert!(wait_until(Duration::from_secs(60), || waiting(&d).contains("1 waiting for a pod")), "{}", waiting(&d));
    // (A taken VM's QEMU keeps the command line it had in the cache.)
    let next: Vec<i32> = cached_qemus().into_iter().filter(|p| *p != parked[0]).collect();
    assert_eq!(next.len(), 1, "a new VM waits: {next:?} (taken: {})", parked[0]);
    let pf2 = d.podfile("c2.json", &json!({"id": "c2", "resource": {"vcpu": 1, "memory": 160},
        "containers": [{"image": "busybox", "command": ["sleep", "1000"]}]}));
    d.ok(&["run", "-d", &pf2]);
    assert_eq!(d.inspect("c2")["sandbox"]["details"]["boot"], "boot", "another shape boots");
    d.sh("c2", &format!("ping -c 1 -W 5 {}", sb["details"]["ip"].as_str().unwrap()));

    // stop ends the VM; start takes the next one
    d.ok(&["stop", "c1"]);
    assert!(wait_until(Duration::from_secs(10), || !std::path::Path::new(&format!("/proc/{}", parked[0])).exists()), "the taken VM's QEMU ends with the pod");
    d.ok(&["start", "c1"]);
    assert_eq!(d.inspect("c1")["sandbox"]["pid"], next[0]);
    assert_eq!(d.sh("c1/a", "echo again").trim(), "again");
    d.ok(&["rm", "-f", "c1", "c2"]);
    assert!(wait_until(Duration::from_secs(10), || !std::path::Path::new(&format!("/proc/{}", next[0])).exists()));
    assert_eq!(d.entries("sandboxes"), Vec::<String>::new());

    // A waiting VM killed from outside: the next start boots, and another VM takes the dead one's place.
    assert!(wait_until(Duration::from_secs(60), || waiting(&d).contains("1 waiting for a pod")), "{}", waiting(&d));
    let doomed = cached_qemus();
    assert_eq!(doomed.len(), 1, "{doomed:?}");
    // SAFETY: kill has no memory arguments.
    unsafe { libc::kill(doomed[0], libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(10), || cached_qemus().is_empty()));
    d.ok(&["run", "-d", &pf]);
    assert_eq!(d.inspect("c1")["sandbox"]["details"]["boot"], "boot", "a dead VM is not handed to a pod");
    assert_eq!(d.sh("c1/a", "echo booted").trim(), "booted");
    d.ok(&["rm", "-f", "c1"]);
    assert!(wait_until(Duration::from_secs(60), || waiting(&d).contains("1 waiting for a pod")), "{}", waiting(&d));
    assert_eq!(d.entries("vm-cache").len(), 1, "the dead VM's directory is gone: {:?}", d.entries("vm-cache"));

    // A start that fails in a cached VM: its error has the VM's last words (not that it waited), and the VM goes.
    let taken = cached_qemus();
    let bad = d.podfile("bad.json", &json!({"id": "bad", "containers": [{"image": "busybox", "command": ["/nonexistent"]}]}));
    let err = d.fails(&["run", "-d", &bad]);
    assert!(err.contains("/nonexistent") && !err.contains(agent_proto::VM_PARKED_MARK), "{err}");
    assert!(d.inspect("bad")["sandbox"].is_null(), "{}", d.inspect("bad"));
    assert!(wait_until(Duration::from_secs(10), || !std::path::Path::new(&format!("/proc/{}", taken[0])).exists()));
    assert_eq!(d.entries("sandboxes"), Vec::<String>::new());
    d.ok(&["rm", "bad"]);
    assert!(wait_until(Duration::from_secs(60), || waiting(&d).contains("1 waiting for a pod")), "{}", waiting(&d));

    // A killed daemon leaves its waiting VM; the next one removes it, and boots its own.
    assert!(wait_until(Duration::from_secs(60), || cached_qemus().len() == 1));
    let left = cached_qemus();
    d.kill();
    assert_eq!(cached_qemus(), left, "the waiting VM outlives a daemon that was killed");
    d.restart();
    assert!(wait_until(Duration::from_secs(60), || waiting(&d).contains("1 waiting for a pod")), "{}", waiting(&d));
    let after = cached_qemus();
    assert!(after.len() == 1 && after != left, "the earlier daemon's VM is gone, a new one waits: {after:?} (was {left:?})");
    // A daemon that stops kills the VM that waits, its tap, mounts and directory.
    // (Its tap, by name: other tests' caches have taps of their own.)
    let taps: Vec<String> = d
        .entries("vm-cache")
        .iter()
        .filter_map(|e| e.strip_prefix("vc-").map(|letters| format!("hc{letters}")))
        .collect();
    assert_eq!(taps.len(), 1, "{taps:?}");
    let daemon = d.pid();
    // SAFETY: kill has no memory arguments.
    unsafe { libc::kill(daemon as i32, libc::SIGTERM) };
    let exited = || {
        std::fs::read_to_string(format!("/proc/{daemon}/stat"))
            .map_or(true, |s| s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
    };
    assert!(wait_until(Duration::from_secs(20), exited), "hyperd exits on SIGTERM");
    assert!(cached_qemus().is_empty(), "the waiting VM is killed: {:?}", cached_qemus());
    assert_eq!(d.entries("vm-cache"), Vec::<String>::new());
    assert!(mounts_mentioning(&format!("{root}/vm-cache")).is_empty(), "{:?}", mounts_mentioning(&format!("{root}/vm-cache")));
    assert!(!std::path::Path::new("/sys/class/net").join(&taps[0]).exists(), "the waiting VM's tap {} is gone", taps[0]);
}

/// `--vm-cache 1 --vm-templates`: the cache's VMs are restored from the template (they wait as soon as they
/// run, and share its RAM); pods started in them are independent VMs like any restored one.
#[test]
fn vm_cache_with_templates_restores_its_vms() {
    let d = Daemon::with_driver("qemu", &["--vm-cache", "1", "--vm-templates"]);
    let root = d.root.display().to_string();
    let waiting = |d: &Daemon| {
        let info = d.json(&["info"]);
        info["driver_status"].as_array().unwrap().iter().find(|p| p[0] == "VM cache").unwrap()[1].as_str().unwrap().to_string()
    };
    // The command lines of the VMs waiting in the cache.
    let parked = || -> Vec<(i32, String)> {
        std::fs::read_dir(d.root.join("vm-cache"))
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let rec = std::fs::read_to_string(e.path().join("process")).ok()?;
                let pid: i32 = rec.split_whitespace().next()?.parse().ok()?;
                Some((pid, String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).ok()?).replace('\0', " ")))
            })
            .collect()
    };
    let mut pids = vec![];
    for (i, name) in ["ct1", "ct2"].iter().enumerate() {
        assert!(wait_until(Duration::from_secs(60), || waiting(&d).contains("1 waiting for a pod")), "{}", waiting(&d));
        let p = parked();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].1.contains("-incoming defer") && p[0].1.contains(&format!("{root}/vm-templates/")), "restored: {}", p[0].1);
        let pf = d.podfile(&format!("{name}.json"), &json!({"id": name, "containers": [{"image": "busybox", "command": ["sleep", (1000 + i).to_string()]}]}));
        d.ok(&["run", "-d", &pf]);
        let sb = d.inspect(name)["sandbox"].clone();
        assert_eq!((sb["details"]["boot"].as_str(), sb["details"]["cached_from"].as_str()), (Some("cache"), Some("template")), "{sb}");
        assert_eq!(sb["pid"], p[0].0);
        assert_eq!(d.sh(name, "cat /sys/class/net/eth0/address").trim(), sb["details"]["mac"].as_str().unwrap());
        pids.push(p[0].0);
    }
    assert_eq!(d.entries("vm-templates").len(), 1, "one template");
    let random = |p: &str| d.sh(p, "head -c 16 /dev/urandom | od -An -tx1").trim().to_string();
    assert_ne!(random("ct1"), random("ct2"), "two VMs restored from one template draw different random numbers");
    let ip2 = d.inspect("ct2")["sandbox"]["details"]["ip"].as_str().unwrap().to_string();
    d.sh("ct1", &format!("ping -c 1 -W 5 {ip2}"));
    d.ok(&["rm", "-f", "ct1", "ct2"]);
    for pid in pids {
        assert!(wait_until(Duration::from_secs(10), || !std::path::Path::new(&format!("/proc/{pid}")).exists()), "QEMU {pid} ends with its pod");
    }
    assert_eq!(d.entries("sandboxes"), Vec::<String>::new());
}

/// While no daemon is connected, the agent keeps its virtio port open: the guest throws away what a closed
/// port holds, and a daemon connecting while the agent had it closed for a moment lost its first request.
/// QEMU reports the guest side of the port as the chardev's `frontend-open`.
/// hyperd killed while it starts a VM, after QEMU started and before anything but the driver recorded it: the
/// next hyperd ends that QEMU and removes what went with it. Twice: while the first start of a shape makes the
/// VM template (the next hyperd does not use templates, and ends it all the same), and while a VM is restored
/// from it (a wrapper around QEMU holds restores back while a flag file exists, so the daemon can be killed
/// right then).
#[test]
fn a_daemon_killed_mid_start_leaves_no_vm_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let flag = tmp.path().join("slow-restore");
    let wrapper = tmp.path().join("qemu");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\ncase \" $* \" in *\" -incoming \"*) while [ -e {} ]; do sleep 0.1; done;; esac\nexec qemu-system-x86_64 \"$@\"\n", flag.display()),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut d = Daemon::with_driver("qemu", &["--vm-templates", "--qemu", wrapper.to_str().unwrap()]);
    let pf = d.podfile("k.json", &json!({"id": "k", "resource": {"vcpu": 1, "memory": 128},
        "containers": [{"image": "busybox", "command": ["sleep", "100000"]}]}));
    let templates = d.root.join("vm-templates").display().to_string();
    let sandboxes = d.root.join("sandboxes");
    let nothing_left = |d: &Daemon| {
        assert!(d.entries("sandboxes").is_empty(), "sandbox directories left: {:?}", d.entries("sandboxes"));
        assert!(d.entries("vm-templates").iter().all(|t| !t.contains(".tmp-")), "a half-made template is left: {:?}", d.entries("vm-templates"));
        assert!(mounts_mentioning(&sandboxes.display().to_string()).is_empty(), "mounts left");
        let links = String::from_utf8_lossy(&std::process::Command::new("ip").args(["-o", "link"]).output().unwrap().stdout).to_string();
        assert!(!links.contains(&format!("master {}", d.bridge())), "a tap is still on the pods' bridge: {links}");
        assert_eq!(d.inspect("k")["state"], "created");
    };
    // The QEMUs (or the wrapper that will be one) among a sandbox's processes: a template's save also runs
    // QEMU's `sh -c cat` into its directory for a moment.
    let qemus = |dir: &str| -> Vec<i32> {
        sandbox_processes(dir).into_iter().filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.starts_with("qemu"))).collect()
    };
    // The process records itself before it execs (the record is empty until then); the daemon is killed after.
    let recorded = |dir_of: &dyn Fn() -> Option<std::path::PathBuf>| {
        wait_until(Duration::from_secs(120), || dir_of().is_some_and(|dir| std::fs::read_to_string(dir.join("process")).is_ok_and(|r| !r.trim().is_empty())))
    };

    // 1. While the template is made: its QEMU runs in a `.tmp-` directory, the sandbox waits for it.
    let mut run = d.cmd(&["run", "-d", &pf]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let making = || d.entries("vm-templates").into_iter().find(|t| t.contains(".tmp-")).map(|t| d.root.join("vm-templates").join(t));
    assert!(recorded(&making), "a QEMU makes the template:\n{}", d.log());
    let maker = qemus(&templates);
    assert!(!maker.is_empty() && d.entries("sandboxes").len() == 1, "the template's QEMU runs, the sandbox is prepared");
    d.kill();
    let _ = run.wait();
    assert_eq!(qemus(&templates), maker, "the QEMU outlives the killed daemon");
    d.restart_with(&["--qemu", wrapper.to_str().unwrap()]);
    assert!(sandbox_processes(&templates).is_empty(), "the new daemon ended the template's QEMU:\n{}", d.log());
    nothing_left(&d);
    d.restart_with(&["--vm-templates", "--qemu", wrapper.to_str().unwrap()]);

    // 2. While a VM is restored: its QEMU runs in the sandbox's directory, which no pod's record names yet.
    std::fs::write(&flag, "").unwrap();
    let mut start = d.cmd(&["start", "k"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let sandbox = || d.entries("sandboxes").first().map(|s| sandboxes.join(s));
    assert!(recorded(&sandbox), "a VM is restored:\n{}", d.log());
    let vm = qemus(&sandboxes.display().to_string());
    assert!(!vm.is_empty(), "the restored VM's QEMU runs");
    d.kill();
    let _ = start.wait();
    assert_eq!(qemus(&sandboxes.display().to_string()), vm, "the QEMU outlives the killed daemon");
    d.restart();
    assert!(sandbox_processes(&sandboxes.display().to_string()).is_empty(), "the new daemon ended the VM no record named:\n{}", d.log());
    assert!(d.log().contains("no pod records it"), "{}", d.log());
    nothing_left(&d);

    // The pod starts as if nothing happened.
    std::fs::remove_file(&flag).unwrap();
    d.ok(&["start", "k"]);
    assert_eq!(d.sh("k", "echo up").trim(), "up");
    d.ok(&["rm", "-f", "k"]);
}

#[test]
fn the_agent_keeps_its_port_open_while_the_daemon_is_away() {
    let mut d = Daemon::with_driver("qemu", &[]);
    let qmp = std::path::PathBuf::from(run_sleeper(&d, "away")["sandbox"]["details"]["qmp"].as_str().unwrap());
    assert_eq!(agent_port_open(&qmp), Some(true), "the port is open while the daemon is connected");
    d.kill();
    // The agent sees its host go, then looks at the port again every 10 ms, then less often.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(agent_port_open(&qmp), Some(true), "the agent closed its port while the daemon was away");
    }
    d.restart();
    assert_eq!(d.sh("away", "echo back").trim(), "back");
    d.ok(&["rm", "-f", "away"]);
}

/// Whether the guest has the agent's virtio port open, from QEMU's `query-chardev`.
fn agent_port_open(qmp: &std::path::Path) -> Option<bool> {
    use std::io::{BufRead, BufReader, Write};
    let s = std::os::unix::net::UnixStream::connect(qmp).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut w = s;
    let mut line = String::new();
    r.read_line(&mut line).ok()?; // the greeting
    for cmd in ["qmp_capabilities", "query-chardev"] {
        writeln!(w, "{}", json!({"execute": cmd})).ok()?;
        loop {
            line.clear();
            r.read_line(&mut line).ok()?;
            let v: Value = serde_json::from_str(&line).ok()?;
            if let Some(ret) = v.get("return") {
                if cmd == "query-chardev" {
                    return ret.as_array()?.iter().find(|c| c["label"] == "agent")?["frontend-open"].as_bool();
                }
                break;
            }
        }
    }
    None
}

/// No QEMU making a template is running.
fn no_template_qemu() -> bool {
    !std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains("hyper-template-"))
    })
}
