//! Pods for real, through the whole cluster: kubectl applies a Deployment and a Service to berth's
//! control plane, the scheduler binds the pods to nodes whose agents joined by token, the agents pull
//! the image from the cluster's registry and run it with runc, report the pods Running with their
//! addresses, and the Service reaches them through the eBPF load balancer.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use berth_tests::clusterworld::ClusterWorld;
use serde_json::Value;

const WEB_IP: &str = "10.96.50.10";
const WEB_NODE_PORT: u16 = 30080;

fn deployment(image: &str, replicas: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: httpd
        image: {image}
        command: [sh, -c, "mkdir -p /www && hostname > /www/index.html && echo serving && exec httpd -f -vv -p 8080 -h /www"]
        ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  type: NodePort
  clusterIP: {WEB_IP}
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080, nodePort: {WEB_NODE_PORT}}}]
"#
    )
}

/// The pods of the Deployment: (name, phase, podIP, node, ready).
fn web_pods(world: &ClusterWorld) -> Vec<(String, String, String, String, bool)> {
    let Ok(out) = world.cp.kubectl(&["get", "pods", "-l", "app=web", "-o", "json"]) else {
        return Vec::new();
    };
    let list: Value = serde_json::from_str(&out).unwrap_or_default();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (
                s(&p["metadata"]["name"]),
                s(&p["status"]["phase"]),
                s(&p["status"]["podIP"]),
                s(&p["spec"]["nodeName"]),
                ready,
            )
        })
        .collect()
}

fn wait_running(
    world: &ClusterWorld,
    n: usize,
    timeout: Duration,
) -> Vec<(String, String, String, String, bool)> {
    let deadline = Instant::now() + timeout;
    loop {
        let pods = web_pods(world);
        if pods.len() == n && pods.iter().all(|p| p.1 == "Running" && p.4 && !p.2.is_empty()) {
            return pods;
        }
        if Instant::now() > deadline {
            let describe = world
                .cp
                .kubectl(&["get", "pods", "-o", "yaml"])
                .unwrap_or_default();
            panic!("pods not running: {pods:?}\n{describe}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_deployment_runs_on_the_nodes_and_is_reached_through_its_service() {
    let mut world = ClusterWorld::new("pods", 2, 1, &[]).expect("cluster");
    let (_registry, prefix) = world.start_registry().expect("registry");
    world
        .cp
        .apply(&deployment(&format!("{prefix}/busybox:1.36"), 2))
        .expect("apply");
    let pods = wait_running(&world, 2, Duration::from_secs(60));
    let nodes: BTreeSet<&str> = pods.iter().map(|p| p.3.as_str()).collect();
    assert_eq!(nodes.len(), 2, "spread over both nodes: {pods:?}");

    // Through the ClusterIP from a pod-network client on node 1: both pods answer with their names.
    let client = world.pod(1, 0).ns.clone();
    let names: BTreeSet<String> = pods.iter().map(|p| p.0.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = BTreeSet::new();
    while seen != names {
        let out = client
            .command(std::path::Path::new("curl"))
            .args(["-s", "-m", "2", &format!("http://{WEB_IP}/")])
            .output()
            .expect("curl");
        let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !body.is_empty() {
            assert!(
                names.contains(&body),
                "answered by {body:?}, not one of {names:?}"
            );
            seen.insert(body);
        }
        assert!(
            Instant::now() < deadline,
            "not every pod answered: {seen:?} of {names:?}"
        );
    }

    // Through each node's NodePort from outside the cluster (the control plane's machine).
    for i in [1, 2] {
        let url = format!("http://{}:{WEB_NODE_PORT}/", world.node(i).underlay);
        let answered = |w: &ClusterWorld| {
            let out =
                w.cp.ns
                    .command(std::path::Path::new("curl"))
                    .args(["-s", "-m", "2", &url])
                    .output()
                    .expect("curl");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        wait_for("an answer through the NodePort", Duration::from_secs(10), || {
            names.contains(&answered(&world))
        });
    }

    // The agent of node 1 is killed and restarted while requests flow through the ClusterIP: the
    // pinned data plane keeps forwarding, the containers are adopted, not restarted.
    let flowing = {
        let client = client.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            let until = Instant::now() + Duration::from_secs(8);
            while Instant::now() < until && ok + failed.len() < 400 {
                let out = client
                    .command(std::path::Path::new("curl"))
                    .args(["-s", "-m", "2", &format!("http://{WEB_IP}/")])
                    .output();
                match out {
                    Ok(o) if o.status.success() && !o.stdout.is_empty() => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (ok, failed)
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    world.node(1).agent().kill();
    world.node(1).agent().restart().expect("agent restart");
    let (ok, failed) = flowing.join().expect("request loop");
    assert!(
        failed.is_empty() && ok > 20,
        "{ok} requests answered, {} failed across the agent restart: {failed:?}",
        failed.len()
    );
    std::thread::sleep(Duration::from_secs(2));
    let restarted: Vec<(String, Value)> = pods
        .iter()
        .map(|p| {
            let status = pod_json(&world, &p.0)["status"]["containerStatuses"][0].clone();
            (p.0.clone(), status)
        })
        .filter(|(_, s)| s["restartCount"] != 0 || !s["state"]["running"].is_object())
        .collect();
    assert!(
        restarted.is_empty(),
        "containers restarted by the agent restart: {restarted:?}"
    );

    // What happened, as Events kubelet would write.
    let events = world
        .cp
        .kubectl(&["get", "events", "-o", "json"])
        .expect("events");
    let events: Value = serde_json::from_str(&events).expect("events json");
    let reasons: BTreeSet<String> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == pods[0].0.as_str())
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect();
    for r in ["Pulled", "Created", "Started"] {
        assert!(reasons.contains(r), "{r} in {reasons:?}");
    }

    // kubectl logs, through the API server to the node's agent: the container's own output.
    let logs = world.cp.kubectl(&["logs", &pods[0].0]).expect("kubectl logs");
    assert!(logs.starts_with("serving\n"), "{logs}");
    let tail = world
        .cp
        .kubectl(&["logs", &pods[0].0, "--tail=1"])
        .expect("kubectl logs --tail");
    assert_eq!(tail.lines().count(), 1, "{tail}");
    let previous = world.cp.kubectl(&["logs", &pods[0].0, "--previous"]);
    assert!(previous.is_err(), "no previous instance: {previous:?}");

    // kubectl exec through the API server: output, exit codes, stdin, a terminal.
    let pod = pods[0].0.as_str();
    let out = world
        .cp
        .kubectl(&["exec", pod, "--", "sh", "-c", "hostname; echo oops >&2"])
        .expect("kubectl exec");
    assert_eq!(out, format!("{pod}\n"));
    let failed = world
        .cp
        .kubectl(&["exec", pod, "--", "sh", "-c", "exit 3"])
        .expect_err("exit 3 fails");
    assert!(failed.to_string().contains("exit code 3"), "{failed}");
    let echoed = world
        .cp
        .kubectl_stdin(&["exec", "-i", pod, "--", "cat"], Some("through stdin\n"))
        .expect("kubectl exec -i");
    assert_eq!(echoed, "through stdin\n");
    let screen = world
        .cp
        .kubectl_in_terminal(&["exec", "-it", pod, "--", "sh"], "tty; stty size; exit 4\n")
        .expect("kubectl exec -it");
    assert!(screen.contains("/dev/pts/"), "{screen:?}");
    assert!(
        screen.contains("33 101"),
        "the client's terminal size: {screen:?}"
    );
    assert!(screen.contains("exit code 4"), "{screen:?}");

    port_forward(&world, pod);
    service_account_token(&world, &format!("{prefix}/busybox:1.36"));

    // A deleted pod terminates gracefully and is replaced; the Service keeps answering.
    let victim = pods[0].0.clone();
    world
        .cp
        .kubectl(&["delete", "pod", &victim, "--wait=true", "--timeout=30s"])
        .expect("delete pod");
    let after = wait_running(&world, 2, Duration::from_secs(60));
    assert!(after.iter().all(|p| p.0 != victim), "{after:?}");

    // Everything goes: pods, sandboxes, addresses, containers.
    world
        .cp
        .kubectl(&["delete", "deployment", "web"])
        .expect("delete deployment");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !web_pods(&world).is_empty() || pods_left(&mut world) {
        assert!(
            Instant::now() < deadline,
            "pods not cleaned up: {:?}",
            web_pods(&world)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // kubelet's API is served with a certificate of the cluster CA for the node's address (a
    // kubelet-serving CSR the control plane approved for the node's own names), which a client that
    // verifies against the CA accepts.
    let dir = world.cp.dir.clone();
    for i in [1, 2] {
        let url = format!("https://{}:10250/healthz", world.node(i).underlay);
        let curl = |verify: &str| {
            world
                .cp
                .ns
                .command(std::path::Path::new("curl"))
                .args(["-sS", "--max-time", "5", "--cacert", verify, "--cert"])
                .arg(dir.join("apiserver-kubelet-client.crt"))
                .arg("--key")
                .arg(dir.join("apiserver-kubelet-client.key"))
                .arg(&url)
                .output()
                .map(|o| {
                    (
                        String::from_utf8_lossy(&o.stdout).into_owned(),
                        String::from_utf8_lossy(&o.stderr).into_owned(),
                    )
                })
                .unwrap_or_default()
        };
        let ca = dir.join("ca.crt").display().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (out, err) = curl(&ca);
            if out == "ok" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no kubelet serving certificate of the cluster CA on node {i}: {out} {err}\n{}",
                world.node(i).agent().log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let csrs = world.cp.kubectl(&["get", "csr"]).expect("csrs");
    assert!(
        csrs.contains("kubernetes.io/kubelet-serving") && csrs.contains("Approved,Issued"),
        "{csrs}"
    );
}

/// A pod uses the token the control plane mounted for its service account against the API server,
/// through the `kubernetes` Service as in-cluster clients do: RBAC refuses it until its account is
/// bound to `view`, then it lists pods. The token is pod-bound: once the pod is gone, it is refused.
fn service_account_token(world: &ClusterWorld, image: &str) {
    // The client is the host's curl (busybox's wget has no TLS this server speaks), run with the
    // host's loader and libraries from a read-only hostPath: it verifies the server with the CA of
    // the service-account volume, for the name in-cluster clients use (10.96.0.1).
    let pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: api-client
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: host-usr
    hostPath:
      path: /usr
  containers:
  - name: c
    image: {image}
    volumeMounts:
    - name: host-usr
      mountPath: /host/usr
      readOnly: true
    command: ["sh", "-c"]
    args:
    - |
      D=/var/run/secrets/kubernetes.io/serviceaccount
      L=/host/usr/lib/x86_64-linux-gnu
      echo "namespace=$(cat $D/namespace) ca=$(grep -c BEGIN $D/ca.crt)"
      cp $D/token /tmp/token.copy
      while true; do
        $L/ld-linux-x86-64.so.2 --library-path $L /host/usr/bin/curl -sS -m 5 --cacert $D/ca.crt \
          -H "Authorization: Bearer $(cat $D/token)" -w ' HTTP %{{http_code}}\n' -o /tmp/out \
          "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/default/pods?limit=1" 2>&1
        echo "body: $(head -c 40 /tmp/out)"
        sleep 1
      done
"#
    );
    world.cp.apply(&pod).expect("apply the api-client pod");
    let logs = || world.cp.kubectl(&["logs", "api-client"]).unwrap_or_default();
    let wait_logs = |needle: &str, timeout: Duration| {
        let deadline = Instant::now() + timeout;
        while !logs().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the api-client's log: {}\n{}",
                logs(),
                world
                    .cp
                    .kubectl(&["describe", "pod", "api-client"])
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_logs("HTTP 403", Duration::from_secs(60));
    let first = logs();
    assert!(first.starts_with("namespace=default ca=1\n"), "{first}");
    let mounted = pod_json(world, "api-client");
    let volume = &mounted["spec"]["volumes"][1];
    assert!(
        volume["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("kube-api-access-"))
            && volume["projected"]["sources"][0]["serviceAccountToken"]["path"] == "token",
        "the ServiceAccount admission plugin's volume: {volume}"
    );
    world
        .cp
        .kubectl(&[
            "create",
            "rolebinding",
            "sa-view",
            "--clusterrole=view",
            "--serviceaccount=default:default",
        ])
        .expect("bind view");
    wait_logs(r#"body: {"kind":"PodList""#, Duration::from_secs(30));
    let token = world
        .cp
        .kubectl(&["exec", "api-client", "--", "cat", "/tmp/token.copy"])
        .expect("the pod's token");
    let whoami = world.cp.kubectl(&[
        "auth",
        "whoami",
        "--token",
        token.trim(),
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(
        whoami.ok().as_deref(),
        Some("system:serviceaccount:default:default")
    );
    world
        .cp
        .kubectl(&["delete", "pod", "api-client", "--wait=true", "--timeout=30s"])
        .expect("delete the api-client pod");
    let after = world.cp.kubectl(&["auth", "whoami", "--token", token.trim()]);
    assert!(
        after
            .as_ref()
            .is_err_and(|e| e.to_string().contains("Unauthorized")),
        "a deleted pod's token: {after:?}"
    );
    world
        .cp
        .kubectl(&["delete", "rolebinding", "sa-view"])
        .expect("unbind");
}

/// `kubectl port-forward` through the API server to a port the container binds to its loopback only
/// (reached inside the pod's network namespace, as kubelet does): 4 MiB intact over kubectl's
/// WebSocket tunnel and over plain SPDY (kubectl before 1.31); a closed port is kubelet's error.
fn port_forward(world: &ClusterWorld, pod: &str) {
    let md5 = world
        .cp
        .kubectl(&[
            "exec",
            pod,
            "--",
            "sh",
            "-c",
            "mkdir -p /lo && dd if=/dev/urandom of=/lo/big bs=1024 count=4096 2>/dev/null \
             && httpd -p 127.0.0.1:8081 -h /lo && md5sum /lo/big",
        ])
        .expect("a loopback-only server in the pod");
    let md5 = md5.split_whitespace().next().unwrap_or_default().to_string();
    let fetch = |port: u16| {
        let out = world
            .cp
            .ns
            .command(std::path::Path::new("sh"))
            .args([
                "-c",
                &format!("curl -sf -m 20 http://127.0.0.1:{port}/big | md5sum"),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    for (port, websockets) in [(18081u16, "true"), (18082, "false")] {
        let mut forward = world
            .cp
            .kubectl_spawn(
                &["port-forward", pod, &format!("{port}:8081")],
                &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets)],
            )
            .expect("kubectl port-forward");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = fetch(port);
        while got != md5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(300));
            got = fetch(port);
        }
        let _ = forward.kill();
        let out = forward.wait_with_output().expect("kubectl port-forward output");
        assert_eq!(
            got,
            md5,
            "4 MiB through port-forward (websockets {websockets}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Nothing listens on 8082: kubectl reports the agent's error and gives up the session.
    let mut forward = world
        .cp
        .kubectl_spawn(&["port-forward", pod, "18083:8082"], &[])
        .expect("kubectl port-forward");
    std::thread::sleep(Duration::from_secs(1));
    let _ = fetch(18083);
    let deadline = Instant::now() + Duration::from_secs(10);
    while forward.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = forward.kill();
    let out = forward.wait_with_output().expect("kubectl port-forward output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error forwarding port 8082") && stderr.contains("refused"),
        "{stderr}"
    );
}

/// Whether any node still holds a pod directory.
fn pods_left(world: &mut ClusterWorld) -> bool {
    (1..=2).any(|i| {
        let dir = world.node(i).state.join("pods");
        std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some())
    })
}

fn pod_json(world: &ClusterWorld, name: &str) -> Value {
    world
        .cp
        .kubectl(&["get", "pod", name, "-o", "json"])
        .ok()
        .and_then(|o| serde_json::from_str(&o).ok())
        .unwrap_or_default()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn pods_survive_agent_restarts_crashes_back_off_and_oom_kills_are_reported() {
    let mut world = ClusterWorld::new("podrst", 1, 0, &[]).expect("cluster");
    let (_registry, prefix) = world.start_registry().expect("registry");
    let image = format!("{prefix}/busybox:1.36");
    world
        .cp
        .apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: steady, namespace: default}}
spec:
  containers: [{{name: c, image: "{image}", command: [sleep, "3600"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: hungry, namespace: default}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: "{image}"
    command: [dd, if=/dev/zero, of=/dev/null, bs=64M, count=1]
    resources: {{limits: {{memory: 16Mi}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: default}}
data: {{greeting: hello-from-configmap}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds, namespace: default}}
stringData: {{password: hunter2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: configured, namespace: default, labels: {{tier: web}}}}
spec:
  restartPolicy: Never
  volumes:
  - {{name: cfg, configMap: {{name: settings}}}}
  - {{name: info, downwardAPI: {{items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]}}}}
  containers:
  - name: c
    image: "{image}"
    command: [sh, -c, "cat /cfg/greeting; cat /info/labels; echo $PASSWORD; echo api=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; touch /cfg/x || echo read-only"]
    env: [{{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}}}]
    volumeMounts: [{{name: cfg, mountPath: /cfg}}, {{name: info, mountPath: /info}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: sized, namespace: default}}
spec:
  containers:
  - {{name: a, image: "{image}", command: [sleep, "3600"], resources: {{requests: {{cpu: 250m}}, limits: {{cpu: 500m, memory: 64Mi}}}}}}
  - {{name: b, image: "{image}", command: [sleep, "3600"], resources: {{requests: {{cpu: 100m}}, limits: {{cpu: 300m, memory: 32Mi}}}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: crashy, namespace: default}}
spec:
  containers: [{{name: c, image: "{image}", command: [sh, -c, "echo boom; exit 3"]}}]
"#
        ))
        .expect("apply");
    wait_for("steady running", Duration::from_secs(30), || {
        pod_json(&world, "steady")["status"]["phase"] == "Running"
    });
    let container_id = |w: &ClusterWorld| {
        pod_json(w, "steady")["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let before = container_id(&world);
    assert!(before.starts_with("berth://"), "{before}");

    // The agent dies and comes back: the container is adopted, not restarted.
    world.node(1).agent().kill();
    world.node(1).agent().restart().expect("restart");
    std::thread::sleep(Duration::from_secs(3));
    let steady = pod_json(&world, "steady");
    assert_eq!(steady["status"]["phase"], "Running", "{steady}");
    assert_eq!(
        steady["status"]["containerStatuses"][0]["restartCount"], 0,
        "{steady}"
    );
    assert_eq!(container_id(&world), before, "the same container");
    let log = world.node(1).agent().log();
    assert!(log.contains("adopted a container instance"), "{log}");

    // A container that exits is restarted at once, then with backoff: CrashLoopBackOff, lastState,
    // restart count, exit code 3; its previous instance's log stays readable.
    wait_for("crashy backing off", Duration::from_secs(40), || {
        let p = pod_json(&world, "crashy");
        let cs = &p["status"]["containerStatuses"][0];
        cs["restartCount"].as_i64().unwrap_or(0) >= 1
            && cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
            && cs["lastState"]["terminated"]["exitCode"] == 3
    });
    let p = pod_json(&world, "crashy");
    assert_eq!(
        p["status"]["phase"], "Running",
        "restartPolicy Always keeps it Running: {p}"
    );
    let previous = world
        .cp
        .kubectl(&["logs", "crashy", "--previous"])
        .expect("logs --previous");
    assert_eq!(previous, "boom\n");

    // ConfigMap and downwardAPI volumes (read-only), a Secret key in the environment.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pod_json(&world, "configured")["status"]["phase"] != "Succeeded" {
        assert!(
            Instant::now() < deadline,
            "configured: {}\n{}",
            pod_json(&world, "configured")["status"],
            world.node(1).agent().log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = world.cp.kubectl(&["logs", "configured"]).expect("logs");
    // Service links: the API server's Service, as kubelet gives every container.
    let api_ip = world
        .cp
        .kubectl(&["get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"])
        .expect("kubernetes service");
    let api_link = format!("api={api_ip}:443");
    for want in [
        api_link.as_str(),
        "hello-from-configmaptier=\"web\"",
        "hunter2",
        "Read-only file system",
        "read-only",
    ] {
        assert!(out.contains(want), "{want:?} in {out}");
    }

    // Over its memory limit: killed by the kernel, reported as OOMKilled with 137; restartPolicy Never
    // leaves the pod Failed.
    wait_for("hungry OOMKilled", Duration::from_secs(30), || {
        pod_json(&world, "hungry")["status"]["phase"] == "Failed"
    });
    let hungry = pod_json(&world, "hungry");
    let term = &hungry["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["reason"], "OOMKilled", "{hungry}");
    assert_eq!(term["exitCode"], 137, "{hungry}");
    assert_eq!(hungry["status"]["qosClass"], "Burstable", "{hungry}");

    // The pod's own cgroup below its QoS parent holds the sums of its containers' limits and the
    // node's pids limit; the containers' cgroups are below it; it goes with the pod.
    wait_for("sized running", Duration::from_secs(30), || {
        pod_json(&world, "sized")["status"]["phase"] == "Running"
    });
    let uid = pod_json(&world, "sized")["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pod_cgroup = format!("kubepods/burstable/pod{uid}");
    let read = |controller: &str, file: &str| {
        let path = world.node_cgroup(1, controller, &pod_cgroup).join(file);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_string()
    };
    assert_eq!(read("memory", "memory.limit_in_bytes"), (96u64 << 20).to_string());
    assert_eq!(read("cpu", "cpu.shares"), "358", "350m requested");
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "80000", "800m limit");
    assert_eq!(read("pids", "pids.max"), "256", "--pod-max-pids");
    let containers = std::fs::read_dir(world.node_cgroup(1, "memory", &pod_cgroup))
        .expect("pod cgroup")
        .flatten()
        .filter(|e| e.path().is_dir())
        .count();
    assert_eq!(containers, 2, "one cgroup per container below the pod's");
    assert_eq!(
        std::fs::read_to_string(
            world
                .node_cgroup(1, "cpu", "kubepods/besteffort")
                .join("cpu.shares")
        )
        .unwrap_or_default()
        .trim(),
        "2"
    );
    let burstable = || {
        std::fs::read_to_string(
            world
                .node_cgroup(1, "cpu", "kubepods/burstable")
                .join("cpu.shares"),
        )
        .unwrap_or_default()
        .trim()
        .to_string()
    };
    assert_eq!(burstable(), "358", "the Burstable pods' requests");
    world
        .cp
        .kubectl(&["delete", "pod", "sized", "--wait=true"])
        .expect("delete");
    wait_for("sized's cgroup removed", Duration::from_secs(10), || {
        !world.node_cgroup(1, "memory", &pod_cgroup).exists()
    });
    wait_for(
        "burstable weight back to the minimum",
        Duration::from_secs(10),
        || burstable() == "2",
    );
}

/// The Ready condition of pod `name`.
fn ready(world: &ClusterWorld, name: &str) -> bool {
    pod_json(world, name)["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Whether Service `svc`'s EndpointSlices list a ready endpoint.
fn ready_endpoint(world: &ClusterWorld, svc: &str) -> bool {
    let out = world
        .cp
        .kubectl(&[
            "get",
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={svc}"),
            "-o",
            "json",
        ])
        .unwrap_or_default();
    let v: Value = serde_json::from_str(&out).unwrap_or_default();
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .any(|e| e["conditions"]["ready"] == true)
}

#[test]
fn readiness_drives_the_endpoints_and_liveness_restarts() {
    let mut world = ClusterWorld::new("probes", 1, 0, &[]).expect("cluster");
    let (_registry, prefix) = world.start_registry().expect("registry");
    let image = format!("{prefix}/busybox:1.36");
    let hooks_dir = world.bed.scratch().join("hooks");
    world
        .cp
        .apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: probed, namespace: default, labels: {{app: probed}}}}
spec:
  containers:
  - name: c
    image: "{image}"
    command: [sh, -c, "mkdir -p /www; echo ok > /www/ready; httpd -p 8080 -h /www; sleep 8; rm /www/ready; sleep 8; echo ok > /www/ready; exec sleep 3600"]
    readinessProbe: {{httpGet: {{path: /ready, port: 8080}}, periodSeconds: 1, failureThreshold: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: probed, namespace: default}}
spec:
  selector: {{app: probed}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: undead, namespace: default}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: "{image}"
    command: [sh, -c, "touch /tmp/alive; sleep 3; rm /tmp/alive; exec sleep 3600"]
    livenessProbe: {{exec: {{command: [cat, /tmp/alive]}}, periodSeconds: 1, failureThreshold: 2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: hooked, namespace: default}}
spec:
  terminationGracePeriodSeconds: 10
  volumes: [{{name: out, hostPath: {{path: "{hooks_dir}", type: DirectoryOrCreate}}}}]
  containers:
  - name: c
    image: "{image}"
    volumeMounts: [{{name: out, mountPath: /out}}]
    command: [sh, -c, "trap 'echo term >> /out/log; exit 0' TERM; while true; do sleep 0.2; done"]
    lifecycle:
      postStart: {{exec: {{command: [sh, -c, "echo postStart >> /out/log"]}}}}
      preStop: {{exec: {{command: [sh, -c, "echo preStop >> /out/log; sleep 1"]}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: failing-hook, namespace: default}}
spec:
  containers:
  - name: c
    image: "{image}"
    command: [sleep, "3600"]
    lifecycle: {{postStart: {{exec: {{command: [sh, -c, "exit 3"]}}}}}}
"#,
            hooks_dir = hooks_dir.display()
        ))
        .expect("apply");
    wait_for("probed ready", Duration::from_secs(30), || {
        ready(&world, "probed") && ready_endpoint(&world, "probed")
    });
    wait_for(
        "probed not ready, out of the endpoints",
        Duration::from_secs(20),
        || !ready(&world, "probed") && !ready_endpoint(&world, "probed"),
    );
    wait_for("probed ready again", Duration::from_secs(20), || {
        ready(&world, "probed") && ready_endpoint(&world, "probed")
    });
    let undead = pod_json(&world, "undead");
    wait_for(
        "undead restarted by its liveness probe",
        Duration::from_secs(30),
        || {
            pod_json(&world, "undead")["status"]["containerStatuses"][0]["restartCount"]
                .as_i64()
                .unwrap_or(0)
                >= 1
        },
    );
    assert_eq!(undead["status"]["phase"], "Running");

    // Lifecycle hooks: postStart after the start, preStop before the stop signal, in that order.
    let log = hooks_dir.join("log");
    wait_for("hooked ran its postStart hook", Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("postStart"))
    });
    world
        .cp
        .kubectl(&["delete", "pod", "hooked", "--wait=false"])
        .expect("delete hooked");
    wait_for("hooked gone", Duration::from_secs(30), || {
        world.cp.kubectl(&["get", "pod", "hooked"]).is_err()
    });
    let lines = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(lines, "postStart\npreStop\nterm\n", "hook order");
    // A failing postStart hook: a Warning Event, the container killed and restarted.
    wait_for("failing-hook restarted", Duration::from_secs(30), || {
        pod_json(&world, "failing-hook")["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(0)
            >= 1
    });
    let events = world.cp.kubectl(&["get", "events"]).unwrap_or_default();
    assert!(
        events
            .lines()
            .any(|l| l.contains("failing-hook") && l.contains("FailedPostStartHook")),
        "{events}"
    );
}

/// Bad input becomes the status and Events kubelet would give, and never stops the agent or the pods
/// beside it: an invalid image reference, a missing image, a missing ConfigMap key, a command that
/// does not exist, a missing Secret volume; a volume naming no source is an emptyDir (API defaulting).
#[test]
fn bad_pods_get_kubelet_statuses_and_the_node_keeps_running_the_rest() {
    let mut world = ClusterWorld::new("podbad", 1, 0, &[]).expect("cluster");
    let (_registry, prefix) = world.start_registry().expect("registry");
    let image = format!("{prefix}/busybox:1.36");
    // A registry that wants a login: pulled from with the pod's imagePullSecrets, refused without.
    let (_private, private) = world.start_private_registry().expect("private registry");
    let (user, password) = berth_tests::clusterworld::PRIVATE_REGISTRY_LOGIN;
    world
        .cp
        .kubectl(&[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            &format!("--docker-server={private}"),
            &format!("--docker-username={user}"),
            &format!("--docker-password={password}"),
        ])
        .expect("pull secret");
    let pod = |name: &str, container: &str, volumes: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {container}\n{volumes}"
        )
    };
    let sleep = r#"command: [sleep, "3600"]"#;
    let manifest = [
        pod("bad-ref", r#"{name: c, image: "busybox:1.36:bad::x", command: [sleep, "3600"]}"#, ""),
        pod("no-image", &format!("{{name: c, image: \"{prefix}/nosuch:1\", {sleep}}}"), ""),
        pod(
            "no-configmap",
            &format!("{{name: c, image: \"{image}\", {sleep}, env: [{{name: X, valueFrom: {{configMapKeyRef: {{name: missing, key: k}}}}}}]}}"),
            "",
        ),
        pod("no-command", &format!("{{name: c, image: \"{image}\", command: [/no/such/binary]}}"), ""),
        pod(
            "no-secret",
            &format!("{{name: c, image: \"{image}\", {sleep}, volumeMounts: [{{name: s, mountPath: /s}}]}}"),
            "  volumes: [{name: s, secret: {secretName: missing}}]\n",
        ),
        pod(
            "bare-volume",
            &format!("{{name: c, image: \"{image}\", {sleep}, volumeMounts: [{{name: v, mountPath: /v}}]}}"),
            "  volumes: [{name: v}]\n",
        ),
        pod("good", &format!("{{name: c, image: \"{image}\", {sleep}}}"), ""),
        pod(
            "private",
            &format!("{{name: c, image: \"{private}/busybox:1.36\", {sleep}}}"),
            "  imagePullSecrets: [{name: regcred}]\n",
        ),
        pod(
            "private-no-secret",
            &format!("{{name: c, image: \"{private}/busybox:1.36\", {sleep}}}"),
            "",
        ),
    ]
    .concat();
    world.cp.apply(&manifest).expect("apply");

    let state = |name: &str| pod_json(&world, name)["status"]["containerStatuses"][0].clone();
    let waiting = |name: &str, reasons: &[&str]| {
        let s = state(name);
        let reason = s["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        reasons.contains(&reason.as_str())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while pod_json(&world, "private")["status"]["phase"] != "Running" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        pod_json(&world, "private")["status"]["phase"],
        "Running",
        "pulled with the pod's imagePullSecrets: {}\n{}",
        pod_json(&world, "private")["status"],
        world.cp.kubectl(&["get", "events"]).unwrap_or_default()
    );
    wait_for("good and bare-volume running", Duration::from_secs(60), || {
        ["good", "bare-volume"]
            .iter()
            .all(|n| pod_json(&world, n)["status"]["phase"] == "Running")
    });
    wait_for("bad-ref: InvalidImageName", Duration::from_secs(30), || {
        waiting("bad-ref", &["InvalidImageName"])
    });
    wait_for(
        "no-image: ErrImagePull / ImagePullBackOff",
        Duration::from_secs(30),
        || waiting("no-image", &["ErrImagePull", "ImagePullBackOff"]),
    );
    wait_for(
        "private-no-secret: refused by the registry",
        Duration::from_secs(30),
        || waiting("private-no-secret", &["ErrImagePull", "ImagePullBackOff"]),
    );
    wait_for(
        "no-configmap: CreateContainerConfigError",
        Duration::from_secs(30),
        || {
            waiting("no-configmap", &["CreateContainerConfigError"])
                && state("no-configmap")["state"]["waiting"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("configmap \"missing\" not found"))
        },
    );
    wait_for(
        "no-command: StartError, backing off",
        Duration::from_secs(30),
        || {
            let s = state("no-command");
            let last = &s["lastState"]["terminated"];
            last["reason"] == "StartError"
                && last["exitCode"] == 128
                && last["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("/no/such/binary"))
                && waiting("no-command", &["RunContainerError", "CrashLoopBackOff"])
        },
    );
    // Still StartError later, in back-off (not an instance gone missing).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        state("no-command")["lastState"]["terminated"]["reason"],
        "StartError",
        "{}",
        state("no-command")
    );
    wait_for("no-secret: ContainerCreating", Duration::from_secs(30), || {
        waiting("no-secret", &["ContainerCreating"])
    });
    let events = world.cp.kubectl(&["get", "events"]).unwrap_or_default();
    assert!(
        events
            .lines()
            .any(|l| l.contains("no-secret") && l.contains("FailedMount") && l.contains("missing")),
        "{events}"
    );
    // The good pod ran throughout; the agent never stopped.
    let good = state("good");
    assert_eq!(good["restartCount"], 0, "{good}");
    assert!(good["state"]["running"].is_object(), "{good}");
    let pid = world.node(1).agent().pid().expect("the agent runs");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the agent is alive"
    );
}

/// A static pod: run from the node's --pod-manifest-path, published as a mirror pod that kubectl
/// shows and reads logs through; the API cannot remove it (a deleted mirror comes back); an edit
/// replaces it; removing the file stops it.
#[test]
fn static_pods_run_from_the_node_directory_with_mirror_pods() {
    let mut world = ClusterWorld::new("podstatic", 1, 0, &[]).expect("cluster");
    let (_registry, prefix) = world.start_registry().expect("registry");
    let image = format!("{prefix}/busybox:1.36");
    let node = world.node(1).name.clone();
    let dir = world.node(1).state.join("static-pods");
    std::fs::create_dir_all(&dir).expect("static pod dir");
    let manifest = |greeting: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, labels: {{app: static}}}}\nspec:\n  containers:\n  - name: c\n    image: \"{image}\"\n    command: [sh, -c, \"echo {greeting}; exec sleep 3600\"]\n"
        )
    };
    let write = |text: String| {
        let tmp = dir.join(".web.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, dir.join("web.yaml")).expect("rename");
    };
    write(manifest("first"));
    let name = format!("web-{node}");
    let mirror = |world: &ClusterWorld| {
        world
            .cp
            .kubectl(&["get", "pod", &name, "-o", "json"])
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .unwrap_or(Value::Null)
    };
    wait_for("the mirror pod Running", Duration::from_secs(40), || {
        mirror(&world)["status"]["phase"] == "Running"
    });
    let m = mirror(&world);
    let hash = m["metadata"]["annotations"]["kubernetes.io/config.mirror"].clone();
    assert!(hash.is_string(), "{m}");
    assert_eq!(
        m["metadata"]["annotations"]["kubernetes.io/config.source"],
        "file"
    );
    assert_eq!(m["spec"]["nodeName"], node.as_str());
    assert!(
        m["spec"]["serviceAccountName"].is_null(),
        "a mirror pod has no service account: {m}"
    );
    wait_for("kubectl logs of the static pod", Duration::from_secs(10), || {
        world.cp.kubectl(&["logs", &name]).is_ok_and(|l| l == "first\n")
    });

    // Deleted through the API: the node puts it back; the container is not restarted.
    let uid = m["metadata"]["uid"].clone();
    world
        .cp
        .kubectl(&["delete", "pod", &name, "--wait=false"])
        .expect("delete mirror");
    wait_for("the mirror pod back", Duration::from_secs(20), || {
        let m = mirror(&world);
        m["metadata"]["uid"] != uid && m["status"]["phase"] == "Running"
    });
    let m = mirror(&world);
    assert_eq!(m["status"]["containerStatuses"][0]["restartCount"], 0, "{m}");

    // A node may create mirror pods of its own only.
    let node_kubeconfig = world.node(1).state.join("kubeconfig").display().to_string();
    let forged = world.cp.kubectl_stdin(
        &["--kubeconfig", &node_kubeconfig, "create", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata: {name: forged}\nspec: {containers: [{name: c, image: x}]}\n"),
    );
    let err = forged.expect_err("a node creating an ordinary pod");
    assert!(err.to_string().contains("can only create mirror pods"), "{err}");

    // Edited: a new pod replaces the old one.
    write(manifest("second"));
    wait_for("the edited static pod running", Duration::from_secs(40), || {
        let m = mirror(&world);
        m["metadata"]["annotations"]["kubernetes.io/config.mirror"] != hash
            && m["status"]["phase"] == "Running"
            && world.cp.kubectl(&["logs", &name]).is_ok_and(|l| l == "second\n")
    });

    // The file removed: the pod stops and its mirror goes.
    std::fs::remove_file(dir.join("web.yaml")).expect("remove");
    wait_for("the mirror pod gone", Duration::from_secs(40), || {
        mirror(&world).is_null()
    });
    wait_for(
        "the static pod's directory removed",
        Duration::from_secs(20),
        || std::fs::read_dir(world.node(1).state.join("pods")).map_or(true, |d| d.count() == 0),
    );

    // Standalone (no API server, the manifests directory as the cluster): the static pod runs and
    // its status is written beside it.
    world.add_node(2).expect("node 2");
    let mut args: Vec<String> = Vec::new();
    let mut joined = world.join_args(2).expect("args").into_iter();
    while let Some(a) = joined.next() {
        if matches!(a.as_str(), "--server" | "--token" | "--ca-cert-hash") {
            joined.next();
        } else {
            args.push(a);
        }
    }
    let state = world.node(2).state.clone();
    let manifests = state.join("manifests");
    std::fs::create_dir_all(&manifests).expect("manifests");
    std::fs::create_dir_all(state.join("static-pods")).expect("static pods");
    std::fs::write(state.join("static-pods/web.yaml"), manifest("standalone")).expect("write");
    args.extend(
        [
            "--manifests",
            &manifests.display().to_string(),
            "--pod-cidr",
            "10.244.200.0/24",
        ]
        .map(str::to_string),
    );
    world.start_agent(2, &args).expect("standalone agent");
    let status = || {
        std::fs::read_dir(state.join("pods"))
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|d| std::fs::read(d.path().join("status.json")).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .unwrap_or(Value::Null)
    };
    wait_for(
        "the standalone static pod running",
        Duration::from_secs(40),
        || status()["phase"] == "Running",
    );
    let s = status();
    assert!(
        s["podIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.244.200.")),
        "{s}"
    );
    let log = std::fs::read_dir(state.join("logs"))
        .expect("logs")
        .flatten()
        .find(|d| d.file_name().to_string_lossy().starts_with("default_web-node2_"))
        .map(|d| d.path().join("c/0.log"));
    let log = log
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    assert!(log.contains("stdout F standalone"), "{log}");
}

/// A hundred pods created and deleted, ten at a time, with what pods hold (an init container, two
/// containers, an emptyDir in memory, a configMap volume): afterwards the node holds what it held
/// before: no mount, cgroup, veth, address, shim, runc state, pod or log directory left.
#[test]
fn a_hundred_pods_created_and_deleted_leave_nothing_behind() {
    let mut world = ClusterWorld::new("podleak", 1, 0, &[]).expect("cluster");
    let (_registry, prefix) = world.start_registry().expect("registry");
    let image = format!("{prefix}/busybox:1.36");
    world
        .cp
        .apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: default}\ndata: {a: b}\n")
        .expect("configmap");
    let before = world.footprint(1);
    for round in 0..10 {
        let pods: String = (0..10)
            .map(|j| {
                format!(
                    r#"---
apiVersion: v1
kind: Pod
metadata: {{name: cycle-{round}-{j}, namespace: default, labels: {{round: "r{round}"}}}}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{{name: scratch, emptyDir: {{medium: Memory}}}}, {{name: cfg, configMap: {{name: cfg}}}}]
  initContainers: [{{name: init, image: "{image}", command: ["true"]}}]
  containers:
  - {{name: a, image: "{image}", command: [sleep, "3600"], volumeMounts: [{{name: scratch, mountPath: /scratch}}, {{name: cfg, mountPath: /cfg}}]}}
  - {{name: b, image: "{image}", command: [sleep, "3600"], resources: {{limits: {{memory: 32Mi}}}}}}
"#
                )
            })
            .collect();
        world.cp.apply(&pods).expect("apply");
        let selector = format!("round=r{round}");
        wait_for("ten pods Running", Duration::from_secs(60), || {
            let out = world
                .cp
                .kubectl(&[
                    "get",
                    "pods",
                    "-l",
                    &selector,
                    "-o",
                    "jsonpath={.items[*].status.phase}",
                ])
                .unwrap_or_default();
            out.split_whitespace().filter(|p| *p == "Running").count() == 10
        });
        if round == 0 {
            // Every count sees what running pods hold, or its staying put afterwards proves nothing.
            let during = world.footprint(1);
            let grew = [
                (during.mounts, before.mounts),
                (during.cgroups, before.cgroups),
                (during.links, before.links),
                (during.addresses, before.addresses),
                (during.processes, before.processes),
                (during.pod_dirs, before.pod_dirs),
                (during.log_dirs, before.log_dirs),
                (during.runc_containers, before.runc_containers),
            ];
            assert!(
                grew.iter().all(|(d, b)| d > b),
                "before {before:?}\nduring {during:?}"
            );
        }
        world
            .cp
            .kubectl(&["delete", "pods", "-l", &selector, "--wait=true", "--timeout=60s"])
            .expect("delete");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let after = world.footprint(1);
        if after == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind after 100 pods:\nbefore {before:?}\nafter  {after:?}\n{}",
            world.node(1).agent().log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
