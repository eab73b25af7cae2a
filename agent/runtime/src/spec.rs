//! The OCI runtime spec (`config.json`) of one container, built with `oci-spec` from a
//! [`ContainerSpec`]: what kubelet and containerd put there for a Kubernetes container.
//!
//! Defaults are containerd's: the default capability set, no new privileges, the usual `/proc`, `/dev`,
//! `/sys` mounts with masked and read-only paths, devices denied but runc's defaults. Capabilities are
//! clamped to this host's bounding set and rlimits to its hard limits (a runtime cannot grant what it
//! does not hold); [`Clamped`] says what was reduced so the pod's status can tell.

use std::path::PathBuf;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder, get_default_maskedpaths, get_default_mounts,
    get_default_readonly_paths,
};
use thiserror::Error;

/// Errors of building a spec.
#[derive(Debug, Error)]
pub enum SpecError {
    /// `oci-spec` refused a value.
    #[error("OCI runtime spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
    /// A capability name that Linux does not have.
    #[error("unknown capability {0:?}")]
    Capability(String),
}

/// A mount into the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    pub destination: String,
    pub kind: MountKind,
    pub read_only: bool,
}

/// Where a mount's content comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountKind {
    /// A host path (a volume's directory, a file such as `/etc/hosts`), bind-mounted.
    Bind(PathBuf),
    /// A fresh tmpfs (`emptyDir` with `medium: Memory`), size in bytes if limited.
    Tmpfs(Option<u64>),
}

/// Namespaces the container joins instead of getting its own (the pod's, pinned by the sandbox).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedNamespaces {
    pub network: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// The pod's shared PID namespace (`shareProcessNamespace`); a container's own otherwise.
    pub pid: Option<PathBuf>,
    /// `hostNetwork`: the container stays in the node's network and UTS namespaces (those of the
    /// runtime), neither joined nor made; `network` and `uts` are then ignored.
    pub host_network: bool,
}

/// cgroup limits of the container (kubelet's mapping of requests and limits).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub memory_limit: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub pids_limit: Option<i64>,
}

/// Everything a container's spec is made from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The root filesystem (the overlay mount).
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub read_only_root: bool,
    /// `securityContext.privileged`: every capability the host has, devices allowed.
    pub privileged: bool,
    /// `securityContext.capabilities.add` / `.drop`, as Kubernetes names them (`NET_ADMIN`, `ALL`).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub allow_privilege_escalation: bool,
    pub mounts: Vec<MountSpec>,
    pub namespaces: SharedNamespaces,
    /// `cgroupsPath` for runc's cgroupfs driver.
    pub cgroups_path: String,
    pub resources: Resources,
    pub oom_score_adj: Option<i32>,
}

/// What the host could not give and was reduced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Clamped {
    /// Capabilities asked for that the host's bounding set lacks.
    pub capabilities: Vec<String>,
}

/// containerd's default capability set for containers.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability Linux has (`ALL`), in kernel order.
const ALL_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// This process' bounding set (`CapBnd` of /proc/self/status), as a bit mask.
pub fn host_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// The container's capability names (without `CAP_`), from the defaults, `add` and `drop`, and
/// those the host lacks.
pub fn capability_set(spec: &ContainerSpec, host: u64) -> (Vec<String>, Clamped) {
    let norm = |c: &String| c.trim().trim_start_matches("CAP_").to_ascii_uppercase();
    let mut wanted: Vec<String> = if spec.privileged {
        ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    } else {
        let mut set: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        let drop: Vec<String> = spec.cap_drop.iter().map(norm).collect();
        if drop.iter().any(|d| d == "ALL") {
            set.clear();
        } else {
            set.retain(|c| !drop.contains(c));
        }
        for add in spec.cap_add.iter().map(norm) {
            if add == "ALL" {
                set = ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
            } else if !set.contains(&add) {
                set.push(add);
            }
        }
        set
    };
    let mut clamped = Clamped::default();
    wanted.retain(|c| {
        let bit = ALL_CAPABILITIES.iter().position(|k| k == c);
        let held = bit.is_some_and(|b| host & (1u64 << b) != 0);
        // Unknown names stay, to be refused by the spec as an error; known ones the host lacks go.
        if bit.is_some() && !held {
            // `ALL` and privileged ask for everything: only explicitly added ones are worth telling.
            if !spec.privileged {
                clamped.capabilities.push(c.clone());
            }
            return false;
        }
        true
    });
    (wanted, clamped)
}

fn namespace(typ: LinuxNamespaceType, path: Option<&PathBuf>) -> Result<LinuxNamespace, SpecError> {
    let mut b = LinuxNamespaceBuilder::default().typ(typ);
    if let Some(p) = path {
        b = b.path(p.clone());
    }
    Ok(b.build()?)
}

fn mounts(spec: &ContainerSpec) -> Result<Vec<Mount>, SpecError> {
    let mut out: Vec<Mount> = get_default_mounts()
        .into_iter()
        // The sysfs and cgroup mounts of the defaults are read-only, as runc's own spec has them;
        // a privileged container gets them writable, as containerd and CRI-O give them.
        .map(|mut m| {
            if spec.privileged {
                let writable = m
                    .options()
                    .as_ref()
                    .map(|o| o.iter().filter(|o| *o != "ro").cloned().collect());
                m.set_options(writable);
            }
            m
        })
        .collect();
    for m in &spec.mounts {
        let mut options = match &m.kind {
            MountKind::Bind(_) => vec!["rbind".to_string(), "rprivate".to_string()],
            MountKind::Tmpfs(size) => {
                let mut o = vec!["nosuid".to_string(), "nodev".to_string()];
                if let Some(size) = size {
                    o.push(format!("size={size}"));
                }
                o
            }
        };
        if m.read_only {
            options.push("ro".into());
        }
        let (typ, source) = match &m.kind {
            MountKind::Bind(path) => ("bind", path.clone()),
            MountKind::Tmpfs(_) => ("tmpfs", PathBuf::from("tmpfs")),
        };
        out.push(
            MountBuilder::default()
                .destination(PathBuf::from(&m.destination))
                .typ(typ)
                .source(source)
                .options(options)
                .build()?,
        );
    }
    Ok(out)
}

/// The spec, and what was clamped.
pub fn build(spec: &ContainerSpec) -> Result<(Spec, Clamped), SpecError> {
    let (caps, clamped) = capability_set(spec, host_bounding_set());
    let caps = caps
        .iter()
        .map(|c| {
            serde_json::from_value::<Capability>(serde_json::Value::String(format!("CAP_{c}")))
                .map_err(|_| SpecError::Capability(c.clone()))
        })
        .collect::<Result<oci_spec::runtime::Capabilities, _>>()?;
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()?;
    let nofile = host_hard_nofile().min(1_048_576);
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(spec.uid)
                .gid(spec.gid)
                .additional_gids(spec.additional_gids.clone())
                .build()?,
        )
        .args(spec.args.clone())
        .env(spec.env.clone())
        .cwd(if spec.cwd.is_empty() {
            "/".into()
        } else {
            spec.cwd.clone()
        })
        .capabilities(capabilities)
        .no_new_privileges(!spec.allow_privilege_escalation && !spec.privileged)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .hard(nofile)
                .soft(nofile)
                .build()?,
        ]);
    let process = match spec.oom_score_adj {
        Some(adj) => process.oom_score_adj(adj),
        None => process,
    }
    .build()?;

    let ns = &spec.namespaces;
    let mut namespaces = vec![
        namespace(LinuxNamespaceType::Pid, ns.pid.as_ref())?,
        namespace(LinuxNamespaceType::Ipc, ns.ipc.as_ref())?,
        namespace(LinuxNamespaceType::Mount, None)?,
    ];
    if !ns.host_network {
        namespaces.push(namespace(LinuxNamespaceType::Network, ns.network.as_ref())?);
        namespaces.push(namespace(LinuxNamespaceType::Uts, ns.uts.as_ref())?);
    }
    let r = &spec.resources;
    let mut resources = LinuxResourcesBuilder::default().devices(vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(spec.privileged)
            .access("rwm")
            .build()?,
    ]);
    if let Some(limit) = r.memory_limit {
        resources = resources.memory(LinuxMemoryBuilder::default().limit(limit).build()?);
    }
    if r.cpu_shares.is_some() || r.cpu_quota.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(shares) = r.cpu_shares {
            cpu = cpu.shares(shares);
        }
        if let Some(quota) = r.cpu_quota {
            cpu = cpu.quota(quota).period(r.cpu_period.unwrap_or(100_000));
        }
        resources = resources.cpu(cpu.build()?);
    }
    if let Some(limit) = r.pids_limit {
        resources = resources.pids(LinuxPidsBuilder::default().limit(limit).build()?);
    }
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build()?)
        .cgroups_path(PathBuf::from(&spec.cgroups_path));
    // A privileged container sees /proc and /sys whole (the builder's defaults would mask parts).
    linux = if spec.privileged {
        linux.masked_paths(Vec::new()).readonly_paths(Vec::new())
    } else {
        linux
            .masked_paths(get_default_maskedpaths())
            .readonly_paths(get_default_readonly_paths())
    };
    let mut built = SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(spec.rootfs.clone())
                .readonly(spec.read_only_root)
                .build()?,
        )
        .process(process)
        .mounts(mounts(spec)?)
        .linux(linux.build()?)
        .build()?;
    // The pod's UTS namespace is joined with its hostname already set (by the sandbox); oci-spec's
    // defaults would rename it.
    built.set_hostname(None);
    built.set_domainname(None);
    Ok((built, clamped))
}

fn host_hard_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_max
    } else {
        1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_capabilities_with_add_and_drop_clamped_to_the_host() {
        let mut spec = ContainerSpec {
            cap_add: vec!["NET_ADMIN".into(), "SYS_RESOURCE".into()],
            cap_drop: vec!["MKNOD".into()],
            ..Default::default()
        };
        // A host without SYS_RESOURCE (bit 24), as this machine kind.
        let host: u64 = !(1 << 24);
        let (caps, clamped) = capability_set(&spec, host);
        assert!(caps.contains(&"NET_ADMIN".to_string()));
        assert!(caps.contains(&"CHOWN".to_string()));
        assert!(!caps.contains(&"MKNOD".to_string()));
        assert!(!caps.contains(&"SYS_RESOURCE".to_string()));
        assert_eq!(clamped.capabilities, vec!["SYS_RESOURCE".to_string()]);
        spec.cap_drop = vec!["ALL".into()];
        spec.cap_add = vec!["NET_BIND_SERVICE".into()];
        assert_eq!(
            capability_set(&spec, host).0,
            vec!["NET_BIND_SERVICE".to_string()]
        );
    }

    #[test]
    fn the_spec_joins_the_pods_namespaces_and_carries_limits() {
        let spec = ContainerSpec {
            rootfs: "/r".into(),
            args: vec!["sh".into()],
            cwd: "/www".into(),
            uid: 1000,
            gid: 1000,
            read_only_root: true,
            namespaces: SharedNamespaces {
                network: Some("/run/netns/p".into()),
                ..Default::default()
            },
            cgroups_path: "/kubepods/pod1/c1".into(),
            resources: Resources {
                memory_limit: Some(64 << 20),
                cpu_shares: Some(512),
                cpu_quota: Some(50_000),
                pids_limit: Some(100),
                ..Default::default()
            },
            ..Default::default()
        };
        let (built, _) = build(&spec).expect("spec");
        let json = serde_json::to_value(&built).expect("json");
        assert_eq!(json["process"]["user"]["uid"], 1000);
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert_eq!(json["root"]["readonly"], true);
        let nets: Vec<_> = json["linux"]["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .filter(|n| n["type"] == "network")
            .collect();
        assert_eq!(nets[0]["path"], "/run/netns/p");
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(json["linux"]["resources"]["cpu"]["period"], 100_000);
        assert_eq!(json["linux"]["resources"]["pids"]["limit"], 100);
        assert_eq!(json["linux"]["cgroupsPath"], "/kubepods/pod1/c1");
        assert!(json.get("hostname").is_none(), "the sandbox names the host");
    }

    #[test]
    fn a_privileged_host_network_container_keeps_the_nodes_network_and_writable_sysfs() {
        let spec = ContainerSpec {
            rootfs: "/r".into(),
            args: vec!["agent".into()],
            privileged: true,
            namespaces: SharedNamespaces {
                network: Some("/ignored".into()),
                ipc: Some("/pod/ipc".into()),
                host_network: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let (built, _) = build(&spec).expect("spec");
        let json = serde_json::to_value(&built).expect("json");
        let types: Vec<_> = json["linux"]["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .map(|n| n["type"].as_str().unwrap_or_default().to_string())
            .collect();
        assert!(!types.contains(&"network".to_string()), "{types:?}");
        assert!(!types.contains(&"uts".to_string()), "{types:?}");
        assert!(types.contains(&"ipc".to_string()), "{types:?}");
        for m in json["mounts"].as_array().expect("mounts") {
            if m["destination"] == "/sys" || m["destination"] == "/sys/fs/cgroup" {
                assert!(
                    !m["options"].as_array().expect("options").contains(&"ro".into()),
                    "{m}"
                );
            }
        }
        let masked = json["linux"]
            .get("maskedPaths")
            .and_then(|m| m.as_array())
            .map_or(0, Vec::len);
        assert_eq!(masked, 0, "{}", json["linux"]);
    }
}
