//! Network namespaces and everything in them, owned by a [`TestBed`] that removes all of it on drop.
//!
//! Every name carries the bed's prefix (`bt<name>-`); [`TestBed::new`] first removes namespaces, pins
//! and cgroups left by an earlier run with the same prefix. Nothing here touches the root namespace's
//! interfaces or the root cgroup.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use thiserror::Error;

/// Errors of building a test bed.
#[derive(Debug, Error)]
pub enum BedError {
    /// A command failed; its output is included.
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    /// A command could not be started.
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Root of berth's bpffs pins in tests (a per-prefix directory below it).
pub const TEST_BPFFS_ROOT: &str = "/sys/fs/bpf/berth";
/// cgroup v2 mount on this machine kind (hybrid layout).
pub const CGROUP2_ROOT: &str = "/sys/fs/cgroup/unified";

/// Runs a command; error with stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> Result<Output, BedError> {
    let cmd = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| BedError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(BedError::Command {
            cmd,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// A network namespace of the bed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<Output, BedError> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output, BedError> {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), BedError> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// A command that will run inside the namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

/// A child process killed (and reaped) when the bed drops.
pub struct Proc {
    pub child: Child,
    pub what: String,
}

impl Proc {
    /// Kills with SIGKILL and reaps.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `timeout` before SIGKILL.
    pub fn terminate(&mut self, timeout: Duration) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One test's world. Drop removes every namespace, cgroup and pin directory it made.
pub struct TestBed {
    prefix: String,
    namespaces: Vec<Netns>,
    pub procs: Vec<Proc>,
    scratch: PathBuf,
}

fn list_netns() -> Vec<String> {
    run("ip", &["netns", "list"])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Kills every process attached to a cgroup (and its children) then removes the directories.
/// Unmounts everything mounted at or below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) {
            // SAFETY: valid NUL-terminated path of a mount this bed made.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    for _ in 0..50 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        if procs.trim().is_empty() {
            break;
        }
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) on processes our test put in its own cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir(dir);
}

impl TestBed {
    /// A new bed for test `name` (short: interface-free, but namespace names carry it). Removes what a
    /// crashed earlier run with the same prefix left behind.
    pub fn new(name: &str) -> Self {
        let scratch = std::env::temp_dir().join(format!("bt{name}-scratch"));
        Self::with_scratch(name, scratch)
    }

    /// [`new`](Self::new) with its scratch directory at `scratch` (the local cluster keeps its state
    /// under `target/berth-cluster/`).
    pub fn with_scratch(name: &str, scratch: PathBuf) -> Self {
        let prefix = format!("bt{name}");
        let bed = TestBed {
            scratch,
            prefix,
            namespaces: Vec::new(),
            procs: Vec::new(),
        };
        bed.remove_leftovers();
        let _ = std::fs::create_dir_all(&bed.scratch);
        bed
    }

    /// The bed's name prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A scratch directory removed with the bed.
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// The bed's own cgroup v2 directory (created on first use).
    pub fn cgroup(&self, child: &str) -> PathBuf {
        let dir = Path::new(CGROUP2_ROOT).join(&self.prefix).join(child);
        let _ = std::fs::create_dir_all(&dir);
        dir
    }

    /// The bed's bpffs root, passed to agents as `--bpffs-root`.
    pub fn bpffs_root(&self) -> PathBuf {
        Path::new(TEST_BPFFS_ROOT).join(&self.prefix)
    }

    fn remove_leftovers(&self) {
        let mine = format!("{}-", self.prefix);
        for ns in list_netns().into_iter().filter(|n| n.starts_with(&mine)) {
            let _ = run("ip", &["netns", "del", &ns]);
        }
        // Pins first (detaches links), then the cgroups the socket programs were attached to.
        let _ = std::fs::remove_dir_all(self.bpffs_root());
        let _ = std::fs::remove_dir(TEST_BPFFS_ROOT); // only if no other bed or agent uses it
        remove_cgroup_tree(&Path::new(CGROUP2_ROOT).join(&self.prefix));
        // Containers run by runc live in the bed's cgroups of every v1 hierarchy: their processes
        // are killed with the cgroups.
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                remove_cgroup_tree(&h.path().join(&self.prefix));
            }
        }
        // Overlay roots and pinned namespaces of pods under the scratch directory.
        unmount_below(&self.scratch);
        let _ = std::fs::remove_dir_all(&self.scratch);
    }

    /// The bed's cgroup parent for runc's cgroupfs driver (`cgroupsPath` below it, in every
    /// hierarchy), removed with the bed.
    pub fn cgroup_parent(&self) -> String {
        format!("/{}", self.prefix)
    }

    /// Creates namespace `<prefix>-<role>` with loopback up.
    pub fn netns(&mut self, role: &str) -> Result<Netns, BedError> {
        let ns = Netns {
            name: format!("{}-{role}", self.prefix),
        };
        run("ip", &["netns", "add", &ns.name])?;
        self.namespaces.push(ns.clone());
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A veth pair `a_if` in `a` and `b_if` in `b`, both up.
    pub fn veth(&self, a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<(), BedError> {
        a.ip(&[
            "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
        ])?;
        a.ip(&["link", "set", a_if, "up"])?;
        b.ip(&["link", "set", b_if, "up"])?;
        Ok(())
    }

    /// Starts `berth-probe serve` in `ns`, answering with `id` on TCP `tcp` and UDP `udp`.
    pub fn serve(&mut self, ns: &Netns, id: &str, tcp: u16, udp: u16) -> Result<usize, BedError> {
        let mut cmd = ns.command(&crate::workspace_bin("berth-probe"));
        cmd.args([
            "serve",
            "--id",
            id,
            "--tcp",
            &tcp.to_string(),
            "--udp",
            &udp.to_string(),
        ]);
        self.spawn(cmd, &format!("server {id}"))
    }

    /// Starts a process the bed kills on drop.
    pub fn spawn(&mut self, mut cmd: Command, what: &str) -> Result<usize, BedError> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .map_err(|source| BedError::Spawn {
                cmd: what.to_string(),
                source,
            })?;
        self.procs.push(Proc {
            child,
            what: what.to_string(),
        });
        Ok(self.procs.len() - 1)
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.kill();
        }
        self.procs.clear();
        for ns in self.namespaces.drain(..).rev() {
            let _ = run("ip", &["netns", "del", &ns.name]);
        }
        self.remove_leftovers();
    }
}
