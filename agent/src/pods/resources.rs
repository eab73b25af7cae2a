//! Requests and limits as kubelet maps them onto cgroups: cpu shares from the CPU request (1024 per
//! core, at least 2), a CFS quota from the CPU limit (per 100 ms period), the memory limit in bytes; and
//! the pod's QoS class, which names its parent cgroup (`kubepods/`, `kubepods/burstable/`,
//! `kubepods/besteffort/`).

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

/// The container's cgroup limits.
pub fn container_resources(c: &Container) -> Resources {
    let r = c.resources.as_ref();
    let (requests, limits) = (
        r.and_then(|r| r.requests.as_ref()),
        r.and_then(|r| r.limits.as_ref()),
    );
    // The API server defaults a missing request to the limit.
    let cpu_request = get(requests, "cpu").or_else(|| get(limits, "cpu"));
    let cpu_limit = get(limits, "cpu");
    let memory_limit = get(limits, "memory").map(|m| (m / 1000) as i64);
    Resources {
        memory_limit,
        cpu_shares: Some(cpu_request.map_or(2, |m| (m * 1024 / 1000).max(2) as u64)),
        cpu_quota: cpu_limit.map(|m| ((m * u128::from(CPU_PERIOD_US) / 1000) as i64).max(1000)),
        cpu_period: cpu_limit.map(|_| CPU_PERIOD_US),
        pids_limit: None,
    }
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
}
