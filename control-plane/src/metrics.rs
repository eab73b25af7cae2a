//! `/metrics`: the control plane's counters in Prometheus' text exposition format (0.0.4), under the
//! names kube-apiserver, kube-scheduler and etcd use for the same things, so existing dashboards and
//! alerts read them: `apiserver_request_total`, `apiserver_request_duration_seconds`,
//! `apiserver_longrunning_requests`, `apiserver_storage_objects`, `scheduler_schedule_attempts_total`,
//! the store's commit latency (etcd's `etcd_disk_backend_commit_duration_seconds`) and the process'
//! own `process_*` metrics.
//!
//! One process-wide registry ([`global`]): requests are recorded by the server, scheduling attempts by
//! the scheduler, without threading a handle through every layer. The store's figures (commit times,
//! objects, revisions) are read from the store when rendered: the store does not know this module.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{LazyLock, Mutex, MutexGuard},
    time::Duration,
};

use crate::store::{COMMIT_BUCKETS, Store};

/// The exposition format's media type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// kube-apiserver's request latency buckets (seconds).
const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0,
    20.0, 30.0, 45.0, 60.0,
];

/// A cumulative histogram.
#[derive(Clone, Debug)]
struct Histogram {
    bounds: &'static [f64],
    /// Observations at or below each bound (not yet cumulative).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, seconds: f64) {
        if let Some(i) = self.bounds.iter().position(|b| seconds <= *b) {
            self.counts[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, n) in self.bounds.iter().zip(&self.counts) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// What identifies an API request in the metrics (kube-apiserver's labels).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestLabels {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`; for paths
    /// that are not resources, the HTTP method in lower case.
    pub verb: &'static str,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
}

impl RequestLabels {
    fn render(&self) -> String {
        format!(
            "verb=\"{}\",group=\"{}\",version=\"{}\",resource=\"{}\",subresource=\"{}\"",
            escape(&self.verb.to_uppercase()),
            escape(&self.group),
            escape(&self.version),
            escape(&self.resource),
            escape(&self.subresource)
        )
    }
}

#[derive(Default)]
struct Registry {
    requests: BTreeMap<(RequestLabels, u16), u64>,
    durations: BTreeMap<RequestLabels, Histogram>,
    open_watches: BTreeMap<RequestLabels, i64>,
    schedule_attempts: BTreeMap<&'static str, u64>,
}

/// The process-wide metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    registry: Mutex::new(Registry::default()),
});

/// The registry every part of the process records into.
pub fn global() -> &'static Metrics {
    &METRICS
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Counters stay usable after a panic elsewhere: at worst one observation is lost.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One answered request. Watches count here when they end; their duration is not a latency and
    /// is left out of the histogram, as kube-apiserver does.
    pub fn request(&self, labels: RequestLabels, code: u16, elapsed: Duration) {
        let mut r = self.lock();
        if labels.verb != "watch" {
            r.durations
                .entry(labels.clone())
                .or_insert_with(|| Histogram::new(REQUEST_BUCKETS))
                .observe(elapsed.as_secs_f64());
        }
        *r.requests.entry((labels, code)).or_default() += 1;
    }

    /// A watch opened (`+1`) or closed (`-1`).
    pub fn watch_open(&self, labels: &RequestLabels, delta: i64) {
        *self.lock().open_watches.entry(labels.clone()).or_default() += delta;
    }

    /// One scheduling attempt: `scheduled`, `unschedulable` or `error`.
    pub fn schedule_attempt(&self, result: &'static str) {
        *self.lock().schedule_attempts.entry(result).or_default() += 1;
    }

    /// Everything, in the text exposition format.
    pub fn render(&self, store: &Store) -> String {
        let mut out = String::new();
        {
            let r = self.lock();
            header(
                &mut out,
                "apiserver_request_total",
                "counter",
                "Counter of apiserver requests broken out by verb, group, version, resource, subresource and HTTP response code.",
            );
            for ((labels, code), n) in &r.requests {
                let _ = writeln!(
                    out,
                    "apiserver_request_total{{{},code=\"{code}\"}} {n}",
                    labels.render()
                );
            }
            header(
                &mut out,
                "apiserver_request_duration_seconds",
                "histogram",
                "Response latency distribution in seconds for each verb, group, version, resource and subresource (watches excluded).",
            );
            for (labels, h) in &r.durations {
                h.write(&mut out, "apiserver_request_duration_seconds", &labels.render());
            }
            header(
                &mut out,
                "apiserver_longrunning_requests",
                "gauge",
                "Gauge of all active long-running apiserver requests (watches) broken out by verb, group, version, resource and subresource.",
            );
            for (labels, n) in &r.open_watches {
                let _ = writeln!(out, "apiserver_longrunning_requests{{{}}} {n}", labels.render());
            }
            header(
                &mut out,
                "scheduler_schedule_attempts_total",
                "counter",
                "Number of attempts to schedule pods, by the result: 'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler problem.",
            );
            for (result, n) in &r.schedule_attempts {
                let _ = writeln!(
                    out,
                    "scheduler_schedule_attempts_total{{profile=\"default-scheduler\",result=\"{result}\"}} {n}"
                );
            }
            header(
                &mut out,
                "berth_store_commit_duration_seconds",
                "histogram",
                "Latency of the embedded store's commits to disk (one per write or batch of writes), as etcd_disk_backend_commit_duration_seconds.",
            );
            if let Some(times) = store.commit_times().filter(|t| t.count > 0) {
                let histogram = Histogram {
                    bounds: COMMIT_BUCKETS,
                    counts: times.counts,
                    sum: times.sum_seconds,
                    count: times.count,
                };
                histogram.write(&mut out, "berth_store_commit_duration_seconds", "");
            }
        }
        header(
            &mut out,
            "apiserver_storage_objects",
            "gauge",
            "Number of stored objects at the time of last check split by kind.",
        );
        for (resource, n) in store.count_by_resource() {
            let _ = writeln!(
                out,
                "apiserver_storage_objects{{resource=\"{}\"}} {n}",
                escape(&resource)
            );
        }
        header(
            &mut out,
            "berth_store_current_revision",
            "gauge",
            "The store's newest revision.",
        );
        let _ = writeln!(out, "berth_store_current_revision {}", store.revision());
        header(
            &mut out,
            "berth_store_compact_revision",
            "gauge",
            "The revision history is compacted up to.",
        );
        let _ = writeln!(out, "berth_store_compact_revision {}", store.compacted_revision());
        process(&mut out);
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// `process_*` from `/proc/self`, as every Prometheus client library exports them.
fn process(out: &mut String) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at ") ".
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // proc(5) counts times in USER_HZ, fixed at 100 in Linux' user ABI; fields are numbered from 1,
    // and `fields` starts at the third: utime 14, stime 15, starttime 22, vsize 23.
    const USER_HZ: f64 = 100.0;
    let cpu = (field(11) + field(12)) / USER_HZ;
    let boot = std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let start = boot + field(19) / USER_HZ;
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
    for (name, kind, help, value) in [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            cpu,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            rss_kib * 1024.0,
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            field(20),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            start,
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            open_fds as f64,
        ),
    ] {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_inf_sum_and_count() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.5, 0.7, 3.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.write(&mut out, "x", "a=\"b\"");
        assert_eq!(
            out,
            "x_bucket{a=\"b\",le=\"0.1\"} 1\nx_bucket{a=\"b\",le=\"1\"} 3\nx_bucket{a=\"b\",le=\"+Inf\"} 4\nx_sum{a=\"b\"} 4.25\nx_count{a=\"b\"} 4\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
