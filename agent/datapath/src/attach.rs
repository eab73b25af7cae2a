//! Attaching programs with links pinned under the node's pin directory, so they stay attached when the
//! agent exits, and are replaced (new attached first, old detached after) when a new agent starts.
//!
//! TC programs use TCX (never mixed with classic tc filters on one hook); socket programs attach to the
//! node's own cgroup subtree, never the root cgroup.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSockAddr, LinkOrder, SchedClassifier, TcAttachType, links::FdLink,
        tc::TcAttachOptions,
    },
};
use thiserror::Error;
use tracing::{debug, info, warn};

use super::{
    PinDir,
    loader::{self, LoadError},
};

/// Errors of attaching programs.
#[derive(Debug, Error)]
pub enum AttachError {
    /// The program is not in the object, or not loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The kernel refused the attachment.
    #[error("attaching {program} to {target}: {source}")]
    Attach {
        program: &'static str,
        target: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// The link could not be pinned or an old pin removed.
    #[error("pinning link {path}: {message}")]
    Pin { path: PathBuf, message: String },
    /// The cgroup directory cannot be opened.
    #[error("opening cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Refusing to attach socket programs to a cgroup root: that would change every process's sockets.
    #[error("refusing to attach to the cgroup root {0}: give the node's own cgroup subtree")]
    CgroupRoot(PathBuf),
}

/// Which way a TC program faces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcRole {
    /// A pod-facing interface (host side of a pod's veth).
    Pod,
    /// The node's uplink.
    Uplink,
    /// The node's VXLAN device: other nodes' pods arrive there like local pods' traffic (their replies
    /// need reverse NAT); its egress belongs to the overlay's own program.
    Overlay,
}

impl TcRole {
    fn program(self) -> &'static str {
        match self {
            TcRole::Pod | TcRole::Overlay => loader::programs::FROM_POD,
            TcRole::Uplink => loader::programs::FROM_UPLINK,
        }
    }

    /// Whether the host stack's own packets leave through this interface towards a Service's clients
    /// (pods, the outside), so replies of host-network backends are reverse-translated at its egress.
    fn carries_host_replies(self) -> bool {
        matches!(self, TcRole::Pod | TcRole::Uplink)
    }
}

/// bpffs refuses names with a dot, and interface names may have one (`flannel.1`, VLANs): escape it.
fn escape_ifname(iface: &str) -> String {
    iface.replace('%', "%25").replace('.', "%2e")
}

fn unescape_ifname(pin: &str) -> String {
    pin.replace("%2e", ".").replace("%25", "%")
}

/// Pin-name prefixes of the per-interface TC links: the ingress program, and `berth_host_reply` at
/// egress.
const TC_INGRESS_PIN: &str = "tc-ingress-";
const TC_REPLY_PIN: &str = "tc-reply-";

/// Pin path of the TC ingress link on an interface.
pub fn tc_link_pin(pins: &PinDir, iface: &str) -> PathBuf {
    pins.links()
        .join(format!("{TC_INGRESS_PIN}{}", escape_ifname(iface)))
}

/// Pin path of the host-reply egress link on an interface.
fn tc_reply_pin(pins: &PinDir, iface: &str) -> PathBuf {
    pins.links()
        .join(format!("{TC_REPLY_PIN}{}", escape_ifname(iface)))
}

/// Replaces the pinned link at `pin` by `new`: the new one is already attached, so no packet goes
/// unserved. It is pinned under a temporary name and renamed over the old pin, so the old link is
/// detached only once the new one is safely pinned (if pinning fails, the old one stays).
fn replace_pin(new: FdLink, pin: &Path) -> Result<(), AttachError> {
    // bpffs reserves names with a dot; the temporary name takes a prefix instead.
    let name = pin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = pin.with_file_name(format!("tmp-{name}"));
    let _ = std::fs::remove_file(&tmp);
    new.pin(&tmp).map_err(|e| AttachError::Pin {
        path: tmp.clone(),
        message: e.to_string(),
    })?;
    std::fs::rename(&tmp, pin).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        AttachError::Pin {
            path: pin.into(),
            message: e.to_string(),
        }
    })?;
    Ok(())
}

/// Removes TC link pins of interfaces not in `keep` (gone while the agent was down, or no longer
/// matching the configuration), which detaches their programs.
pub fn remove_stale_tc_pins(pins: &PinDir, keep: &[&str]) {
    let Ok(entries) = std::fs::read_dir(pins.links()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("tmp-") {
            let _ = std::fs::remove_file(entry.path()); // left by an agent that died mid-replace
            continue;
        }
        let Some(escaped) = name
            .strip_prefix(TC_INGRESS_PIN)
            .or_else(|| name.strip_prefix(TC_REPLY_PIN))
        else {
            continue;
        };
        let iface = unescape_ifname(escaped);
        let iface = iface.as_str();
        if !keep.contains(&iface) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => info!(iface, "removed the link of an interface no longer served"),
                Err(e) => warn!(iface, error = %e, "cannot remove stale link pin"),
            }
        }
    }
}

/// Attaches the TC program for `role` at ingress of `iface` (and `berth_host_reply` at its egress where
/// the role carries host replies) and pins the links.
pub fn attach_tc(ebpf: &mut Ebpf, pins: &PinDir, iface: &str, role: TcRole) -> Result<(), AttachError> {
    attach_classifier(
        ebpf,
        role.program(),
        iface,
        TcAttachType::Ingress,
        &tc_link_pin(pins, iface),
    )?;
    let reply_pin = tc_reply_pin(pins, iface);
    if role.carries_host_replies() {
        attach_classifier(
            ebpf,
            loader::programs::HOST_REPLY,
            iface,
            TcAttachType::Egress,
            &reply_pin,
        )
    } else {
        remove_pin(&reply_pin);
        Ok(())
    }
}

/// Attaches the overlay's egress program to the node's VXLAN device `iface` (pinned as
/// `links/tc-egress-<iface>`, outside the per-interface ingress bookkeeping: the agent owns the device).
pub fn attach_overlay_egress(ebpf: &mut Ebpf, pins: &PinDir, iface: &str) -> Result<(), AttachError> {
    let pin = pins.links().join(format!("tc-egress-{}", escape_ifname(iface)));
    attach_classifier(
        ebpf,
        loader::programs::TO_OVERLAY,
        iface,
        TcAttachType::Egress,
        &pin,
    )
}

fn attach_classifier(
    ebpf: &mut Ebpf,
    name: &'static str,
    iface: &str,
    hook: TcAttachType,
    pin: &Path,
) -> Result<(), AttachError> {
    let err = |source| AttachError::Attach {
        program: name,
        target: iface.into(),
        source,
    };
    let prog: &mut SchedClassifier = loader::program(ebpf, name)?.try_into().map_err(err)?;
    let id = prog
        .attach_with_options(iface, hook, TcAttachOptions::TcxOrder(LinkOrder::first()))
        .map_err(err)?;
    let link = prog.take_link(id).map_err(err)?;
    let fd: FdLink = link
        .try_into()
        .map_err(|e: aya::programs::links::LinkError| AttachError::Pin {
            path: pin.into(),
            message: e.to_string(),
        })?;
    replace_pin(fd, pin)?;
    debug!(iface, program = name, ?hook, "TC program attached");
    Ok(())
}

/// Detaches the TC programs from `iface` by removing their pins (the interface may be gone already).
pub fn detach_tc(pins: &PinDir, iface: &str) {
    remove_pin(&tc_link_pin(pins, iface));
    remove_pin(&tc_reply_pin(pins, iface));
}

fn remove_pin(pin: &Path) {
    if let Err(e) = std::fs::remove_file(pin)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(pin = %pin.display(), error = %e, "cannot remove link pin");
    }
}

/// Attaches the four socket-LB programs to `cgroup` (a cgroup v2 directory of the node's own subtree).
pub fn attach_sock_lb(ebpf: &mut Ebpf, pins: &PinDir, cgroup: &Path) -> Result<(), AttachError> {
    if cgroup.parent().is_none_or(|p| !p.join("cgroup.procs").exists()) {
        return Err(AttachError::CgroupRoot(cgroup.into()));
    }
    let dir = File::open(cgroup).map_err(|source| AttachError::Cgroup {
        path: cgroup.into(),
        source,
    })?;
    for name in loader::programs::SOCK {
        let target = cgroup.display().to_string();
        let prog: &mut CgroupSockAddr =
            loader::program(ebpf, name)?
                .try_into()
                .map_err(|source| AttachError::Attach {
                    program: name,
                    target: target.clone(),
                    source,
                })?;
        let id = prog
            .attach(&dir, CgroupAttachMode::Single)
            .map_err(|source| AttachError::Attach {
                program: name,
                target: target.clone(),
                source,
            })?;
        let link = prog.take_link(id).map_err(|source| AttachError::Attach {
            program: name,
            target: target.clone(),
            source,
        })?;
        let fd: FdLink = link
            .try_into()
            .map_err(|e: aya::programs::links::LinkError| AttachError::Pin {
                path: pins.links(),
                message: e.to_string(),
            })?;
        replace_pin(
            fd,
            &pins
                .links()
                .join(format!("cgroup-{}", name.trim_start_matches("berth_"))),
        )?;
    }
    info!(cgroup = %cgroup.display(), "socket load balancer attached");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_with_dots_make_valid_pin_names() {
        let pins = PinDir::new(Path::new("/sys/fs/bpf/berth"), "n1");
        let pin = tc_link_pin(&pins, "flannel.1");
        let name = pin.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert_eq!(name, "tc-ingress-flannel%2e1");
        assert_eq!(unescape_ifname("flannel%2e1"), "flannel.1");
        assert_eq!(unescape_ifname(&escape_ifname("a%2e.b")), "a%2e.b");
    }
}
