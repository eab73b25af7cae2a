use super::*;

fn req<'a>(
    method: &'a str,
    path: &'a str,
    query: &'a str,
    token: Option<&'a str>,
    content_type: &'a str,
    body: &'a [u8],
) -> ApiRequest<'a> {
    ApiRequest {
        method,
        path,
        query,
        token,
        content_type,
        accept: "application/json",
        body,
        client_cert: None,
        impersonation: None,
        user_agent: None,
    }
}

struct World {
    dir: std::path::PathBuf,
    api: Api,
}

impl World {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("berth-api-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let store = Arc::new(Store::open(&dir.join("state.db")).expect("store"));
        World {
            api: Api::new(store, "secret".into()),
            dir,
        }
    }

    fn call(&self, method: &str, path: &str, body: &str) -> Reply {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let content_type = if method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        let mut reply = self.api.handle(&req(
            method,
            path,
            query,
            Some("secret"),
            content_type,
            body.as_bytes(),
        ));
        // Lists come encoded: decode them for the assertions.
        if let Some(json) = reply.encoded.take() {
            reply.body = serde_json::from_slice(&json).expect("an encoded answer is JSON");
        }
        reply
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn authentication_and_public_endpoints() {
    let w = World::new("auth");
    assert_eq!(w.api.handle(&req("GET", "/healthz", "", None, "", b"")).code, 200);
    assert_eq!(
        w.api.handle(&req("GET", "/version", "", None, "", b"")).body["minor"],
        KUBE_MINOR
    );
    let denied = w
        .api
        .handle(&req("GET", "/api/v1/namespaces", "", Some("wrong"), "", b""));
    assert_eq!(
        (denied.code, denied.body["reason"].as_str()),
        (401, Some("Unauthorized"))
    );
}

#[test]
fn objects_live_in_namespaces_with_conflicts_and_statuses() {
    let w = World::new("objects");
    let missing_ns = w.call(
        "POST",
        "/api/v1/namespaces/demo/configmaps",
        r#"{"metadata":{"name":"cfg"},"data":{"k":"v"}}"#,
    );
    assert_eq!(
        (missing_ns.code, missing_ns.body["reason"].as_str()),
        (404, Some("NotFound"))
    );
    let ns = w.call(
        "POST",
        "/api/v1/namespaces",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"demo"}}"#,
    );
    assert_eq!(ns.code, 201, "{}", ns.body);
    assert_eq!(ns.body["status"]["phase"], "Active");
    let cm = w.call(
        "POST",
        "/api/v1/namespaces/demo/configmaps",
        r#"{"metadata":{"name":"cfg","labels":{"app":"web"}},"data":{"k":"v"}}"#,
    );
    assert_eq!(cm.code, 201, "{}", cm.body);
    assert_eq!(cm.body["metadata"]["namespace"], "demo");
    let rv = cm.body["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    let again = w.call(
        "POST",
        "/api/v1/namespaces/demo/configmaps",
        r#"{"metadata":{"name":"cfg"}}"#,
    );
    assert_eq!(
        (again.code, again.body["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    let bad = w.call(
        "POST",
        "/api/v1/namespaces/demo/configmaps",
        r#"{"metadata":{"name":"Not_Valid"}}"#,
    );
    assert_eq!((bad.code, bad.body["reason"].as_str()), (422, Some("Invalid")));
    assert!(
        bad.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("RFC 1123")),
        "{}",
        bad.body
    );
    let garbage = w.call("POST", "/api/v1/namespaces/demo/configmaps", "{not json");
    assert_eq!(garbage.code, 400);

    // Replace with the current resourceVersion works once; the stale one conflicts.
    let update = format!(
        r#"{{"metadata":{{"name":"cfg","resourceVersion":"{rv}","labels":{{"app":"web"}}}},"data":{{"k":"v2"}}}}"#
    );
    let ok = w.call("PUT", "/api/v1/namespaces/demo/configmaps/cfg", &update);
    assert_eq!((ok.code, ok.body["data"]["k"].as_str()), (200, Some("v2")));
    assert_eq!(ok.body["metadata"]["uid"], cm.body["metadata"]["uid"]);
    let stale = w.call("PUT", "/api/v1/namespaces/demo/configmaps/cfg", &update);
    assert_eq!(
        (stale.code, stale.body["reason"].as_str()),
        (409, Some("Conflict"))
    );

    let listed = w.call("GET", "/api/v1/configmaps?labelSelector=app%3Dweb", "");
    assert_eq!(
        listed.body["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.body
    );
    let none = w.call(
        "GET",
        "/api/v1/namespaces/demo/configmaps?labelSelector=app%3Ddb",
        "",
    );
    assert_eq!(none.body["items"].as_array().map(Vec::len), Some(0));
    let by_name = w.call("GET", "/api/v1/configmaps?fieldSelector=metadata.name%3Dcfg", "");
    assert_eq!(
        by_name.body["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        by_name.body
    );
    let bad_field = w.call("GET", "/api/v1/configmaps?fieldSelector=spec.x%3Dy", "");
    assert_eq!(bad_field.code, 400);
    assert_eq!(
        w.call(
            "GET",
            "/api/v1/namespaces/demo/configmaps?labelSelector=a+in+b",
            ""
        )
        .code,
        400
    );

    // A deleted namespace is Terminating (the namespace controller empties it; none runs here):
    // nothing new goes in, and once its `kubernetes` finalizer is removed it goes with what is left.
    let deleted = w.call("DELETE", "/api/v1/namespaces/demo", "");
    assert_eq!(deleted.code, 200);
    assert_eq!(deleted.body.pointer("/status/phase"), Some(&json!("Terminating")));
    assert_eq!(
        w.call("GET", "/api/v1/namespaces/demo/configmaps/cfg", "").code,
        200
    );
    let refused = w.call(
        "POST",
        "/api/v1/namespaces/demo/configmaps",
        r#"{"metadata":{"name":"new"}}"#,
    );
    assert_eq!(refused.code, 403, "{}", refused.body);
    let finalized = w.call(
        "PUT",
        "/api/v1/namespaces/demo/finalize",
        r#"{"metadata":{"name":"demo"},"spec":{"finalizers":[]}}"#,
    );
    assert_eq!(finalized.code, 200, "{}", finalized.body);
    assert_eq!(w.call("GET", "/api/v1/namespaces/demo", "").code, 404);
    let gone = w.call("GET", "/api/v1/namespaces/demo/configmaps/cfg", "");
    assert_eq!((gone.code, gone.body["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(w.call("GET", "/api/v1/widgets", "").code, 404);
    assert_eq!(w.call("POST", "/api/v1/namespaces/x", "").code, 405);
}

#[test]
fn watches_stream_changes_and_expire_with_an_in_stream_410() {
    let w = World::new("watch");
    w.call("POST", "/api/v1/namespaces", r#"{"metadata":{"name":"demo"}}"#);
    w.call(
        "POST",
        "/api/v1/namespaces/demo/configmaps",
        r#"{"metadata":{"name":"a","labels":{"app":"web"}}}"#,
    );
    let plan = w
        .api
        .watch_plan(&req(
            "GET",
            "/api/v1/namespaces/demo/configmaps",
            "watch=true&labelSelector=app%3Dweb",
            Some("secret"),
            "",
            b"",
        ))
        .expect("a watch")
        .expect("planned");
    assert_eq!(plan.initial.len(), 1);
    assert!(plan.initial[0].contains("\"ADDED\""));
    let after = plan.after;
    w.call(
        "PUT",
        "/api/v1/namespaces/demo/configmaps/a",
        r#"{"metadata":{"name":"a","labels":{"app":"web"}},"data":{"k":"v"}}"#,
    );
    w.call(
        "POST",
        "/api/v1/namespaces/demo/configmaps",
        r#"{"metadata":{"name":"other"}}"#,
    );
    w.call("DELETE", "/api/v1/namespaces/demo/configmaps/a", "");
    let (lines, next) = watch::next_lines(w.api.store(), &plan, after);
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| {
            if l.contains("\"MODIFIED\"") {
                "MODIFIED"
            } else if l.contains("\"DELETED\"") {
                "DELETED"
            } else {
                "OTHER"
            }
        })
        .collect();
    assert_eq!(kinds, ["MODIFIED", "DELETED"], "{lines:?}");
    assert_eq!(next, Some(w.api.store().revision()));
    // Unauthenticated watches are refused; non-watch requests are not watches.
    assert!(
        w.api
            .watch_plan(&req("GET", "/api/v1/configmaps", "watch=true", None, "", b""))
            .expect("a watch")
            .is_err()
    );
    assert!(
        w.api
            .watch_plan(&req("GET", "/api/v1/configmaps", "", Some("secret"), "", b""))
            .is_none()
    );
    // Streaming lists (kube-rs): initial events end with a bookmark annotated initial-events-end, and
    // need resourceVersionMatch=NotOlderThan.
    let streaming = w
        .api
        .watch_plan(&req("GET", "/api/v1/namespaces", "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion=0", Some("secret"), "", b""))
        .expect("a watch")
        .expect("planned");
    let last = streaming.initial.last().expect("lines");
    assert!(
        last.contains("\"BOOKMARK\"") && last.contains("k8s.io/initial-events-end"),
        "{last}"
    );
    assert_eq!(streaming.bookmark_kind, Some("Namespace"));
    let refused = w
        .api
        .watch_plan(&req(
            "GET",
            "/api/v1/namespaces",
            "watch=true&sendInitialEvents=true",
            Some("secret"),
            "",
            b"",
        ))
        .expect("a watch");
    assert!(refused.is_err_and(|r| r.code == 422));
    // Compacted history: the stream ends with an ERROR event carrying 410 Expired.
    w.api.store().compact(w.api.store().revision()).expect("compact");
    let (lines, next) = watch::next_lines(w.api.store(), &plan, after);
    assert_eq!(next, None);
    assert!(
        lines[0].contains("\"ERROR\"") && lines[0].contains("\"code\":410") && lines[0].contains("Expired"),
        "{lines:?}"
    );
}

#[test]
fn lists_come_in_pages_from_one_snapshot_and_at_exact_revisions() {
    let w = World::new("pages");
    w.call(
        "POST",
        "/api/v1/namespaces",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"demo"}}"#,
    );
    let mut created_at = Vec::new();
    for i in 0..5 {
        let cm = w.call(
            "POST",
            "/api/v1/namespaces/demo/configmaps",
            &format!(
                r#"{{"metadata":{{"name":"cm-{i}","labels":{{"odd":"{}"}}}}}}"#,
                i % 2
            ),
        );
        assert_eq!(cm.code, 201, "{}", cm.body);
        created_at.push(
            cm.body["metadata"]["resourceVersion"]
                .as_str()
                .expect("rv")
                .to_string(),
        );
    }
    let names = |r: &Reply| -> Vec<String> {
        r.body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    };
    let first = w.call("GET", "/api/v1/namespaces/demo/configmaps?limit=2", "");
    assert_eq!(names(&first), ["cm-0", "cm-1"]);
    let token = first.body["metadata"]["continue"]
        .as_str()
        .expect("a continue token")
        .to_string();
    let snapshot = first.body["metadata"]["resourceVersion"].clone();
    // A change after the first page does not show in the rest of it.
    w.call("DELETE", "/api/v1/namespaces/demo/configmaps/cm-3", "");
    let second = w.call(
        "GET",
        &format!("/api/v1/namespaces/demo/configmaps?limit=2&continue={token}"),
        "",
    );
    assert_eq!(names(&second), ["cm-2", "cm-3"], "{}", second.body);
    assert_eq!(second.body["metadata"]["resourceVersion"], snapshot);
    let token = second.body["metadata"]["continue"]
        .as_str()
        .expect("a continue token")
        .to_string();
    let last = w.call(
        "GET",
        &format!("/api/v1/namespaces/demo/configmaps?limit=2&continue={token}"),
        "",
    );
    assert_eq!(names(&last), ["cm-4"]);
    assert!(last.body["metadata"].get("continue").is_none(), "{}", last.body);
    // With a selector, a page is filled from further on.
    let odd = w.call(
        "GET",
        "/api/v1/namespaces/demo/configmaps?limit=1&labelSelector=odd%3D1",
        "",
    );
    assert_eq!(names(&odd), ["cm-1"]);
    let token = odd.body["metadata"]["continue"]
        .as_str()
        .expect("a continue token")
        .to_string();
    let odd = w.call(
        "GET",
        &format!("/api/v1/namespaces/demo/configmaps?limit=1&labelSelector=odd%3D1&continue={token}"),
        "",
    );
    assert_eq!(
        names(&odd),
        Vec::<String>::new(),
        "cm-3 is gone now: {}",
        odd.body
    );
    // Exact revisions: the collection as it was when cm-1 was created.
    let then = w.call(
        "GET",
        &format!(
            "/api/v1/namespaces/demo/configmaps?resourceVersion={}&resourceVersionMatch=Exact",
            created_at[1]
        ),
        "",
    );
    assert_eq!(names(&then), ["cm-0", "cm-1"]);
    assert_eq!(then.body["metadata"]["resourceVersion"], created_at[1].as_str());
    // What is refused, and how.
    for (query, code) in [
        ("continue=bm90LWpzb24", 400),
        ("limit=x", 400),
        ("resourceVersionMatch=Exact", 400),
        ("resourceVersion=0&resourceVersionMatch=Exact", 400),
        ("resourceVersion=1&resourceVersionMatch=Newest", 400),
        ("resourceVersion=3&continue=x", 400),
        ("resourceVersion=99999", 504),
    ] {
        let r = w.call("GET", &format!("/api/v1/namespaces/demo/configmaps?{query}"), "");
        assert_eq!(r.code, code, "{query}: {}", r.body);
        assert_eq!(r.body["kind"], "Status", "{query}");
    }
}
