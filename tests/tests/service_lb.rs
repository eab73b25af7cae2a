//! Service load balancing with real traffic in namespaces: one node running `berth-agent`, pods
//! serving TCP and UDP, clients in pods (TC path, or socket LB through the node's cgroup) and outside.
//! Needs root (namespaces, bpffs); every test builds and removes its own world.

use std::{collections::HashMap, net::SocketAddr, thread::sleep, time::Duration};

use berth_tests::{
    lbworld::{
        EXT_IP, Ep, LbWorld, NODE_IP, NODE_NAME, TCP_PORT, UDP_PORT, WEB_IP, hold_udp_from, service_yaml,
        slice_yaml, web_yaml,
    },
    probe::Attempt,
};

const SVC_IP: &str = WEB_IP;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn counts(attempts: &[Attempt]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for a in attempts {
        *m.entry(a.id().unwrap_or("<failed>").to_string()).or_default() += 1;
    }
    m
}

fn apply_web(world: &mut LbWorld, backends: &[usize], spec_extra: &str) {
    let yaml = web_yaml(world, backends, spec_extra);
    world.apply("web.yaml", &yaml, 2);
}

fn assert_spread(attempts: &[Attempt], backends: &[&str]) {
    let c = counts(attempts);
    let n = attempts.len();
    for b in backends {
        let got = c.get(*b).copied().unwrap_or(0);
        // Uniform over k backends: each share within [0.5/k, 1.6/k] of n (far outside random noise at n=300).
        let k = backends.len() as f64;
        assert!(
            (got as f64) > n as f64 * 0.5 / k && (got as f64) < n as f64 * 1.6 / k,
            "backend {b} got {got} of {n}: {c:?}"
        );
    }
    assert_eq!(c.values().sum::<usize>(), n);
    assert!(!c.contains_key("<failed>"), "failures: {c:?}");
}

#[test]
fn clusterip_tcp_spreads_over_backends_on_tc_and_socket_paths() {
    let mut world = LbWorld::build("spread", 4).expect("world");
    world.start_agent(true, &[]).expect("agent");
    apply_web(&mut world, &[0, 1, 2], "");
    let target = addr(&format!("{SVC_IP}:80"));
    // TC path: the client is not in the node's cgroup, its packets are translated per packet.
    let tc = world.tcp_from_pod(3, target, 300, false);
    assert_spread(&tc, &["pod0", "pod1", "pod2"]);
    for a in &tc {
        if let Attempt::Ok { from, peer, .. } = a {
            assert_eq!(
                from,
                &format!("{SVC_IP}:80"),
                "client must see the Service address"
            );
            assert!(
                peer.starts_with("10.244.0.13:"),
                "backend must see the client's own address: {peer}"
            );
        }
    }
    // Socket LB: connect() is translated, getpeername() still reports the Service.
    let sock = world.tcp_from_pod(3, target, 300, true);
    assert_spread(&sock, &["pod0", "pod1", "pod2"]);
    assert!(
        sock.iter()
            .all(|a| matches!(a, Attempt::Ok { from, .. } if from == &format!("{SVC_IP}:80")))
    );
}

/// A frontend's value holds its first 16 backend slots; the rest live in `BERTH_SLOTS`. A Service with
/// 20 endpoints reaches every one of them, inline and outer, on both paths, and keeps doing so as it
/// shrinks below the boundary and grows past it again.
#[test]
fn a_service_with_more_endpoints_than_a_frontend_holds_reaches_all_of_them() {
    let mut world = LbWorld::build("many", 21).expect("world");
    world.start_agent(true, &[]).expect("agent");
    let target = addr(&format!("{SVC_IP}:80"));
    let reached = |world: &LbWorld, backends: &[usize]| {
        let ids: Vec<String> = backends.iter().map(|i| world.pods[*i].id.clone()).collect();
        for socket_lb in [false, true] {
            // 20 backends, 400 connections: a backend missed by chance has probability ~1e-9.
            let got = counts(&world.tcp_from_pod(20, target, 400, socket_lb));
            assert!(!got.contains_key("<failed>"), "socket LB {socket_lb}: {got:?}");
            for id in &ids {
                assert!(
                    got.contains_key(id),
                    "socket LB {socket_lb}: {id} never reached: {got:?}"
                );
            }
            assert_eq!(got.len(), ids.len(), "only the Service's backends: {got:?}");
        }
    };
    let all: Vec<usize> = (0..20).collect();
    apply_web(&mut world, &all, "");
    let list = world.lb("list");
    assert_eq!(
        list.matches("(active").count(),
        40,
        "20 backends of 2 ports listed:\n{list}"
    );
    reached(&world, &all);
    apply_web(&mut world, &all[3..8], "");
    reached(&world, &all[3..8]);
    apply_web(&mut world, &all[1..19], "");
    reached(&world, &all[1..19]);
}

#[test]
fn udp_request_response_sees_service_address() {
    let mut world = LbWorld::build("udp", 3).expect("world");
    world.start_agent(true, &[]).expect("agent");
    apply_web(&mut world, &[0, 1], "");
    let target = format!("{SVC_IP}:53");
    for (cgroup, connected) in [(false, false), (false, true), (true, false), (true, true)] {
        let cg = cgroup.then(|| world.node_cgroup());
        let mut args = vec!["udp", &target, "--count", "60"];
        if connected {
            args.push("--connected");
        }
        let got = world.probe(&world.pods[2].ns, cg.as_ref(), &args);
        assert_eq!(got.len(), 60);
        for a in &got {
            match a {
                Attempt::Ok { from, .. } => assert_eq!(
                    from, &target,
                    "reply must come from the Service (cgroup={cgroup})"
                ),
                Attempt::Err { kind, .. } => {
                    panic!("UDP attempt failed: {kind} (cgroup={cgroup}, connected={connected})")
                }
            }
        }
        let c = counts(&got);
        assert!(
            c.contains_key("pod0") && c.contains_key("pod1"),
            "both backends used: {c:?}"
        );
    }
    // One unconnected socket sending many datagrams stays on one backend (socket LB and TC path), as a
    // kube-proxy conntrack entry would keep it.
    for cgroup in [false, true] {
        let cg = cgroup.then(|| world.node_cgroup());
        let got = world.probe(
            &world.pods[2].ns,
            cg.as_ref(),
            &["udp", &target, "--count", "30", "--same-socket"],
        );
        let c = counts(&got);
        assert_eq!(c.len(), 1, "one socket, one backend (cgroup={cgroup}): {c:?}");
        assert!(!c.contains_key("<failed>"), "{got:?}");
    }
}

#[test]
fn session_affinity_sticks_and_expires() {
    let mut world = LbWorld::build("affin", 4).expect("world");
    world.start_agent(true, &[]).expect("agent");
    apply_web(
        &mut world,
        &[0, 1, 2],
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 1}}\n",
    );
    let target = addr(&format!("{SVC_IP}:80"));
    for socket_lb in [false, true] {
        let first = world.tcp_from_pod(3, target, 40, socket_lb);
        let c = counts(&first);
        assert_eq!(
            c.len(),
            1,
            "all connections stick to one backend (socket_lb={socket_lb}): {c:?}"
        );
        // After the timeout the choice is free again: over 8 expiries, more than one backend is seen
        // (all on one backend by chance: 3 * (1/3)^8 < 0.05 %).
        let mut seen = std::collections::HashSet::new();
        for _ in 0..8 {
            sleep(Duration::from_millis(1300));
            let a = world.tcp_from_pod(3, target, 1, socket_lb);
            seen.insert(a[0].id().expect("served").to_string());
        }
        assert!(
            seen.len() > 1,
            "affinity never expired (socket_lb={socket_lb}): {seen:?}"
        );
    }
}

#[test]
fn removed_endpoint_gets_no_new_flows_while_open_connection_finishes() {
    let mut world = LbWorld::build("remove", 3).expect("world");
    world.start_agent(true, &[]).expect("agent");
    apply_web(&mut world, &[0, 1], "");
    let target = format!("{SVC_IP}:80");
    for socket_lb in [false, true] {
        // Hold connections until one lands on pod0.
        let mut held = (0..40)
            .map(|_| world.hold(2, &target, socket_lb))
            .find(|h| h.greeting.starts_with("ok pod0 "))
            .expect("a connection to pod0");
        apply_web(&mut world, &[1], "");
        let after = world.tcp_from_pod(2, addr(&target), 60, socket_lb);
        assert_eq!(
            counts(&after).get("pod1"),
            Some(&60),
            "new flows avoid the removed endpoint: {:?}",
            counts(&after)
        );
        // The open connection still works, on pod0.
        assert_eq!(
            held.echo("still-there"),
            "echo still-there",
            "open connection broke (socket_lb={socket_lb})"
        );
        drop(held);
        apply_web(&mut world, &[0, 1], "");
    }
}

#[test]
fn terminating_endpoints_serve_only_when_nothing_is_ready() {
    let mut world = LbWorld::build("term", 3).expect("world");
    world.start_agent(false, &[]).expect("agent");
    let (p0, p1) = (world.pods[0].ip.to_string(), world.pods[1].ip.to_string());
    let svc = service_yaml("web", SVC_IP, "", &[("http", 80, TCP_PORT, "TCP", 0)]);
    let both = slice_yaml(
        "web-1",
        "web",
        &[Ep::ready(&p0, NODE_NAME), Ep::terminating(&p1, NODE_NAME)],
        &[("http", TCP_PORT, "TCP")],
    );
    world.apply("web.yaml", &format!("{svc}---\n{both}"), 1);
    let target = addr(&format!("{SVC_IP}:80"));
    assert_eq!(
        counts(&world.tcp_from_pod(2, target, 40, false)).get("pod0"),
        Some(&40)
    );
    let only_term = slice_yaml(
        "web-1",
        "web",
        &[Ep::terminating(&p1, NODE_NAME)],
        &[("http", TCP_PORT, "TCP")],
    );
    world.apply("web.yaml", &format!("{svc}---\n{only_term}"), 1);
    assert_eq!(
        counts(&world.tcp_from_pod(2, target, 40, false)).get("pod1"),
        Some(&40)
    );
}

#[test]
fn service_without_endpoints_refuses_at_once() {
    let mut world = LbWorld::build("noeps", 2).expect("world");
    world.start_agent(true, &[]).expect("agent");
    apply_web(&mut world, &[], "");
    let tcp = format!("{SVC_IP}:80");
    let udp = format!("{SVC_IP}:53");
    let cg = world.node_cgroup();
    for (cgroup, expected) in [(None, "refused"), (Some(&cg), "denied")] {
        let got = world.probe(&world.pods[1].ns, cgroup, &["tcp", &tcp, "--count", "5"]);
        for a in &got {
            match a {
                Attempt::Err { kind, micros } => {
                    assert_eq!(kind, expected, "TCP to a Service without endpoints");
                    assert!(*micros < 500_000, "refusal took {micros} us");
                }
                other => panic!("unexpected success {other:?}"),
            }
        }
        let got = world.probe(
            &world.pods[1].ns,
            cgroup,
            &["udp", &udp, "--count", "3", "--connected"],
        );
        for a in &got {
            assert!(
                matches!(a, Attempt::Err { kind, micros } if (kind == "refused" || kind == "denied") && *micros < 500_000),
                "UDP: {a:?}"
            );
        }
    }
}

#[test]
fn hairpin_pod_reaches_itself_through_its_service() {
    let mut world = LbWorld::build("hairpin", 2).expect("world");
    world.start_agent(true, &[]).expect("agent");
    apply_web(&mut world, &[0], "");
    let target = addr(&format!("{SVC_IP}:80"));
    for socket_lb in [false, true] {
        let got = world.tcp_from_pod(0, target, 10, socket_lb);
        assert_eq!(
            counts(&got).get("pod0"),
            Some(&10),
            "hairpin (socket_lb={socket_lb}): {got:?}"
        );
    }
}

#[test]
fn node_port_from_outside_with_both_traffic_policies() {
    let mut world = LbWorld::build("nodeport", 3).expect("world");
    world.start_agent(true, &[]).expect("agent");
    let (p0, p1) = (world.pods[0].ip.to_string(), world.pods[1].ip.to_string());
    let ports = [
        ("http", 80, TCP_PORT, "TCP", 30080),
        ("dns", 53, UDP_PORT, "UDP", 30053),
    ];
    let slice_ports = [("http", TCP_PORT, "TCP"), ("dns", UDP_PORT, "UDP")];
    // pod1 is listed as living on another node: Local must never pick it.
    let eps = [Ep::ready(&p0, NODE_NAME), Ep::ready(&p1, "node2")];
    let slice = slice_yaml("web-1", "web", &eps, &slice_ports);
    let np_tcp = format!("{NODE_IP}:30080");
    let np_udp = format!("{NODE_IP}:30053");

    // Cluster: any endpoint, source NATed to the node so replies come back through it.
    let svc = service_yaml(
        "web",
        SVC_IP,
        "  type: NodePort\n  externalTrafficPolicy: Cluster\n",
        &ports,
    );
    world.apply("web.yaml", &format!("{svc}---\n{slice}"), 4);
    let got = world.probe(&world.ext, None, &["tcp", &np_tcp, "--count", "60"]);
    let c = counts(&got);
    assert!(
        c.contains_key("pod0") && c.contains_key("pod1"),
        "Cluster uses every endpoint: {c:?}"
    );
    for a in &got {
        let Attempt::Ok { peer, from, .. } = a else {
            panic!("NodePort failed: {a:?}")
        };
        assert!(
            peer.starts_with(&format!("{NODE_IP}:")),
            "backend sees the node as source: {peer}"
        );
        assert_eq!(from, &np_tcp);
    }
    let got = world.probe(&world.ext, None, &["udp", &np_udp, "--count", "20"]);
    assert!(
        got.iter()
            .all(|a| matches!(a, Attempt::Ok { from, .. } if from == &np_udp)),
        "UDP NodePort: {got:?}"
    );

    // Local: only this node's endpoints, client address preserved.
    let svc = service_yaml(
        "web",
        SVC_IP,
        "  type: NodePort\n  externalTrafficPolicy: Local\n",
        &ports,
    );
    world.apply("web.yaml", &format!("{svc}---\n{slice}"), 4);
    let got = world.probe(&world.ext, None, &["tcp", &np_tcp, "--count", "40"]);
    assert_eq!(
        counts(&got).get("pod0"),
        Some(&40),
        "Local uses only local endpoints: {got:?}"
    );
    for a in &got {
        let Attempt::Ok { peer, .. } = a else {
            unreachable!()
        };
        assert!(
            peer.starts_with(&format!("{EXT_IP}:")),
            "client address preserved: {peer}"
        );
    }
}

#[test]
fn established_connection_survives_agent_restart() {
    let mut world = LbWorld::build("restart", 3).expect("world");
    world.start_agent(false, &[]).expect("agent");
    apply_web(&mut world, &[0, 1], "");
    let mut held = world.hold(2, &format!("{SVC_IP}:80"), false);
    assert!(held.greeting.starts_with("ok pod"), "{}", held.greeting);
    let mut echo = |msg: &str| held.echo(msg);
    assert_eq!(echo("before"), "echo before");
    world.agent().kill();
    // Data path keeps working with no agent at all.
    assert_eq!(echo("agent-dead"), "echo agent-dead");
    world.agent().restart().expect("restart");
    world.agent().wait_frontends(2, 0, Duration::from_secs(10));
    assert_eq!(echo("after-restart"), "echo after-restart");
    let log = world.agent().log();
    assert!(
        log.contains("restored Service state from pinned maps frontends=2"),
        "{log}"
    );
    assert!(
        log.contains("written=0"),
        "restart must not rewrite unchanged Services: {log}"
    );
    // New connections still balance.
    let c = counts(&world.tcp_from_pod(2, addr(&format!("{SVC_IP}:80")), 60, false));
    assert!(c.contains_key("pod0") && c.contains_key("pod1"), "{c:?}");
}

/// Manual debugging aid: builds the world, programs `web`, and waits (run with --ignored).
#[test]
#[ignore]
fn debug_world() {
    let mut world = LbWorld::build("dbg", 3).expect("world");
    world.start_agent(true, &[]).expect("agent");
    apply_web(&mut world, &[0, 1], "");
    eprintln!("world ready");
    sleep(Duration::from_secs(100));
}

/// `curl http://ADDR/` from `world`'s outside client: (HTTP code, body); code 0 when nothing answers.
fn http_from_ext(world: &LbWorld, url: &str) -> (u16, String) {
    // curl fails (exit 7) when nothing listens: its output is what counts, not its status.
    let out = world
        .ext
        .command(std::path::Path::new("curl"))
        .args(["-s", "-m", "3", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn local_load_balancers_answer_health_checks_on_every_node() {
    let mut world = LbWorld::build("hcnp", 1).expect("world");
    world.start_agent(false, &[]).expect("agent");
    let url = format!("http://{NODE_IP}:32100/healthz");
    let local = "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  healthCheckNodePort: 32100\n";
    apply_web(&mut world, &[0], local);
    // The listener opens with the Service: kube-proxy's answer, 200 with this node's endpoint.
    let mut got = (0, String::new());
    for _ in 0..50 {
        got = http_from_ext(&world, &url);
        if got.0 != 0 {
            break;
        }
        sleep(Duration::from_millis(100));
    }
    assert_eq!(got.0, 200, "{got:?}");
    assert_eq!(
        got.1,
        r#"{"localEndpoints":1,"service":{"name":"web","namespace":"default"},"serviceProxyHealthy":true}"#
    );
    // The endpoint moves to another node: this node answers 503, so the load balancer skips it.
    let pod_ip = world.pods[0].ip.to_string();
    let elsewhere = format!(
        "{}---\n{}",
        service_yaml(
            "web",
            SVC_IP,
            local,
            &[("http", 80, TCP_PORT, "TCP", 0), ("dns", 53, UDP_PORT, "UDP", 0)]
        ),
        slice_yaml(
            "web-1",
            "web",
            &[Ep::ready(&pod_ip, "node2")],
            &[("http", TCP_PORT, "TCP"), ("dns", UDP_PORT, "UDP")]
        )
    );
    world.apply("web.yaml", &elsewhere, 2);
    let got = http_from_ext(&world, &url);
    assert_eq!(got.0, 503, "{got:?}");
    assert!(got.1.contains(r#""localEndpoints":0"#), "{got:?}");
    // Cluster traffic policy: no health check, the port closes.
    apply_web(
        &mut world,
        &[0],
        "  type: LoadBalancer\n  externalTrafficPolicy: Cluster\n",
    );
    let mut closed = false;
    for _ in 0..30 {
        if http_from_ext(&world, &url).0 == 0 {
            closed = true;
            break;
        }
        sleep(Duration::from_millis(100));
    }
    assert!(closed, "the health-check port closes with the Service's policy");
}

/// The counter `name` from `berth-agent lb ct`.
fn counter(world: &LbWorld, name: &str) -> u64 {
    world
        .lb("ct")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("counter {name} = ")).map(str::to_owned))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn host_network_backend_on_the_node_answers_through_the_service() {
    let mut world = LbWorld::build("hostbe", 1).expect("world");
    // A host-network backend: a server in the node's own namespace, listed by the node's address.
    let node = world.node.clone();
    world.bed.serve(&node, "host", 9090, 5454).expect("host server");
    // A UDP server bound to the wildcard answers from the source address of its route to the client,
    // which must be the address the request went to (as under kube-proxy: conntrack matches replies
    // by exact tuple too); the world's pod routes prefer the gateway address.
    let pod = world.pods[0].clone();
    node.ip(&[
        "route",
        "replace",
        &format!("{}/32", pod.ip),
        "dev",
        &pod.host_if,
        "src",
        &NODE_IP.to_string(),
    ])
    .expect("pod route");
    world.start_agent(true, &[]).expect("agent");
    let svc = service_yaml(
        "hostsvc",
        SVC_IP,
        "  type: NodePort\n  externalTrafficPolicy: Cluster\n",
        &[("http", 80, 9090, "TCP", 30090), ("dns", 53, 5454, "UDP", 30054)],
    );
    let node_ip = NODE_IP.to_string();
    let slice = slice_yaml(
        "hostsvc-1",
        "hostsvc",
        &[Ep::ready(&node_ip, NODE_NAME)],
        &[("http", 9090, "TCP"), ("dns", 5454, "UDP")],
    );
    world.apply("hostsvc.yaml", &format!("{svc}---\n{slice}"), 4);

    // TC path (the client is outside the node's cgroup) and socket LB: the request is only DNATed (with
    // the node's address as source the stack would drop it) and the locally generated replies get the
    // Service's address back at the pod interface's egress.
    let tcp = format!("{SVC_IP}:80");
    let udp = format!("{SVC_IP}:53");
    for socket_lb in [false, true] {
        let cg = socket_lb.then(|| world.node_cgroup());
        let got = world.probe(&world.pods[0].ns, cg.as_ref(), &["tcp", &tcp, "--count", "10"]);
        let c = counts(&got);
        assert_eq!(c.get("host"), Some(&10), "TCP (socket LB {socket_lb}): {got:?}");
        for a in &got {
            let Attempt::Ok { peer, .. } = a else {
                unreachable!()
            };
            assert!(
                peer.starts_with(&format!("{}:", world.pods[0].ip)),
                "the backend sees the pod: {peer}"
            );
        }
        let got = world.probe(&world.pods[0].ns, cg.as_ref(), &["udp", &udp, "--count", "10"]);
        assert_eq!(got.len(), 10);
        assert!(
            got.iter()
                .all(|a| matches!(a, Attempt::Ok { from, id, .. } if from == &udp && id == "host")),
            "UDP replies come from the Service (socket LB {socket_lb}): {got:?}"
        );
    }
    let after_pods = counter(&world, "host_reply");
    assert!(
        after_pods > 0,
        "TC-path replies were reverse-translated at egress"
    );

    // NodePort from outside: the reply leaves through the uplink with the NodePort as its source.
    let np_tcp = format!("{NODE_IP}:30090");
    let np_udp = format!("{NODE_IP}:30054");
    let got = world.probe(&world.ext, None, &["tcp", &np_tcp, "--count", "10"]);
    assert_eq!(got.len(), 10);
    for a in &got {
        let Attempt::Ok { id, from, peer, .. } = a else {
            panic!("NodePort to a host-network backend failed: {got:?}")
        };
        assert_eq!((id.as_str(), from.as_str()), ("host", np_tcp.as_str()));
        assert!(
            peer.starts_with(&format!("{EXT_IP}:")),
            "a backend on the node itself sees the client: {peer}"
        );
    }
    let got = world.probe(&world.ext, None, &["udp", &np_udp, "--count", "10"]);
    assert_eq!(got.len(), 10);
    assert!(
        got.iter()
            .all(|a| matches!(a, Attempt::Ok { from, id, .. } if from == &np_udp && id == "host")),
        "UDP NodePort replies come from the NodePort: {got:?}"
    );
    assert!(counter(&world, "host_reply") > after_pods);
}

#[test]
fn connected_udp_sockets_of_a_departed_backend_are_ended() {
    let mut world = LbWorld::build("udpend", 3).expect("world");
    world.start_agent(true, &[]).expect("agent");
    apply_web(&mut world, &[0, 1], "");
    let cg = world.node_cgroup();
    let target = format!("{SVC_IP}:53");
    // Connected through the socket LB until both backends are in use.
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut h = hold_udp_from(&world.pods[2].ns, Some(&cg), &target);
        let first = h.echo("hello");
        held.push((first, h));
        let used: std::collections::HashSet<&str> = held.iter().map(|(f, _)| f.as_str()).collect();
        if used.contains("echo pod0") && used.contains("echo pod1") {
            break;
        }
    }
    // And one socket connected to pod0's address itself, not through the Service.
    let direct_target = format!("{}:{UDP_PORT}", world.pods[0].ip);
    let mut direct = hold_udp_from(&world.pods[2].ns, Some(&cg), &direct_target);
    assert_eq!(direct.echo("hello"), "echo pod0");

    // pod0 leaves the Service (it still runs: without the ending, its sockets would still be answered).
    apply_web(&mut world, &[1], "");
    let mut ended = 0;
    for (first, h) in &mut held {
        let now = h.echo("again");
        if first == "echo pod0" {
            assert_eq!(
                now, "err connectionaborted 0",
                "a socket to the departed backend ends"
            );
            ended += 1;
        } else {
            assert_eq!(now, "echo pod1", "a socket to a staying backend keeps working");
        }
    }
    assert!(
        ended > 0,
        "no socket went to pod0: {:?}",
        held.iter().map(|(f, _)| f).collect::<Vec<_>>()
    );
    assert_eq!(
        direct.echo("again"),
        "echo pod0",
        "a socket the LB did not connect is left alone"
    );
    assert!(
        world.agent().log().contains(&format!(
            "ended connected UDP sockets of departed backends ended={ended}"
        )),
        "{}",
        world.agent().log()
    );
    // A new socket is balanced over what is left.
    let mut fresh = hold_udp_from(&world.pods[2].ns, Some(&cg), &target);
    assert_eq!(fresh.echo("hello"), "echo pod1");
}

#[test]
fn icmp_errors_about_service_flows_reach_their_client() {
    let mut world = LbWorld::build("icmperr", 3).expect("world");
    // pod0's link is narrower than the others': the node answers a client's too-large datagram for
    // pod0 with "fragmentation needed", which quotes the translated packet.
    let pod0 = world.pods[0].clone();
    world
        .node
        .ip(&["link", "set", "dev", &pod0.host_if, "mtu", "1200"])
        .expect("mtu");
    pod0.ns
        .ip(&["link", "set", "dev", "eth0", "mtu", "1200"])
        .expect("mtu");
    world.start_agent(true, &[]).expect("agent");
    // A second Service whose backend has nothing listening: pod1 answers "port unreachable".
    let closed_ip = "10.96.0.60";
    let pod1_ip = world.pods[1].ip.to_string();
    let closed = format!(
        "{}---\n{}",
        service_yaml("closed", closed_ip, "", &[("dns", 54, 5999, "UDP", 0)]),
        slice_yaml(
            "closed-1",
            "closed",
            &[Ep::ready(&pod1_ip, NODE_NAME)],
            &[("dns", 5999, "UDP")]
        )
    );
    world.apply("closed.yaml", &closed, 1);
    let web = web_yaml(&world, &[0], "");
    world.apply("web.yaml", &web, 3);

    // Path MTU discovery through the Service, on the TC path (the error is the node's own, translated
    // at the pod interface's egress) and the socket LB (the socket is connected to pod0 itself).
    let target = format!("{SVC_IP}:53");
    for socket_lb in [false, true] {
        let cg = socket_lb.then(|| world.node_cgroup());
        let out = world.probe_output(
            &world.pods[2].ns,
            cg.as_ref(),
            &["pmtu", &target, "--size", "1400", "--timeout-ms", "1000"],
        );
        assert_eq!(out.trim(), "mtu 1200", "socket LB {socket_lb}");
    }
    // Port unreachable from the backend, translated at ingress: the client hears "refused" at once.
    let got = world.probe(
        &world.pods[2].ns,
        None,
        &["udp", &format!("{closed_ip}:54"), "--connected", "--count", "3"],
    );
    assert!(
        got.iter()
            .all(|a| matches!(a, Attempt::Err { kind, .. } if kind == "refused")),
        "{got:?}"
    );
    assert!(counter(&world, "icmp_errors") >= 4);
}

#[test]
fn udp_datagrams_above_the_mtu_cross_a_service_in_fragments() {
    let mut world = LbWorld::build("frags", 3).expect("world");
    world.start_agent(true, &[]).expect("agent");
    let (p0, p1) = (world.pods[0].ip.to_string(), world.pods[1].ip.to_string());
    let svc = service_yaml(
        "web",
        SVC_IP,
        "  type: NodePort\n  externalTrafficPolicy: Cluster\n",
        &[("dns", 53, UDP_PORT, "UDP", 30053)],
    );
    let slice = slice_yaml(
        "web-1",
        "web",
        &[Ep::ready(&p0, NODE_NAME), Ep::ready(&p1, NODE_NAME)],
        &[("dns", UDP_PORT, "UDP")],
    );
    world.apply("web.yaml", &format!("{svc}---\n{slice}"), 2);
    // 4000-byte requests and answers: three fragments each way. Only the first carries ports; the
    // others must follow it to the backend (TC path, NodePort with SNAT) and back to the client.
    let cluster_ip = format!("{SVC_IP}:53");
    let node_port = format!("{NODE_IP}:30053");
    let cases = [
        ("TC path", &world.pods[2].ns, None, &cluster_ip),
        (
            "socket LB",
            &world.pods[2].ns,
            Some(world.node_cgroup()),
            &cluster_ip,
        ),
        ("NodePort", &world.ext, None, &node_port),
    ];
    for (what, ns, cg, target) in cases {
        let got = world.probe(
            ns,
            cg.as_ref(),
            &["udp", target, "--size", "4000", "--count", "10"],
        );
        assert_eq!(got.len(), 10, "{what}");
        for a in &got {
            assert!(
                matches!(a, Attempt::Ok { from, .. } if from == target),
                "{what}: {got:?}"
            );
        }
    }
}
