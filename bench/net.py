#!/usr/bin/env python3
"""TCP throughput benchmark (run by bench/run.sh net inside private net+mount namespaces).

Floor: two plain network namespaces joined by a veth pair. ns driver: host -> pod through a port mapping
(127.0.0.1:HOSTPORT, DNAT), and pod -> pod over the bridge. qemu driver (TCG here): the same, reported against
the same floor. The sender and the sink are nettool (tests' static tool).
"""
import json, os, shutil, statistics, subprocess, sys, tempfile, time

BIN, FIXTURES, NETTOOL = sys.argv[1], sys.argv[2], sys.argv[3]
MIB = int(os.environ.get("MIB", "2000"))
VM_MIB = int(os.environ.get("VM_MIB", "200"))
RUNS = int(os.environ.get("RUNS", "3"))

def sh(*a, **kw): return subprocess.run(a, check=True, capture_output=True, text=True, **kw).stdout

def floor():
    for n in ("hb-a", "hb-b"): subprocess.run(["ip", "netns", "del", n], capture_output=True)
    sh("ip", "netns", "add", "hb-a"); sh("ip", "netns", "add", "hb-b")
    sh("ip", "link", "add", "hba", "netns", "hb-a", "type", "veth", "peer", "name", "hbb", "netns", "hb-b")
    for ns, dev, ip in (("hb-a", "hba", "10.99.0.1/24"), ("hb-b", "hbb", "10.99.0.2/24")):
        sh("ip", "-n", ns, "addr", "add", ip, "dev", dev); sh("ip", "-n", ns, "link", "set", dev, "up"); sh("ip", "-n", ns, "link", "set", "lo", "up")
    sink = subprocess.Popen(["ip", "netns", "exec", "hb-b", NETTOOL, "sink", "7000"], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    rates = [float(sh("ip", "netns", "exec", "hb-a", NETTOOL, "send", "10.99.0.2", "7000", str(MIB))) for _ in range(RUNS)]
    sink.kill(); sink.wait()
    for n in ("hb-a", "hb-b"): subprocess.run(["ip", "netns", "del", n], capture_output=True)
    return statistics.median(rates)

def driver(name, mib):
    work = tempfile.mkdtemp(prefix=f"hyper-bench-net-{name}-")
    sock = f"{work}/hyper.sock"
    env = dict(os.environ, HYPER_HOST=f"unix://{sock}")
    def hyper(*a): return subprocess.run([f"{BIN}/hyper", *a], env=env, check=True, capture_output=True, text=True).stdout
    d = subprocess.Popen([f"{BIN}/hyperd", "--root", f"{work}/root", "--socket", sock, "--driver", name, "--log-level", "warn",
                          "--bridge", "hybench", "--pod-cidr", "10.98.0.0/24"])
    try:
        for _ in range(200):
            if subprocess.run([f"{BIN}/hyper", "version"], env=env, capture_output=True).returncode == 0: break
            time.sleep(0.05)
        hyper("load", "-i", f"{FIXTURES}/nettools.tar")
        hyper("run", "-d", "--name", "sink", "-p", "17000:7000", "nettools", "nettool", "sink", "7000")
        hyper("run", "-d", "--name", "sender", "nettools", "sleep", "100000")
        sink_ip = json.loads(hyper("inspect", "sink"))["ip"]
        time.sleep(0.5)
        h2p = [float(sh(NETTOOL, "send", "127.0.0.1", "17000", str(mib))) for _ in range(RUNS)]
        p2p = [float(hyper("exec", "sender", "nettool", "send", sink_ip, "7000", str(mib))) for _ in range(RUNS)]
        hyper("rm", "-f", "sink", "sender")
        return statistics.median(h2p), statistics.median(p2p)
    finally:
        d.terminate(); d.wait()
        shutil.rmtree(work, ignore_errors=True)

f = floor()
ns_h2p, ns_p2p = driver("ns", MIB)
vm_h2p, vm_p2p = driver("qemu", VM_MIB)
print(f"TCP throughput, median of {RUNS} transfers ({MIB} MiB; {VM_MIB} MiB for VMs)")
print("| path | MB/s | vs floor |")
print("|---|---|---|")
print(f"| floor: two network namespaces joined by a veth pair | {f:.0f} | 1.00x |")
print(f"| ns driver: host -> pod through a port mapping (127.0.0.1) | {ns_h2p:.0f} | {ns_h2p/f:.2f}x (goal >= 0.8x) |")
print(f"| ns driver: pod -> pod over the bridge | {ns_p2p:.0f} | {ns_p2p/f:.2f}x (goal >= 0.8x) |")
print(f"| qemu driver (TCG): host -> pod through a port mapping | {vm_h2p:.0f} | {vm_h2p/f:.3f}x (reported) |")
print(f"| qemu driver (TCG): pod -> pod over the bridge | {vm_p2p:.0f} | {vm_p2p/f:.3f}x (reported) |")
