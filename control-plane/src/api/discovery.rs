//! What clients read to learn what the server serves: `/version`, the group and resource lists
//! (`/api`, `/api/v1`, `/apis`, `/apis/<group>`, `/apis/<group>/<version>`) with verbs, short names,
//! categories and subresources, and the OpenAPI v3 documents `kubectl apply` reads. All derived from
//! [`resources::RESOURCES`].

use serde_json::{Value, json};

use super::{KUBE_MINOR, openapi, resources};

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": format!("v1.{KUBE_MINOR}.0-berth"),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": "linux/amd64"
    })
}

/// The answer to a discovery path, if `segments` is one.
pub fn answer(segments: &[&str]) -> Option<Value> {
    match segments {
        ["api"] => Some(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})),
        ["apis"] => {
            let groups: Vec<Value> = resources::GROUPS.iter().map(|g| group(g)).collect();
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        ["apis", g] if resources::GROUPS.contains(g) => {
            let mut doc = group(g);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            Some(doc)
        }
        ["api", "v1"] => Some(resource_list("", "v1")),
        ["apis", g, "v1"] if resources::GROUPS.contains(g) => Some(resource_list(g, "v1")),
        ["openapi", "v3"] => Some(openapi::root()),
        ["openapi", "v3", "api", "v1"] => Some(openapi::document("", "v1")),
        ["openapi", "v3", "apis", g, "v1"] if resources::GROUPS.contains(g) => {
            Some(openapi::document(g, "v1"))
        }
        _ => None,
    }
}

fn group(name: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/v1"), "version": "v1"});
    json!({"name": name, "versions": [gv], "preferredVersion": gv})
}

/// (name suffix, kind, group, version, verbs) of each subresource.
fn subresource(
    r: &resources::Resource,
    sub: &str,
) -> (&'static str, &'static str, &'static str, &'static [&'static str]) {
    const GET_UPDATE: &[&str] = &["get", "patch", "update"];
    match sub {
        "scale" => ("Scale", "autoscaling", "v1", GET_UPDATE),
        "binding" => ("Binding", "", "", &["create"]),
        "eviction" => ("Eviction", "policy", "v1", &["create"]),
        "log" => ("Pod", "", "", &["get"]),
        _ => (
            match r.kind {
                "Namespace" => "Namespace",
                "Pod" => "Pod",
                "Service" => "Service",
                "Node" => "Node",
                "Deployment" => "Deployment",
                "ReplicaSet" => "ReplicaSet",
                "CertificateSigningRequest" => "CertificateSigningRequest",
                _ => "DaemonSet",
            },
            "",
            "",
            GET_UPDATE,
        ),
    }
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut list = Vec::new();
    for r in resources::of_group_version(group, version) {
        list.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": r.short_names,
            "categories": r.categories,
        }));
        for sub in r.subresources {
            let (kind, g, v, verbs) = subresource(r, sub);
            let mut entry = json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if !g.is_empty() {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            list.push(entry);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_resources_are_discoverable() {
        let groups = answer(&["apis"]).expect("groups");
        assert_eq!(groups["groups"][0]["name"], "apps");
        let apps = answer(&["apis", "apps", "v1"]).expect("apps");
        let names: Vec<&str> = apps["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(
            names.contains(&"deployments/scale") && names.contains(&"daemonsets"),
            "{names:?}"
        );
        assert!(answer(&["apis", "batch", "v1"]).is_none());
        let core = answer(&["api", "v1"]).expect("core");
        let pods = &core["resources"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["name"] == "pods").cloned())
            .expect("pods");
        assert_eq!(pods["categories"], json!(["all"]));
    }
}
