//! A minimal rtnetlink client: just what pod networking needs (bridges, veth pairs, link state, IPv4 addresses
//! and routes), without dependencies, so the static agent can use it too.

pub mod conntrack;

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
/// (For a bridge port's settings: RTM_NEWLINK of the AF_BRIDGE family has no handler and does nothing.)
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_PROTINFO: u16 = 12;
/// In a bridge port's IFLA_PROTINFO: hairpin mode.
const IFLA_BRPORT_MODE: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

const RTA_DST: u16 = 1;
const RTA_GATEWAY: u16 = 5;
const RTA_OIF: u16 = 4;

/// A message under construction: header, fixed part, attributes.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(kind: u16, flags: u16, fixed: &[u8]) -> Msg {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(fixed);
        pad(&mut buf);
        Msg { buf, nests: vec![] }
    }
    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Msg {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        pad(&mut self.buf);
        self
    }
    fn str(&mut self, kind: u16, s: &str) -> &mut Msg {
        let mut d = s.as_bytes().to_vec();
        d.push(0);
        self.attr(kind, &d)
    }
    fn u32(&mut self, kind: u16, v: u32) -> &mut Msg {
        self.attr(kind, &v.to_ne_bytes())
    }
    fn begin(&mut self, kind: u16) -> &mut Msg {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }
    fn raw(&mut self, data: &[u8]) -> &mut Msg {
        self.buf.extend_from_slice(data);
        pad(&mut self.buf);
        self
    }
    fn end(&mut self) -> &mut Msg {
        let start = self.nests.pop().expect("balanced nesting");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }
    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

fn pad(b: &mut Vec<u8>) {
    while b.len() % 4 != 0 {
        b.push(0);
    }
}

/// `struct ifinfomsg` with an index and flags.
fn ifinfo(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = libc::AF_UNSPEC as u8;
    b[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// A netlink route socket.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: socket() with constant arguments; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is new and owned by nobody else.
        Ok(Netlink { fd: unsafe { OwnedFd::from_raw_fd(fd) }, seq: 1 })
    }

    /// Sends a request and waits for its acknowledgement (the kernel's error code, if any).
    fn call(&mut self, m: Msg) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let b = m.finish(seq);
        // SAFETY: b is a live buffer of the given length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), b.as_ptr().cast(), b.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 32 << 10];
        loop {
            // SAFETY: buf is live and writable for its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut off = 0usize;
            let n = n as usize;
            while off + NLMSG_HDRLEN <= n {
                let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                let mseq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().expect("4 bytes"));
                if len < NLMSG_HDRLEN || off + len > n {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message"));
                }
                if mseq == seq && kind == NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 {
                    let code = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().expect("4 bytes"));
                    return if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) };
                }
                if mseq == seq && kind == NLMSG_DONE {
                    return Ok(());
                }
                off += (len + 3) & !3;
            }
        }
    }

    /// Creates a bridge (fails with EEXIST if a link of that name exists).
    pub fn create_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifinfo(0, 0, 0));
        m.str(IFLA_IFNAME, name).begin(IFLA_LINKINFO).str(IFLA_INFO_KIND, "bridge").end();
        self.call(m)
    }

    /// Creates a veth pair; the peer goes straight into the network namespace of the namespace file
    /// `peer_ns_fd` when given.
    pub fn create_veth(&mut self, name: &str, peer: &str, peer_mac: Option<[u8; 6]>, peer_ns_fd: Option<i32>) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifinfo(0, 0, 0));
        m.str(IFLA_IFNAME, name).begin(IFLA_LINKINFO).str(IFLA_INFO_KIND, "veth").begin(IFLA_INFO_DATA).begin(VETH_INFO_PEER);
        m.raw(&ifinfo(0, 0, 0)).str(IFLA_IFNAME, peer);
        if let Some(mac) = peer_mac {
            m.attr(IFLA_ADDRESS, &mac);
        }
        if let Some(fd) = peer_ns_fd {
            m.u32(IFLA_NET_NS_FD, fd as u32);
        }
        m.end().end().end();
        self.call(m)
    }

    /// Puts a link into a bridge.
    pub fn set_master(&mut self, index: u32, master: u32) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, 0, &ifinfo(index, 0, 0));
        m.u32(IFLA_MASTER, master);
        self.call(m)
    }

    /// Turns hairpin mode on for a bridge port: frames may go back out of the port they came in by.
    pub fn set_hairpin(&mut self, index: u32) -> io::Result<()> {
        let mut info = ifinfo(index, 0, 0);
        info[0] = libc::AF_BRIDGE as u8;
        let mut m = Msg::new(RTM_SETLINK, 0, &info);
        m.begin(IFLA_PROTINFO).attr(IFLA_BRPORT_MODE, &[1]).end();
        self.call(m)
    }

    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let up = libc::IFF_UP as u32;
        self.call(Msg::new(RTM_NEWLINK, 0, &ifinfo(index, up, up)))
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, 0, &ifinfo(index, 0, 0));
        m.u32(IFLA_MTU, mtu);
        self.call(m)
    }

    /// Sets a link's hardware address.
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, 0, &ifinfo(index, 0, 0));
        m.attr(IFLA_ADDRESS, &mac);
        self.call(m)
    }

    /// Renames a link (it must be down).
    pub fn set_name(&mut self, index: u32, name: &str) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, 0, &ifinfo(index, 0, 0));
        m.str(IFLA_IFNAME, name);
        self.call(m)
    }

    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        self.call(Msg::new(RTM_DELLINK, 0, &ifinfo(index, 0, 0)))
    }

    /// Adds `addr/prefix` to a link.
    pub fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut fixed = [0u8; 8];
        fixed[0] = libc::AF_INET as u8;
        fixed[1] = prefix;
        fixed[4..8].copy_from_slice(&index.to_ne_bytes());
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &fixed);
        m.attr(IFA_LOCAL, &addr.octets()).attr(IFA_ADDRESS, &addr.octets());
        self.call(m)
    }

    /// Adds a route to `dst/prefix` (0.0.0.0/0 for the default route) via `gateway` on link `index`.
    pub fn add_route(&mut self, dst: Ipv4Addr, prefix: u8, gateway: Option<Ipv4Addr>, index: u32) -> io::Result<()> {
        let mut fixed = [0u8; 12];
        fixed[0] = libc::AF_INET as u8;
        fixed[1] = prefix;
        fixed[4] = libc::RT_TABLE_MAIN;
        fixed[5] = libc::RTPROT_BOOT;
        fixed[6] = if gateway.is_some() { libc::RT_SCOPE_UNIVERSE } else { libc::RT_SCOPE_LINK };
        fixed[7] = libc::RTN_UNICAST;
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &fixed);
        if prefix > 0 {
            m.attr(RTA_DST, &dst.octets());
        }
        if let Some(g) = gateway {
            m.attr(RTA_GATEWAY, &g.octets());
        }
        m.u32(RTA_OIF, index);
        self.call(m)
    }
}

/// The index of a link by name in this network namespace.
pub fn link_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Links of this network namespace as (name, index, MAC), from sysfs.
pub fn links() -> Vec<(String, u32, String)> {
    let mut out = vec![];
    for e in std::fs::read_dir("/sys/class/net").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let mac = std::fs::read_to_string(e.path().join("address")).unwrap_or_default().trim().to_string();
        if let Some(i) = link_index(&name) {
            out.push((name, i, mac));
        }
    }
    out
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s.split(':').map(|p| u8::from_str_radix(p, 16)).collect::<Result<_, _>>().ok()?;
    v.try_into().ok()
}

/// Creates a persistent tap device (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`) that QEMU opens by name later.
pub fn create_tap(name: &str) -> io::Result<()> {
    const TUNSETIFF: libc::c_ulong = 0x400454ca;
    const TUNSETPERSIST: libc::c_ulong = 0x400454cb;
    const IFF_TAP: libc::c_short = 0x0002;
    const IFF_NO_PI: libc::c_short = 0x1000;
    const IFF_VNET_HDR: libc::c_short = 0x4000;
    let f = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
    // SAFETY: ifreq is a plain C struct; zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in name.bytes().take(libc::IFNAMSIZ - 1).enumerate() {
        ifr.ifr_name[i] = b as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    // SAFETY: TUNSETIFF reads (and writes back) the ifreq we pass; TUNSETPERSIST takes an integer.
    unsafe {
        if libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::ioctl(f.as_raw_fd(), TUNSETPERSIST, 1) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
