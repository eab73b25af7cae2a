//! TC attachment: the uplink gets `berth_from_uplink`, the VXLAN device and every pod-facing interface
//! (names or `*` patterns from the configuration, never a guess) get `berth_from_pod`. Interfaces are
//! scanned every poll interval; a new one is attached, a gone one's link pin removed. After the first
//! scan the pins of interfaces no longer present or configured are removed.

use std::collections::HashMap;

use berth_datapath::{
    PinDir,
    attach::{self, TcRole},
    loader::Ebpf,
    netns,
};
use tokio::sync::watch;
use tracing::{info, warn};

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
        let mut poll = tokio::time::interval(self.poll_interval);
        loop {
            poll.tick().await;
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
            } else if self.overlay_dev.as_deref() == Some(name.as_str())
                || self.pod_interfaces.iter().any(|p| netns::matches(p, name))
            {
                // Pods of other nodes arrive through the VXLAN device: their replies need reverse NAT.
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
