//! `berth-agent` processes in the test bed.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    testbed::{BedError, Netns, Proc},
    workspace_bin,
};

/// A running agent; killed (SIGKILL) on drop, leaving its pins for the bed to remove.
pub struct AgentProc {
    proc: Option<Proc>,
    /// `berth-agent`, or the wrapper that ends by executing it.
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    status_file: PathBuf,
    log: PathBuf,
}

impl AgentProc {
    /// Starts `berth-agent --netns NS --bpffs-root ROOT run ARGS...`, logging to `log`.
    pub fn start(
        ns: &Netns,
        bpffs_root: &Path,
        scratch: &Path,
        run_args: &[String],
    ) -> Result<Self, BedError> {
        let status_file = scratch.join(format!("agent-{}.status", ns.name));
        let log = scratch.join(format!("agent-{}.log", ns.name));
        let _ = std::fs::remove_file(&status_file);
        let mut args = vec![
            "--netns".to_string(),
            ns.name.clone(),
            "--bpffs-root".to_string(),
            bpffs_root.display().to_string(),
            "run".to_string(),
            "--status-file".to_string(),
            status_file.display().to_string(),
        ];
        args.extend(run_args.iter().cloned());
        let mut me = AgentProc {
            proc: None,
            program: workspace_bin("berth-agent"),
            args,
            env: Vec::new(),
            status_file,
            log,
        };
        me.spawn()?;
        Ok(me)
    }

    /// Starts the agent as it runs in a pod of a DaemonSet: in namespace `ns` (entered by `ip netns
    /// exec`, not by the agent), in a mount namespace of its own where the service-account files of
    /// `service_account` (`token`, `ca.crt`, `namespace`) appear at
    /// `/var/run/secrets/kubernetes.io/serviceaccount/`, with `KUBERNETES_SERVICE_HOST` and
    /// `KUBERNETES_SERVICE_PORT` set to `api` — what kubelet gives a pod. `run_args` name no
    /// credentials: the agent finds these.
    pub fn start_in_pod(
        ns: &Netns,
        bpffs_root: &Path,
        scratch: &Path,
        run_args: &[String],
        service_account: &Path,
        api: std::net::SocketAddr,
    ) -> Result<Self, BedError> {
        let status_file = scratch.join(format!("agent-{}.status", ns.name));
        let log = scratch.join(format!("agent-{}.log", ns.name));
        let _ = std::fs::remove_file(&status_file);
        // A tmpfs over /run in the private mount namespace: the files appear only to this agent, and
        // nothing is created on the machine's own /run. (`ip netns exec` has entered the namespace
        // already, so /run/netns is no longer needed.)
        let script = "set -e; mount -t tmpfs -o mode=0755 berth-pod-run /run; \
            d=/var/run/secrets/kubernetes.io/serviceaccount; mkdir -p \"$d\"; \
            cp \"$BERTH_SA\"/token \"$BERTH_SA\"/ca.crt \"$BERTH_SA\"/namespace \"$d\"/; exec \"$@\"";
        let mut args: Vec<String> = [
            "netns",
            "exec",
            &ns.name,
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ]
        .map(str::to_string)
        .to_vec();
        args.push(workspace_bin("berth-agent").display().to_string());
        args.extend([
            "--bpffs-root".to_string(),
            bpffs_root.display().to_string(),
            "run".to_string(),
            "--status-file".to_string(),
            status_file.display().to_string(),
        ]);
        args.extend(run_args.iter().cloned());
        let mut me = AgentProc {
            proc: None,
            program: PathBuf::from("ip"),
            args,
            env: vec![
                ("BERTH_SA".into(), service_account.display().to_string()),
                ("KUBERNETES_SERVICE_HOST".into(), api.ip().to_string()),
                ("KUBERNETES_SERVICE_PORT".into(), api.port().to_string()),
            ],
            status_file,
            log,
        };
        me.spawn()?;
        Ok(me)
    }

    fn spawn(&mut self) -> Result<(), BedError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|source| BedError::Io {
                path: self.log.clone(),
                source,
            })?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| BedError::Spawn {
                cmd: "berth-agent".into(),
                source,
            })?;
        self.proc = Some(Proc {
            child,
            what: "berth-agent".into(),
        });
        Ok(())
    }

    /// kill -9, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts the same agent again (after [`kill`](Self::kill)).
    pub fn restart(&mut self) -> Result<(), BedError> {
        self.kill();
        let _ = std::fs::remove_file(&self.status_file);
        self.spawn()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }

    /// Whether the process has exited (or was killed).
    pub fn exited(&mut self) -> bool {
        self.proc
            .as_mut()
            .is_none_or(|p| p.child.try_wait().ok().flatten().is_some())
    }

    /// The agent's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// (generation, frontends) from the status file, if written yet.
    pub fn status(&self) -> Option<(u64, usize)> {
        let text = std::fs::read_to_string(&self.status_file).ok()?;
        let mut it = text.split_whitespace();
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    }

    /// Waits until the agent has synced with `frontends` frontends programmed, after generation
    /// `after`. Panics with the agent's log on timeout or exit.
    pub fn wait_frontends(&mut self, frontends: usize, after: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((generation, n)) = self.status()
                && generation > after
                && n == frontends
            {
                return generation;
            }
            if let Some(p) = self.proc.as_mut()
                && let Ok(Some(status)) = p.child.try_wait()
            {
                panic!("berth-agent exited with {status}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "agent did not reach {frontends} frontends (status {:?}); log:\n{}",
                self.status(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}
