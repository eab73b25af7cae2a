//! The resource types the server serves: one table, from which routing, discovery, OpenAPI and the
//! store layout are all derived, and whose entries carry their kind's rules ([`kinds`]), so adding
//! a kind is one entry here plus its strategy.

use super::kinds::{self, Strategy};

/// A served resource type.
pub struct Resource {
    /// API group (`""` for the core group).
    pub group: &'static str,
    pub version: &'static str,
    /// Plural, as in URLs and store keys (unique across groups here).
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Discovery categories (`all` makes `kubectl get all` include the resource).
    pub categories: &'static [&'static str],
    /// Names must be DNS-1123 labels (else subdomains).
    pub label_names: bool,
    /// Subresources (`status`, `scale`, `binding`, `eviction`, `log`).
    pub subresources: &'static [&'static str],
    /// The kind's rules: type, defaults, validation, allocation, deletion, merge keys, columns.
    pub strategy: &'static dyn Strategy,
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource")
            .field("group", &self.group)
            .field("version", &self.version)
            .field("plural", &self.plural)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Resource {
    /// `v1` or `group/version`, as objects carry it.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether writes to the object leave its status alone (and status writes leave the rest).
    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }

    /// Whether `metadata.generation` counts changes of the spec (workload controllers compare it with
    /// `status.observedGeneration`).
    pub fn tracks_generation(&self) -> bool {
        self.strategy.tracks_generation()
    }
}

const NONE: &[&str] = &[];

/// A `v1` resource of `group` without short names, categories or subresources, whose names are
/// DNS subdomains (or what its group allows instead; see `names::validate_object_name`).
const fn plain(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    strategy: &'static dyn Strategy,
) -> Resource {
    Resource {
        group,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        short_names: NONE,
        categories: NONE,
        label_names: false,
        subresources: NONE,
        strategy,
    }
}
const ALL: &[&str] = &["all"];

/// Every served resource.
pub const RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: NONE,
        label_names: true,
        subresources: &["status", "finalize"],
        strategy: &kinds::NAMESPACES,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        categories: NONE,
        label_names: false,
        subresources: NONE,
        strategy: &kinds::CONFIG_MAPS,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: NONE,
        categories: NONE,
        label_names: false,
        subresources: NONE,
        strategy: &kinds::SECRETS,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        categories: ALL,
        label_names: false,
        subresources: &[
            "status",
            "binding",
            "eviction",
            "log",
            "exec",
            "attach",
            "portforward",
        ],
        strategy: &kinds::PODS,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        categories: ALL,
        label_names: true,
        subresources: &["status"],
        strategy: &kinds::SERVICES,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "endpoints",
        singular: "endpoints",
        kind: "Endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: NONE,
        label_names: false,
        subresources: NONE,
        strategy: &kinds::ENDPOINTS,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        categories: NONE,
        label_names: false,
        subresources: &["status"],
        strategy: &kinds::NODES,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: NONE,
        label_names: false,
        subresources: NONE,
        strategy: &kinds::EVENTS,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        categories: NONE,
        label_names: false,
        subresources: &["token"],
        strategy: &kinds::SERVICE_ACCOUNTS,
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: ALL,
        label_names: false,
        subresources: &["status", "scale"],
        strategy: &kinds::DEPLOYMENTS,
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        categories: ALL,
        label_names: false,
        subresources: &["status", "scale"],
        strategy: &kinds::REPLICA_SETS,
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "daemonsets",
        singular: "daemonset",
        kind: "DaemonSet",
        namespaced: true,
        short_names: &["ds"],
        categories: ALL,
        label_names: false,
        subresources: &["status"],
        strategy: &kinds::DAEMON_SETS,
    },
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
        short_names: NONE,
        categories: NONE,
        label_names: false,
        subresources: NONE,
        strategy: &kinds::ENDPOINT_SLICES,
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: NONE,
        categories: NONE,
        label_names: false,
        subresources: NONE,
        strategy: &kinds::LEASES,
    },
    Resource {
        group: "certificates.k8s.io",
        version: "v1",
        plural: "certificatesigningrequests",
        singular: "certificatesigningrequest",
        kind: "CertificateSigningRequest",
        namespaced: false,
        short_names: &["csr"],
        categories: NONE,
        label_names: false,
        subresources: &["status", "approval"],
        strategy: &kinds::CERTIFICATE_SIGNING_REQUESTS,
    },
    plain(
        "rbac.authorization.k8s.io",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        &kinds::CLUSTER_ROLES,
    ),
    plain(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        &kinds::CLUSTER_ROLE_BINDINGS,
    ),
    plain(
        "rbac.authorization.k8s.io",
        "roles",
        "role",
        "Role",
        true,
        &kinds::ROLES,
    ),
    plain(
        "rbac.authorization.k8s.io",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        &kinds::ROLE_BINDINGS,
    ),
    // Access reviews: answered, never stored.
    plain(
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        "SelfSubjectAccessReview",
        false,
        &kinds::NOT_STORED,
    ),
    plain(
        "authorization.k8s.io",
        "subjectaccessreviews",
        "subjectaccessreview",
        "SubjectAccessReview",
        false,
        &kinds::NOT_STORED,
    ),
    plain(
        "authorization.k8s.io",
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        "SelfSubjectRulesReview",
        false,
        &kinds::NOT_STORED,
    ),
    // Who am I, and whose is this token: answered, never stored.
    plain(
        "authentication.k8s.io",
        "selfsubjectreviews",
        "selfsubjectreview",
        "SelfSubjectReview",
        false,
        &kinds::NOT_STORED,
    ),
    plain(
        "authentication.k8s.io",
        "tokenreviews",
        "tokenreview",
        "TokenReview",
        false,
        &kinds::NOT_STORED,
    ),
];

/// The API groups other than the core group, in discovery order.
pub const GROUPS: &[&str] = &[
    "apps",
    "discovery.k8s.io",
    "coordination.k8s.io",
    "certificates.k8s.io",
    "rbac.authorization.k8s.io",
    "authorization.k8s.io",
    "authentication.k8s.io",
];

/// Looks a resource up by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks a resource up by its kind.
pub fn by_kind(kind: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.kind == kind)
}

/// Looks a resource up by its plural (plurals are unique across the served groups).
pub fn by_plural(plural: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.plural == plural)
}

/// The resources of one group-version.
pub fn of_group_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static Resource> + 'a {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_and_kinds_are_unique() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert_ne!(a.plural, b.plural);
                assert_ne!(a.kind, b.kind);
            }
            assert!(a.group.is_empty() || GROUPS.contains(&a.group), "{}", a.group);
        }
        assert_eq!(
            find("apps", "v1", "deployments").map(Resource::api_version),
            Some("apps/v1".into())
        );
    }
}
