//! A real image registry and real images, offline: Debian's `docker-registry` (the distribution v2
//! server) on loopback or inside a namespace of the test world, images built with `umoci` from Debian's
//! `busybox-static` and pushed with `skopeo`, in OCI or Docker media types.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::testbed::{BedError, Netns, Proc, run};

/// A running `docker-registry`; killed when dropped.
pub struct Registry {
    /// `host:port` as clients reach it.
    pub addr: SocketAddr,
    proc: Proc,
}

/// Where a registry with a login finds its images and its users.
struct Login {
    data: PathBuf,
    htpasswd: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BedError + '_ {
    move |source| BedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Registry {
    /// Starts a registry on a free loopback port of the root namespace, storing under `dir`.
    pub fn on_loopback(dir: &Path) -> Result<Self, BedError> {
        let probe = TcpListener::bind("127.0.0.1:0").map_err(io(dir))?;
        let addr = probe.local_addr().map_err(io(dir))?;
        drop(probe);
        let registry = Self::spawn(dir, addr, None, None)?;
        registry.wait_ready(None)?;
        Ok(registry)
    }

    /// Starts a registry inside `ns` on `addr` (an address of that namespace), storing under `dir`.
    pub fn in_netns(ns: &Netns, addr: SocketAddr, dir: &Path) -> Result<Self, BedError> {
        let registry = Self::spawn(dir, addr, Some(ns), None)?;
        registry.wait_ready(Some(ns))?;
        Ok(registry)
    }

    /// A second registry inside `ns` on `addr` serving the images of the one that stores under
    /// `shared` (its directory), to clients that log in as `user` with the password whose bcrypt hash
    /// is `bcrypt` (htpasswd authentication); its own files go under `dir`.
    pub fn with_login(
        ns: &Netns,
        addr: SocketAddr,
        dir: &Path,
        shared: &Path,
        user: &str,
        bcrypt: &str,
    ) -> Result<Self, BedError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let htpasswd = dir.join("htpasswd");
        std::fs::write(&htpasswd, format!("{user}:{bcrypt}\n")).map_err(io(&htpasswd))?;
        let login = Login {
            data: shared.join("data"),
            htpasswd,
        };
        let registry = Self::spawn(dir, addr, Some(ns), Some(&login))?;
        registry.wait_ready(Some(ns))?;
        Ok(registry)
    }

    fn spawn(
        dir: &Path,
        addr: SocketAddr,
        ns: Option<&Netns>,
        login: Option<&Login>,
    ) -> Result<Self, BedError> {
        let data = login.map_or_else(|| dir.join("data"), |l| l.data.clone());
        std::fs::create_dir_all(&data).map_err(io(&data))?;
        let config = dir.join("config.yml");
        let auth = login.map_or_else(String::new, |l| {
            format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                l.htpasswd.display()
            )
        });
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\nlog:\n  level: warn\n{auth}",
                data.display()
            ),
        )
        .map_err(io(&config))?;
        let log = dir.join("registry.log");
        let log_file = std::fs::File::create(&log).map_err(io(&log))?;
        let mut cmd = match ns {
            Some(ns) => ns.command(Path::new("docker-registry")),
            None => Command::new("docker-registry"),
        };
        let child = cmd
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|source| BedError::Spawn {
                cmd: "docker-registry serve".into(),
                source,
            })?;
        Ok(Registry {
            addr,
            proc: Proc {
                child,
                what: "docker-registry".into(),
            },
        })
    }

    fn wait_ready(&self, ns: Option<&Netns>) -> Result<(), BedError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let url = format!("http://{}/v2/", self.addr);
        loop {
            // 401: up, and asking for a login.
            let ok = match ns {
                None => matches!(http_status(self.addr, "/v2/"), Some(200 | 401)),
                Some(ns) => ns
                    .command(Path::new("curl"))
                    .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", &url])
                    .stderr(Stdio::null())
                    .output()
                    .is_ok_and(|o| matches!(&o.stdout[..], b"200" | b"401")),
            };
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BedError::Command {
                    cmd: format!("docker-registry on {}", self.addr),
                    stderr: "did not answer /v2/ within 10 s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// Stops the registry now.
    pub fn stop(&mut self) {
        self.proc.kill();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.proc.kill();
    }
}

/// Status code of `GET path` over plain HTTP/1.1 (loopback only).
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// An image to build: busybox-static with its applets, `/etc/passwd` and `/etc/group`, plus `files`.
#[derive(Clone, Debug, Default)]
pub struct ImageSpec {
    pub tag: String,
    /// (path inside the image, content, mode).
    pub files: Vec<(String, String, u32)>,
    /// Files of this machine copied in, with their mode: (path here, path inside the image).
    pub copies: Vec<(PathBuf, String)>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    /// `amd64` unless given.
    pub architecture: Option<String>,
}

impl ImageSpec {
    /// busybox with `sh` as its command, as Docker Hub's busybox image.
    pub fn busybox(tag: &str) -> Self {
        ImageSpec {
            tag: tag.into(),
            cmd: vec!["sh".into()],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            ..Default::default()
        }
    }
}

/// Builds `spec` into the OCI layout `layout` (created if missing; tags accumulate).
pub fn build_image(layout: &Path, spec: &ImageSpec) -> Result<(), BedError> {
    let work = layout.with_extension(format!("build-{}", spec.tag));
    let _ = std::fs::remove_dir_all(&work);
    let layout_arg = |tag: &str| format!("{}:{tag}", layout.display());
    if !layout.join("index.json").exists() {
        run("umoci", &["init", "--layout", &layout.display().to_string()])?;
    }
    run("umoci", &["new", "--image", &layout_arg(&spec.tag)])?;
    let bundle = work.join("bundle");
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &layout_arg(&spec.tag),
            &bundle.display().to_string(),
        ],
    )?;
    let root = bundle.join("rootfs");
    for d in ["bin", "etc", "root", "tmp", "var/www", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).map_err(io(&root))?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).map_err(io(&root))?;
    let busybox = root.join("bin/busybox");
    std::fs::copy("/usr/bin/busybox", &busybox).map_err(io(&busybox))?;
    let applets = run("/usr/bin/busybox", &["--list"])?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            let link = root.join("bin").join(applet);
            std::os::unix::fs::symlink("busybox", &link).map_err(io(&link))?;
        }
    }
    let mut files = vec![
        (
            "etc/passwd".to_string(),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_string(),
            0o644,
        ),
        ("etc/group".into(), "root:x:0:\nnogroup:x:65534:\n".into(), 0o644),
    ];
    files.extend(spec.files.iter().cloned());
    for (path, content, mode) in &files {
        let p = root.join(path.trim_start_matches('/'));
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&p, content).map_err(io(&p))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).map_err(io(&p))?;
    }
    for (from, path) in &spec.copies {
        let p = root.join(path.trim_start_matches('/'));
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        // A copy of the target, not of a symlink (shared libraries are named through links).
        std::fs::copy(from, &p).map_err(io(from))?;
    }
    run(
        "umoci",
        &[
            "repack",
            "--image",
            &layout_arg(&spec.tag),
            &bundle.display().to_string(),
        ],
    )?;
    let mut args: Vec<String> = vec![
        "config".into(),
        "--image".into(),
        layout_arg(&spec.tag),
        "--os".into(),
        "linux".into(),
        "--architecture".into(),
        spec.architecture.clone().unwrap_or_else(|| "amd64".into()),
    ];
    for e in &spec.entrypoint {
        args.extend(["--config.entrypoint".into(), e.clone()]);
    }
    for c in &spec.cmd {
        args.extend(["--config.cmd".into(), c.clone()]);
    }
    for e in &spec.env {
        args.extend(["--config.env".into(), e.clone()]);
    }
    if let Some(w) = &spec.workdir {
        args.extend(["--config.workingdir".into(), w.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("umoci", &args)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// berth's agent as an image (for a DaemonSet): busybox with `berth-agent` (debug info stripped) at
/// `/usr/bin/berth-agent` as its entrypoint, and the shared libraries `ldd` names for it at the same paths as here. Built into
/// `layout` under `tag`.
pub fn agent_image(layout: &Path, tag: &str) -> Result<(), BedError> {
    let binary = crate::workspace_bin("berth-agent");
    let ldd = run("ldd", &[&binary.display().to_string()])?;
    // The release profile keeps debug info (backtraces, profiles): the image carries the binary
    // without it (about a tenth of the size).
    let stripped = layout.with_extension("berth-agent.stripped");
    run(
        "strip",
        &[
            "--strip-debug",
            "-o",
            &stripped.display().to_string(),
            &binary.display().to_string(),
        ],
    )?;
    let mut copies = vec![(stripped.clone(), "/usr/bin/berth-agent".to_string())];
    // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and `/lib64/ld-linux-x86-64.so.2 (0x...)`.
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            copies.push((PathBuf::from(path), path.to_string()));
        }
    }
    let built = build_image(
        layout,
        &ImageSpec {
            tag: tag.into(),
            copies,
            entrypoint: vec!["/usr/bin/berth-agent".into()],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            ..Default::default()
        },
    );
    let _ = std::fs::remove_file(&stripped);
    built
}

/// Media types an image is pushed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Oci,
    /// Docker's schema 2 (`application/vnd.docker.distribution.manifest.v2+json`).
    Docker,
}

/// Pushes tag `tag` of `layout` to `dest` (`host:port/repository:tag`), plain HTTP; inside `ns` when
/// the registry is only reachable there.
pub fn push(
    layout: &Path,
    tag: &str,
    dest: &str,
    format: Format,
    ns: Option<&Netns>,
) -> Result<(), BedError> {
    let mut cmd = match ns {
        Some(ns) => ns.command(Path::new("skopeo")),
        None => Command::new("skopeo"),
    };
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if format == Format::Docker {
        cmd.args(["--format", "v2s2"]);
    }
    let out = cmd
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{dest}"))
        .output()
        .map_err(|source| BedError::Spawn {
            cmd: "skopeo copy".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(BedError::Command {
            cmd: format!("skopeo copy {tag} {dest}"),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        });
    }
    Ok(())
}
