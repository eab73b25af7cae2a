//! A node joins the way `kubeadm join --token` has a kubelet do it, with the real `kubectl` and
//! `openssl`: with the bootstrap token it reads `kube-public/cluster-info` and submits a
//! CertificateSigningRequest for `system:node:<name>`; the control plane approves and signs it; with
//! that certificate the node may register and update its own Node, renew its Lease and report the
//! status of pods bound to it — and nothing else.

mod common;

use std::process::Command;

use common::{Server, temp_dir};

struct As<'a> {
    server: &'a Server,
    auth: Vec<String>,
}

impl As<'_> {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        use std::io::Write;
        let dir = &self.server.dir;
        let mut cmd = Command::new("kubectl");
        cmd.env("HOME", dir.join("home"))
            .args(["--server", &format!("https://127.0.0.1:{}", self.server.port)])
            .arg("--certificate-authority")
            .arg(dir.join("ca.crt"))
            .args(&self.auth)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl");
        if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
            input.write_all(text.as_bytes()).expect("stdin");
        }
        let out = child.wait_with_output().expect("kubectl");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out) = self.run(args, stdin);
        assert!(ok, "kubectl {args:?}: {out}");
        out
    }

    fn forbidden(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out) = self.run(args, stdin);
        assert!(
            !ok && out.contains("Forbidden"),
            "kubectl {args:?} should be forbidden: {out}"
        );
        out
    }
}

#[test]
fn a_node_joins_with_the_bootstrap_token_and_may_change_only_what_is_its_own() {
    let dir = temp_dir("join");
    let server = Server::start_with(&dir, &["--hollow-nodes", "1"]);
    let token = std::fs::read_to_string(dir.join("join-token")).expect("join-token");
    let bootstrap = As {
        server: &server,
        auth: vec!["--token".into(), token.trim().into()],
    };
    let info = bootstrap.ok(
        &[
            "get",
            "configmap",
            "-n",
            "kube-public",
            "cluster-info",
            "-o",
            "jsonpath={.data.kubeconfig}",
        ],
        None,
    );
    assert!(
        info.contains("certificate-authority-data") && info.contains(&format!("127.0.0.1:{}", server.port)),
        "{info}"
    );
    bootstrap.forbidden(&["get", "namespaces"], None);
    bootstrap.forbidden(&["get", "secrets", "-n", "kube-system"], None);
    // A wrong token is no user at all.
    let stranger = As {
        server: &server,
        auth: vec!["--token".into(), "abcdef.0123456789abcdef".into()],
    };
    let (ok, out) = stranger.run(&["get", "csr"], None);
    assert!(!ok && out.contains("Unauthorized"), "{out}");

    // The node's key and request, as kubelet makes them.
    let key = dir.join("node.key");
    let request = common::certificate_request(&key, "/O=system:nodes/CN=system:node:worker-1");
    let manifest = format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: node-csr-worker-1\nspec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client-kubelet\n  usages: [digital signature, client auth]\n"
    );
    bootstrap.ok(&["create", "-f", "-"], Some(&manifest));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let certificate = loop {
        let b64 = bootstrap.ok(
            &[
                "get",
                "csr",
                "node-csr-worker-1",
                "-o",
                "jsonpath={.status.certificate}",
            ],
            None,
        );
        if !b64.trim().is_empty() {
            break base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.trim())
                .expect("base64 certificate");
        }
        assert!(std::time::Instant::now() < deadline, "the request was not signed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let crt = dir.join("node.crt");
    std::fs::write(&crt, certificate).expect("write certificate");
    let listed = server.ok(&["get", "csr"]);
    assert!(
        listed.contains("Approved,Issued") && listed.contains("system:bootstrap:"),
        "{listed}"
    );

    let node = As {
        server: &server,
        auth: vec![
            format!("--client-certificate={}", crt.display()),
            format!("--client-key={}", key.display()),
        ],
    };
    // Its own Node, status and Lease: yes.
    node.ok(
        &["apply", "--validate=false", "-f", "-"],
        Some("apiVersion: v1\nkind: Node\nmetadata:\n  name: worker-1\n  labels: {role: worker}\n"),
    );
    node.ok(&["label", "node", "worker-1", "zone=a"], None);
    // NodeRestriction: no trusted labels of its own making, and the taints an administrator set stay.
    let out = node.forbidden(
        &[
            "label",
            "node",
            "worker-1",
            "node-role.kubernetes.io/control-plane=",
        ],
        None,
    );
    assert!(out.contains("not allowed to modify labels"), "{out}");
    node.forbidden(
        &[
            "label",
            "node",
            "worker-1",
            "node-restriction.kubernetes.io/pci=true",
        ],
        None,
    );
    server.ok(&["taint", "node", "worker-1", "dedicated=db:NoSchedule"]);
    let out = node.forbidden(&["taint", "node", "worker-1", "dedicated-"], None);
    assert!(out.contains("not allowed to modify taints"), "{out}");
    server.ok(&["taint", "node", "worker-1", "dedicated-"]);
    assert!(
        server
            .jsonpath("node", "worker-1", "default", "{.spec.podCIDR}")
            .starts_with("10.244.")
    );
    node.ok(&["apply", "--validate=false", "-f", "-"], Some("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: worker-1\n  namespace: kube-node-lease\nspec:\n  holderIdentity: worker-1\n  leaseDurationSeconds: 40\n"));
    // Reading what it runs and routes: yes (but not Secrets no pod of its own uses, other kinds,
    // or another node's pods' logs).
    node.ok(&["get", "pods", "-A"], None);
    node.ok(&["get", "services,endpointslices,nodes", "-A"], None);
    node.forbidden(&["get", "secrets", "-A"], None);
    node.forbidden(&["get", "deployments", "-A"], None);
    node.forbidden(&["get", "serviceaccounts", "-A"], None);
    // Another node, another node's lease, anything else: no.
    let out = node.forbidden(&["label", "node", "hollow-0", "zone=b"], None);
    assert!(out.contains("cannot modify node 'hollow-0'"), "{out}");
    node.forbidden(&["apply", "--validate=false", "-f", "-"], Some("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: hollow-0\n  namespace: kube-node-lease\nspec:\n  holderIdentity: worker-1\n"));
    node.forbidden(
        &["apply", "--validate=false", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: sneaky\n"),
    );
    node.forbidden(&["delete", "node", "worker-1"], None);

    // Pods: the status of its own, yes; of another node's, no.
    server.apply("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db-password\nstringData:\n  p: s3cret\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: mine\nspec:\n  nodeName: worker-1\n  containers:\n  - name: c\n    image: busybox\n    env:\n    - name: P\n      valueFrom:\n        secretKeyRef: {name: db-password, key: p}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: theirs\nspec:\n  nodeName: hollow-0\n  containers:\n  - {name: c, image: busybox}\n");
    let status = r#"{"status":{"phase":"Running","podIP":"10.244.9.9"}}"#;
    node.ok(
        &[
            "patch",
            "pod",
            "mine",
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ],
        None,
    );
    assert_eq!(
        server.jsonpath("pod", "mine", "default", "{.status.podIP}"),
        "10.244.9.9"
    );
    node.forbidden(
        &[
            "patch",
            "pod",
            "theirs",
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ],
        None,
    );
    node.forbidden(
        &[
            "patch",
            "pod",
            "mine",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"x":"y"}}}"#,
        ],
        None,
    );
    // The Secret its pod uses, yes.
    node.ok(&["get", "secret", "db-password"], None);
    // No pod's logs through the API server, another node's or its own.
    let out = node.forbidden(&["logs", "theirs"], None);
    assert!(out.contains("pods/log"), "{out}");
    node.forbidden(&["logs", "mine"], None);
    // The graph behind that answer follows pods as they come and go.
    server.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: later\nspec:\n  nodeName: worker-1\n  containers:\n  - name: c\n    image: busybox\n    envFrom: [{configMapRef: {name: settings}}]\n");
    node.ok(&["get", "configmap", "settings"], None);
    server.ok(&["delete", "pod", "mine", "later", "--grace-period=0", "--force"]);
    node.forbidden(&["get", "secret", "db-password"], None);
    node.forbidden(&["get", "configmap", "settings"], None);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
