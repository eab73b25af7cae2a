//! Where the agent's memory goes with N Services x M endpoints: a counting allocator around the
//! stores, the incremental desired state and a clone of it (the programmer's record).
//! `cargo run --release -p berth-agent --example memory_profile -- 10000 10`

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicIsize, Ordering},
};

use berth_agent::{
    lb::{LbAlgorithm, NodeInfo, incremental::IncrementalState},
    model::{EndpointSlice, Service, Trim},
    source::{Event, feed},
};
use serde_json::json;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}
#[global_allocator]
static A: Counting = Counting;

fn mib() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / 1048576.0
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (n, m) = (
        args.first().copied().unwrap_or(10000),
        args.get(1).copied().unwrap_or(10),
    );
    let (mut sw, mut sf) = feed::<Service>();
    let (mut ew, mut ef) = feed::<EndpointSlice>();
    let base = mib();
    sw.apply(&Event::Init);
    ew.apply(&Event::Init);
    for k in 0..n {
        let mut svc: Service = serde_json::from_value(json!({
            "metadata": {"name": format!("svc-{k}"), "namespace": "default", "uid": "0b7e3f4c-2f7a-4a55-9d7e-5c1d2f3a4b5c",
                "resourceVersion": format!("{}", 100000 + k), "creationTimestamp": "2026-12-06T01:00:00Z",
                "labels": {"app": format!("svc-{k}")}},
            "spec": {"type": "ClusterIP", "clusterIP": format!("10.96.{}.{}", k / 250, k % 250 + 1),
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}], "sessionAffinity": "None"}
        }))
        .expect("svc");
        svc.trim();
        sw.apply(&Event::InitApply(svc));
        let eps: Vec<_> = (0..m)
            .map(|j| json!({"addresses": [format!("10.{}.{}.{}", 100 + k / 65536, (k / 256) % 256, (k + j) % 256)], "conditions": {"ready": true}, "nodeName": "elsewhere"}))
            .collect();
        let mut slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": format!("svc-{k}-1"), "namespace": "default", "uid": "0b7e3f4c-2f7a-4a55-9d7e-5c1d2f3a4b5c",
                "resourceVersion": format!("{}", 200000 + k), "creationTimestamp": "2026-12-06T01:00:00Z",
                "labels": {"kubernetes.io/service-name": format!("svc-{k}")}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": eps
        }))
        .expect("slice");
        slice.trim();
        ew.apply(&Event::InitApply(slice));
    }
    sw.apply(&Event::InitDone);
    ew.apply(&Event::InitDone);
    let stores = mib();
    println!("stores: {:.1} MiB", stores - base);
    let mut state = IncrementalState::default();
    let node = NodeInfo {
        name: "here".into(),
        addresses: vec![],
        algorithm: LbAlgorithm::Random,
    };
    let (Some(s), Some(e)) = (sf.snapshot(), ef.snapshot()) else {
        panic!("not ready")
    };
    state.update(s, e, &node);
    let desired = mib();
    println!(
        "incremental state (indexes + desired): {:.1} MiB",
        desired - stores
    );
    let copy = state.desired().clone();
    println!(
        "one clone of the desired state (the programmer's record): {:.1} MiB",
        mib() - desired
    );
    drop(copy);
}
