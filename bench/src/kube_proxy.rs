//! The baselines: the same Services programmed the way kube-proxy programs them, in iptables mode
//! (`KUBE-SERVICES` -> `KUBE-SVC-*` -> `KUBE-SEP-*`, `statistic --mode random`, masquerade marks) and in
//! nftables mode (one `service-ips` verdict map, `numgen random` per Service). Chain and rule shapes
//! follow kube-proxy's own output (v1.31), minus features not exercised (NodePorts, firewall chains).

use std::{fmt::Write as _, net::Ipv4Addr};

/// A Service for the baselines: ClusterIP, port, endpoints (address, port).
pub struct Svc {
    pub name: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

/// kube-proxy hashes names into chain suffixes; any stable 16-character suffix behaves the same.
fn suffix(kind: &str, name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in kind.bytes().chain(name.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016X}")
}

/// `iptables-restore` input for the nat table, as kube-proxy's iptables mode writes it.
pub fn iptables_restore(services: &[Svc], cluster_cidr: &str) -> String {
    let mut chains = String::new();
    let mut rules = String::new();
    chains.push_str("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n");
    rules.push_str("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    rules.push_str("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    rules.push_str(
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
    );
    rules.push_str("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n");
    rules.push_str("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n");
    rules.push_str("-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n");
    rules.push_str("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n");
    for s in services {
        let svc = format!("KUBE-SVC-{}", suffix("svc", &s.name));
        let _ = writeln!(chains, ":{svc} - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"{} cluster IP\" -m tcp --dport {} -j {svc}",
            s.ip, s.name, s.port
        );
        let _ = writeln!(
            rules,
            "-A {svc} ! -s {cluster_cidr} -d {}/32 -p tcp -m comment --comment \"{} cluster IP\" -m tcp --dport {} -j KUBE-MARK-MASQ",
            s.ip, s.name, s.port
        );
        let n = s.endpoints.len();
        for (i, (ip, port)) in s.endpoints.iter().enumerate() {
            let sep = format!("KUBE-SEP-{}", suffix("sep", &format!("{}/{ip}:{port}", s.name)));
            let _ = writeln!(chains, ":{sep} - [0:0]");
            if i + 1 < n {
                let p = 1.0 / (n - i) as f64;
                let _ = writeln!(
                    rules,
                    "-A {svc} -m comment --comment \"{} -> {ip}:{port}\" -m statistic --mode random --probability {p:.11} -j {sep}",
                    s.name
                );
            } else {
                let _ = writeln!(
                    rules,
                    "-A {svc} -m comment --comment \"{} -> {ip}:{port}\" -j {sep}",
                    s.name
                );
            }
            let _ = writeln!(
                rules,
                "-A {sep} -s {ip}/32 -m comment --comment \"{}\" -j KUBE-MARK-MASQ",
                s.name
            );
            let _ = writeln!(
                rules,
                "-A {sep} -p tcp -m comment --comment \"{}\" -m tcp -j DNAT --to-destination {ip}:{port}",
                s.name
            );
        }
    }
    format!("{chains}{rules}COMMIT\n")
}

/// `nft -f` input, as kube-proxy's nftables mode writes it.
pub fn nft_ruleset(services: &[Svc], cluster_cidr: &str) -> String {
    let mut out = String::from("table ip kube-proxy {\n");
    out.push_str("  chain mark-for-masquerade {\n    mark set mark or 0x4000\n  }\n");
    out.push_str("  chain masquerading {\n    mark and 0x4000 == 0 return\n    mark set mark xor 0x4000\n    masquerade fully-random\n  }\n");
    out.push_str("  chain services {\n    ip daddr . meta l4proto . th dport vmap @service-ips\n  }\n");
    out.push_str("  chain nat-prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    jump services\n  }\n");
    out.push_str("  chain nat-output {\n    type nat hook output priority -100; policy accept;\n    jump services\n  }\n");
    out.push_str("  chain nat-postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    jump masquerading\n  }\n");
    let mut elements = Vec::with_capacity(services.len());
    for s in services {
        let chain = format!("service-{}", suffix("svc", &s.name));
        elements.push(format!("{} . tcp . {} : goto {chain}", s.ip, s.port));
        let mut vmap = Vec::with_capacity(s.endpoints.len());
        for (i, (ip, port)) in s.endpoints.iter().enumerate() {
            let ep = format!("endpoint-{}", suffix("sep", &format!("{}/{ip}:{port}", s.name)));
            let _ = writeln!(
                out,
                "  chain {ep} {{\n    ip saddr {ip} jump mark-for-masquerade\n    meta l4proto tcp dnat to {ip}:{port}\n  }}"
            );
            vmap.push(format!("{i} : goto {ep}"));
        }
        let _ = writeln!(
            out,
            "  chain {chain} {{\n    ip daddr {} tcp dport {} ip saddr != {cluster_cidr} jump mark-for-masquerade\n    numgen random mod {} vmap {{ {} }}\n  }}",
            s.ip,
            s.port,
            s.endpoints.len(),
            vmap.join(", ")
        );
    }
    out.push_str("  map service-ips {\n    type ipv4_addr . inet_proto . inet_service : verdict\n");
    if !elements.is_empty() {
        let _ = writeln!(out, "    elements = {{ {} }}", elements.join(",\n      "));
    }
    out.push_str("  }\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svcs() -> Vec<Svc> {
        vec![Svc {
            name: "default/web:http".into(),
            ip: Ipv4Addr::new(10, 96, 0, 1),
            port: 80,
            endpoints: vec![
                (Ipv4Addr::new(10, 244, 0, 2), 8080),
                (Ipv4Addr::new(10, 244, 0, 3), 8080),
            ],
        }]
    }

    #[test]
    fn iptables_probabilities_make_uniform_choice() {
        let r = iptables_restore(&svcs(), "10.244.0.0/16");
        assert!(r.contains("--probability 0.50000000000"), "{r}");
        assert_eq!(r.matches("DNAT --to-destination").count(), 2);
        assert!(r.ends_with("COMMIT\n"));
    }

    #[test]
    fn nft_has_verdict_map_and_numgen() {
        let r = nft_ruleset(&svcs(), "10.244.0.0/16");
        assert!(r.contains("10.96.0.1 . tcp . 80 : goto service-"));
        assert!(r.contains("numgen random mod 2 vmap"));
    }
}
