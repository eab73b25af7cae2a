//! Pod address allocation from the node's pod CIDR, durable on disk (the layout of the CNI
//! `host-local` plugin, which flannel's CNI setup uses): one file per allocated address, named by the
//! address and created with `O_EXCL`, so two allocations can never claim one address, and a crash or an
//! agent restart forgets nothing. The file holds the [`PodRecord`] (who owns the address, its veth).
//!
//! Allocation is round-robin from the last address handed out (kept in `last_reserved`), so a freed
//! address is not reused at once: a new pod does not inherit packets, conntrack entries or cached
//! endpoints of the one that just left. All changes happen under an exclusive `flock` on the directory's
//! lock file; every record is written to a temporary file, synced and renamed, and the directory synced.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::net::PodCidr;

/// Errors of the allocation store.
#[derive(Debug, Error)]
pub enum IpamError {
    /// A file of the store could not be read, written or locked.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every usable address of the pod CIDR is allocated.
    #[error("pod CIDR {0} is exhausted: every address is allocated")]
    Exhausted(PodCidr),
    /// The pod CIDR is too small to hold pods (it needs a network, a gateway and a broadcast address).
    #[error("pod CIDR {0} is too small for pods (needs at least a /30)")]
    TooSmall(PodCidr),
    /// A record is not valid JSON (written by another version, or damaged).
    #[error("allocation record {path}: {message}")]
    Record { path: PathBuf, message: String },
}

/// What an allocation file says about its address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    /// The pod the address belongs to (`namespace/name` or a sandbox id).
    pub pod: String,
    /// The pod's network namespace (an `ip netns` name).
    #[serde(default)]
    pub netns: String,
    /// Host side of the pod's veth pair; empty until the pair exists.
    #[serde(default)]
    pub host_if: String,
    /// MAC of the pod's interface (`aa:bb:...`); empty until the pair exists.
    #[serde(default)]
    pub pod_mac: String,
}

/// The allocations of one pod CIDR, under `<state>/ipam/<network>_<len>/`.
pub struct Ipam {
    dir: PathBuf,
    cidr: PodCidr,
}

/// An exclusive `flock` on the store, released on drop.
struct Lock(File);

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: our own open descriptor.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IpamError + '_ {
    move |source| IpamError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Ipam {
    /// Opens (creating if needed) the store of `cidr` under `state_dir`.
    pub fn open(state_dir: &Path, cidr: PodCidr) -> Result<Self, IpamError> {
        if cidr.prefix_len > 30 {
            return Err(IpamError::TooSmall(cidr));
        }
        let dir = state_dir
            .join("ipam")
            .join(format!("{}_{}", cidr.network, cidr.prefix_len));
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(Ipam { dir, cidr })
    }

    /// The directory holding the records (its mtime changes with every allocation and release).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The gateway address of the CIDR (its first host address), held by the host side of every veth.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network) + 1)
    }

    fn lock(&self) -> Result<Lock, IpamError> {
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        // SAFETY: our own open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(&path)(std::io::Error::last_os_error()));
        }
        Ok(Lock(file))
    }

    /// Every allocation: address and record.
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, PodRecord)>, IpamError> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
                continue; // lock, last_reserved, temporary files
            };
            out.push((ip, self.read(&entry.path())?));
        }
        out.sort_by_key(|(ip, _)| *ip);
        Ok(out)
    }

    fn read(&self, path: &Path) -> Result<PodRecord, IpamError> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        if text.trim().is_empty() {
            // Created but not yet written (a crash between the two): the address stays taken, by nobody
            // we know. Never hand it out again until someone releases it by address.
            return Ok(PodRecord::default());
        }
        serde_json::from_str(&text).map_err(|e| IpamError::Record {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The address of `pod`, allocating one if it has none (so a retried request gets the same one).
    pub fn allocate(&self, pod: &str, netns: &str) -> Result<Ipv4Addr, IpamError> {
        let _lock = self.lock()?;
        if let Some((ip, _)) = self.allocations()?.into_iter().find(|(_, r)| r.pod == pod) {
            return Ok(ip);
        }
        let first = u32::from(self.cidr.network) + 2; // .0 network, .1 gateway
        let size = 1u32 << (32 - self.cidr.prefix_len);
        let last = u32::from(self.cidr.network) + size - 2; // broadcast excluded
        let last_path = self.dir.join("last_reserved");
        let start = std::fs::read_to_string(&last_path)
            .ok()
            .and_then(|t| t.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|a| (first..=last).contains(a))
            .map_or(first, |a| if a >= last { first } else { a + 1 });
        let span = last - first + 1;
        for i in 0..span {
            let candidate = Ipv4Addr::from(first + (start - first + i) % span);
            let path = self.dir.join(candidate.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    let record = PodRecord {
                        pod: pod.to_string(),
                        netns: netns.to_string(),
                        ..PodRecord::default()
                    };
                    let body = serde_json::to_vec(&record).unwrap_or_default();
                    file.write_all(&body)
                        .and_then(|()| file.sync_all())
                        .map_err(io_err(&path))?;
                    self.write_atomic(&last_path, candidate.to_string().as_bytes())?;
                    return Ok(candidate);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Err(IpamError::Exhausted(self.cidr))
    }

    /// Replaces the record of `ip` (after its veth pair exists).
    pub fn update(&self, ip: Ipv4Addr, record: &PodRecord) -> Result<(), IpamError> {
        let _lock = self.lock()?;
        let body = serde_json::to_vec(record).unwrap_or_default();
        self.write_atomic(&self.dir.join(ip.to_string()), &body)
    }

    /// Releases the address of `pod`; returns its record, if it had one.
    pub fn release(&self, pod: &str) -> Result<Option<(Ipv4Addr, PodRecord)>, IpamError> {
        let _lock = self.lock()?;
        let Some((ip, record)) = self.allocations()?.into_iter().find(|(_, r)| r.pod == pod) else {
            return Ok(None);
        };
        let path = self.dir.join(ip.to_string());
        std::fs::remove_file(&path).map_err(io_err(&path))?;
        self.sync_dir()?;
        Ok(Some((ip, record)))
    }

    fn write_atomic(&self, path: &Path, body: &[u8]) -> Result<(), IpamError> {
        let tmp = path.with_extension("tmp");
        let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(body)
            .and_then(|()| file.sync_all())
            .map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), IpamError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(name: &str, cidr: &str) -> (PathBuf, Ipam) {
        let dir = std::env::temp_dir().join(format!("berth-ipam-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ipam = Ipam::open(&dir, cidr.parse().expect("cidr")).expect("open");
        (dir, ipam)
    }

    #[test]
    fn allocation_is_idempotent_round_robin_and_durable() {
        let (dir, ipam) = store("rr", "10.244.7.0/24");
        assert_eq!(ipam.gateway().to_string(), "10.244.7.1");
        let a = ipam.allocate("default/a", "ns-a").expect("a");
        assert_eq!(a.to_string(), "10.244.7.2");
        assert_eq!(ipam.allocate("default/a", "ns-a").expect("again"), a);
        let b = ipam.allocate("default/b", "ns-b").expect("b");
        assert_eq!(b.to_string(), "10.244.7.3");
        ipam.release("default/a").expect("release");
        // Round robin: the freed .2 is not handed out next.
        let c = ipam.allocate("default/c", "ns-c").expect("c");
        assert_eq!(c.to_string(), "10.244.7.4");
        // A restart (a new handle on the same directory) sees every allocation.
        let again = Ipam::open(&dir, "10.244.7.0/24".parse().expect("cidr")).expect("reopen");
        let pods: Vec<String> = again
            .allocations()
            .expect("list")
            .into_iter()
            .map(|(_, r)| r.pod)
            .collect();
        assert_eq!(pods, ["default/b", "default/c"]);
        assert_eq!(
            again.allocate("default/d", "").expect("d").to_string(),
            "10.244.7.5"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn exhaustion_and_wraparound() {
        let (dir, ipam) = store("small", "10.244.9.0/29"); // .2 .. .6 usable
        for i in 0..5 {
            ipam.allocate(&format!("p{i}"), "").expect("fits");
        }
        assert!(matches!(ipam.allocate("p5", ""), Err(IpamError::Exhausted(_))));
        ipam.release("p1").expect("release");
        assert_eq!(ipam.allocate("p6", "").expect("wraps").to_string(), "10.244.9.3");
        // An empty record (crash between create and write) keeps its address taken.
        std::fs::write(ipam.dir().join("10.244.9.3"), "").expect("truncate");
        ipam.release("p0").expect("release");
        assert_eq!(ipam.allocate("p7", "").expect("next").to_string(), "10.244.9.2");
        assert!(Ipam::open(&dir, "10.244.9.0/31".parse().expect("cidr")).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
