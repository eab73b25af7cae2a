//! One container instance ("attempt") from its parts: the image's layers under an overlay root, the
//! spec written as the bundle's `config.json`, the shim started; its state read back from runc and the
//! shim's exit record; stopped and removed. Blocking calls: the agent runs them off its async threads.
//!
//! An instance lives in its own directory (`POD_DIR/containers/NAME/ATTEMPT/`), which is all an agent
//! needs to find it again after a restart.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use thiserror::Error;

use crate::{
    cgroups::CgroupBackend,
    image::{ImageRecord, ImageStore},
    rootfs::{self, RootfsError},
    runc::{OciRuntime, Runc, RuncError},
    shim::{self, ExitRecord, ShimArgs, ShimReport},
    spec::{self, Clamped, ContainerSpec, SpecError},
};

/// Errors of starting or removing a container.
#[derive(Debug, Error)]
pub enum ContainerError {
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Runc(#[from] RuncError),
    /// The image's layers are not in the store.
    #[error("image layers: {0}")]
    Image(String),
    /// A file of the bundle could not be written.
    #[error("container bundle {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// runc or the shim could not start the process (a missing command, a bad working directory):
    /// kubelet's `RunContainerError`.
    #[error("{0}")]
    Start(String),
}

/// One container instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// runc's id (`berth://ID` in the container status).
    pub id: String,
    pub dir: PathBuf,
    /// The log file of this instance.
    pub log: PathBuf,
}

/// What runc and the shim say about an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// Running as this host pid.
    Running { pid: i32 },
    /// The process has ended and the shim is still writing its record (its output being drained):
    /// look again shortly.
    Ending,
    /// Ended, as the shim recorded.
    Exited(ExitRecord),
    /// Neither running nor recorded (the node rebooted, the shim was killed): gone, exit unknown.
    Lost,
}

/// Runs container instances with runc through the shim.
#[derive(Clone)]
pub struct Engine {
    pub runc: Runc,
    /// The agent's own binary (its `container-shim` mode).
    pub shim_exe: PathBuf,
    /// Where exits are explained (OOM kills).
    pub cgroups: std::sync::Arc<dyn CgroupBackend>,
    /// When the shims rotate container logs.
    pub log_rotation: shim::LogRotation,
}

impl Engine {
    /// Mounts the root, writes the spec and starts the process; returns its pid and what the host
    /// could not grant.
    pub fn start(
        &self,
        instance: &Instance,
        store: &ImageStore,
        image: &ImageRecord,
        mut container: ContainerSpec,
    ) -> Result<(i32, Clamped), ContainerError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ContainerError::Io { path, source }
        };
        std::fs::create_dir_all(&instance.dir).map_err(io(&instance.dir))?;
        if let Some(parent) = instance.log.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let lower = store
            .lower_dirs(image)
            .map_err(|e| ContainerError::Image(e.to_string()))?;
        container.rootfs = rootfs::mount(&instance.dir, &lower)?;
        let (built, clamped) = spec::build(&container)?;
        let config = instance.dir.join("config.json");
        built
            .save(&config)
            .map_err(|e| ContainerError::Start(format!("writing {}: {e}", config.display())))?;
        // A previous try of the same instance (the agent died between create and start).
        self.runc.delete(&instance.id, true)?;
        let args = ShimArgs {
            id: instance.id.clone(),
            bundle: instance.dir.clone(),
            runc: self.runc.binary.clone(),
            runc_root: self.runc.root.clone(),
            log: instance.log.clone(),
            exit_file: shim::exit_file(&instance.dir),
            rotation: self.log_rotation,
        };
        match shim::spawn(&self.shim_exe, &args, Duration::from_secs(60)).map_err(ContainerError::Start)? {
            ShimReport::Started { pid } => Ok((pid, clamped)),
            ShimReport::Failed { message } => Err(ContainerError::Start(message)),
        }
    }

    /// The instance's state now.
    pub fn state(&self, instance: &Instance) -> InstanceState {
        if let Some(exit) = self.exit(instance) {
            return InstanceState::Exited(exit);
        }
        match self.runc.state(&instance.id) {
            Ok(Some(s)) if s.status == "running" || s.status == "created" || s.status == "paused" => {
                InstanceState::Running { pid: s.pid }
            }
            // Stopped but the shim has not written the record yet: look again shortly.
            Ok(Some(s)) if s.status == "stopped" => match self.exit(instance) {
                Some(exit) => InstanceState::Exited(exit),
                None => InstanceState::Ending,
            },
            _ => match self.exit(instance) {
                Some(exit) => InstanceState::Exited(exit),
                None => InstanceState::Lost,
            },
        }
    }

    /// The shim's exit record, with whether the kernel's OOM killer ended it (a SIGKILL and an OOM kill
    /// counted in the container's cgroup, which runc keeps until the instance is released).
    fn exit(&self, instance: &Instance) -> Option<ExitRecord> {
        let mut exit = read_exit(&instance.dir)?;
        if exit.signal == Some(libc::SIGKILL) {
            let cgroup = std::fs::read(instance.dir.join("config.json"))
                .ok()
                .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
                .and_then(|v| v["linux"]["cgroupsPath"].as_str().map(str::to_string));
            exit.oom_killed = cgroup
                .and_then(|p| self.cgroups.oom_kills(&p))
                .is_some_and(|n| n > 0);
        }
        Some(exit)
    }

    /// Runs `argv` inside the instance (`runc exec`, with the container's user, environment and working
    /// directory) and returns its exit code; killed after `timeout`.
    pub fn exec(
        &self,
        instance: &Instance,
        argv: &[String],
        timeout: Duration,
    ) -> Result<i32, ContainerError> {
        let mut child = std::process::Command::new(&self.runc.binary)
            .arg("--root")
            .arg(&self.runc.root)
            .arg("exec")
            .arg(&instance.id)
            .args(argv)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| ContainerError::Start(format!("runc exec: {e}")))?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| ContainerError::Start(format!("runc exec: {e}")))?
            {
                return Ok(status.code().unwrap_or(128));
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ContainerError::Start(format!(
                    "command timed out after {}s",
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` to the instance's processes.
    pub fn signal(&self, instance: &Instance, signal: i32) -> Result<(), ContainerError> {
        Ok(self.runc.kill(&instance.id, signal, true)?)
    }

    /// Forgets the instance in runc and unmounts its root; its exit record and log stay.
    pub fn release(&self, instance: &Instance) -> Result<(), ContainerError> {
        self.runc.delete(&instance.id, true)?;
        let root = rootfs::rootfs_path(&instance.dir);
        if rootfs::is_mounted(&instance.dir) {
            rootfs::unmount(&instance.dir)?;
        }
        for sub in ["upper", "work"] {
            let _ = std::fs::remove_dir_all(instance.dir.join(sub));
        }
        let _ = std::fs::remove_dir(root);
        Ok(())
    }
}

/// The shim's exit record of the instance in `dir`, if written.
pub fn read_exit(dir: &Path) -> Option<ExitRecord> {
    std::fs::read(shim::exit_file(dir))
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
}
