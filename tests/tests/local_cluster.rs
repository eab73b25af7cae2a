//! The README's first command end to end: `berth-cluster up` (what `cargo xtask up` runs) leaves a
//! cluster running with its kubeconfig and env file, the real kubectl reaches it from the host, the
//! demo runs on it without a failed request, `up` twice is an error, and `down` leaves nothing behind.

use std::{path::Path, process::Command};

use berth_tests::workspace_bin;

fn cluster(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(workspace_bin("berth-cluster"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("berth-cluster")
}

fn leftovers() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("btup-"))
        .map(str::to_string)
        .collect()
}

#[test]
fn up_demo_and_down() {
    let dir = std::env::temp_dir().join("berth-local-cluster-test");
    // A run that crashed earlier: start clean.
    let _ = cluster(&dir, &["down"]);

    let up = cluster(&dir, &["up", "--nodes", "2"]);
    assert!(up.status.success(), "up: {}", String::from_utf8_lossy(&up.stderr));
    let env = std::fs::read_to_string(dir.join("env")).expect("env file");
    for key in [
        "KUBECONFIG=",
        "REGISTRY=192.168.70.100:5000",
        "NODE_IPS=",
        "CLIENT_NETNS=",
    ] {
        assert!(env.lines().any(|l| l.starts_with(key)), "{key} in {env}");
    }
    let nodes = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(dir.join("admin.kubeconfig"))
        .args(["get", "nodes", "-o", "name"])
        .output()
        .expect("kubectl");
    assert_eq!(
        String::from_utf8_lossy(&nodes.stdout).lines().count(),
        2,
        "kubectl from the host: {}",
        String::from_utf8_lossy(&nodes.stderr)
    );
    let again = cluster(&dir, &["up"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already up"));

    let demo = cluster(&dir, &["demo"]);
    let shown = String::from_utf8_lossy(&demo.stdout);
    assert!(
        demo.status.success(),
        "demo: {shown}{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    assert!(
        shown.contains("hello from demo-") && shown.contains(" 0 failed"),
        "{shown}"
    );

    let down = cluster(&dir, &["down"]);
    assert!(
        down.status.success(),
        "down: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(leftovers().is_empty(), "{:?}", leftovers());
    assert!(!dir.exists());
}
