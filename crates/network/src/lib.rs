//! Pod networking on the host.
//!
//! - a bridge (default `hyper0`) holding the first address of the pod subnet, created if missing;
//! - address allocation in the daemon's database: no address handed out twice, freed on stop and rm,
//!   reconciled after a daemon restart;
//! - outbound NAT for the pod subnet (unless disabled);
//! - port mappings as DNAT rules, one iptables chain per sandbox (nat and filter), reachable from the host's
//!   addresses, 127.0.0.1 included.
//!
//! How a sandbox's interface reaches the bridge (a veth pair, a tap) is the driver's business.

mod iptables;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

pub use iptables::Protocol;

/// address (as u32) -> owner (a sandbox id)
const IPAM: TableDefinition<u32, &str> = TableDefinition::new("ipam");
/// owner -> JSON list of [`PortMapping`] currently installed
const PORTS: TableDefinition<&str, &[u8]> = TableDefinition::new("port_mappings");

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid network configuration: {0}")]
    Config(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no free address left in {0}")]
    Exhausted(String),
    #[error("host port {port}/{proto} is already in use{by}")]
    PortInUse { port: u16, proto: String, by: String },
    #[error("iptables: {0}")]
    Iptables(String),
    #[error("network database")]
    Db(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn db_err(e: impl std::error::Error + Send + Sync + 'static) -> NetworkError {
    NetworkError::Db(Box::new(e))
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetworkError {
    let context = context.into();
    move |source| NetworkError::Io { context, source }
}

/// An IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl std::str::FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Subnet, String> {
        let (a, p) = s.split_once('/').ok_or_else(|| format!("{s:?}: expected ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| format!("{s:?}: invalid IPv4 address"))?;
        let prefix: u8 = p.parse().map_err(|_| format!("{s:?}: invalid prefix length"))?;
        if !(8..=30).contains(&prefix) {
            return Err(format!("{s:?}: the prefix length must be between 8 and 30"));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Subnet { addr: Ipv4Addr::from(u32::from(addr) & mask), prefix })
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Subnet {
    fn first(&self) -> u32 {
        u32::from(self.addr) + 1
    }
    fn last(&self) -> u32 {
        u32::from(self.addr) + (1u32 << (32 - self.prefix)) - 2
    }
}

#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub bridge: String,
    pub subnet: Subnet,
    pub masquerade: bool,
    pub mtu: u32,
}

/// A port mapping: host port(s) to container port(s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub host_port_end: u16,
    pub container_port: u16,
    pub container_port_end: u16,
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        let range = |a: u16, b: u16| if a == b { a.to_string() } else { format!("{a}-{b}") };
        write!(f, "{}->{}/{}", range(self.host_port, self.host_port_end), range(self.container_port, self.container_port_end), self.protocol.name())
    }
}

/// What a sandbox's interface needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    pub mtu: u32,
    pub bridge: String,
    /// The host side of the link (a veth end or a tap).
    pub host_if: String,
}

/// Host networking for pods.
#[derive(Debug, Clone)]
pub struct Network {
    cfg: NetworkConfig,
    db: Arc<redb::Database>,
    lock: Arc<std::sync::Mutex<()>>,
    /// Held while the daemon runs: one daemon per bridge.
    _bridge_lock: Arc<std::fs::File>,
}

/// Where the daemons of this host hold a lock per bridge they use.
const BRIDGE_LOCKS: &str = "/run/hyper/bridges";

/// One daemon per bridge: two daemons with separate roots on one bridge (both default to hyper0 and its subnet)
/// would hand out the same addresses, and the MACs derived from them, and not see each other's host ports.
fn lock_bridge(bridge: &str) -> Result<std::fs::File, NetworkError> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(BRIDGE_LOCKS).map_err(io(format!("creating {BRIDGE_LOCKS}")))?;
    let path = format!("{BRIDGE_LOCKS}/{bridge}.lock");
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io(format!("opening {path}")))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(NetworkError::Config(format!(
            "bridge {bridge} is in use by another hyperd (it holds {path}): give this one its own --bridge and --pod-cidr"
        )));
    }
    Ok(f)
}

fn sysctl(path: &str, v: &str) -> Result<(), NetworkError> {
    std::fs::write(path, v).map_err(io(format!("setting {path}")))
}

impl Network {
    /// Creates the bridge if missing, gives it the subnet's first address, enables forwarding and the NAT rules.
    pub fn setup(cfg: NetworkConfig, db: Arc<redb::Database>) -> Result<Network, NetworkError> {
        if cfg.bridge.is_empty() || cfg.bridge.len() > 15 {
            return Err(NetworkError::Config(format!("bridge name {:?} must have 1 to 15 characters", cfg.bridge)));
        }
        let bridge_lock = lock_bridge(&cfg.bridge)?;
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(IPAM).map_err(db_err)?;
        txn.open_table(PORTS).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        let mut nl = netlink::Netlink::open().map_err(io("opening netlink"))?;
        let index = match netlink::link_index(&cfg.bridge) {
            Some(i) => i,
            None => {
                nl.create_bridge(&cfg.bridge).map_err(io(format!("creating bridge {}", cfg.bridge)))?;
                netlink::link_index(&cfg.bridge).ok_or_else(|| NetworkError::Config(format!("bridge {} vanished", cfg.bridge)))?
            }
        };
        let gw = Ipv4Addr::from(cfg.subnet.first());
        match nl.add_address(index, gw, cfg.subnet.prefix) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(NetworkError::Io { context: format!("addressing bridge {}", cfg.bridge), source: e }),
        }
        nl.set_up(index).map_err(io(format!("bringing {} up", cfg.bridge)))?;
        sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
        // DNAT of connections to 127.0.0.1 needs packets from 127/8 to be routable out of the bridge.
        sysctl(&format!("/proc/sys/net/ipv4/conf/{}/route_localnet", cfg.bridge), "1")?;
        iptables::setup_base(&cfg)?;
        Ok(Network { cfg, db, lock: Arc::new(std::sync::Mutex::new(())), _bridge_lock: Arc::new(bridge_lock) })
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.cfg.subnet.first())
    }

    /// Allocates an address for `owner` (the same one if it has one already).
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, NetworkError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let txn = self.db.begin_write().map_err(db_err)?;
        let ip = {
            let mut t = txn.open_table(IPAM).map_err(db_err)?;
            let mut used = std::collections::HashSet::new();
            let mut mine = None;
            for item in t.iter().map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                if v.value() == owner {
                    mine = Some(k.value());
                }
                used.insert(k.value());
            }
            match mine {
                Some(ip) => ip,
                None => {
                    // The gateway is the first address: pods get the rest.
                    let ip = (self.cfg.subnet.first() + 1..=self.cfg.subnet.last())
                        .find(|a| !used.contains(a))
                        .ok_or_else(|| NetworkError::Exhausted(self.cfg.subnet.to_string()))?;
                    t.insert(ip, owner).map_err(db_err)?;
                    ip
                }
            }
        };
        txn.commit().map_err(db_err)?;
        Ok(Ipv4Addr::from(ip))
    }

    /// Frees `owner`'s address.
    pub fn release(&self, owner: &str) -> Result<(), NetworkError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let txn = self.db.begin_write().map_err(db_err)?;
        let freed = {
            let mut t = txn.open_table(IPAM).map_err(db_err)?;
            let mine: Vec<u32> = t.iter().map_err(db_err)?.filter_map(|i| i.ok()).filter(|(_, v)| v.value() == owner).map(|(k, _)| k.value()).collect();
            for k in &mine {
                t.remove(*k).map_err(db_err)?;
            }
            mine
        };
        txn.commit().map_err(db_err)?;
        // The flows the kernel still tracks to a freed address go too (before anyone can be given it: the
        // lock is held): a UDP client that keeps sending to a port the pod published would otherwise go on to
        // the next pod given the address. Docker does the same. Best effort: without ctnetlink they only go
        // when they time out.
        for k in freed {
            let a = Ipv4Addr::from(k);
            match netlink::conntrack::forget_address(a) {
                Ok(0) => {}
                Ok(n) => log::debug!("network: forgot {n} tracked flows of {a}"),
                Err(e) => log::warn!("network: forgetting the tracked flows of {a}: {e}"),
            }
        }
        Ok(())
    }

    /// Every (address, owner) allocated.
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, NetworkError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(IPAM).map_err(db_err)?;
        let mut v = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (k, o) = item.map_err(db_err)?;
            v.push((Ipv4Addr::from(k.value()), o.value().to_string()));
        }
        Ok(v)
    }

    /// The endpoint of `owner`'s interface: its address and a MAC derived from it.
    pub fn endpoint(&self, owner: &str, host_if: &str) -> Result<Endpoint, NetworkError> {
        let address = self.allocate(owner)?;
        let o = address.octets();
        Ok(Endpoint {
            address,
            prefix: self.cfg.subnet.prefix,
            gateway: self.gateway(),
            mac: format!("02:48:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]),
            mtu: self.cfg.mtu,
            bridge: self.cfg.bridge.clone(),
            host_if: host_if.to_string(),
        })
    }

    /// Installs port mappings for `owner` (to `address`), replacing its previous ones. Refuses host ports other
    /// owners map, or that something on the host listens on.
    pub fn set_ports(&self, owner: &str, address: Ipv4Addr, maps: &[PortMapping]) -> Result<(), NetworkError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        // One read of the table: this owner's mappings and everyone else's.
        let (mine, others): (Vec<_>, BTreeMap<_, _>) = {
            let (mine, others): (Vec<_>, Vec<_>) = self.all_ports()?.into_iter().partition(|(o, _)| o == owner);
            (mine.into_iter().next().map(|(_, m)| m).unwrap_or_default(), others.into_iter().collect())
        };
        for m in maps {
            for p in m.host_port..=m.host_port_end {
                for (o, theirs) in &others {
                    if theirs.iter().any(|t| t.protocol == m.protocol && (t.host_port..=t.host_port_end).contains(&p) && overlaps(t.host_ip, m.host_ip)) {
                        return Err(NetworkError::PortInUse { port: p, proto: m.protocol.name().into(), by: format!(" (mapped by sandbox {o})") });
                    }
                }
                let already_mine = mine.iter().any(|t| t.protocol == m.protocol && (t.host_port..=t.host_port_end).contains(&p));
                if !already_mine && !host_port_free(m.protocol, m.host_ip, p) {
                    return Err(NetworkError::PortInUse { port: p, proto: m.protocol.name().into(), by: " (a host process listens on it)".into() });
                }
            }
        }
        // Recorded first (the union of old and new while rules change), so a crash can only leave a record
        // without rules, which clearing and reconciling handle, never rules without a record.
        let mut union = mine.clone();
        union.extend(maps.iter().cloned());
        self.write_ports(owner, &union)?;
        if let Err(e) = iptables::set_sandbox_rules(&self.cfg, owner, address, maps) {
            // Back to the mappings that were: the union would hold the new host ports against other pods
            // with no rule behind them.
            if iptables::set_sandbox_rules(&self.cfg, owner, address, &mine).is_ok() {
                self.write_ports(owner, &mine)?;
            }
            return Err(e);
        }
        self.write_ports(owner, maps)
    }

    fn write_ports(&self, owner: &str, maps: &[PortMapping]) -> Result<(), NetworkError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(PORTS).map_err(db_err)?;
            t.insert(owner, serde_json::to_vec(maps).expect("serialisable").as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// Removes `owner`'s port mappings (rules and records).
    pub fn clear_ports(&self, owner: &str) -> Result<(), NetworkError> {
        // set_ports records mappings before it installs rules: no record, no rules.
        if self.ports_of(owner)?.is_empty() {
            return Ok(());
        }
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());

        iptables::remove_sandbox_rules(owner)?;
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(PORTS).map_err(db_err)?;
            t.remove(owner).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    pub fn ports_of(&self, owner: &str) -> Result<Vec<PortMapping>, NetworkError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(PORTS).map_err(db_err)?;
        Ok(match t.get(owner).map_err(db_err)? {
            Some(v) => serde_json::from_slice(v.value()).map_err(db_err)?,
            None => vec![],
        })
    }

    fn all_ports(&self) -> Result<Vec<(String, Vec<PortMapping>)>, NetworkError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(PORTS).map_err(db_err)?;
        let mut v = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (k, val) = item.map_err(db_err)?;
            v.push((k.value().to_string(), serde_json::from_slice(val.value()).map_err(db_err)?));
        }
        Ok(v)
    }

    /// Drops addresses, mappings and rules of owners that are not in `live` (after a daemon restart). Only what
    /// this daemon recorded: a mapping is recorded before its rules and its rules are removed before its record,
    /// so every chain of this daemon's has a record. Other daemons on the host keep theirs.
    pub fn reconcile(&self, live: &[String]) -> Result<(), NetworkError> {
        let allocations = self.allocations()?;
        let owners: std::collections::BTreeSet<String> =
            allocations.iter().map(|(_, o)| o.clone()).chain(self.all_ports()?.into_iter().map(|(o, _)| o)).collect();
        // Each owner on its own: one that fails leaves the others' leftovers and rules no worse off.
        let mut first_error = None;
        for o in owners {
            if !live.contains(&o) {
                log::info!("network: releasing leftovers of sandbox {o}");
                if let Err(e) = self.clear_ports(&o).and_then(|()| self.release(&o)) {
                    log::warn!("network: releasing leftovers of sandbox {o}: {e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        // What lives keeps its mappings: a firewall reloaded or flushed while the daemon was away took their
        // rules (the base rules are set up again at every start too). Replacing a chain is atomic and the same
        // rules again change nothing.
        for (address, o) in allocations.iter().filter(|(_, o)| live.contains(o)) {
            let put_back = self.ports_of(o).and_then(|maps| {
                if maps.is_empty() {
                    return Ok(());
                }
                let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                iptables::set_sandbox_rules(&self.cfg, o, *address, &maps)
            });
            if let Err(e) = put_back {
                log::warn!("network: putting back the port mappings of sandbox {o}: {e}");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn overlaps(a: Option<Ipv4Addr>, b: Option<Ipv4Addr>) -> bool {
    a.is_none() || b.is_none() || a == b
}

/// Whether nothing on the host has the port bound (tried by binding it for a moment).
fn host_port_free(proto: Protocol, ip: Option<Ipv4Addr>, port: u16) -> bool {
    let addr = std::net::SocketAddr::new(IpAddr::V4(ip.unwrap_or(Ipv4Addr::UNSPECIFIED)), port);
    match proto {
        Protocol::Tcp => std::net::TcpListener::bind(addr).is_ok(),
        Protocol::Udp => std::net::UdpSocket::bind(addr).is_ok(),
    }
}

/// Parses podfile port mappings (`"80"`, `"8000-8010"`, protocol tcp|udp, optional host IP).
pub fn parse_mapping(container: &str, host: &str, protocol: &str, host_ip: &str) -> Result<PortMapping, String> {
    let range = |s: &str| -> Result<(u16, u16), String> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let a: u16 = a.trim().parse().map_err(|_| format!("invalid port {s:?}"))?;
        let b: u16 = b.trim().parse().map_err(|_| format!("invalid port {s:?}"))?;
        if a == 0 || b < a {
            return Err(format!("invalid port range {s:?}"));
        }
        Ok((a, b))
    };
    let (c0, c1) = range(container)?;
    let (h0, h1) = range(if host.is_empty() { container } else { host })?;
    if c1 - c0 != h1 - h0 && c1 != c0 {
        return Err("a container port range must be as long as the host port range, or a single port".into());
    }
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "" | "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        p => return Err(format!("unknown protocol {p:?}")),
    };
    let host_ip = if host_ip.is_empty() { None } else { Some(host_ip.parse().map_err(|_| format!("invalid host address {host_ip:?}"))?) };
    // A single container port with a host range maps every host port to it.
    let c1 = if c0 == c1 { c0 } else { c1 };
    Ok(PortMapping { protocol, host_ip, host_port: h0, host_port_end: h1, container_port: c0, container_port_end: c1 })
}

/// Parses `[HOSTIP:]HOSTPORT[-END]:CONTAINERPORT[-END][/tcp|/udp]` (the `-p` syntax), or Hyper's
/// `[tcp|udp:]HOSTPORT:CONTAINERPORT`.
pub fn parse_spec(s: &str) -> Result<PortMapping, String> {
    let (spec, proto) = match s.rsplit_once('/') {
        Some((a, p)) => (a, p),
        None => (s, "tcp"),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (ip, host, cont, proto) = match parts.as_slice() {
        [pr @ ("tcp" | "udp"), h, c] if !s.contains('/') => ("", *h, *c, *pr),
        [c] => ("", *c, *c, proto),
        [h, c] => ("", *h, *c, proto),
        [ip, h, c] => (*ip, *h, *c, proto),
        _ => return Err(format!("{s:?}: expected [HOSTIP:]HOSTPORT:CONTAINERPORT[/udp]")),
    };
    parse_mapping(cont, host, proto, ip).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let m = parse_spec("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!((m.host_ip, m.host_port, m.container_port, m.protocol), (Some(Ipv4Addr::LOCALHOST), 8080, 80, Protocol::Udp));
        let m = parse_spec("9000-9002:7000-7002").unwrap();
        assert_eq!((m.host_port, m.host_port_end, m.container_port, m.container_port_end), (9000, 9002, 7000, 7002));
        let h = parse_spec("udp:5353:53").unwrap();
        assert_eq!((h.host_ip, h.host_port, h.container_port, h.protocol), (None, 5353, 53, Protocol::Udp), "Hyper's form");
        assert!(parse_spec("1:2:3:4").is_err());
        assert!(parse_spec("80-70:80").is_err());
        assert!(parse_spec("8080:80/sctp").is_err());
        assert_eq!(m.to_string(), "9000-9002->7000-7002/tcp");
    }

    #[test]
    fn subnets() {
        let s: Subnet = "10.1.2.3/24".parse().unwrap();
        assert_eq!(s.to_string(), "10.1.2.0/24");
        assert_eq!((Ipv4Addr::from(s.first()), Ipv4Addr::from(s.last())), ("10.1.2.1".parse().unwrap(), "10.1.2.254".parse().unwrap()));
        assert!("10.0.0.0/31".parse::<Subnet>().is_err());
    }
}
