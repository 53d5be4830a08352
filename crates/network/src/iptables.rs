//! NAT and port-mapping rules with iptables (whichever backend the host's iptables uses).
//!
//! ```text
//! nat    PREROUTING  -m addrtype --dst-type LOCAL -j HYPER
//! nat    OUTPUT      -m addrtype --dst-type LOCAL -j HYPER          (connections from the host itself)
//! nat    POSTROUTING -s SUBNET ! -o BRIDGE -j MASQUERADE            (pods reach out, unless disabled)
//! nat    POSTROUTING -s 127.0.0.0/8 -o BRIDGE -j MASQUERADE         (127.0.0.1:HOSTPORT reaches pods)
//! nat    HYPER       -j HYPER-<sandbox>                             (one chain per sandbox with mappings)
//! filter FORWARD     -j HYPER;  HYPER -j HYPER-<sandbox>
//! filter INPUT 1     -i BRIDGE -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
//!                                                                   (the bridge reaches no loopback-only service)
//! ```

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::{NetworkConfig, NetworkError, PortMapping};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

fn ipt(args: &[&str]) -> Result<bool, NetworkError> {
    let out = Command::new("iptables").arg("-w").args(args).output().map_err(|e| NetworkError::Iptables(format!("running iptables: {e}")))?;
    Ok(out.status.success())
}

fn ipt_ok(args: &[&str]) -> Result<(), NetworkError> {
    let out = Command::new("iptables").arg("-w").args(args).output().map_err(|e| NetworkError::Iptables(format!("running iptables: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Iptables(format!("iptables {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// Adds a rule at the end of `chain` unless it is there.
fn ensure(table: &str, chain: &str, rule: &[&str]) -> Result<(), NetworkError> {
    ensure_at(table, chain, rule, &["-A", chain])
}

/// Adds a rule at the head of `chain` (before whatever the host accepts there) unless it is there.
fn ensure_first(table: &str, chain: &str, rule: &[&str]) -> Result<(), NetworkError> {
    ensure_at(table, chain, rule, &["-I", chain, "1"])
}

fn ensure_at(table: &str, chain: &str, rule: &[&str], how: &[&str]) -> Result<(), NetworkError> {
    let mut check = vec!["-t", table, "-C", chain];
    check.extend_from_slice(rule);
    if ipt(&check)? {
        return Ok(());
    }
    let mut add = vec!["-t", table];
    add.extend_from_slice(how);
    add.extend_from_slice(rule);
    ipt_ok(&add)
}

fn ensure_chain(table: &str, chain: &str) -> Result<(), NetworkError> {
    if !ipt(&["-t", table, "-S", chain])? && !ipt(&["-t", table, "-N", chain])? {
        // Another daemon in this namespace may have created it in between.
        if !ipt(&["-t", table, "-S", chain])? {
            return ipt_ok(&["-t", table, "-N", chain]);
        }
    }
    Ok(())
}

pub fn setup_base(cfg: &NetworkConfig) -> Result<(), NetworkError> {
    let subnet = cfg.subnet.to_string();
    ensure_chain("nat", "HYPER")?;
    ensure_chain("filter", "HYPER")?;
    ensure("nat", "PREROUTING", &["-m", "addrtype", "--dst-type", "LOCAL", "-j", "HYPER"])?;
    ensure("nat", "OUTPUT", &["-m", "addrtype", "--dst-type", "LOCAL", "-j", "HYPER"])?;
    ensure("nat", "POSTROUTING", &["-s", "127.0.0.0/8", "-o", &cfg.bridge, "-j", "MASQUERADE"])?;
    // Mapping the host's 127.0.0.1 into pods needs route_localnet on the bridge, which also lets a pod send
    // the host packets for 127/8 (a raw socket suffices) and reach services the host binds to loopback only
    // (CVE-2020-8558 in Kubernetes). Only the replies of connections the host opened come in that way.
    ensure_first(
        "filter",
        "INPUT",
        &["-i", &cfg.bridge, "-d", "127.0.0.0/8", "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP"],
    )?;
    ensure("filter", "FORWARD", &["-j", "HYPER"])?;
    ensure("filter", "FORWARD", &["-i", &cfg.bridge, "-j", "ACCEPT"])?;
    ensure("filter", "FORWARD", &["-o", &cfg.bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"])?;
    // A pod reaching a published port through the host's address (its own, or another pod's) is sent back
    // over the bridge: from the gateway's address, or the answer would not come back the way it went (and
    // a pod would get its own packets from itself). As Docker's hairpin NAT.
    ensure("nat", "POSTROUTING", &["-s", subnet.as_str(), "-o", cfg.bridge.as_str(), "-m", "conntrack", "--ctstate", "DNAT", "-j", "MASQUERADE"])?;
    let masq = ["-s", subnet.as_str(), "!", "-o", cfg.bridge.as_str(), "-j", "MASQUERADE"];
    if cfg.masquerade {
        ensure("nat", "POSTROUTING", &masq)?;
    } else {
        let mut del = vec!["-t", "nat", "-D", "POSTROUTING"];
        del.extend_from_slice(&masq);
        while ipt(&del)? {}
    }
    Ok(())
}

pub fn chain_name(owner: &str) -> String {
    format!("HYPER-{owner}")
}

fn range(a: u16, b: u16, sep: char) -> String {
    if a == b { a.to_string() } else { format!("{a}{sep}{b}") }
}

/// Replaces a sandbox's chains with rules for `maps` (one `iptables-restore` per table, atomic).
pub fn set_sandbox_rules(_cfg: &NetworkConfig, owner: &str, address: Ipv4Addr, maps: &[PortMapping]) -> Result<(), NetworkError> {
    let chain = chain_name(owner);
    if maps.is_empty() {
        return remove_chain(&chain);
    }
    let mut nat = format!("*nat\n:{chain} - [0:0]\n");
    let mut filter = format!("*filter\n:{chain} - [0:0]\n");
    for m in maps {
        let p = m.protocol.name();
        let dst = m.host_ip.map(|ip| format!(" -d {ip}")).unwrap_or_default();
        if m.host_port == m.container_port || m.container_port == m.container_port_end {
            let to = format!("{address}:{}", range(m.container_port, m.container_port_end, '-'));
            nat.push_str(&format!("-A {chain}{dst} -p {p} -m {p} --dport {} -j DNAT --to-destination {to}\n", range(m.host_port, m.host_port_end, ':')));
        } else {
            // A range onto another range, a rule per port: DNAT to a port range keeps a port only if it lies
            // in the range, and sends every other one to the range's first port. (A range onto one port, and
            // a range onto itself, are one rule, above.)
            for (h, c) in (m.host_port..=m.host_port_end).zip(m.container_port..=m.container_port_end) {
                nat.push_str(&format!("-A {chain}{dst} -p {p} -m {p} --dport {h} -j DNAT --to-destination {address}:{c}\n"));
            }
        }
        filter.push_str(&format!("-A {chain} -d {address}/32 -p {p} -m {p} --dport {} -j ACCEPT\n", range(m.container_port, m.container_port_end, ':')));
    }
    nat.push_str("COMMIT\n");
    filter.push_str("COMMIT\n");
    restore(&format!("{nat}{filter}"))?;
    ensure("nat", "HYPER", &["-j", &chain])?;
    ensure("filter", "HYPER", &["-j", &chain])
}

fn restore(rules: &str) -> Result<(), NetworkError> {
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetworkError::Iptables(format!("running iptables-restore: {e}")))?;
    child.stdin.take().expect("piped").write_all(rules.as_bytes()).map_err(|e| NetworkError::Iptables(format!("iptables-restore: {e}")))?;
    let out = child.wait_with_output().map_err(|e| NetworkError::Iptables(format!("iptables-restore: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Iptables(format!("iptables-restore: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
}

pub fn remove_sandbox_rules(owner: &str) -> Result<(), NetworkError> {
    remove_chain(&chain_name(owner))
}

/// Unhooks and deletes a sandbox chain in both tables (no error if it is not there).
fn remove_chain(chain: &str) -> Result<(), NetworkError> {
    for table in ["nat", "filter"] {
        if !ipt(&["-t", table, "-S", chain])? {
            continue;
        }
        while ipt(&["-t", table, "-D", "HYPER", "-j", chain])? {}
        ipt_ok(&["-t", table, "-F", chain])?;
        ipt_ok(&["-t", table, "-X", chain])?;
    }
    Ok(())
}
