//! Containers run for real: an image pulled from a real registry, its layers under an overlay root,
//! a spec written with oci-spec, runc started by berth's shim, in a pod sandbox of pinned namespaces,
//! output in the CRI log format, the exit recorded.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use berth_runtime::{
    image::{ImageRecord, ImageStore, Puller, RegistryAuth},
    rootfs,
    runc::{OciRuntime, Runc},
    sandbox::Sandbox,
    shim::{self, ExitRecord, ShimArgs, ShimReport},
    spec::{self, ContainerSpec, SharedNamespaces},
};
use berth_tests::{
    registry::{Format, ImageSpec, Registry, build_image, push},
    testbed::TestBed,
    workspace_bin,
};

struct Node {
    bed: TestBed,
    store: Arc<ImageStore>,
    image: ImageRecord,
    runc: Runc,
    _registry: Registry,
}

fn node(name: &str) -> Node {
    let bed = TestBed::new(name);
    let scratch = bed.scratch().to_path_buf();
    let registry = Registry::on_loopback(&scratch.join("registry")).expect("registry");
    let addr = registry.addr.to_string();
    let layout = scratch.join("oci");
    build_image(&layout, &ImageSpec::busybox("1.36")).expect("image");
    push(
        &layout,
        "1.36",
        &format!("{addr}/busybox:1.36"),
        Format::Oci,
        None,
    )
    .expect("push");
    let store = Arc::new(ImageStore::open(&scratch.join("images")).expect("store"));
    let puller = Puller::new(Arc::clone(&store), std::slice::from_ref(&addr));
    let image = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio")
        .block_on(puller.pull(&format!("{addr}/busybox:1.36"), &RegistryAuth::Anonymous))
        .expect("pull")
        .image;
    let runc = Runc::new(&scratch.join("runc"));
    Node {
        bed,
        store,
        image,
        runc,
        _registry: registry,
    }
}

/// Runs `args` in a container of `sandbox`; returns the shim's report and the container's directory.
fn run_container(node: &Node, sandbox: &Sandbox, id: &str, args: &[&str]) -> (ShimReport, PathBuf) {
    let dir = node.bed.scratch().join("containers").join(id);
    std::fs::create_dir_all(&dir).expect("container dir");
    let lower = node.store.lower_dirs(&node.image).expect("layers");
    let root = rootfs::mount(&dir, &lower).expect("overlay");
    let container = ContainerSpec {
        rootfs: root,
        args: args.iter().map(|a| a.to_string()).collect(),
        env: node.image.config.env.clone(),
        cwd: "/".into(),
        namespaces: SharedNamespaces {
            network: sandbox.net(),
            ipc: Some(sandbox.ipc()),
            uts: sandbox.uts(),
            pid: None,
            host_network: false,
        },
        cgroups_path: format!("{}/{id}", node.bed.cgroup_parent()),
        ..Default::default()
    };
    let (built, _) = spec::build(&container).expect("spec");
    built.save(dir.join("config.json")).expect("config.json");
    let args = ShimArgs {
        id: id.into(),
        bundle: dir.clone(),
        runc: PathBuf::from("runc"),
        runc_root: node.runc.root.clone(),
        log: dir.join("0.log"),
        exit_file: shim::exit_file(&dir),
        rotation: shim::LogRotation::default(),
    };
    let report = shim::spawn(&workspace_bin("berth-agent"), &args, Duration::from_secs(20)).expect("shim");
    (report, dir)
}

fn wait_exit(dir: &Path, timeout: Duration) -> ExitRecord {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read(shim::exit_file(dir)) {
            return serde_json::from_slice(&text).expect("exit.json");
        }
        assert!(Instant::now() < deadline, "the container did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("0.log"))
        .unwrap_or_default()
        .lines()
        // Drop the timestamp: `STREAM TAG TEXT`.
        .map(|l| {
            l.split_once(' ')
                .map_or(String::new(), |(_, rest)| rest.to_string())
        })
        .collect()
}

#[test]
fn a_container_runs_in_its_pod_sandbox_logs_and_exits_with_its_code() {
    let node = node("ctr");
    let sandbox = Sandbox::create(&node.bed.scratch().join("pods/p1"), "web-0", false).expect("sandbox");
    assert!(sandbox.is_complete());
    let (report, dir) = run_container(
        &node,
        &sandbox,
        "c1",
        &[
            "sh",
            "-c",
            "echo hello; echo oops >&2; hostname; ls /bin/busybox; exit 3",
        ],
    );
    assert!(
        matches!(report, ShimReport::Started { pid } if pid > 0),
        "{report:?}"
    );
    let exit = wait_exit(&dir, Duration::from_secs(10));
    assert_eq!(exit.exit_code, 3);
    assert_eq!(exit.signal, None);
    let lines = log_lines(&dir);
    for want in [
        "stdout F hello",
        "stderr F oops",
        "stdout F web-0",
        "stdout F /bin/busybox",
    ] {
        assert!(lines.iter().any(|l| l == want), "{want:?} in {lines:?}");
    }
    // Written to its own upper layer, never to the shared image layer.
    node.runc.delete("c1", true).expect("delete");
    rootfs::remove(&dir).expect("remove root");
    sandbox.remove().expect("remove sandbox");
    assert!(!sandbox.dir().exists());
}

#[test]
fn a_long_running_container_is_killed_by_signal_and_reported_as_such() {
    let node = node("ctrkill");
    let sandbox = Sandbox::create(&node.bed.scratch().join("pods/p1"), "sleeper", false).expect("sandbox");
    let (report, dir) = run_container(&node, &sandbox, "c2", &["sleep", "600"]);
    let ShimReport::Started { pid } = report else {
        panic!("{report:?}");
    };
    let state = node.runc.state("c2").expect("state").expect("known");
    assert_eq!(state.status, "running");
    assert_eq!(state.pid, pid);
    // Two containers of one pod share its network namespace: the second sees the first's loopback.
    node.runc.kill("c2", libc::SIGKILL, false).expect("kill");
    let exit = wait_exit(&dir, Duration::from_secs(10));
    assert_eq!(exit.exit_code, 137);
    assert_eq!(exit.signal, Some(libc::SIGKILL));
    node.runc.delete("c2", false).expect("delete");
    assert_eq!(node.runc.state("c2").expect("state"), None);
    rootfs::remove(&dir).expect("remove root");
    sandbox.remove().expect("remove sandbox");
}

#[test]
fn a_command_that_does_not_exist_is_a_clear_start_failure() {
    let node = node("ctrbad");
    let sandbox = Sandbox::create(&node.bed.scratch().join("pods/p1"), "bad", false).expect("sandbox");
    let (report, dir) = run_container(&node, &sandbox, "c3", &["/no/such/program"]);
    let ShimReport::Failed { message } = report else {
        panic!("{report:?}");
    };
    assert!(message.contains("/no/such/program"), "{message}");
    assert_eq!(
        node.runc.state("c3").expect("state"),
        None,
        "nothing left in runc"
    );
    rootfs::remove(&dir).expect("remove root");
    sandbox.remove().expect("remove sandbox");
}
