//! Pod networking for every driver: addresses, port mappings (TCP and UDP, 127.0.0.1 and the bridge address),
//! pod-to-pod traffic, /etc/hosts and resolv.conf, and nothing leaked after many cycles.
//!
//! Everything stays inside the test's own network namespace (scripts/test.sh): the daemon's bridge, the pods,
//! and the test's own sockets.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use hyper_tests::daemon::Daemon;
use hyper_tests::{free_port, run, wait_until};
use serde_json::json;

fn links_on(bridge: &str) -> Vec<String> {
    run(Command::new("ip").args(["-o", "link", "show", "master", bridge])).lines().map(str::to_string).collect()
}

fn nat_rules() -> String {
    run(Command::new("iptables").args(["-w", "-t", "nat", "-S"]))
}

fn tcp_echo(addr: &str) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().map_err(|e| format!("{e}"))?, Duration::from_secs(5)).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"ping over tcp\n").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).map_err(|e| format!("read {addr}: {e}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn udp_echo(addr: &str) -> Result<String, String> {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 64];
    // UDP may lose the first datagram while the pod starts: a few tries.
    for _ in 0..10 {
        s.send_to(b"ping over udp", addr).map_err(|e| e.to_string())?;
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    Err(format!("no UDP answer from {addr}"))
}

fn echo_pod(d: &Daemon, name: &str, tcp: u16, udp: u16) -> String {
    d.podfile(&format!("{name}.json"), &json!({"id": name, "hostname": name, "containers": [
        {"name": "tcp", "image": "nettools", "command": ["nettool", "tcp-echo", "7000"]},
        {"name": "udp", "image": "nettools", "command": ["nettool", "udp-echo", "7001"]}],
        "portmappings": [{"containerPort": "7000", "hostPort": tcp.to_string(), "protocol": "tcp"},
                         {"containerPort": 7001, "hostPort": udp, "protocol": "udp"}]}))
}

pub fn port_mappings_and_pod_to_pod(driver: &str) {
    let d = Daemon::with_driver(driver, &[]);
    let fixtures = hyper_tests::fixtures_dir();
    d.ok(&["load", "-i", fixtures.join("nettools.tar").to_str().unwrap()]);
    let (tcp, udp) = (free_port(), free_port());
    let pf = echo_pod(&d, "echo", tcp, udp);
    d.ok(&["run", "-d", &pf]);
    let ip = d.inspect("echo")["ip"].as_str().unwrap().to_string();
    assert!(ip.starts_with(&d.subnet_prefix()), "{ip}");
    let gw = format!("{}.1", d.subnet_prefix());
    for host in ["127.0.0.1", gw.as_str()] {
        let r = wait_until(Duration::from_secs(20), || tcp_echo(&format!("{host}:{tcp}")).is_ok());
        assert!(r, "TCP through {host}:{tcp}: {:?}", tcp_echo(&format!("{host}:{tcp}")));
        assert_eq!(tcp_echo(&format!("{host}:{tcp}")).unwrap(), "ping over tcp\n");
        assert_eq!(udp_echo(&format!("{host}:{udp}")).unwrap(), "ping over udp", "UDP through {host}:{udp}");
    }
    // The pod's address and name, from inside.
    assert_eq!(d.sh("echo/tcp", "hostname -i").trim(), ip);
    let hosts = d.sh("echo/tcp", "cat /etc/hosts");
    assert!(hosts.contains(&format!("{ip}\techo")), "{hosts}");
    // A second pod reaches the first by its address; the first reaches the host through its gateway.
    d.ok(&["run", "-d", "--name", "client", "busybox", "sleep", "1000"]);
    assert_eq!(d.sh("client", &format!("echo hello-pod | nc -w 3 {ip} 7000")).trim(), "hello-pod");
    let l = std::net::TcpListener::bind(format!("{gw}:0")).unwrap();
    let hp = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.write_all(b"from the host\n").unwrap();
    });
    assert_eq!(d.sh("client", &format!("nc -w 3 {gw} {hp} </dev/null")).trim(), "from the host");
    t.join().unwrap();
    // Pods reach published ports through the host's address too, another pod's and their own (hairpin NAT):
    // the answer used to go straight back over the bridge, from an address the client never asked.
    assert_eq!(d.sh("client", &format!("echo hairpin | nc -w 3 {gw} {tcp}")).trim(), "hairpin");
    assert_eq!(d.sh("echo/tcp", &format!("echo own | nc -w 3 {gw} {tcp}")).trim(), "own");
    // A range onto another range: each port to its own (the DNAT rule for the whole range sent every port to
    // the first). Only the second container port listens.
    let h = (0..50).map(|_| free_port()).find(|p| std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()).unwrap();
    d.ok(&["ports", "add", "echo", "-p", &format!("{h}-{}:6999-7000", h + 1)]);
    assert_eq!(tcp_echo(&format!("127.0.0.1:{}", h + 1)).unwrap(), "ping over tcp\n");
    assert!(tcp_echo(&format!("127.0.0.1:{h}")).is_err(), "nothing listens on 6999");
    d.ok(&["ports", "rm", "echo", "-p", &format!("{h}-{}:6999-7000", h + 1)]);
    // A range onto one port: every host port of it.
    d.ok(&["ports", "add", "echo", "-p", &format!("{h}-{}:7000", h + 1)]);
    for p in [h, h + 1] {
        assert_eq!(tcp_echo(&format!("127.0.0.1:{p}")).unwrap(), "ping over tcp\n", "host port {p}");
    }
    d.ok(&["ports", "rm", "echo", "-p", &format!("{h}-{}:7000", h + 1)]);
    // Conflicting host ports are refused, with nothing started.
    let pf2 = echo_pod(&d, "clash", tcp, free_port());
    d.ok(&["create", "-p", &pf2]);
    let err = d.fails(&["start", "clash"]);
    assert!(err.contains(&format!("host port {tcp}/tcp is already in use")), "{err}");
    assert_eq!(d.inspect("clash")["state"], "created");
    // ports add / rm on a running pod
    let extra = free_port();
    d.ok(&["ports", "add", "echo", "-p", &format!("{extra}:7000")]);
    assert_eq!(tcp_echo(&format!("127.0.0.1:{extra}")).unwrap(), "ping over tcp\n");
    let ls = d.ok(&["ports", "ls", "echo"]);
    assert!(ls.contains(&extra.to_string()) && ls.contains("udp"), "{ls}");
    d.ok(&["ports", "rm", "echo", "-p", &format!("{extra}:7000")]);
    assert!(tcp_echo(&format!("127.0.0.1:{extra}")).is_err(), "the mapping is gone");
    d.ok(&["rm", "-f", "echo", "client", "clash"]);
    assert_eq!(links_on(&d.bridge()), Vec::<String>::new(), "no interface left on the bridge");
}

pub fn hosts_and_resolv_conf(driver: &str) {
    let d = Daemon::with_driver(driver, &[]);
    let pf = d.podfile("dns.json", &json!({"id": "dns", "hostname": "named-pod",
        "dns": ["10.0.0.53", "10.0.0.54"], "dnsSearch": ["example.test", "corp.test"], "dnsOptions": ["ndots:2", "timeout:1"],
        "containers": [{"image": "busybox", "command": ["sleep", "1000"]}]}));
    d.ok(&["run", "-d", &pf]);
    let resolv = d.sh("dns", "cat /etc/resolv.conf");
    assert_eq!(resolv, "nameserver 10.0.0.53\nnameserver 10.0.0.54\nsearch example.test corp.test\noptions ndots:2 timeout:1\n");
    let ip = d.inspect("dns")["ip"].as_str().unwrap().to_string();
    let hosts = d.sh("dns", "cat /etc/hosts");
    assert!(hosts.contains("127.0.0.1\tlocalhost") && hosts.contains(&format!("{ip}\tnamed-pod")), "{hosts}");
    assert_eq!(d.sh("dns", "hostname -i").trim(), ip);
    assert_eq!(d.sh("dns", "hostname").trim(), "named-pod");
    // Without dns in the podfile, the host's resolv.conf.
    d.ok(&["run", "-d", "--name", "plain", "busybox", "sleep", "1000"]);
    assert_eq!(d.sh("plain", "cat /etc/resolv.conf"), std::fs::read_to_string("/etc/resolv.conf").unwrap());
    d.ok(&["rm", "-f", "dns", "plain"]);
}

pub fn many_cycles_leak_nothing(driver: &str) {
    let d = Daemon::with_driver(driver, &[]);
    let cycles = 50;
    let mut sandboxes = vec![];
    let first = format!("{}.2", d.subnet_prefix());
    for i in 0..cycles {
        let p = format!("cyc{i}");
        let pf = d.podfile(&format!("{p}.json"), &json!({"id": p, "containers": [{"image": "busybox", "command": ["sleep", "1000"]}],
            "portmappings": [{"containerPort": "80", "hostPort": free_port().to_string()}, {"containerPort": "53", "hostPort": free_port().to_string(), "protocol": "udp"}]}));
        d.ok(&["create", "-p", &pf]);
        d.ok(&["start", &p]);
        let ins = d.inspect(&p);
        assert_eq!(ins["ip"].as_str(), Some(first.as_str()), "cycle {i}: addresses are freed and reused");
        sandboxes.push(ins["sandbox"]["id"].as_str().unwrap().to_string());
        d.ok(&["stop", "-t", "1", &p]);
        d.ok(&["rm", &p]);
    }
    assert_eq!(links_on(&d.bridge()), Vec::<String>::new(), "interfaces left on the bridge");
    let links = run(Command::new("ip").args(["-o", "link"]));
    let rules = nat_rules() + &run(Command::new("iptables").args(["-w", "-S"]));
    for sb in &sandboxes {
        let short = &sb[2..];
        assert!(!links.contains(&format!("hv{short}")), "interface of {sb} leaked");
        assert!(!rules.contains(sb.as_str()), "rules of {sb} leaked");
    }
    // The daemon restarted with a pod running, then the pod removed: still nothing left.
    let mut d = d;
    d.ok(&["run", "-d", "--name", "survivor", "-p", &format!("{}:80", free_port()), "busybox", "sleep", "1000"]);
    let sb = d.inspect("survivor")["sandbox"]["id"].as_str().unwrap().to_string();
    d.kill();
    d.restart();
    d.ok(&["rm", "-f", "survivor"]);
    assert_eq!(links_on(&d.bridge()), Vec::<String>::new());
    assert!(!nat_rules().contains(&sb), "rules of {sb} leaked across a restart");
}

/// Two daemons on one host, each with its own root, bridge and subnet: the start of one leaves the other's port
/// mappings alone. A starting daemon used to remove every pod chain that its own records did not name.
#[test]
fn a_starting_daemon_keeps_another_daemons_port_mappings() {
    let a = Daemon::with_driver("ns", &[]);
    a.ok(&["load", "-i", hyper_tests::fixtures_dir().join("nettools.tar").to_str().unwrap()]);
    let (tcp, udp) = (free_port(), free_port());
    let pf = echo_pod(&a, "echo", tcp, udp);
    a.ok(&["run", "-d", &pf]);
    let addr = format!("127.0.0.1:{tcp}");
    assert!(wait_until(Duration::from_secs(20), || tcp_echo(&addr).is_ok()), "{:?}", tcp_echo(&addr));
    let b = Daemon::with_driver("ns", &[]);
    assert_ne!(a.bridge(), b.bridge());
    assert_eq!(tcp_echo(&addr), Ok("ping over tcp\n".to_string()), "the first daemon's mapping, after the second started");
    assert_eq!(udp_echo(&format!("127.0.0.1:{udp}")), Ok("ping over udp".to_string()));
    a.ok(&["rm", "-f", "echo"]);
    drop(b);
}

/// Two daemons (separate roots) on one bridge would hand out the same addresses and MACs: the second refuses to
/// start and says why. It used to start, and both first pods got the subnet's .2.
#[test]
fn two_daemons_cannot_share_a_bridge() {
    let a = Daemon::with_driver("ns", &[]);
    let dir = tempfile::tempdir().unwrap();
    let (root, socket) = (dir.path().join("root"), dir.path().join("s"));
    let mut b = Command::new(hyper_tests::bin_dir().join("hyperd"))
        .args(["--driver", "ns", "--bridge", &a.bridge(), "--pod-cidr", &format!("{}.0/24", a.subnet_prefix())])
        .arg("--root")
        .arg(&root)
        .arg("--socket")
        .arg(&socket)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ended = wait_until(Duration::from_secs(20), || b.try_wait().unwrap().is_some());
    if !ended {
        let _ = b.kill();
    }
    let out = b.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(ended && !out.status.success(), "a second daemon served on {}: {err}", a.bridge());
    assert!(err.contains(&format!("bridge {} is in use by another hyperd", a.bridge())), "{err}");
    assert_eq!(a.json(&["version"])["server"]["version"], serde_json::json!(env!("CARGO_PKG_VERSION")), "the first one serves on");
}

/// A UDP flow to a pod's published port does not follow the pod's address to the next pod given it: the
/// kernel's tracking of the flow (and its translation to the address) goes when the address is freed. The
/// next pod used to get the old pod's traffic, published port or not.
#[test]
fn a_freed_address_takes_its_udp_flows_along() {
    let d = Daemon::with_driver("ns", &[]);
    d.ok(&["load", "-i", hyper_tests::fixtures_dir().join("nettools.tar").to_str().unwrap()]);
    let udp = free_port();
    let pf = d.podfile("a.json", &json!({"id": "a", "containers": [{"image": "nettools", "command": ["nettool", "udp-echo", "7001"]}],
        "portmappings": [{"containerPort": 7001, "hostPort": udp, "protocol": "udp"}]}));
    d.ok(&["run", "-d", &pf]);
    let ip = d.inspect("a")["ip"].as_str().unwrap().to_string();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(("127.0.0.1", udp)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 64];
    let answered = |what: &[u8], buf: &mut [u8]| (0..10).any(|_| s.send(what).is_ok() && s.recv(buf).is_ok());
    assert!(answered(b"to a", &mut buf), "pod a answers through its published port");
    d.ok(&["rm", "-f", "a"]);
    let pf = d.podfile("b.json", &json!({"id": "b", "containers": [{"image": "nettools", "command": ["nettool", "udp-echo", "7001"]}]}));
    d.ok(&["run", "-d", &pf]);
    assert_eq!(d.inspect("b")["ip"].as_str().unwrap(), ip, "b has a's address");
    // b listens (it answers on its own address), and publishes nothing.
    assert_eq!(udp_echo(&format!("{ip}:7001")), Ok("ping over udp".to_string()));
    assert!(!answered(b"to b?", &mut buf), "the flow to a's published port reached b");
    d.ok(&["rm", "-f", "b"]);
}

/// A firewall flushed while the daemon is away (a reload of the host's rules) takes the pods' port mappings: the
/// daemon puts them back when it starts again. They stayed dead until each pod restarted.
#[test]
fn published_ports_come_back_after_a_firewall_flush() {
    let mut d = Daemon::with_driver("ns", &[]);
    d.ok(&["load", "-i", hyper_tests::fixtures_dir().join("nettools.tar").to_str().unwrap()]);
    let (tcp, udp) = (free_port(), free_port());
    let pf = echo_pod(&d, "echo", tcp, udp);
    d.ok(&["run", "-d", &pf]);
    let addr = format!("127.0.0.1:{tcp}");
    assert!(wait_until(Duration::from_secs(20), || tcp_echo(&addr).is_ok()), "{:?}", tcp_echo(&addr));
    let chain = format!("HYPER-{}", d.inspect("echo")["sandbox"]["id"].as_str().unwrap());
    d.kill();
    for table in ["nat", "filter"] {
        run(Command::new("iptables").args(["-w", "-t", table, "-F", &chain]));
    }
    assert!(tcp_echo(&addr).is_err(), "the mapping is gone with its rules");
    d.restart();
    assert_eq!(tcp_echo(&addr), Ok("ping over tcp\n".to_string()), "the mapping is back");
    assert_eq!(udp_echo(&format!("127.0.0.1:{udp}")), Ok("ping over udp".to_string()));
    d.ok(&["rm", "-f", "echo"]);
}

/// Something on the pods' bridge that sends the host packets for 127.0.0.1 (a container with a raw socket can,
/// and so can a VM's guest kernel) does not reach services the host binds to loopback only. Mapping the host's
/// 127.0.0.1 into pods needs route_localnet on the bridge, which let such packets in (CVE-2020-8558 in
/// Kubernetes). The host's own connections to pods through 127.0.0.1 still work (`port_mappings_and_pod_to_pod`).
#[test]
fn the_bridge_does_not_reach_the_hosts_loopback_services() {
    let d = Daemon::with_driver("ns", &[]);
    let n = d.net_id;
    let (ns, host_if, pod_if) = (format!("hyevil{n}"), format!("hyev{n}"), format!("hyevp{n}"));
    let gw = format!("{}.1", d.subnet_prefix());
    let sh = |script: &str| Command::new("sh").args(["-c", script]).output().unwrap();
    // Gone however the test ends.
    struct Remove(String, String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = Command::new("sh").args(["-c", &format!("ip netns del {} 2>/dev/null; ip link del {} 2>/dev/null", self.0, self.1)]).status();
        }
    }
    let _remove = Remove(ns.clone(), host_if.clone());
    let made = sh(&format!("ip netns add {ns} && ip link add {host_if} type veth peer name {pod_if} netns {ns} && ip link set {host_if} master {} up", d.bridge()));
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let in_ns = |script: &str| Command::new("ip").args(["netns", "exec", &ns, "sh", "-c", script]).output().unwrap();
    // A stand-in for a hostile pod: its loopback is down (no local 127/8 routes), 127.0.0.1 goes to the gateway.
    let setup = in_ns(&format!(
        "ip link set {pod_if} up && ip addr add {}.250/24 dev {pod_if} && sysctl -qw net.ipv4.conf.{pod_if}.route_localnet=1 && ip route add 127.0.0.1/32 via {gw} dev {pod_if}",
        d.subnet_prefix()
    ));
    assert!(setup.status.success(), "{}", String::from_utf8_lossy(&setup.stderr));
    let connects = |ip: &str, port: u16| in_ns(&format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{ip}/{port}' && echo connected")).stdout == b"connected\n";
    let on_bridge = std::net::TcpListener::bind(format!("{gw}:0")).unwrap();
    let loopback = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(connects(&gw, on_bridge.local_addr().unwrap().port()), "the path to the host works");
    let reached = connects("127.0.0.1", loopback.local_addr().unwrap().port());
    loopback.set_nonblocking(true).unwrap();
    let accepted = loopback.accept().is_ok();
    assert!(!reached && !accepted, "a service bound to the host's 127.0.0.1 answered the bridge");
}

macro_rules! net_suite {
    ($driver:literal: $($name:ident),* $(,)?) => {
        $( #[test] fn $name() { super::$name($driver) } )*
    };
}

mod ns {
    net_suite!("ns": port_mappings_and_pod_to_pod, hosts_and_resolv_conf, many_cycles_leak_nothing);
}

mod qemu {
    net_suite!("qemu": port_mappings_and_pod_to_pod, hosts_and_resolv_conf, many_cycles_leak_nothing);
}
