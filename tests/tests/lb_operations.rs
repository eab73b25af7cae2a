//! Operating the load balancer: Maglev, conntrack garbage collection, inspection, continuous endpoint
//! churn under traffic, bad manifests, interfaces that appear after the agent started.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::sleep,
    time::{Duration, Instant},
};

use berth_tests::{
    lbworld::{LbWorld, WEB_IP, web_yaml},
    probe::{Attempt, LoadSummary},
};

fn web_target() -> SocketAddr {
    format!("{WEB_IP}:80").parse().expect("address")
}

fn counts(attempts: &[Attempt]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for a in attempts {
        *m.entry(a.id().unwrap_or("<failed>").to_string()).or_default() += 1;
    }
    m
}

#[test]
fn maglev_spreads_flows_and_is_listed() {
    let mut world = LbWorld::build("maglev", 4).expect("world");
    world
        .start_agent(false, &["--lb-algorithm", "maglev"])
        .expect("agent");
    let yaml = web_yaml(&world, &[0, 1, 2], "");
    world.apply("web.yaml", &yaml, 2);
    let list = world.lb("list");
    assert!(
        list.contains("maglev"),
        "lb list shows the Maglev frontends:\n{list}"
    );
    let got = world.tcp_from_pod(3, web_target(), 300, false);
    let c = counts(&got);
    for b in ["pod0", "pod1", "pod2"] {
        let n = c.get(b).copied().unwrap_or(0);
        assert!(n > 50 && n < 160, "Maglev spread {c:?}");
    }
}

#[test]
fn lb_list_and_ct_show_the_data_plane() {
    let mut world = LbWorld::build("inspect", 3).expect("world");
    world.start_agent(false, &[]).expect("agent");
    let yaml = web_yaml(&world, &[0, 1], "  sessionAffinity: ClientIP\n");
    world.apply("web.yaml", &yaml, 2);
    let list = world.lb("list");
    for needle in [
        "10.96.0.10:80/TCP",
        "10.96.0.10:53/UDP",
        "10.244.0.10:8080 (active, local)",
        "affinity=10800s",
    ] {
        assert!(list.contains(needle), "missing {needle:?} in:\n{list}");
    }
    world.tcp_from_pod(2, web_target(), 1, false);
    let ct = world.lb("ct");
    assert!(
        ct.contains("TCP 10.244.0.12:") && ct.contains("-> 10.96.0.10:80 =>"),
        "forward entry:\n{ct}"
    );
    assert!(ct.contains("[reply"), "reply entry:\n{ct}");
    assert!(ct.contains("counter new_flow = 1"), "counters:\n{ct}");
}

#[test]
fn idle_conntrack_entries_are_collected() {
    let mut world = LbWorld::build("ctgc", 2).expect("world");
    world
        .start_agent(false, &["--ct-gc-secs", "1", "--ct-udp-timeout-secs", "2"])
        .expect("agent");
    let yaml = web_yaml(&world, &[0], "");
    world.apply("web.yaml", &yaml, 2);
    let got = world.probe(
        &world.pods[1].ns,
        None,
        &["udp", &format!("{WEB_IP}:53"), "--count", "5"],
    );
    assert!(got.iter().all(|a| a.id() == Some("pod0")), "{got:?}");
    // GC runs every second with a 2 s UDP timeout: some of the five flows may be gone already, but
    // not all of them (each has a forward and a reply entry).
    let ct = world.lb("ct");
    assert!(ct.contains("[reply]") && ct.contains("10.96.0.10:53 =>"), "{ct}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !world.lb("ct").contains("\n0 entries") && !world.lb("ct").starts_with("0 entries") {
        assert!(
            Instant::now() < deadline,
            "UDP entries were not collected:\n{}",
            world.lb("ct")
        );
        sleep(Duration::from_millis(200));
    }
}

#[test]
fn endpoint_churn_never_refuses_a_new_connection() {
    let mut world = LbWorld::build("churn", 5).expect("world");
    // A pause after every slot write makes a wrong write order (count before slots) visible to
    // thousands of connections instead of a few microseconds' worth.
    world
        .start_agent(false, &["--slot-write-delay-us", "3000"])
        .expect("agent");
    let yaml = web_yaml(&world, &[0, 1, 2], "");
    world.apply("web.yaml", &yaml, 2);
    // Every state has at least one backend, so a client must never be refused: a refusal would mean a
    // packet saw a count pointing at slots not written yet.
    let states: Vec<String> = [&[0, 1, 2][..], &[3], &[0, 1, 2, 3], &[2], &[1, 3], &[0, 1, 2, 3]]
        .iter()
        .map(|b| web_yaml(&world, b, ""))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let manifests = world.manifests.clone();
    let flag = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut i = 0;
        while !flag.load(Ordering::SeqCst) && i < 400 {
            let tmp = manifests.join(".web.yaml.tmp");
            std::fs::write(&tmp, &states[i % states.len()]).expect("write");
            std::fs::rename(&tmp, manifests.join("web.yaml")).expect("rename");
            i += 1;
            sleep(Duration::from_millis(60));
        }
        i
    });
    let targets = world.bed.scratch().join("targets");
    std::fs::write(&targets, web_target().to_string()).expect("targets");
    let out = std::process::Command::new(berth_tests::workspace_bin("berth-probe"))
        .args(["--netns", &world.pods[4].ns.name, "load", "--targets-file"])
        .arg(&targets)
        .args(["--duration-ms", "3000", "--threads", "1", "--max", "100000"])
        .output()
        .expect("load");
    stop.store(true, Ordering::SeqCst);
    let updates = writer.join().expect("writer");
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find_map(LoadSummary::parse)
        .unwrap_or_else(|| panic!("load output: {text}"));
    assert!(updates > 20, "only {updates} updates happened");
    assert!(summary.ok > 1000, "too little traffic: {summary:?}");
    assert_eq!(
        summary.errors, 0,
        "connections failed during {updates} updates: {summary:?}"
    );
    let log = world.agent().log();
    assert!(
        log.matches("Services synced").count() > 10,
        "the agent applied the updates:\n{log}"
    );
}

#[test]
fn broken_manifest_keeps_working_services() {
    let mut world = LbWorld::build("badyaml", 2).expect("world");
    world.start_agent(false, &[]).expect("agent");
    let yaml = web_yaml(&world, &[0], "");
    world.apply("web.yaml", &yaml, 2);
    world.write_manifest(
        "web.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web\nspec: [oops\n",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !world.agent().log().contains("manifest not applied") {
        assert!(
            Instant::now() < deadline,
            "no error logged:\n{}",
            world.agent().log()
        );
        sleep(Duration::from_millis(50));
    }
    assert!(
        world.agent().log().contains("web.yaml"),
        "the error names the file"
    );
    let got = world.tcp_from_pod(1, web_target(), 5, false);
    assert_eq!(
        counts(&got).get("pod0"),
        Some(&5),
        "Service still served: {got:?}"
    );
}

#[test]
fn pod_interface_added_later_is_served() {
    let mut world = LbWorld::build("hotplug", 1).expect("world");
    world.start_agent(false, &[]).expect("agent");
    let yaml = web_yaml(&world, &[0], "");
    world.apply("web.yaml", &yaml, 2);
    let late = world.add_pod().expect("new pod");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = world.tcp_from_pod(late, web_target(), 1, false);
        if got[0].id() == Some("pod0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new pod's interface never served: {got:?}\n{}",
            world.agent().log()
        );
        sleep(Duration::from_millis(100));
    }
    // The connection can win the race against the agent's log line written right after attaching.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !world.agent().log().contains("iface=vp1") {
        assert!(Instant::now() < deadline, "{}", world.agent().log());
        sleep(Duration::from_millis(20));
    }
}

#[test]
fn affinity_ends_when_its_backend_starts_terminating() {
    let mut world = LbWorld::build("affterm", 4).expect("world");
    world.start_agent(true, &[]).expect("agent");
    let affinity =
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}\n";
    let yaml = web_yaml(&world, &[0, 1, 2], affinity);
    world.apply("web.yaml", &yaml, 2);
    for socket_lb in [false, true] {
        let first = world.tcp_from_pod(3, web_target(), 5, socket_lb);
        let stuck = first[0].id().expect("served").to_string();
        assert!(
            first.iter().all(|a| a.id() == Some(stuck.as_str())),
            "sticky: {first:?}"
        );
        let stuck_index: usize = stuck.trim_start_matches("pod").parse().expect("pod index");
        // The sticky backend starts terminating: it keeps its open flows but gets no new ones.
        let ips: Vec<String> = world.pods[..3].iter().map(|p| p.ip.to_string()).collect();
        let eps: Vec<berth_tests::lbworld::Ep<'_>> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                if i == stuck_index {
                    berth_tests::lbworld::Ep::terminating(ip, berth_tests::lbworld::NODE_NAME)
                } else {
                    berth_tests::lbworld::Ep::ready(ip, berth_tests::lbworld::NODE_NAME)
                }
            })
            .collect();
        let svc =
            berth_tests::lbworld::service_yaml("web", WEB_IP, affinity, &[("http", 80, 8080, "TCP", 0)]);
        let slice = berth_tests::lbworld::slice_yaml("web-1", "web", &eps, &[("http", 8080, "TCP")]);
        world.apply("web.yaml", &format!("{svc}---\n{slice}"), 1);
        let after = world.tcp_from_pod(3, web_target(), 20, socket_lb);
        assert!(
            after
                .iter()
                .all(|a| a.id().is_some() && a.id() != Some(stuck.as_str())),
            "affinity to a terminating backend must end (socket_lb={socket_lb}): {after:?}"
        );
        let yaml = web_yaml(&world, &[0, 1, 2], affinity);
        world.apply("web.yaml", &yaml, 2);
    }
}

#[test]
fn a_client_reusing_its_port_after_a_backend_left_is_balanced_anew() {
    // A busy client reuses source ports within seconds. The old connection's conntrack entry still
    // names its backend; once that backend has left the Service, a new connection on the same tuple
    // must go to a backend the Service has now (as netfilter's conntrack re-balances a SYN on a closed
    // entry). The demo's deleted pod lost requests to exactly this.
    let mut world = LbWorld::build("portreuse", 3).expect("world");
    world.start_agent(false, &[]).expect("agent");
    world.apply("web.yaml", &web_yaml(&world, &[0, 1], ""), 2);
    let target = web_target().to_string();
    let from_port = ["tcp", target.as_str(), "--count", "1", "--source-port", "40404"];
    let first = world.probe(&world.pods[2].ns, None, &from_port);
    let served = first[0].id().expect("served").to_string();
    let left: usize = served.trim_start_matches("pod").parse().expect("pod index");
    let stays = 1 - left;
    world.apply("web.yaml", &web_yaml(&world, &[stays], ""), 2);
    for _ in 0..3 {
        let again = world.probe(&world.pods[2].ns, None, &from_port);
        assert_eq!(
            again[0].id(),
            Some(format!("pod{stays}").as_str()),
            "the same tuple went to the backend that left ({served}): {again:?}"
        );
    }
}

#[test]
fn restart_with_a_broken_manifest_keeps_its_services() {
    let mut world = LbWorld::build("brokenrst", 2).expect("world");
    world.start_agent(false, &[]).expect("agent");
    let yaml = web_yaml(&world, &[0], "");
    world.apply("web.yaml", &yaml, 2);
    world.agent().kill();
    world.write_manifest(
        "web.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web\n",
    );
    world.agent().restart().expect("restart");
    // The file never parsed since this start: the initial list is withheld, and the Services the pinned
    // maps hold must not be withdrawn.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !world.agent().log().contains("initial list is withheld") {
        assert!(Instant::now() < deadline, "{}", world.agent().log());
        sleep(Duration::from_millis(50));
    }
    let got = world.tcp_from_pod(1, web_target(), 5, false);
    assert_eq!(
        counts(&got).get("pod0"),
        Some(&5),
        "Service still served: {got:?}"
    );
    // The Service task says so once it has run (on a loaded machine, after the source's warning).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !world.agent().log().contains("Services wait for the initial list") {
        assert!(Instant::now() < deadline, "{}", world.agent().log());
        sleep(Duration::from_millis(50));
    }
    // Once the file is fixed, removals work again.
    let yaml = web_yaml(&world, &[0], "");
    world.apply(
        "web.yaml",
        &yaml
            .replace("name: dns", "name: dns2")
            .replace("port: 53\n", "port: 54\n"),
        2,
    );
    assert!(
        world.lb("list").contains("10.96.0.10:54/UDP") && !world.lb("list").contains("10.96.0.10:53/UDP"),
        "{}",
        world.lb("list")
    );
}

#[test]
fn maps_pinned_with_an_older_layout_are_replaced_when_they_hold_no_state() {
    let mut world = LbWorld::build("upgrade", 2).expect("world");
    // What an older berth left: the node configuration with a 20-byte value (before the cluster network
    // fields), five counters, and the Service map of before BERTH_FRONTENDS (a header or a slot per
    // entry), which nothing reads any more.
    let pins = world.bed.bpffs_root().join(berth_tests::lbworld::NODE_NAME);
    // bpffs as the agent would mount it, if nothing is mounted yet (never a second layer).
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if !mounts.lines().any(|l| l.starts_with("bpf /sys/fs/bpf ")) {
        berth_tests::testbed::run("mount", &["-t", "bpf", "bpf", "/sys/fs/bpf"]).expect("bpffs");
    }
    std::fs::create_dir_all(&pins).expect("pin dir");
    for (name, kind, key, value, entries) in [
        ("BERTH_CONFIG", "array", "4", "20", "1"),
        ("BERTH_COUNTERS", "percpu_array", "4", "8", "5"),
        ("BERTH_SVC", "hash", "12", "28", "1024"),
    ] {
        let path = pins.join(name);
        berth_tests::testbed::run(
            "bpftool",
            &[
                "map",
                "create",
                &path.display().to_string(),
                "type",
                kind,
                "key",
                key,
                "value",
                value,
                "entries",
                entries,
                "name",
                name,
            ],
        )
        .expect("old-layout map");
    }
    world.start_agent(false, &[]).expect("agent starts over old pins");
    let yaml = web_yaml(&world, &[0], "");
    world.apply("web.yaml", &yaml, 2);
    let got = world.tcp_from_pod(1, web_target(), 5, false);
    assert_eq!(counts(&got).get("pod0"), Some(&5), "{got:?}");
    assert!(
        world.lb("ct").contains("counter new_flow = 5"),
        "{}",
        world.lb("ct")
    );
    assert!(!pins.join("BERTH_SVC").exists(), "the obsolete map is unpinned");
    assert!(pins.join("BERTH_FRONTENDS").exists());
}
