//! The kernel's connection tracking entries (ctnetlink): what it remembers of each flow, its NAT included.
//!
//! An entry outlives the rules that made it. A UDP client that keeps sending to a published port holds its
//! entry, and with it the translation to the pod's address, for as long as it sends: when that address goes to
//! another pod, the flow goes on to the new pod. So an address that is freed takes its entries along.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const HDR: usize = 16;
/// `struct nfgenmsg`: family, version, resource id.
const NFGEN: [u8; 4] = [libc::AF_INET as u8, 0, 0, 0];

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// The attributes in `b`: (type without flags, payload, the whole attribute with its header).
fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8], &[u8])> {
    let mut v = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        v.push((kind, &b[4..len], &b[..len]));
        b = &b[align(len).min(b.len())..];
    }
    v
}

/// A tuple's (source, destination) IPv4 addresses.
fn tuple_ips(tuple: &[u8]) -> (Option<Ipv4Addr>, Option<Ipv4Addr>) {
    let ip = |b: &[u8]| <[u8; 4]>::try_from(b).ok().map(Ipv4Addr::from);
    let mut out = (None, None);
    for (k, v, _) in attrs(tuple) {
        if k == CTA_TUPLE_IP {
            for (k, v, _) in attrs(v) {
                match k {
                    CTA_IP_V4_SRC => out.0 = ip(v),
                    CTA_IP_V4_DST => out.1 = ip(v),
                    _ => {}
                }
            }
        }
    }
    out
}

fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HDR + payload.len());
    m.extend_from_slice(&((HDR + payload.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | kind).to_ne_bytes());
    m.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m
}

struct Socket(OwnedFd);

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: socket() with constant arguments; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is new and owned by nobody else.
        Ok(Socket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn send(&self, m: &[u8]) -> io::Result<()> {
        // SAFETY: m is a live buffer of the given length.
        if unsafe { libc::send(self.0.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Calls `each` with every message (type, payload) the kernel sends for `seq` until the end of a dump or an
    /// acknowledgement, which is the result.
    fn replies(&self, seq: u32, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            // SAFETY: buf is live and writable for its length.
            let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut b = &buf[..n as usize];
            while b.len() >= HDR {
                let len = u32::from_ne_bytes(b[0..4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes([b[4], b[5]]);
                let mseq = u32::from_ne_bytes(b[8..12].try_into().expect("4 bytes"));
                if len < HDR || len > b.len() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message"));
                }
                if mseq == seq {
                    match kind {
                        NLMSG_DONE => return Ok(()),
                        NLMSG_ERROR if len >= HDR + 4 => {
                            let code = i32::from_ne_bytes(b[HDR..HDR + 4].try_into().expect("4 bytes"));
                            return if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) };
                        }
                        _ => each(kind, &b[HDR..len]),
                    }
                }
                b = &b[align(len).min(b.len())..];
            }
        }
    }
}

/// Deletes the IPv4 entries of flows to or from `addr`: flows whose original destination is `addr`, and flows
/// translated to it (their reply comes from `addr`). Returns how many it deleted.
pub fn forget_address(addr: Ipv4Addr) -> io::Result<usize> {
    let s = Socket::open()?;
    let mut doomed: Vec<Vec<u8>> = Vec::new();
    s.send(&message(IPCTNL_MSG_CT_GET, NLM_F_DUMP, 1, &NFGEN))?;
    s.replies(1, |kind, payload| {
        if kind != (NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW) || payload.len() < NFGEN.len() {
            return;
        }
        let mut orig: Option<&[u8]> = None;
        let mut hit = false;
        for (k, v, whole) in attrs(&payload[NFGEN.len()..]) {
            match k {
                CTA_TUPLE_ORIG => {
                    orig = Some(whole);
                    hit |= tuple_ips(v).1 == Some(addr);
                }
                CTA_TUPLE_REPLY => hit |= tuple_ips(v).0 == Some(addr),
                _ => {}
            }
        }
        if let (true, Some(orig)) = (hit, orig) {
            doomed.push(orig.to_vec());
        }
    })?;
    let mut deleted = 0;
    for (i, tuple) in doomed.iter().enumerate() {
        let seq = 2 + i as u32;
        let mut payload = NFGEN.to_vec();
        payload.extend_from_slice(tuple);
        s.send(&message(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, seq, &payload))?;
        match s.replies(seq, |_, _| {}) {
            Ok(()) => deleted += 1,
            // Gone meanwhile (it timed out, or its flow ended).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}
