//! The device list of a cgroup v2 sandbox. v2 has no `devices.allow`: a cgroup's device access is decided by
//! BPF programs of type `BPF_PROG_TYPE_CGROUP_DEVICE` attached to it (and to its ancestors). This module turns
//! the list of allowed devices into such a program, loads it and attaches it, as runc and crun do.
//!
//! The kernel runs the program for every mknod and every open of a device node by a process in the cgroup,
//! with a `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`, where `access_type` is
//! `(access << 16) | type`. It returns 1 to allow and 0 to deny. The program checks the rules in order and
//! denies what no rule allows.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::{SandboxError, io_err};

/// One allowed device pattern: a kind (`'c'` or `'b'`), a major and minor number (`None` for any) and the
/// access allowed (`"rwm"` or part of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub kind: char,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: &'static str,
}

impl DeviceRule {
    /// The rule as cgroup v1's `devices.allow` spells it (`c 1:3 rwm`).
    pub fn v1(&self) -> String {
        let n = |x: Option<u32>| x.map_or("*".to_string(), |x| x.to_string());
        format!("{} {}:{} {}", self.kind, n(self.major), n(self.minor), self.access)
    }

    fn access_bits(&self) -> i32 {
        self.access.chars().map(|c| match c {
            'm' => ACC_MKNOD,
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            _ => 0,
        }).fold(0, |a, b| a | b)
    }
}

// From include/uapi/linux/bpf.h.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Programs of the ancestors keep applying, and a descendant may add its own (what systemd uses).
const BPF_F_ALLOW_MULTI: u32 = 2;
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

/// `struct bpf_insn`: an opcode, the destination register in the low 4 bits of `regs` and the source register
/// in the high 4 bits, a jump offset and an immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | dst, off, imm }
}

/// `dst = *(u32 *)(src + off)`
const fn load_word(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x61, dst, src, off, 0) // BPF_LDX | BPF_MEM | BPF_W
}
/// `w{dst} &= imm`
const fn and32(dst: u8, imm: i32) -> Insn {
    insn(0x54, dst, 0, 0, imm) // BPF_ALU | BPF_AND | BPF_K
}
/// `w{dst} >>= imm`
const fn rsh32(dst: u8, imm: i32) -> Insn {
    insn(0x74, dst, 0, 0, imm) // BPF_ALU | BPF_RSH | BPF_K
}
/// `dst = src`
const fn mov_reg(dst: u8, src: u8) -> Insn {
    insn(0xbf, dst, src, 0, 0) // BPF_ALU64 | BPF_MOV | BPF_X
}
/// `dst = imm`
const fn mov_imm(dst: u8, imm: i32) -> Insn {
    insn(0xb7, dst, 0, 0, imm) // BPF_ALU64 | BPF_MOV | BPF_K
}
/// `if dst != imm goto pc + 1 + off`
const fn jump_ne(dst: u8, imm: i32, off: i16) -> Insn {
    insn(0x55, dst, 0, off, imm) // BPF_JMP | BPF_JNE | BPF_K
}
const EXIT: Insn = insn(0x95, 0, 0, 0, 0);

/// The program for `rules`: r2 holds the device type, r3 the access asked for, r4 and r5 the major and minor.
pub(crate) fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![load_word(2, 1, 0), and32(2, 0xffff), load_word(3, 1, 0), rsh32(3, 16), load_word(4, 1, 4), load_word(5, 1, 8)];
    for rule in rules {
        // Each test jumps past the rule's end when it does not match: `None` stands for "the end", fixed below.
        let mut block: Vec<(Insn, bool)> = Vec::new();
        let kind = if rule.kind == 'b' { DEV_BLOCK } else { DEV_CHAR };
        block.push((jump_ne(2, kind, 0), true));
        // Every access asked for must be allowed: (asked & !allowed) == 0.
        block.push((mov_reg(1, 3), false));
        block.push((and32(1, !rule.access_bits()), false));
        block.push((jump_ne(1, 0, 0), true));
        if let Some(major) = rule.major {
            block.push((jump_ne(4, major as i32, 0), true));
        }
        if let Some(minor) = rule.minor {
            block.push((jump_ne(5, minor as i32, 0), true));
        }
        block.push((mov_imm(0, 1), false));
        block.push((EXIT, false));
        let len = block.len();
        for (i, (mut ins, to_end)) in block.into_iter().enumerate() {
            if to_end {
                ins.off = (len - i - 1) as i16;
            }
            p.push(ins);
        }
    }
    p.push(mov_imm(0, 0));
    p.push(EXIT);
    p
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`.
#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn load(insns: &[Insn], log: Option<&mut [u8]>) -> std::io::Result<OwnedFd> {
    const LICENSE: &[u8] = b"Apache-2.0\0";
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"hyper_devs\0");
    let (log_level, log_size, log_buf) = match log {
        Some(b) => (1, b.len() as u32, b.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: BPF_CGROUP_DEVICE,
    };
    // SAFETY: `attr` is a valid bpf_attr prefix of the size given; the instructions, the license and the log
    // buffer it points to outlive the call, and the kernel writes only into the log buffer, within its size.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &attr as *const ProgLoad, std::mem::size_of::<ProgLoad>()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Loads the program for `rules` and attaches it to the cgroup v2 directory `dir`. The cgroup keeps the program
/// until it is removed.
pub fn attach(dir: &Path, rules: &[DeviceRule]) -> Result<(), SandboxError> {
    let insns = program(rules);
    let prog = load(&insns, None)
        .or_else(|e| {
            // Before Linux 5.11 a program is charged to RLIMIT_MEMLOCK (64 KiB by default, which systemd's own
            // device programs use up): raise it and load again, as runc does.
            if e.raw_os_error() != Some(libc::EPERM) {
                return Err(e);
            }
            let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
            // SAFETY: a valid rlimit for the call's duration.
            if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
                return Err(e);
            }
            load(&insns, None)
        })
        .map_err(|e| {
        // Load again with the verifier's log, to say why.
        let mut log = vec![0u8; 64 * 1024];
        let why = match load(&insns, Some(&mut log)) {
            Ok(_) => String::new(),
            Err(_) => String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)]).trim().to_string(),
        };
        let context = if why.is_empty() { "loading the device filter (BPF) of a cgroup v2 sandbox".to_string() } else { format!("loading the device filter (BPF) of a cgroup v2 sandbox; the verifier said: {why}") };
        io_err(context)(e)
    })?;
    let cg = std::fs::File::open(dir).map_err(io_err(format!("opening cgroup {}", dir.display())))?;
    let attr = ProgAttach { target_fd: cg.as_raw_fd() as u32, attach_bpf_fd: prog.as_raw_fd() as u32, attach_type: BPF_CGROUP_DEVICE, attach_flags: BPF_F_ALLOW_MULTI, replace_bpf_fd: 0 };
    // SAFETY: `attr` is a valid bpf_attr prefix of the size given; both descriptors are open for the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_ATTACH, &attr as *const ProgAttach, std::mem::size_of::<ProgAttach>()) };
    if r < 0 {
        return Err(io_err(format!("attaching the device filter (BPF) to cgroup {}", dir.display()))(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_spell_as_v1_does() {
        let r = DeviceRule { kind: 'c', major: Some(136), minor: None, access: "rwm" };
        assert_eq!(r.v1(), "c 136:* rwm");
        assert_eq!(DeviceRule { kind: 'b', major: None, minor: None, access: "m" }.v1(), "b *:* m");
    }

    #[test]
    fn a_rule_that_does_not_match_jumps_to_the_next() {
        let rules = [DeviceRule { kind: 'c', major: Some(1), minor: Some(3), access: "rw" }, DeviceRule { kind: 'b', major: None, minor: None, access: "m" }];
        let p = program(&rules);
        // 6 loads, then 8 and 6 instructions, then the final deny.
        assert_eq!(p.len(), 6 + 8 + 6 + 2);
        // Every test of the first rule lands on the second's first instruction, every test of the second on the
        // final deny.
        for (i, ins) in p.iter().enumerate().filter(|(_, ins)| ins.code == 0x55) {
            let to = i + 1 + ins.off as usize;
            assert_eq!(to, if i < 14 { 14 } else { 20 }, "jump at {i}");
        }
        assert_eq!(p[8].imm, !(ACC_READ | ACC_WRITE), "the access mask");
        assert_eq!(p[p.len() - 2], mov_imm(0, 0), "what no rule allows is denied");
    }
}
