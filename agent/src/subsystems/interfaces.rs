//! TC attachment: the uplink gets `berth_from_uplink`, the VXLAN device and every pod-facing interface
//! (names or `*` patterns from the configuration, never a guess) get `berth_from_pod` at ingress; the
//! uplink and pod interfaces also get `berth_host_reply` at egress. Interfaces are
//! scanned when the kernel announces a link change (an `RTMGRP_LINK` netlink subscription), and every
//! poll interval only when that subscription is unavailable, else every [`RESCAN`] as a safety net:
//! a scan is a full link dump, which with a hundred pods' veths costs more CPU than an idle node
//! should spend. A new interface is attached, a gone one's link pin removed. After the first scan
//! the pins of interfaces no longer present or configured are removed.

use std::{
    collections::HashMap,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use berth_datapath::{
    PinDir,
    attach::{self, TcRole},
    loader::Ebpf,
    netns,
};
use tokio::{io::unix::AsyncFd, sync::watch};
use tracing::{debug, info, warn};

/// How often interfaces are scanned anyway while link notifications arrive.
const RESCAN: Duration = Duration::from_secs(10);

/// A netlink socket subscribed to link changes of the current network namespace.
struct LinkEvents(AsyncFd<OwnedFd>);

impl LinkEvents {
    fn subscribe() -> std::io::Result<Self> {
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: socket succeeded; nobody else owns fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_nl is valid; family and groups set below.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = libc::RTMGRP_LINK as u32;
        // SAFETY: bind with a sockaddr_nl of the right size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: an OwnedFd returns the same open descriptor until the AsyncFd drops it.
        let registered = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
        registered
            .map(LinkEvents)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// Waits for one or more notifications and reads them all (their content does not matter: the
    /// scan that follows looks at everything).
    async fn changed(&self) -> std::io::Result<()> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let mut guard = self.0.readable().await?;
            let mut got = false;
            loop {
                // SAFETY: recv into a buffer of its size.
                let n = unsafe {
                    libc::recv(
                        self.0.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n > 0 {
                    got = true;
                    continue;
                }
                let e = std::io::Error::last_os_error();
                if n < 0 && e.kind() == std::io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    break;
                }
                // ENOBUFS: notifications were lost; a scan covers them.
                if n < 0 && e.raw_os_error() == Some(libc::ENOBUFS) {
                    got = true;
                    continue;
                }
                return Err(e);
            }
            if got {
                return Ok(());
            }
        }
    }
}

/// Owns the loaded programs and the TC links.
pub struct Interfaces {
    pub ebpf: Ebpf,
    pub pins: PinDir,
    pub uplink: Option<String>,
    pub overlay_dev: Option<String>,
    pub pod_interfaces: Vec<String>,
    pub poll_interval: std::time::Duration,
    /// Interfaces with an attached TC program, by name, with their ifindex at attach time.
    pub attached: HashMap<String, u32>,
}

fn ifindex(name: &str) -> u32 {
    let Ok(c) = std::ffi::CString::new(name) else {
        return 0;
    };
    // SAFETY: valid C string.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

impl Interfaces {
    /// Runs forever. `scanned` turns true after the first scan; `changes` counts scans that attached
    /// or detached something.
    pub async fn run(mut self, scanned: watch::Sender<bool>, changes: watch::Sender<u64>) {
        self.sync();
        let keep: Vec<&str> = self.attached.keys().map(String::as_str).collect();
        attach::remove_stale_tc_pins(&self.pins, &keep);
        scanned.send_replace(true);
        let events = match LinkEvents::subscribe() {
            Ok(e) => Some(e),
            Err(e) => {
                warn!(error = %e, "no link notifications: scanning interfaces every poll interval");
                None
            }
        };
        let mut poll = tokio::time::interval(if events.is_some() {
            RESCAN
        } else {
            self.poll_interval
        });
        loop {
            match &events {
                Some(events) => tokio::select! {
                    r = events.changed() => {
                        if let Err(e) = r {
                            debug!(error = %e, "link notifications");
                            tokio::time::sleep(self.poll_interval).await;
                        }
                    }
                    _ = poll.tick() => {}
                },
                None => {
                    poll.tick().await;
                }
            }
            if self.sync() {
                changes.send_modify(|n| *n += 1);
            }
        }
    }

    /// Attaches to new interfaces and forgets gone ones; returns whether anything changed.
    fn sync(&mut self) -> bool {
        let mut changed = false;
        let present = netns::interfaces();
        let mut wanted: Vec<(String, TcRole)> = Vec::new();
        for name in &present {
            if self.uplink.as_deref() == Some(name.as_str()) {
                wanted.push((name.clone(), TcRole::Uplink));
            } else if self.overlay_dev.as_deref() == Some(name.as_str()) {
                // Pods of other nodes arrive through the VXLAN device: their replies need reverse NAT.
                wanted.push((name.clone(), TcRole::Overlay));
            } else if self.pod_interfaces.iter().any(|p| netns::matches(p, name)) {
                wanted.push((name.clone(), TcRole::Pod));
            }
        }
        for (name, role) in &wanted {
            let index = ifindex(name);
            if self.attached.get(name) == Some(&index) {
                continue;
            }
            match attach::attach_tc(&mut self.ebpf, &self.pins, name, *role) {
                Ok(()) => {
                    info!(iface = %name, ?role, "attached");
                    self.attached.insert(name.clone(), index);
                    changed = true;
                }
                Err(e) => warn!(iface = %name, error = %e, "cannot attach; will retry"),
            }
        }
        let gone: Vec<String> = self
            .attached
            .keys()
            .filter(|n| !wanted.iter().any(|(w, _)| w == *n))
            .cloned()
            .collect();
        for name in gone {
            attach::detach_tc(&self.pins, &name);
            self.attached.remove(&name);
            info!(iface = %name, "interface gone; link pin removed");
            changed = true;
        }
        changed
    }
}
