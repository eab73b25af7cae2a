//! The local cluster behind `cargo xtask up`, `down` and `demo`: berth's control plane, a registry and
//! N nodes (network namespaces on one underlay bridge, each with an agent joined by token), left
//! running in the background with everything a user needs written under `target/berth-cluster/`:
//!
//! - `admin.kubeconfig`: the real kubectl works from the host (the API is forwarded from
//!   `127.0.0.1:6443` into the control plane's namespace, so nothing leaves the machine);
//! - `env`: `KUBECONFIG=`, `REGISTRY=` (as the nodes reach it), `NODE_IPS=`, `CLIENT_NETNS=` (a
//!   namespace outside the cluster that reaches the nodes' addresses);
//! - `pids`, `state/`: what `down` stops and removes.

use std::{
    io::Write,
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use berth_tests::{
    clusterworld::{CP_IP, CP_PORT, ClusterWorld, REGISTRY_PORT},
    registry::{Format, ImageSpec, agent_image, build_image, push},
    testbed::{Netns, TestBed},
};
use clap::{Parser, Subcommand};

/// The test-bed name of the local cluster: its namespaces are `btup-*`.
const BED: &str = "up";
const CLIENT_IP: &str = "192.168.70.250";
const API_FORWARD: &str = "127.0.0.1:6443";

#[derive(Parser)]
#[command(name = "berth-cluster", about = "berth's local cluster")]
struct Cli {
    /// Where the cluster's files live.
    #[arg(long, default_value = "target/berth-cluster")]
    dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the cluster and leave it running.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: u8,
    },
    /// Stop the cluster and remove everything it made.
    Down,
    /// The demo workload on the running cluster.
    Demo,
    /// berth's agent as an OCI image (for deploy/kube-proxy-replacement.yaml), into an OCI layout.
    Image {
        /// The OCI layout directory (tags accumulate).
        #[arg(long, default_value = "target/berth-image")]
        layout: PathBuf,
        /// The image's tag in the layout.
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        tag: String,
        /// Also push it here (`HOST[:PORT]/REPOSITORY:TAG`, with `skopeo`; registry credentials as
        /// `skopeo login` left them).
        #[arg(long)]
        push: Option<String>,
        /// Push over plain HTTP / without verifying the registry's certificate.
        #[arg(long)]
        insecure: bool,
    },
    /// (internal) Forward connections from LISTEN into namespace NETNS to TO.
    #[command(hide = true)]
    Forward {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        netns: String,
        #[arg(long)]
        to: SocketAddr,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = absolute(&cli.dir).and_then(|dir| match cli.command {
        Cmd::Up { nodes } => up(&dir, nodes),
        Cmd::Down => down(&dir),
        Cmd::Demo => demo(&dir),
        Cmd::Image {
            layout,
            tag,
            push,
            insecure,
        } => image(&layout, &tag, push.as_deref(), insecure),
        Cmd::Forward { listen, netns, to } => forward(listen, &netns, to),
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-cluster: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `berth-cluster image`: builds the agent's image into `layout` and pushes it if asked.
fn image(layout: &Path, tag: &str, dest: Option<&str>, insecure: bool) -> Result<()> {
    step(
        &format!("berth-agent image {tag} in {}", layout.display()),
        || agent_image(layout, tag).context("building the agent image"),
    )?;
    if let Some(dest) = dest {
        step(&format!("push to {dest}"), || {
            let mut cmd = Command::new("skopeo");
            cmd.args(["copy", "--quiet"]);
            if insecure {
                cmd.arg("--dest-tls-verify=false");
            }
            let out = cmd
                .arg(format!("oci:{}:{tag}", layout.display()))
                .arg(format!("docker://{dest}"))
                .output()
                .context("running skopeo")?;
            if !out.status.success() {
                bail!("skopeo copy: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
            Ok(())
        })?;
    }
    Ok(())
}

fn absolute(dir: &Path) -> Result<PathBuf> {
    Ok(std::env::current_dir()?.join(dir))
}

fn step<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    print!("  {what:<52}");
    let _ = std::io::stdout().flush();
    let started = Instant::now();
    let out = f();
    match &out {
        Ok(_) => println!("ok ({:.1} s)", started.elapsed().as_secs_f64()),
        Err(_) => println!("failed"),
    }
    out
}

fn cluster_is_up(dir: &Path) -> bool {
    dir.join("pids").exists()
        && Command::new("ip")
            .args(["netns", "list"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("bt{BED}-cp")))
}

fn up(dir: &Path, nodes: u8) -> Result<()> {
    if cluster_is_up(dir) {
        bail!(
            "a cluster is already up ({}): use it (`set -a; . {}/env; set +a`), or remove it with `cargo xtask down`",
            dir.display(),
            dir.display()
        );
    }
    if !(1..=20).contains(&nodes) {
        bail!("--nodes must be between 1 and 20");
    }
    println!("berth: starting a local cluster of {nodes} nodes");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let bed = TestBed::with_scratch(BED, dir.join("state"));
    let mut world = step("control plane (embedded store), underlay bridge", || {
        ClusterWorld::in_bed(bed, 0, 0, &[], 1500, &[]).map_err(|e| anyhow!("{e}"))
    })?;
    let (registry, prefix) = step(
        "registry with busybox:1.36 (from Debian's busybox-static)",
        || world.start_registry().map_err(|e| anyhow!("{e}")),
    )?;
    step("berth's demo image (demo:1)", || {
        let layout = world.bed.scratch().join("oci");
        build_image(&layout, &demo_image()).map_err(|e| anyhow!("{e}"))?;
        push(
            &layout,
            "1",
            &format!("{prefix}/demo:1"),
            Format::Oci,
            Some(&world.cp.ns),
        )
        .map_err(|e| anyhow!("{e}"))
    })?;
    for i in 1..=nodes {
        step(&format!("node{i}: namespace, agent joined by token"), || {
            world.add_node(i).map_err(|e| anyhow!("{e}"))?;
            world.join(i, &[]).map_err(|e| anyhow!("{e}"))
        })?;
    }
    let client = step("client namespace outside the cluster", || {
        let client = world.bed.netns("client").map_err(|e| anyhow!("{e}"))?;
        world
            .bed
            .veth(&client, "eth0", &world.underlay, "client0")
            .map_err(|e| anyhow!("{e}"))?;
        world
            .underlay
            .ip(&["link", "set", "client0", "master", "br0"])
            .map_err(|e| anyhow!("{e}"))?;
        client
            .ip(&["addr", "add", &format!("{CLIENT_IP}/24"), "dev", "eth0"])
            .map_err(|e| anyhow!("{e}"))?;
        Ok(client)
    })?;
    let forwarder = step(&format!("the API on {API_FORWARD} for kubectl"), || {
        let log = std::fs::File::create(dir.join("forward.log"))?;
        let child = Command::new(std::env::current_exe()?)
            .args([
                "forward",
                "--listen",
                API_FORWARD,
                "--netns",
                &world.cp.ns.name,
                "--to",
            ])
            .arg(format!("{CP_IP}:{CP_PORT}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting the API forwarder")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(API_FORWARD).is_err() {
            if Instant::now() > deadline {
                bail!("the forwarder did not listen on {API_FORWARD} (port taken?)");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(child.id())
    })?;

    // What users need, and what `down` stops.
    let kubeconfig = std::fs::read_to_string(world.cp.dir.join("admin.kubeconfig"))?.replace(
        &format!("https://{CP_IP}:{CP_PORT}"),
        &format!("https://{API_FORWARD}"),
    );
    std::fs::write(dir.join("admin.kubeconfig"), kubeconfig)?;
    let node_ips: Vec<String> = world.nodes.iter().map(|n| n.underlay.to_string()).collect();
    std::fs::write(
        dir.join("env"),
        format!(
            "KUBECONFIG={}\nREGISTRY={CP_IP}:{REGISTRY_PORT}\nNODE_IPS=\"{}\"\nCLIENT_NETNS={}\n",
            dir.join("admin.kubeconfig").display(),
            node_ips.join(" "),
            client.name
        ),
    )?;
    let mut pids: Vec<u32> = vec![forwarder, registry.pid()];
    pids.extend(world.cp.pid());
    pids.extend(
        world
            .nodes
            .iter()
            .filter_map(|n| n.agent.as_ref().and_then(|a| a.pid())),
    );
    std::fs::write(
        dir.join("pids"),
        pids.iter().map(|p| format!("{p}\n")).collect::<String>(),
    )?;
    // Left running: the processes are not killed and the namespaces not removed when this ends.
    std::mem::forget(registry);
    std::mem::forget(world);
    println!(
        "\nThe cluster is up. Try:\n  set -a; . {}/env; set +a\n  kubectl get nodes -o wide\n  cargo xtask demo\nand remove it with `cargo xtask down`.",
        dir.display()
    );
    Ok(())
}

fn down(dir: &Path) -> Result<()> {
    let pids = std::fs::read_to_string(dir.join("pids")).unwrap_or_default();
    for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        // SAFETY: kill(2) on processes this cluster started (their pids were recorded by `up`).
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    std::thread::sleep(Duration::from_millis(500));
    for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    // The bed's own cleanup: namespaces of the prefix, pins, cgroups (with the containers in them),
    // mounts and files under the state directory.
    drop(TestBed::with_scratch(BED, dir.join("state")));
    std::fs::remove_dir_all(dir).or_else(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    println!("berth: the local cluster is removed");
    Ok(())
}

/// Forwards every connection accepted on `listen` to `to`, connecting from inside namespace `netns`.
fn forward(listen: SocketAddr, netns: &str, to: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let ns_path = format!("/var/run/netns/{netns}");
    for conn in listener.incoming() {
        let Ok(client) = conn else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let ns_path = ns_path.clone();
        std::thread::spawn(move || {
            // The upstream socket is made in the namespace; this thread only.
            let Ok(ns) = std::fs::File::open(&ns_path) else {
                return;
            };
            // SAFETY: setns on this thread with a namespace file descriptor.
            if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) } != 0 {
                return;
            }
            let Ok(upstream) = TcpStream::connect_timeout(&to, Duration::from_secs(5)) else {
                return;
            };
            let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
                return;
            };
            let (mut client, mut upstream) = (client, upstream);
            let one = std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut u2);
                let _ = u2.shutdown(std::net::Shutdown::Write);
            });
            let _ = std::io::copy(&mut upstream, &mut client);
            let _ = client.shutdown(std::net::Shutdown::Write);
            let _ = one.join();
        });
    }
    Ok(())
}

/// berth's demo image: busybox's httpd serving a page that names the pod and its node.
fn demo_image() -> ImageSpec {
    let mut spec = ImageSpec::busybox("1");
    spec.files.push((
        "demo/serve.sh".into(),
        "#!/bin/sh\nmkdir -p /www\necho \"hello from $POD_NAME on $NODE_NAME ($POD_IP)\" > /www/index.html\necho \"serving on :8080 as $POD_NAME\"\nexec httpd -f -vv -p 8080 -h /www\n".into(),
        0o755,
    ));
    spec.entrypoint = vec!["/demo/serve.sh".into()];
    spec.cmd = Vec::new();
    spec
}

fn kubectl(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(dir.join("admin.kubeconfig"))
        .args(args)
        .output()
        .context("running kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn kubectl_apply(dir: &Path, yaml: &str) -> Result<()> {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(dir.join("admin.kubeconfig"))
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(yaml.as_bytes())?;
    if !child.wait()?.success() {
        bail!("kubectl apply failed");
    }
    Ok(())
}

fn env_value(dir: &Path, key: &str) -> Result<String> {
    let env = std::fs::read_to_string(dir.join("env")).context("no cluster: run `cargo xtask up`")?;
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim_matches('"').to_string())
        .ok_or_else(|| anyhow!("{key} missing from the env file"))
}

/// One HTTP GET from the client namespace; the body, or None.
fn get(client: &Netns, url: &str) -> Option<String> {
    let out = client
        .command(Path::new("curl"))
        .args(["-s", "-m", "2", url])
        .output()
        .ok()?;
    let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !body.is_empty()).then_some(body)
}

fn demo(dir: &Path) -> Result<()> {
    // The README's first command: a cluster is started when none is up (or a crashed one left files).
    if !cluster_is_up(dir) {
        up(dir, 3)?;
    }
    let registry = env_value(dir, "REGISTRY")?;
    let node_ips: Vec<String> = env_value(dir, "NODE_IPS")?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let client = Netns {
        name: env_value(dir, "CLIENT_NETNS")?,
    };
    println!("berth demo: a Deployment from the local registry behind a NodePort Service\n");
    print!("{}", kubectl(dir, &["get", "nodes", "-o", "wide"])?);
    let replicas = node_ips.len().max(2) * 2;
    kubectl_apply(dir, &demo_manifest(&registry, replicas))?;
    step(&format!("{replicas} pods Running and Ready"), || {
        wait_demo_ready(dir, replicas)
    })?;
    print!(
        "\n{}",
        kubectl(dir, &["get", "pods", "-l", "app=demo", "-o", "wide"])?
    );

    // Requests from outside the cluster to every node's NodePort.
    println!(
        "\nrequests from {} to NODE:30080, round robin over the nodes:",
        client.name
    );
    let mut answers: std::collections::BTreeMap<String, usize> = Default::default();
    let mut failed = 0;
    for i in 0..60 {
        let ip = &node_ips[i % node_ips.len()];
        match get(&client, &format!("http://{ip}:30080/")) {
            Some(body) => *answers.entry(body).or_default() += 1,
            None => failed += 1,
        }
    }
    for (who, n) in &answers {
        println!("  {n:>3}  {who}");
    }
    println!("  {failed:>3}  failed");

    // A pod killed while requests go on: the Service keeps answering.
    let pods = kubectl(
        dir,
        &[
            "get",
            "pods",
            "-l",
            "app=demo",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    )?;
    println!("\ndeleting pod {pods} while requests keep coming:");
    let url = format!("http://{}:30080/", node_ips[0]);
    let started = Instant::now();
    kubectl(dir, &["delete", "pod", &pods, "--wait=false"])?;
    let (mut ok, mut bad) = (0, 0);
    while started.elapsed() < Duration::from_secs(10) {
        match get(&client, &url) {
            Some(_) => ok += 1,
            None => bad += 1,
        }
    }
    println!("  {ok} requests answered, {bad} failed in 10 s");
    step(&format!("replacement running ({replicas} pods Ready)"), || {
        wait_demo_ready(dir, replicas)
    })?;

    let one = kubectl(
        dir,
        &[
            "get",
            "pods",
            "-l",
            "app=demo",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    )?;
    println!("\nkubectl logs {one} --tail=5:");
    print!("{}", kubectl(dir, &["logs", &one, "--tail=5"])?);
    println!(
        "\nThe cluster stays up: `set -a; . {}/env; set +a; kubectl get pods -o wide`. Remove it with `cargo xtask down`.",
        dir.display()
    );
    if bad > 0 || failed > 0 {
        bail!("{} requests failed", bad + failed);
    }
    Ok(())
}

fn wait_demo_ready(dir: &Path, replicas: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = kubectl(
            dir,
            &[
                "get",
                "pods",
                "-l",
                "app=demo",
                "-o",
                "jsonpath={range .items[*]}{.metadata.deletionTimestamp}/{.status.phase}/{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
            ],
        )?;
        let ready = out.lines().filter(|l| *l == "/Running/True").count();
        let terminating = out.lines().filter(|l| !l.starts_with('/')).count();
        if ready == replicas && terminating == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("pods not ready:\n{out}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn demo_manifest(registry: &str, replicas: usize) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: demo, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: demo}}}}
  template:
    metadata: {{labels: {{app: demo}}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: {registry}/demo:1
        ports: [{{containerPort: 8080}}]
        # Serve on while every node takes the pod out of the Service, then stop.
        lifecycle: {{preStop: {{sleep: {{seconds: 2}}}}}}
        # In the Service only once httpd answers.
        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}
        env:
        - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
        - {{name: NODE_NAME, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
        - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: demo, namespace: default}}
spec:
  type: NodePort
  selector: {{app: demo}}
  ports: [{{port: 80, targetPort: 8080, nodePort: 30080}}]
"#
    )
}
