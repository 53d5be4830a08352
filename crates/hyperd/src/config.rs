//! hyperd's configuration: command-line flags over an optional TOML file over defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;
use serde::Deserialize;

pub const DEFAULT_ROOT: &str = "/var/lib/hyper";
pub const DEFAULT_SOCKET: &str = "/run/hyper/hyper.sock";

/// Command-line flags. Every flag may also be given in the `--config` TOML file (same names, `_` for `-`);
/// a flag on the command line wins.
#[derive(Debug, Parser)]
#[command(name = "hyperd", version, about = "The hyper daemon: pods in lightweight VMs")]
pub struct Flags {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for all persistent state (images, pods, the database).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Unix socket the API is served on (mode 0660).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// A registry (HOST[:PORT]) that may be used over plain HTTP or without certificate checks. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// A pull mirror for a registry, e.g. docker.io=http://127.0.0.1:5000. Repeatable; tried in order.
    #[arg(long = "registry-mirror", value_name = "REGISTRY=URL")]
    pub registry_mirrors: Vec<String>,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Sandbox driver: `qemu` (a VM per pod, the default) or `ns` (host namespaces).
    #[arg(long, value_name = "DRIVER")]
    pub driver: Option<String>,
    /// The static hyperstart agent binary, for the ns driver (default: `hyperstart` next to hyperd).
    #[arg(long, value_name = "PATH")]
    pub agent: Option<PathBuf>,
    /// Guest kernel for the qemu driver (default: the one scripts/setup.sh builds).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Guest initrd for the qemu driver (default: `hyper-initrd.img` next to hyperd).
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// QEMU binary.
    #[arg(long, value_name = "PATH")]
    pub qemu: Option<PathBuf>,
    /// Accelerator: auto (KVM only if it can really run the guest), kvm or tcg.
    #[arg(long, value_name = "auto|kvm|tcg")]
    pub accel: Option<String>,
    /// Extra guest kernel arguments (`hyper.debug` makes the agent trace its boot on the VM console).
    #[arg(long, value_name = "ARGS")]
    pub kernel_append: Option<String>,
    /// Translation cache of each emulated (TCG) VM, in MiB: what an idle VM keeps resident for translated
    /// code. Smaller saves host memory, larger saves retranslation (default 48).
    #[arg(long, value_name = "MIB")]
    pub tcg_tb_size: Option<u32>,
    /// Start VMs by restoring a template (a guest booted once per shape and saved) instead of booting each:
    /// several times faster. The VMs of one template start from the same memory (their agent's address
    /// layout included); each gets its own randomness, clock and MAC at start.
    #[arg(long)]
    pub vm_templates: bool,
    /// Keep N VMs booted ahead of time: a pod of their shape (--vm-cache-vcpu, --vm-cache-memory) starts in one
    /// of them instead of booting. Each costs an idle VM's memory while it waits (default 0: off).
    #[arg(long, value_name = "N")]
    pub vm_cache: Option<usize>,
    /// vCPUs of the cached VMs (default: a podfile's default, 1).
    #[arg(long, value_name = "N")]
    pub vm_cache_vcpu: Option<u32>,
    /// Memory of the cached VMs in MiB (default: a podfile's default, 128).
    #[arg(long, value_name = "MIB")]
    pub vm_cache_memory: Option<u32>,
    /// The bridge pods are attached to (created if missing).
    #[arg(long, value_name = "NAME")]
    pub bridge: Option<String>,
    /// The pods' subnet; the bridge takes its first address.
    #[arg(long, value_name = "CIDR")]
    pub pod_cidr: Option<String>,
    /// Do not masquerade pod traffic leaving the bridge.
    #[arg(long)]
    pub no_masquerade: bool,
    /// MTU of pod interfaces.
    #[arg(long, value_name = "BYTES")]
    pub mtu: Option<u32>,
    /// Size in MiB at which a container's log file is rotated: the full file is kept as `<name>.log.1`
    /// (replacing the one before), so a container's log takes at most twice this on disk. 0: no limit
    /// (default 64).
    #[arg(long, value_name = "MIB")]
    pub log_max_size: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    root: Option<PathBuf>,
    socket: Option<PathBuf>,
    #[serde(default, alias = "insecure-registry", alias = "insecure_registry")]
    insecure_registries: Vec<String>,
    #[serde(default, alias = "registry-mirror", alias = "registry_mirror")]
    registry_mirrors: Vec<String>,
    log_level: Option<String>,
    driver: Option<String>,
    agent: Option<PathBuf>,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    qemu: Option<PathBuf>,
    accel: Option<String>,
    kernel_append: Option<String>,
    tcg_tb_size: Option<u32>,
    #[serde(default)]
    vm_templates: bool,
    vm_cache: Option<usize>,
    vm_cache_vcpu: Option<u32>,
    vm_cache_memory: Option<u32>,
    bridge: Option<String>,
    pod_cidr: Option<String>,
    #[serde(default)]
    no_masquerade: bool,
    mtu: Option<u32>,
    log_max_size: Option<u64>,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    pub socket: PathBuf,
    pub insecure_registries: Vec<String>,
    /// registry -> mirror URLs, in order
    pub registry_mirrors: BTreeMap<String, Vec<String>>,
    pub log_level: log::LevelFilter,
    pub driver: String,
    pub agent: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub qemu: PathBuf,
    pub accel: sandbox::qemu::AccelRequest,
    pub kernel_append: String,
    pub tcg_tb_size_mib: u32,
    /// Where VM templates are kept (looked at for half-made ones even when templates are not used).
    pub template_dir: PathBuf,
    pub vm_templates: bool,
    /// The VM cache (its size 0 when off: a cache an earlier daemon left is removed all the same).
    pub vm_cache: sandbox::qemu::CacheOptions,
    pub network: network::NetworkConfig,
    /// Bytes at which a container's log is rotated (`None`: never).
    pub log_max_size: Option<u64>,
}

/// The size in MiB at which a container's log is rotated, by default.
pub const DEFAULT_LOG_MAX_SIZE_MIB: u64 = 64;

/// Where scripts/setup.sh puts the guest kernel.
pub const DEFAULT_KERNEL: &str = "/var/cache/hyper/kernel/vmlinux";

impl Config {
    pub fn from_flags(flags: Flags) -> anyhow::Result<Config> {
        let file = match &flags.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let mirrors_raw = if flags.registry_mirrors.is_empty() {
            file.registry_mirrors
        } else {
            flags.registry_mirrors
        };
        let mut registry_mirrors: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in mirrors_raw {
            let Some((reg, url)) = m.split_once('=') else {
                bail!("--registry-mirror {m:?}: expected REGISTRY=URL, e.g. docker.io=http://127.0.0.1:5000");
            };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("--registry-mirror {m:?}: the mirror URL must start with http:// or https://");
            }
            registry_mirrors
                .entry(reg.to_string())
                .or_default()
                .push(url.trim_end_matches('/').to_string());
        }
        let insecure = if flags.insecure_registries.is_empty() {
            file.insecure_registries
        } else {
            flags.insecure_registries
        };
        for h in &insecure {
            if h.contains('/') {
                bail!("--insecure-registry {h:?}: expected HOST[:PORT] without a scheme or path");
            }
        }
        let level = flags
            .log_level
            .or(file.log_level)
            .unwrap_or_else(|| "info".into());
        let log_level = level
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid log level {level:?} (error, warn, info, debug, trace)"))?;
        let driver = flags.driver.or(file.driver).unwrap_or_else(|| "qemu".into());
        if driver != "ns" && driver != "qemu" {
            bail!("--driver {driver:?}: unknown sandbox driver (qemu or ns)");
        }
        let exe = std::env::current_exe().context("locating hyperd")?;
        let agent = flags.agent.or(file.agent).unwrap_or_else(|| exe.with_file_name("hyperstart"));
        let initrd = flags.initrd.or(file.initrd).unwrap_or_else(|| exe.with_file_name("hyper-initrd.img"));
        let kernel = flags.kernel.or(file.kernel).unwrap_or_else(|| DEFAULT_KERNEL.into());
        let qemu = flags.qemu.or(file.qemu).unwrap_or_else(|| "/usr/bin/qemu-system-x86_64".into());
        let accel = flags.accel.or(file.accel).unwrap_or_else(|| "auto".into());
        let accel = accel.parse().map_err(|e: String| anyhow::anyhow!("--accel: {e}"))?;
        let cidr = flags.pod_cidr.or(file.pod_cidr).unwrap_or_else(|| "192.168.123.0/24".into());
        let network = network::NetworkConfig {
            bridge: flags.bridge.or(file.bridge).unwrap_or_else(|| "hyper0".into()),
            subnet: cidr.parse().map_err(|e: String| anyhow::anyhow!("--pod-cidr {e}"))?,
            masquerade: !(flags.no_masquerade || file.no_masquerade),
            mtu: flags.mtu.or(file.mtu).unwrap_or(1500),
        };
        let root = real_root(flags.root.or(file.root).unwrap_or_else(|| DEFAULT_ROOT.into()));
        let vm_templates = flags.vm_templates || file.vm_templates;
        let vm_cache = flags.vm_cache.or(file.vm_cache).unwrap_or(0);
        if driver != "qemu" && (vm_templates || vm_cache > 0) {
            bail!("--vm-templates and --vm-cache are for VMs: they need --driver qemu, not {driver}");
        }
        let cache_vcpu = flags.vm_cache_vcpu.or(file.vm_cache_vcpu).unwrap_or(podspec::DEFAULT_VCPU);
        let cache_memory = flags.vm_cache_memory.or(file.vm_cache_memory).unwrap_or(podspec::DEFAULT_MEMORY_MB);
        // The podfile's own limits for a pod of that shape.
        let shape = podspec::Resource { vcpu: cache_vcpu, memory: cache_memory };
        if let Err(e) = podspec::validate_resource(&shape) {
            bail!("--vm-cache-vcpu/--vm-cache-memory: {e}");
        }
        Ok(Config {
            template_dir: root.join("vm-templates"),
            vm_templates,
            vm_cache: sandbox::qemu::CacheOptions {
                dir: root.join("vm-cache"),
                size: vm_cache,
                vcpu: cache_vcpu,
                memory_mb: cache_memory,
            },
            kernel_append: flags.kernel_append.or(file.kernel_append).unwrap_or_default(),
            tcg_tb_size_mib: match flags.tcg_tb_size.or(file.tcg_tb_size).unwrap_or(sandbox::qemu::DEFAULT_TCG_TB_SIZE_MIB) {
                0 => bail!("--tcg-tb-size must be at least 1 (MiB)"),
                n => n,
            },

            network,
            log_max_size: match flags.log_max_size.or(file.log_max_size).unwrap_or(DEFAULT_LOG_MAX_SIZE_MIB) {
                0 => None,
                n => Some(n.checked_mul(1 << 20).context("--log-max-size is too large")?),
            },

            driver,
            agent,

            kernel,
            initrd,
            qemu,
            accel,

            root,
            socket: flags
                .socket
                .or(file.socket)
                .unwrap_or_else(|| DEFAULT_SOCKET.into()),
            insecure_registries: insecure,
            registry_mirrors,
            log_level,
        })
    }
}

fn load_file(p: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading config file {}", p.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", p.display()))
}

/// The root as the kernel names it: absolute, without symlinks (`--root` may be relative, or a symlink to another
/// disk). Mount points are found by comparing with /proc/self/mountinfo, which gives real paths: with any other
/// spelling of the root, a sandbox's mounts would not be found and unmounted before its directory is removed.
/// A root that does not exist yet is spelled out as far as it exists.
fn real_root(root: PathBuf) -> PathBuf {
    let abs = std::path::absolute(&root).unwrap_or(root);
    let mut missing = Vec::new();
    let mut at = abs.as_path();
    loop {
        if let Ok(real) = at.canonicalize() {
            return missing.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_owned());
                at = parent;
            }
            _ => return abs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> anyhow::Result<Config> {
        Config::from_flags(Flags::parse_from(std::iter::once("hyperd").chain(args.iter().copied())))
    }

    #[test]
    fn the_root_is_spelled_as_mountinfo_spells_it() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().canonicalize().unwrap().join("disk");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, tmp.path().join("link")).unwrap();
        let root = |p: &Path| config(&["--root", p.to_str().unwrap()]).unwrap().root;
        assert_eq!(root(&tmp.path().join("link")), real, "a symlink");
        assert_eq!(root(&tmp.path().join("link/not/yet")), real.join("not/yet"), "a root to be made, below a symlink");
        let rel = root(Path::new("some/relative/root"));
        assert!(rel.is_absolute() && rel.ends_with("some/relative/root"), "{}", rel.display());
    }

    #[test]
    fn vm_options_need_the_qemu_driver() {
        for opt in [&["--vm-cache", "1"][..], &["--vm-templates"]] {
            let e = config(&[&["--driver", "ns"][..], opt].concat()).unwrap_err().to_string();
            assert!(e.contains("need --driver qemu"), "{opt:?}: {e}");
            assert!(config(&[&["--driver", "qemu"][..], opt].concat()).is_ok(), "{opt:?}");
        }
        let c = config(&["--vm-cache", "2", "--root", "/r"]).unwrap();
        assert_eq!((c.vm_cache.size, c.vm_cache.dir, c.vm_cache.vcpu, c.vm_cache.memory_mb), (2, PathBuf::from("/r/vm-cache"), 1, 128));
        assert_eq!(config(&[]).unwrap().vm_cache.size, 0, "off by default");
        let c = config(&["--vm-cache", "1", "--vm-cache-vcpu", "2", "--vm-cache-memory", "256"]).unwrap();
        assert_eq!((c.vm_cache.vcpu, c.vm_cache.memory_mb), (2, 256));
        let e = config(&["--vm-cache", "1", "--vm-cache-memory", "16"]).unwrap_err().to_string();
        assert!(e.contains("--vm-cache-memory") && e.contains("16 MiB"), "{e}");
    }
}
