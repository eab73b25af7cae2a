//! What clients read to learn what the server serves: `/version`, the group and resource lists
//! (`/api`, `/api/v1`, `/apis`, `/apis/<group>`, `/apis/<group>/<version>`) with verbs, short names,
//! categories and subresources, the same resources as one aggregated document per `/api` and `/apis`
//! (`apidiscovery.k8s.io/v2`, when the `Accept` header asks for it), and the OpenAPI v3 documents
//! `kubectl apply` reads. All derived from [`resources::RESOURCES`].

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

/// The answer to a discovery path, if `segments` is one, and its media type when that is not plain
/// `application/json`: `/api` and `/apis` answer an aggregated `APIGroupDiscoveryList` to clients
/// that ask for one (kubectl 1.27-1.29 ask for v2beta1, 1.30+ and kube-rs's `run_aggregated` for v2;
/// they then skip the per-group requests), the legacy documents to the rest.
pub fn answer_for(segments: &[&str], accept: &str) -> Option<(Value, Option<&'static str>)> {
    let aggregated = match segments {
        ["api"] | ["apis"] => aggregated_version(accept),
        _ => None,
    };
    match (aggregated, segments) {
        (Some(v), ["api"]) => Some((aggregated_list(&[""], v.api_version), Some(v.media_type))),
        (Some(v), _) => Some((
            aggregated_list(resources::GROUPS, v.api_version),
            Some(v.media_type),
        )),
        (None, _) => answer(segments).map(|doc| (doc, None)),
    }
}

/// The answer to a discovery path in its legacy (unaggregated) form, if `segments` is one.
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
        "token" => ("TokenRequest", "authentication.k8s.io", "v1", &["create"]),
        _ => (r.kind, "", "", GET_UPDATE),
    }
}

/// What the collections and objects of every served stored resource allow.
const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// A resource's verbs: access reviews are only created (answered, never stored).
fn verbs_of(r: &resources::Resource) -> &'static [&'static str] {
    match r.group {
        "authorization.k8s.io" | "authentication.k8s.io" => &["create"],
        _ => VERBS,
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
            "verbs": verbs_of(r),
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

/// One version of the aggregated discovery document: the `apiVersion` of the list and the media type
/// of the answer. Clients tell the format by the answer's `Content-Type` (client-go reads the legacy
/// format from anything else), so it must name the version exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Aggregated {
    api_version: &'static str,
    media_type: &'static str,
}

const AGGREGATED_V2: Aggregated = Aggregated {
    api_version: "apidiscovery.k8s.io/v2",
    media_type: "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
};

/// The beta format, the only one kubectl 1.27 to 1.29 ask for (traced); its JSON is the same as v2's.
const AGGREGATED_V2BETA1: Aggregated = Aggregated {
    api_version: "apidiscovery.k8s.io/v2beta1",
    media_type: "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
};

/// The aggregated format the `Accept` header allows, if any: v2 when any JSON alternative names it,
/// else v2beta1. Clients list several alternatives (protobuf first, plain JSON last) and the order
/// among them is not a preference between the versions, so any match counts; protobuf alternatives
/// are skipped, since only JSON is served.
fn aggregated_version(accept: &str) -> Option<Aggregated> {
    let mut found = None;
    for alternative in accept.split(',') {
        let mut parts = alternative.split(';').map(str::trim);
        if !parts
            .next()
            .is_some_and(|m| m.eq_ignore_ascii_case("application/json"))
        {
            continue;
        }
        let (mut group, mut version, mut kind) = (None, None, None);
        for param in parts {
            match param.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("g", v)) => group = Some(v),
                Some(("v", v)) => version = Some(v),
                Some(("as", v)) => kind = Some(v),
                _ => {}
            }
        }
        if group != Some("apidiscovery.k8s.io") || kind != Some("APIGroupDiscoveryList") {
            continue;
        }
        match version {
            Some("v2") => return Some(AGGREGATED_V2),
            Some("v2beta1") => found = Some(AGGREGATED_V2BETA1),
            _ => {}
        }
    }
    found
}

/// `{group, version, kind}` as discovery writes it (all three always present; `""` is the core group).
fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

/// The aggregated document of `groups` (`[""]`: the core group, as `/api` answers it): for each group
/// its versions (only `v1` is served), for each its resources with what the legacy
/// `APIResourceList` says of them, subresources nested in their resource.
fn aggregated_list(groups: &[&str], api_version: &str) -> Value {
    let items: Vec<Value> = groups
        .iter()
        .map(|&group| {
            let version = "v1";
            let resources: Vec<Value> = resources::of_group_version(group, version)
                .map(|r| {
                    let subresources: Vec<Value> = r
                        .subresources
                        .iter()
                        .map(|sub| {
                            let (kind, g, v, verbs) = subresource(r, sub);
                            // The legacy list leaves group and version empty for "the resource's
                            // own"; here they are always spelled out.
                            let (g, v) = if g.is_empty() { (group, version) } else { (g, v) };
                            json!({
                                "subresource": sub,
                                "responseKind": gvk(g, v, kind),
                                "verbs": verbs,
                            })
                        })
                        .collect();
                    json!({
                        "resource": r.plural,
                        "responseKind": gvk(group, version, r.kind),
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": r.singular,
                        "verbs": verbs_of(r),
                        "shortNames": r.short_names,
                        "categories": r.categories,
                        "subresources": subresources,
                    })
                })
                .collect();
            json!({
                "metadata": {"name": group},
                "versions": [{"version": version, "resources": resources, "freshness": "Current"}],
            })
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": api_version,
        "metadata": {},
        "items": items,
    })
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

    /// What kube-rs 5 sends (kube_core's `ACCEPT_AGGREGATED_DISCOVERY_V2`).
    const KUBE_RS: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

    #[test]
    fn accept_alternatives_choose_the_aggregated_version() {
        assert_eq!(aggregated_version(KUBE_RS), Some(AGGREGATED_V2));
        // A protobuf alternative first (skipped: only JSON is served), spaces around parameters;
        // v2 wins over v2beta1 whatever the order.
        let client_go = "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList, application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList, application/json; g=apidiscovery.k8s.io; v=v2; as=APIGroupDiscoveryList, application/json";
        assert_eq!(aggregated_version(client_go), Some(AGGREGATED_V2));
        let beta_only =
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(beta_only), Some(AGGREGATED_V2BETA1));
        for legacy in [
            "application/json",
            "*/*",
            "",
            "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
            "application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList",
            "application/json;g=meta.k8s.io;v=v1;as=Table",
        ] {
            assert_eq!(aggregated_version(legacy), None, "{legacy}");
        }
    }

    #[test]
    fn aggregated_answers_only_at_the_roots_and_says_its_media_type() {
        let (doc, media) = answer_for(&["apis"], KUBE_RS).expect("apis");
        assert_eq!(
            media,
            Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
        );
        assert_eq!(
            (doc["kind"].as_str(), doc["apiVersion"].as_str()),
            (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io/v2"))
        );
        let beta = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
        let (doc, media) = answer_for(&["api"], beta).expect("api");
        assert_eq!(media, Some(beta));
        assert_eq!(doc["apiVersion"], "apidiscovery.k8s.io/v2beta1");
        // Without the header, and below the roots, the legacy documents.
        let (legacy, media) = answer_for(&["apis"], "application/json").expect("legacy");
        assert_eq!((legacy["kind"].as_str(), media), (Some("APIGroupList"), None));
        let (list, media) = answer_for(&["apis", "apps", "v1"], KUBE_RS).expect("apps/v1");
        assert_eq!((list["kind"].as_str(), media), (Some("APIResourceList"), None));
        assert!(answer_for(&["apis", "batch"], KUBE_RS).is_none());
    }

    #[test]
    fn aggregated_resources_carry_scope_kinds_and_subresources() {
        let (apis, _) = answer_for(&["apis"], KUBE_RS).expect("apis");
        let names: Vec<&str> = apis["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.pointer("/metadata/name").and_then(Value::as_str))
            .collect();
        assert_eq!(names, resources::GROUPS);
        let apps = &apis["items"][0]["versions"][0];
        assert_eq!(
            (apps["version"].as_str(), apps["freshness"].as_str()),
            (Some("v1"), Some("Current"))
        );
        let deployments = apps["resources"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["resource"] == "deployments"))
            .expect("deployments");
        assert_eq!(deployments["scope"], "Namespaced");
        assert_eq!(deployments["singularResource"], "deployment");
        assert_eq!(deployments["responseKind"], gvk("apps", "v1", "Deployment"));
        assert_eq!(deployments["shortNames"], json!(["deploy"]));
        assert_eq!(deployments["categories"], json!(["all"]));
        assert_eq!(
            deployments["subresources"],
            json!([
                {"subresource": "status", "responseKind": gvk("apps", "v1", "Deployment"), "verbs": ["get", "patch", "update"]},
                {"subresource": "scale", "responseKind": gvk("autoscaling", "v1", "Scale"), "verbs": ["get", "patch", "update"]},
            ])
        );

        let (core, _) = answer_for(&["api"], KUBE_RS).expect("api");
        let items = core["items"].as_array().expect("items");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["metadata"]["name"], "");
        let find = |name: &str| {
            items[0]["versions"][0]["resources"]
                .as_array()
                .and_then(|a| a.iter().find(|r| r["resource"] == name).cloned())
                .expect(name)
        };
        let namespaces = find("namespaces");
        assert_eq!(namespaces["scope"], "Cluster");
        assert_eq!(namespaces["responseKind"], gvk("", "v1", "Namespace"));
        let pods = find("pods");
        let binding = pods["subresources"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["subresource"] == "binding"))
            .expect("binding");
        assert_eq!(binding["responseKind"], gvk("", "v1", "Binding"));
        assert_eq!(binding["verbs"], json!(["create"]));
    }

    /// Every group the legacy documents list, with every resource and subresource and the same
    /// facts, is in the aggregated one, and nothing else is.
    #[test]
    fn aggregated_and_legacy_documents_agree() {
        let (api, _) = answer_for(&["api"], KUBE_RS).expect("api");
        let (apis, _) = answer_for(&["apis"], KUBE_RS).expect("apis");
        let groups = api["items"]
            .as_array()
            .into_iter()
            .chain(apis["items"].as_array())
            .flatten();
        let mut seen = 0;
        for g in groups {
            let name = g["metadata"]["name"].as_str().expect("name");
            let legacy = if name.is_empty() {
                answer(&["api", "v1"])
            } else {
                answer(&["apis", name, "v1"])
            }
            .expect("legacy list");
            let legacy = legacy["resources"].as_array().expect("resources");
            let mut entries = 0;
            for r in g["versions"][0]["resources"].as_array().into_iter().flatten() {
                let plural = r["resource"].as_str().expect("resource");
                let old = legacy.iter().find(|x| x["name"] == plural).expect(plural);
                assert_eq!(r["verbs"], old["verbs"], "{plural}");
                assert_eq!(r["shortNames"], old["shortNames"], "{plural}");
                assert_eq!(r["categories"], old["categories"], "{plural}");
                assert_eq!(r["singularResource"], old["singularName"], "{plural}");
                assert_eq!(r["responseKind"]["kind"], old["kind"], "{plural}");
                assert_eq!(r["scope"] == "Namespaced", old["namespaced"] == true, "{plural}");
                entries += 1;
                for s in r["subresources"].as_array().into_iter().flatten() {
                    let full = format!("{plural}/{}", s["subresource"].as_str().expect("sub"));
                    let old = legacy.iter().find(|x| x["name"] == full).expect(&full);
                    assert_eq!(s["verbs"], old["verbs"], "{full}");
                    assert_eq!(s["responseKind"]["kind"], old["kind"], "{full}");
                    if let Some(group) = old.get("group") {
                        assert_eq!(&s["responseKind"]["group"], group, "{full}");
                    }
                    entries += 1;
                }
            }
            assert_eq!(entries, legacy.len(), "{name}");
            seen += 1;
        }
        assert_eq!(seen, resources::GROUPS.len() + 1);
    }
}
