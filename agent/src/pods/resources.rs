//! Requests and limits as kubelet maps them onto cgroups: cpu shares from the CPU request (1024 per
//! core, at least 2), a CFS quota from the CPU limit (per 100 ms period), the memory limit in bytes;
//! per container, and summed per pod (kubelet's pod-level cgroup); and the pod's QoS class, which
//! names its parent cgroup (`kubepods/`, `kubepods/burstable/`, `kubepods/besteffort/`).

use std::collections::BTreeMap;

use berth_runtime::spec::Resources;
use k8s_openapi::{
    api::core::v1::{Container, Pod},
    apimachinery::pkg::api::resource::Quantity,
};

/// kubelet's CFS period.
const CPU_PERIOD_US: u64 = 100_000;

/// A quantity (`500m`, `2`, `64Mi`, `1G`, `1.5`, `2e3`) in thousandths of its unit, rounded up;
/// `None` if it is not a quantity.
pub fn milli(q: &str) -> Option<u128> {
    let q = q.trim();
    let (number, suffix) = q.split_at(q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len()));
    let (mantissa, exp10) = match suffix {
        s if s.starts_with('e') || s.starts_with('E') => (number, s[1..].parse::<i32>().ok()?),
        _ => (number, 0),
    };
    let suffix = if exp10 != 0 || suffix.starts_with(['e', 'E']) {
        ""
    } else {
        suffix
    };
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && frac.is_empty() || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // value = digits / 10^frac_len * multiplier * 1000
    let digits: u128 = format!("{whole}{frac}").parse().ok()?;
    let (num, den): (u128, u128) = match suffix {
        "" => (1000, 1),
        "m" => (1, 1),
        "k" => (1_000_000, 1),
        "M" => (1_000_000_000, 1),
        "G" => (1_000_000_000_000, 1),
        "T" => (1_000_000_000_000_000, 1),
        "Ki" => (1024 * 1000, 1),
        "Mi" => (1024 * 1024 * 1000, 1),
        "Gi" => (1024 * 1024 * 1024 * 1000, 1),
        "Ti" => (1024u128.pow(4) * 1000, 1),
        _ => return None,
    };
    let mut den = den * 10u128.checked_pow(frac.len() as u32)?;
    let mut num = digits.checked_mul(num)?;
    if exp10 > 0 {
        num = num.checked_mul(10u128.checked_pow(exp10 as u32)?)?;
    } else if exp10 < 0 {
        den = den.checked_mul(10u128.checked_pow(exp10.unsigned_abs())?)?;
    }
    Some(num.div_ceil(den))
}

fn get(map: Option<&BTreeMap<String, Quantity>>, key: &str) -> Option<u128> {
    map.and_then(|m| m.get(key)).and_then(|q| milli(&q.0))
}

/// What one container asks for, in thousandths (the API server defaults a missing request to the
/// limit).
#[derive(Clone, Copy, Default)]
struct Asked {
    cpu_request: Option<u128>,
    cpu_limit: Option<u128>,
    memory_limit: Option<u128>,
}

impl Asked {
    fn of(c: &Container) -> Self {
        let r = c.resources.as_ref();
        let (requests, limits) = (
            r.and_then(|r| r.requests.as_ref()),
            r.and_then(|r| r.limits.as_ref()),
        );
        Asked {
            cpu_request: get(requests, "cpu").or_else(|| get(limits, "cpu")),
            cpu_limit: get(limits, "cpu"),
            memory_limit: get(limits, "memory"),
        }
    }

    fn resources(self) -> Resources {
        Resources {
            memory_limit: self.memory_limit.map(|m| (m / 1000) as i64),
            cpu_shares: Some(shares(self.cpu_request.unwrap_or(0))),
            cpu_quota: self
                .cpu_limit
                .map(|m| ((m * u128::from(CPU_PERIOD_US) / 1000) as i64).max(1000)),
            cpu_period: self.cpu_limit.map(|_| CPU_PERIOD_US),
            pids_limit: None,
        }
    }
}

/// cpu shares for a request in millicores: 1024 per core, at least 2 (kubelet's MilliCPUToShares).
fn shares(millicores: u128) -> u64 {
    (millicores * 1024 / 1000).clamp(2, 262_144) as u64
}

/// The container's cgroup limits.
pub fn container_resources(c: &Container) -> Resources {
    Asked::of(c).resources()
}

/// The pod's cgroup limits, as kubelet's pod-level cgroup has them: each amount is the larger of the
/// app containers' sum and the largest init container's (init containers run one at a time, before
/// the others); a limit only when every container declares it; the pids limit of the node
/// (`--pod-max-pids`). A BestEffort pod gets the minimum cpu shares.
pub fn pod_resources(pod: &Pod, pids_limit: Option<i64>) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let apps: Vec<Asked> = spec.containers.iter().map(Asked::of).collect();
    let inits: Vec<Asked> = spec.init_containers.iter().flatten().map(Asked::of).collect();
    let all_declare = |f: fn(&Asked) -> Option<u128>| apps.iter().chain(&inits).all(|a| f(a).is_some());
    let effective = |f: fn(&Asked) -> Option<u128>| {
        let sum: u128 = apps.iter().filter_map(f).sum();
        inits.iter().filter_map(f).max().unwrap_or(0).max(sum)
    };
    let mut pod_asked = Asked {
        cpu_request: Some(effective(|a| a.cpu_request)),
        cpu_limit: all_declare(|a| a.cpu_limit).then(|| effective(|a| a.cpu_limit)),
        memory_limit: all_declare(|a| a.memory_limit).then(|| effective(|a| a.memory_limit)),
    };
    if qos_class(pod) == "BestEffort" {
        pod_asked = Asked::default();
    }
    Resources {
        pids_limit: pids_limit.filter(|&n| n > 0),
        ..pod_asked.resources()
    }
}

/// The cpu shares of the `kubepods/burstable` parent: the sum of its pods' requests, as kubelet's
/// QoS container manager keeps it, so Burstable pods together weigh what they asked for against
/// the Guaranteed pods beside them.
pub fn burstable_shares<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> u64 {
    let millicores: u128 = pods
        .into_iter()
        .filter(|p| qos_class(p) == "Burstable")
        .filter_map(|p| {
            let spec = p.spec.as_ref()?;
            let sum: u128 = spec
                .containers
                .iter()
                .filter_map(|c| Asked::of(c).cpu_request)
                .sum();
            let init = spec
                .init_containers
                .iter()
                .flatten()
                .filter_map(|c| Asked::of(c).cpu_request)
                .max();
            Some(init.unwrap_or(0).max(sum))
        })
        .sum();
    shares(millicores)
}

/// The pod's QoS class: Guaranteed when every container limits CPU and memory with requests equal to
/// the limits, BestEffort when none requests or limits anything, Burstable otherwise.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        let r = c.resources.as_ref();
        let (requests, limits) = (
            r.and_then(|r| r.requests.as_ref()),
            r.and_then(|r| r.limits.as_ref()),
        );
        for key in ["cpu", "memory"] {
            let (req, lim) = (get(requests, key), get(limits, key));
            any |= req.is_some_and(|v| v > 0) || lim.is_some_and(|v| v > 0);
            guaranteed &= lim.is_some() && req.is_none_or(|r| Some(r) == lim);
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// The pod's cgroup below the root: `kubepods/podUID`, `kubepods/burstable/podUID` or
/// `kubepods/besteffort/podUID`, as kubelet's cgroupfs driver names them.
pub fn pod_cgroup(pod: &Pod, uid: &str) -> String {
    match qos_class(pod) {
        "Guaranteed" => format!("kubepods/pod{uid}"),
        "Burstable" => format!("kubepods/burstable/pod{uid}"),
        _ => format!("kubepods/besteffort/pod{uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_as_kubernetes_writes_them() {
        assert_eq!(milli("500m"), Some(500));
        assert_eq!(milli("2"), Some(2000));
        assert_eq!(milli("0.5"), Some(500));
        assert_eq!(milli("64Mi"), Some(64 * 1024 * 1024 * 1000));
        assert_eq!(milli("1G"), Some(1_000_000_000_000));
        assert_eq!(milli("2e3"), Some(2_000_000));
        assert_eq!(milli("1.5Gi"), Some(1536 * 1024 * 1024 * 1000));
        assert_eq!(milli("0.0001"), Some(1), "rounded up");
        assert_eq!(milli("ten"), None);
        assert_eq!(milli("1Qi"), None);
    }

    fn pod(containers: &str) -> Pod {
        serde_norway::from_str(&format!(
            "metadata: {{name: p}}\nspec: {{containers: {containers}}}"
        ))
        .expect("pod")
    }

    #[test]
    fn limits_map_to_cgroups_and_qos_classes() {
        let p = pod(
            "[{name: c, resources: {requests: {cpu: 250m, memory: 32Mi}, limits: {cpu: 500m, memory: 64Mi}}}]",
        );
        let r = container_resources(&p.spec.as_ref().expect("spec").containers[0]);
        assert_eq!(r.cpu_shares, Some(256));
        assert_eq!(r.cpu_quota, Some(50_000));
        assert_eq!(r.cpu_period, Some(100_000));
        assert_eq!(r.memory_limit, Some(64 << 20));
        assert_eq!(qos_class(&p), "Burstable");
        assert_eq!(pod_cgroup(&p, "u1"), "kubepods/burstable/podu1");
        let g = pod("[{name: c, resources: {limits: {cpu: '1', memory: 64Mi}}}]");
        assert_eq!(qos_class(&g), "Guaranteed");
        let r = container_resources(&g.spec.as_ref().expect("spec").containers[0]);
        assert_eq!(r.cpu_shares, Some(1024), "the request defaults to the limit");
        let b = pod("[{name: c}]");
        assert_eq!(qos_class(&b), "BestEffort");
        assert_eq!(
            container_resources(&b.spec.as_ref().expect("spec").containers[0]).cpu_shares,
            Some(2)
        );
    }

    #[test]
    fn pod_limits_sum_the_containers_and_cover_the_largest_init_container() {
        let p: Pod = serde_norway::from_str(
            "metadata: {name: p}
spec:
  initContainers:
  - {name: i, resources: {limits: {cpu: '2', memory: 32Mi}}}
  containers:
  - {name: a, resources: {requests: {cpu: 250m}, limits: {cpu: 500m, memory: 64Mi}}}
  - {name: b, resources: {requests: {cpu: 100m}, limits: {cpu: 300m, memory: 32Mi}}}",
        )
        .expect("pod");
        let r = pod_resources(&p, Some(1024));
        assert_eq!(
            r.cpu_shares,
            Some(2048),
            "the init container's 2 cores outweigh 350m"
        );
        assert_eq!(r.cpu_quota, Some(200_000));
        assert_eq!(
            r.memory_limit,
            Some(96 << 20),
            "64Mi + 32Mi over the init container's 32Mi"
        );
        assert_eq!(r.pids_limit, Some(1024));
        let partial = pod(
            "[{name: a, resources: {limits: {cpu: 500m, memory: 64Mi}}}, {name: b, resources: {requests: {cpu: 100m}}}]",
        );
        let r = pod_resources(&partial, None);
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.memory_limit),
            (Some(614), None, None),
            "b limits nothing"
        );
        let guaranteed = pod("[{name: c, resources: {limits: {cpu: '1', memory: 64Mi}}}]");
        assert_eq!(
            burstable_shares([&partial, &guaranteed, &partial]),
            1228,
            "Burstable pods only"
        );
        let r = pod_resources(&pod("[{name: c}]"), Some(-1));
        assert_eq!(
            (r.cpu_shares, r.pids_limit),
            (Some(2), None),
            "BestEffort, no pids limit"
        );
    }
}
