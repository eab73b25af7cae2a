//! Loads the eBPF object embedded in the agent binary, reusing maps already pinned for this node so
//! that conntrack, affinity and Service state survive an agent restart or upgrade.

pub use aya::Ebpf;
use aya::{
    EbpfLoader,
    programs::{CgroupSockAddr, Program, SchedClassifier},
};
use berth_common::{capacity, names};
use thiserror::Error;
use tracing::{info, warn};

use super::PinDir;

/// The object built by `cargo xtask build-ebpf`, embedded at compile time.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("BERTH_EBPF_OBJECT"));

/// Errors of loading the data plane.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The pin directory could not be created (is bpffs mounted at its root?).
    #[error("cannot create pin directory {path}: {source}")]
    PinDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused the object or one of its maps (verifier log included in the source).
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program is missing from the object or has an unexpected type.
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// The object lacks a program the agent expects: agent and object are out of step.
    #[error("program {0} is not in the eBPF object (rebuild with `cargo xtask build-ebpf`)")]
    MissingProgram(&'static str),
}

/// Names of the programs in the object.
pub mod programs {
    /// TC ingress of pod-facing interfaces.
    pub const FROM_POD: &str = "berth_from_pod";
    /// TC ingress of the node's uplink.
    pub const FROM_UPLINK: &str = "berth_from_uplink";
    /// TC egress of the node's VXLAN device (the host's own traffic to other nodes' pods).
    pub const TO_OVERLAY: &str = "berth_to_overlay";
    /// TC egress of pod-facing interfaces and the uplink (replies of host-network backends).
    pub const HOST_REPLY: &str = "berth_host_reply";
    /// Socket LB programs and their cgroup attach points.
    pub const SOCK: [&str; 4] = [
        "berth_connect4",
        "berth_sendmsg4",
        "berth_recvmsg4",
        "berth_getpeername4",
    ];
}

/// Sizes of the maps that grow with the cluster. Changing them for a node whose maps are already
/// pinned needs `berth-agent cleanup` first (a pinned map keeps its size).
#[derive(Clone, Copy, Debug)]
pub struct Capacities {
    /// Frontends (each holds its first `INLINE_SLOTS` backend slots).
    pub frontends: u32,
    /// Backend slots beyond each frontend's inline ones.
    pub service_slots: u32,
    /// Distinct backends.
    pub backends: u32,
    /// Conntrack entries (two per translated flow).
    pub conntrack: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Capacities {
            frontends: capacity::FRONTENDS,
            service_slots: capacity::SLOTS,
            backends: capacity::BACKENDS,
            conntrack: capacity::CONNTRACK,
        }
    }
}

/// Loads the object with every map pinned (or reused) under `pins`, and every program into the kernel
/// (verified, not attached).
pub fn load(pins: &PinDir, sizes: &Capacities) -> Result<Ebpf, LoadError> {
    ensure_bpffs(pins.path())?;
    std::fs::create_dir_all(pins.links()).map_err(|source| LoadError::PinDir {
        path: pins.links(),
        source,
    })?;
    let ebpf = match load_object(pins, sizes) {
        Ok(ebpf) => ebpf,
        Err(first) => {
            // An older berth may have pinned maps whose layout changed since (aya reuses the pin, and
            // the verifier refuses programs that read past the old value size). Those that hold no
            // state worth keeping are replaced; state-bearing maps keep their layout (a change to them
            // needs new names or a migration), so if loading still fails the first error is reported.
            let mut replaced = Vec::new();
            for name in REPLACEABLE_MAPS {
                if std::fs::remove_file(pins.map(name)).is_ok() {
                    replaced.push(name);
                }
            }
            if replaced.is_empty() {
                return Err(first);
            }
            warn!(maps = ?replaced, error = %first, "pinned maps did not fit this version; replaced them");
            load_object(pins, sizes).map_err(|_| first)?
        }
    };
    for name in OBSOLETE_MAPS {
        // Nothing reads them any more. The programmer restores from the current maps only, so it
        // writes their state anew at its first apply; until then no new Service flow is balanced
        // (established flows keep their conntrack entries).
        if std::fs::remove_file(pins.map(name)).is_ok() {
            info!(map = name, "removed the pin of a map an older berth used");
        }
    }
    info!(pins = %pins.path().display(), "eBPF data plane loaded");
    Ok(ebpf)
}

/// Creates or reuses the pinned maps and loads (verifies) every program.
fn load_object(pins: &PinDir, sizes: &Capacities) -> Result<Ebpf, LoadError> {
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pins.path())
        .map_max_entries(names::FRONTENDS, sizes.frontends)
        .map_max_entries(names::SLOTS, sizes.service_slots)
        .map_max_entries(names::BACKENDS, sizes.backends)
        .map_max_entries(names::CONNTRACK, sizes.conntrack)
        .load(EBPF_OBJECT)?;
    for name in [
        programs::FROM_POD,
        programs::FROM_UPLINK,
        programs::TO_OVERLAY,
        programs::HOST_REPLY,
    ] {
        let prog: &mut SchedClassifier = program(&mut ebpf, name)?
            .try_into()
            .map_err(|source| LoadError::Program { name, source })?;
        prog.load()
            .map_err(|source| LoadError::Program { name, source })?;
    }
    for name in programs::SOCK {
        let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?
            .try_into()
            .map_err(|source| LoadError::Program { name, source })?;
        prog.load()
            .map_err(|source| LoadError::Program { name, source })?;
    }
    Ok(ebpf)
}

/// Maps of older berth versions, unpinned at load. `BERTH_SVC` held a header per frontend and a slot
/// per backend, before the header and first backends moved into one value (`BERTH_FRONTENDS`).
const OBSOLETE_MAPS: [&str; 1] = ["BERTH_SVC"];

/// Maps the agent may drop and recreate when an older version pinned them with another layout: the node
/// configuration (rewritten at every start), the counters, the local endpoints and the overlay peers and
/// their addresses (rebuilt from the allocation records and Node objects on the first sync), the
/// next-hop cache.
const REPLACEABLE_MAPS: [&str; 6] = [
    names::CONFIG,
    names::COUNTERS,
    names::ENDPOINTS,
    names::OVERLAY,
    names::PEER_NODES,
    names::NEXTHOP,
];

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Mounts bpffs at /sys/fs/bpf when nothing is mounted there (as Cilium's agent does): pins need a
/// bpffs, and one mounted where every tool looks for it.
fn ensure_bpffs(pin_dir: &std::path::Path) -> Result<(), LoadError> {
    let mount_point = std::path::Path::new("/sys/fs/bpf");
    if !pin_dir.starts_with(mount_point) || is_bpffs(mount_point) {
        return Ok(());
    }
    let _ = std::fs::create_dir_all(mount_point);
    let rc = unsafe {
        // SAFETY: constant NUL-terminated strings.
        libc::mount(
            c"bpf".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(LoadError::PinDir {
            path: mount_point.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    info!("mounted bpffs at /sys/fs/bpf");
    Ok(())
}

fn is_bpffs(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and statfs buffer.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// A program of the object by name.
pub fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Program, LoadError> {
    ebpf.program_mut(name).ok_or(LoadError::MissingProgram(name))
}

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};

    /// The programs call no out-of-line memory function: bpf-linker exports byte-at-a-time loops under
    /// these names, and a zeroed struct that becomes a call to one costs hundreds of instructions per
    /// packet (see ARCHITECTURE.md, "Memory intrinsics"; `ebpf/berth-ebpf/.cargo/config.toml` keeps
    /// LLVM expanding them inline).
    #[test]
    fn the_programs_call_no_out_of_line_memset_or_memcpy() {
        let file = object::File::parse(super::EBPF_OBJECT).expect("the embedded eBPF object is ELF");
        let mut calls = Vec::new();
        let mut relocations = 0;
        for section in file.sections() {
            for (offset, reloc) in section.relocations() {
                relocations += 1;
                let RelocationTarget::Symbol(index) = reloc.target() else {
                    continue;
                };
                let Ok(symbol) = file.symbol_by_index(index) else {
                    continue;
                };
                let name = symbol.name().unwrap_or_default();
                if ["memset", "memcpy", "memmove", "memcmp", "bcmp"].contains(&name) {
                    calls.push(format!(
                        "{} +{offset:#x} -> {name}",
                        section.name().unwrap_or("?")
                    ));
                }
            }
        }
        assert!(
            relocations > 0,
            "the object has relocations (map references): the check reads them"
        );
        assert!(
            calls.is_empty(),
            "calls to out-of-line memory functions: {calls:#?}"
        );
    }
}
