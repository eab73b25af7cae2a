use serde_json::json;

use super::*;

/// Minimal protobuf writer for hand-made bodies.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn int(number: u64, v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(number << 3, &mut out);
    varint(v, &mut out);
    out
}

fn bytes(number: u64, payload: &[u8]) -> Vec<u8> {
    length_delimited(number, payload)
}

fn msg(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// `k8s\0` + `runtime.Unknown{typeMeta, raw}`.
fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let type_meta = msg(&[bytes(1, api_version.as_bytes()), bytes(2, kind.as_bytes())]);
    let mut out = MAGIC.to_vec();
    out.extend(msg(&[
        bytes(1, &type_meta),
        bytes(2, raw),
        bytes(3, b""),
        bytes(4, b""),
    ]));
    out
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/src/api/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn builtin_schema_parses_and_is_closed() {
    let schema = schema().expect("schema");
    for kind in [
        ("v1", "Namespace"),
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "Pod"),
        ("v1", "Service"),
        ("v1", "ServiceAccount"),
        ("v1", "Endpoints"),
        ("v1", "Node"),
        ("v1", "Event"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "ReplicaSet"),
        ("apps/v1", "DaemonSet"),
        ("coordination.k8s.io/v1", "Lease"),
        ("discovery.k8s.io/v1", "EndpointSlice"),
        ("v1", "DeleteOptions"),
    ] {
        assert!(schema.message_for(kind.0, kind.1).is_ok(), "{kind:?}");
    }
    let pod_spec = &schema.messages["k8s.io.api.core.v1.PodSpec"];
    let grace = pod_spec
        .fields
        .values()
        .find(|f| f.json_name == "terminationGracePeriodSeconds")
        .expect("field");
    assert!(grace.nullable);
    let host_network = pod_spec
        .fields
        .values()
        .find(|f| f.json_name == "hostNetwork")
        .expect("field");
    assert!(!host_network.nullable);
}

#[test]
fn namespace_from_kubectl() {
    let got = decode(&fixture("namespace.pb")).expect("decode");
    assert_eq!(
        got,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foo"}, "spec": {}, "status": {}})
    );
}

#[test]
fn zero_scalars_follow_go_pointers() {
    // DeploymentSpec{replicas: 0 (pointer), minReadySeconds: 0, paused: false}.
    let spec = msg(&[int(1, 0), int(5, 0), int(7, 0)]);
    let body = envelope("apps/v1", "Deployment", &bytes(2, &spec));
    assert_eq!(
        decode(&body).expect("decode"),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 0}})
    );
}

#[test]
fn inline_fields_merge_into_the_parent() {
    // Volume{name: "v", volumeSource: {emptyDir: {}}}, ConfigMapVolumeSource's inline name.
    let empty_dir = bytes(2, &[]);
    let config_map = bytes(19, &bytes(1, &bytes(1, b"cm")));
    let volumes = [
        bytes(1, &msg(&[bytes(1, b"v"), bytes(2, &empty_dir)])),
        bytes(1, &msg(&[bytes(1, b"w"), bytes(2, &config_map)])),
    ];
    let pod = bytes(2, &volumes.concat());
    let got = decode(&envelope("v1", "Pod", &pod)).expect("decode");
    assert_eq!(
        got["spec"]["volumes"],
        json!([{"name": "v", "emptyDir": {}}, {"name": "w", "configMap": {"name": "cm"}}])
    );
}

#[test]
fn special_types() {
    // HTTPGetAction{port: IntOrString}, via Probe's inline handler, in a Container.
    let http_get = |port: Vec<u8>| bytes(2, &bytes(2, &port));
    let int_port = msg(&[int(1, 0), int(2, 8080)]);
    let named_port = msg(&[int(1, 1), bytes(3, b"http")]);
    // ResourceRequirements.limits: one map entry {key: "cpu", value: Quantity{string: "100m"}}.
    let resources = bytes(1, &msg(&[bytes(1, b"cpu"), bytes(2, &bytes(1, b"100m"))]));
    let container = msg(&[
        bytes(1, b"c"),
        bytes(10, &bytes(1, &http_get(int_port))),
        bytes(11, &bytes(1, &http_get(named_port))),
        bytes(8, &resources),
    ]);
    let created = bytes(8, &msg(&[int(1, 1_795_327_293), int(2, 5)]));
    let pod = msg(&[
        bytes(1, &msg(&[bytes(1, b"p"), created])),
        bytes(2, &bytes(2, &container)),
    ]);
    let got = decode(&envelope("v1", "Pod", &pod)).expect("decode");
    assert_eq!(
        got["metadata"],
        json!({"name": "p", "creationTimestamp": "2026-11-22T06:01:33Z"})
    );
    let c = &got["spec"]["containers"][0];
    assert_eq!(c["livenessProbe"], json!({"httpGet": {"port": 8080}}));
    assert_eq!(c["readinessProbe"], json!({"httpGet": {"port": "http"}}));
    assert_eq!(c["resources"], json!({"limits": {"cpu": "100m"}}));
}

#[test]
fn micro_time_and_lease() {
    let renew = bytes(4, &msg(&[int(1, 1_795_327_293), int(2, 123_456_789)]));
    let spec = msg(&[bytes(1, b""), int(2, 15), renew, int(5, 0)]);
    let got = decode(&envelope("coordination.k8s.io/v1", "Lease", &bytes(2, &spec))).expect("decode");
    assert_eq!(
        got["spec"],
        json!({"holderIdentity": "", "leaseDurationSeconds": 15, "renewTime": "2026-11-22T06:01:33.123456Z", "leaseTransitions": 0})
    );
}

#[test]
fn raw_extension_embeds_json() {
    // ManagedFieldsEntry{fieldsV1: {Raw: ...}} in ObjectMeta.managedFields (17).
    let entry = msg(&[bytes(1, b"kubectl"), bytes(7, &bytes(1, br#"{"f:data":{}}"#))]);
    let meta = bytes(1, &bytes(17, &entry));
    let got = decode(&envelope("v1", "ConfigMap", &meta)).expect("decode");
    assert_eq!(
        got["metadata"]["managedFields"],
        json!([{"manager": "kubectl", "fieldsV1": {"f:data": {}}}])
    );
    let bad = bytes(1, &bytes(17, &bytes(7, &bytes(1, b"{nope"))));
    assert!(matches!(
        decode(&envelope("v1", "ConfigMap", &bad)),
        Err(ProtobufError::InvalidEmbeddedJson { .. })
    ));
}

#[test]
fn formats() {
    assert_eq!(rfc3339(0, None), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400, None), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(-1, Some(0)), "1969-12-31T23:59:59.000000Z");
    assert_eq!(go_duration(0), "0s");
    assert_eq!(go_duration(1), "1ns");
    assert_eq!(go_duration(1_500), "1.5µs");
    assert_eq!(go_duration(100_000_000), "100ms");
    assert_eq!(go_duration(1_500_000_000), "1.5s");
    assert_eq!(go_duration(90_000_000_000), "1m30s");
    assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
    assert_eq!(go_duration(-3_723_500_000_000), "-1h2m3.5s");
}

#[test]
fn malformed_bodies_are_errors() {
    assert!(matches!(
        decode(b"{\"kind\":\"Pod\"}"),
        Err(ProtobufError::MissingMagic)
    ));
    let good = fixture("namespace.pb");
    // No cut panics (a cut between two fields is itself a valid, shorter message); one inside
    // `raw`, before the 4 bytes of empty contentEncoding and contentType, is truncated.
    for cut in 0..good.len() {
        let _ = decode(&good[..cut]);
    }
    assert!(matches!(
        decode(&good[..good.len() - 5]),
        Err(ProtobufError::Truncated { .. })
    ));
    assert!(matches!(
        decode(&envelope("v1", "Nope", &[])),
        Err(ProtobufError::UnknownKind { .. })
    ));
    assert!(matches!(
        decode(&envelope("", "", &[])),
        Err(ProtobufError::MissingTypeMeta)
    ));
    // A string field (ObjectMeta.name) sent as a varint.
    let wrong = bytes(1, &int(1, 7));
    assert!(matches!(
        decode(&envelope("v1", "Namespace", &wrong)),
        Err(ProtobufError::WireTypeMismatch { .. })
    ));
    let not_utf8 = bytes(1, &bytes(1, &[0xff, 0xfe]));
    assert!(matches!(
        decode(&envelope("v1", "Namespace", &not_utf8)),
        Err(ProtobufError::InvalidUtf8 { .. })
    ));
    let mut long = MAGIC.to_vec();
    long.extend([0x80; 11]);
    assert!(matches!(decode(&long), Err(ProtobufError::VarintTooLong { .. })));
    let mut group = MAGIC.to_vec();
    group.push(0x0b);
    assert!(matches!(decode(&group), Err(ProtobufError::InvalidKey { .. })));
}

#[test]
fn unknown_fields_are_skipped() {
    let meta = msg(&[bytes(1, b"foo"), int(999, 1), bytes(998, b"x")]);
    let got = decode(&envelope("v1", "Namespace", &bytes(1, &meta))).expect("decode");
    assert_eq!(got["metadata"], json!({"name": "foo"}));
}

#[test]
fn deep_nesting_is_refused() {
    // A protobuf body inside a FieldsV1 inside a protobuf body, and so on.
    let mut body = envelope("v1", "Namespace", &[]);
    for _ in 0..200 {
        let entry = bytes(7, &bytes(1, &body));
        body = envelope("v1", "ConfigMap", &bytes(1, &bytes(17, &entry)));
    }
    assert!(matches!(decode(&body), Err(ProtobufError::TooDeep)));
}

/// Bodies captured from kubectl 1.33 (`kubectl create ...`), against the JSON that
/// `kubectl create ... --dry-run=client -o json` prints, less its `creationTimestamp: null`s and,
/// for the PodDisruptionBudget, the zero counts of its status (plain Go values, left out here).
#[test]
fn kubectl_bodies_decode_to_kubectl_json() {
    let cases = [
        (
            "configmap",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}),
        ),
        (
            "secret",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"password": "aHVudGVyMg=="}}),
        ),
        (
            "secret-docker-registry",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "reg"}, "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": "eyJhdXRocyI6eyJyLmV4YW1wbGUiOnsidXNlcm5hbWUiOiJ1IiwicGFzc3dvcmQiOiJwIiwiYXV0aCI6ImRUcHcifX19"}}),
        ),
        (
            "deployment",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"labels": {"app": "d"}, "name": "d"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}}, "strategy": {},
                    "template": {"metadata": {"labels": {"app": "d"}},
                        "spec": {"containers": [{"image": "nginx", "name": "nginx", "resources": {}}]}}},
                "status": {}}),
        ),
        (
            "deployment-port",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"labels": {"app": "d2"}, "name": "d2"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d2"}}, "strategy": {},
                    "template": {"metadata": {"labels": {"app": "d2"}},
                        "spec": {"containers": [{"image": "nginx", "name": "nginx", "ports": [{"containerPort": 8080}], "resources": {}}]}}},
                "status": {}}),
        ),
        (
            "service",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"labels": {"app": "svc"}, "name": "svc"},
                "spec": {"ports": [{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                    "selector": {"app": "svc"}, "type": "ClusterIP"},
                "status": {"loadBalancer": {}}}),
        ),
        (
            "service-nodeport",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"labels": {"app": "np"}, "name": "np"},
                "spec": {"ports": [{"name": "81-8081", "port": 81, "protocol": "TCP", "targetPort": 8081}],
                    "selector": {"app": "np"}, "type": "NodePort"},
                "status": {"loadBalancer": {}}}),
        ),
        (
            "job",
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
                "spec": {"template": {"metadata": {}, "spec": {"containers": [{"image": "busybox", "name": "j", "resources": {}}], "restartPolicy": "Never"}}},
                "status": {}}),
        ),
        (
            "resourcequota",
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
                "spec": {"hard": {"cpu": "1500m", "memory": "1Gi", "pods": "10"}}, "status": {}}),
        ),
        (
            "poddisruptionbudget",
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "b"},
                "spec": {"minAvailable": "50%", "selector": {"matchLabels": {"app": "d"}}}, "status": {}}),
        ),
    ];
    for (name, want) in cases {
        let got = decode(&fixture(&format!("{name}.pb"))).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn a_small_body_of_empty_messages_is_refused_before_it_is_built() {
    // A Pod whose spec holds a million empty containers: 2 bytes each on the wire, each an object
    // once decoded. Decoding stops at the budget instead of building them.
    let containers: Vec<u8> = std::iter::repeat_n(bytes(2, b""), 1_000_000).flatten().collect();
    let pod = msg(&[bytes(2, &containers)]);
    let started = std::time::Instant::now();
    let err = decode(&envelope("v1", "Pod", &pod)).expect_err("over budget");
    assert!(matches!(err, ProtobufError::TooLarge), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    // Packed numbers count one by one too, and a ConfigMap of many entries fits.
    let entries: Vec<u8> = (0..50_000)
        .flat_map(|i| bytes(2, &msg(&[bytes(1, format!("k{i}").as_bytes()), bytes(2, b"v")])))
        .collect();
    let cm = decode(&envelope("v1", "ConfigMap", &entries)).expect("fits");
    assert_eq!(cm["data"].as_object().map(|m| m.len()), Some(50_000));
}
