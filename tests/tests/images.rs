//! Pulling images from a real registry (Debian's docker-registry on loopback) into berth's image store:
//! OCI and Docker media types, an index resolved to linux/amd64, digests verified, blobs and layers
//! stored once, clear errors.

use std::sync::Arc;

use berth_runtime::image::{ImageStore, PullError, Puller, RegistryAuth};
use berth_tests::{
    registry::{Format, ImageSpec, Registry, build_image, http_status, push},
    testbed::TestBed,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio")
}

#[test]
fn images_pull_into_the_store_once_in_both_media_types_and_from_an_index() {
    let bed = TestBed::new("img");
    let scratch = bed.scratch().to_path_buf();
    let registry = Registry::on_loopback(&scratch.join("registry")).expect("registry");
    let addr = registry.addr.to_string();
    let layout = scratch.join("oci");
    build_image(&layout, &ImageSpec::busybox("1.36")).expect("busybox image");
    let mut arm = ImageSpec::busybox("arm");
    arm.files.push(("etc/arch".into(), "arm64\n".into(), 0o644));
    arm.architecture = Some("arm64".into());
    build_image(&layout, &arm).expect("second image");
    push(
        &layout,
        "1.36",
        &format!("{addr}/busybox:1.36"),
        Format::Oci,
        None,
    )
    .expect("push oci");
    push(
        &layout,
        "1.36",
        &format!("{addr}/docker/busybox:1.36"),
        Format::Docker,
        None,
    )
    .expect("push docker");

    let store = Arc::new(ImageStore::open(&scratch.join("store")).expect("store"));
    let puller = Puller::new(Arc::clone(&store), std::slice::from_ref(&addr));
    let rt = runtime();
    let first = rt
        .block_on(puller.pull(&format!("{addr}/busybox:1.36"), &RegistryAuth::Anonymous))
        .expect("pull");
    assert!(first.downloaded > 500_000, "busybox layer downloaded: {first:?}");
    assert_eq!(first.image.layers.len(), 1);
    assert!(
        first
            .image
            .repo_digest
            .starts_with(&format!("{addr}/busybox@sha256:"))
    );
    assert_eq!(first.image.config.cmd, Some(vec!["sh".to_string()]));
    let layer = store.layer_dir(&first.image.layers[0]).expect("layer dir");
    assert!(layer.join("bin/busybox").is_file(), "layer unpacked");
    assert_eq!(
        std::fs::read_link(layer.join("bin/sh")).expect("sh link"),
        std::path::Path::new("busybox")
    );
    assert_eq!(
        store.lookup(&first.image.reference).expect("lookup"),
        Some(first.image.clone())
    );

    // Again: the manifest is asked for, nothing else downloaded.
    let again = rt
        .block_on(puller.pull(&format!("{addr}/busybox:1.36"), &RegistryAuth::Anonymous))
        .expect("pull again");
    assert_eq!(again.downloaded, 0);
    assert_eq!(again.image.manifest_digest, first.image.manifest_digest);

    // Docker media types: same layers (already stored), a different manifest.
    let docker = rt
        .block_on(puller.pull(&format!("{addr}/docker/busybox:1.36"), &RegistryAuth::Anonymous))
        .expect("pull docker");
    assert_ne!(docker.image.manifest_digest, first.image.manifest_digest);
    assert_eq!(docker.image.config.cmd, Some(vec!["sh".to_string()]));

    // An index with an arm64 and an amd64 image resolves to amd64.
    let index = format!("{}/busybox:multi", addr);
    let amd64 = first.image.manifest_digest.clone();
    push(&layout, "arm", &format!("{addr}/busybox:arm"), Format::Oci, None).expect("push arm");
    let arm_manifest = rt
        .block_on(puller.pull(&format!("{addr}/busybox:arm"), &RegistryAuth::Anonymous))
        .expect("pull arm")
        .image;
    put_index(
        &addr,
        "busybox",
        "multi",
        &[(&arm_manifest.manifest_digest, "arm64"), (&amd64, "amd64")],
    );
    let multi = rt
        .block_on(puller.pull(&index, &RegistryAuth::Anonymous))
        .expect("pull index");
    assert_eq!(multi.image.manifest_digest, amd64, "the amd64 entry of the index");

    // A tag that does not exist: a registry error naming the image.
    let missing = rt
        .block_on(puller.pull(&format!("{addr}/busybox:nope"), &RegistryAuth::Anonymous))
        .expect_err("missing tag");
    assert!(matches!(missing, PullError::Registry { .. }), "{missing}");
    assert!(missing.to_string().contains("busybox:nope"), "{missing}");
    assert_eq!(http_status(registry.addr, "/v2/"), Some(200));
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused_and_not_stored() {
    let bed = TestBed::new("imgbad");
    let scratch = bed.scratch().to_path_buf();
    let registry = Registry::on_loopback(&scratch.join("registry")).expect("registry");
    let addr = registry.addr.to_string();
    let layout = scratch.join("oci");
    build_image(&layout, &ImageSpec::busybox("1.36")).expect("image");
    push(
        &layout,
        "1.36",
        &format!("{addr}/busybox:1.36"),
        Format::Oci,
        None,
    )
    .expect("push");
    // Corrupt the layer where the registry keeps it: it serves the wrong bytes under the digest.
    let blobs = scratch.join("registry/data/docker/registry/v2/blobs/sha256");
    let mut largest: Option<(u64, std::path::PathBuf)> = None;
    for prefix in std::fs::read_dir(&blobs).expect("blobs") {
        for blob in std::fs::read_dir(prefix.expect("entry").path()).expect("dir") {
            let data = blob.expect("entry").path().join("data");
            let len = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
            if largest.as_ref().is_none_or(|(l, _)| len > *l) {
                largest = Some((len, data));
            }
        }
    }
    let (_, layer) = largest.expect("a layer blob");
    let mut bytes = std::fs::read(&layer).expect("layer");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&layer, bytes).expect("corrupt");

    let store = Arc::new(ImageStore::open(&scratch.join("store")).expect("store"));
    let puller = Puller::new(Arc::clone(&store), std::slice::from_ref(&addr));
    let err = runtime()
        .block_on(puller.pull(&format!("{addr}/busybox:1.36"), &RegistryAuth::Anonymous))
        .expect_err("corrupt layer");
    assert!(err.to_string().to_lowercase().contains("digest"), "{err}");
    let stored: Vec<_> = std::fs::read_dir(scratch.join("store/layers"))
        .expect("layers")
        .collect();
    assert!(stored.is_empty(), "nothing unpacked");
    let temps: Vec<_> = std::fs::read_dir(scratch.join("store/tmp"))
        .expect("tmp")
        .collect();
    assert!(temps.is_empty(), "no temporary left");
}

/// PUTs an OCI index of (manifest digest, architecture) to `repo:tag`.
fn put_index(addr: &str, repo: &str, tag: &str, entries: &[(&str, &str)]) {
    let manifests: Vec<String> = entries
        .iter()
        .map(|(digest, arch)| {
            let size = manifest_size(addr, repo, digest);
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":{size},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#
            )
        })
        .collect();
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        manifests.join(",")
    );
    let out = std::process::Command::new("curl")
        .args([
            "-fsS",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.index.v1+json",
            "--data-binary",
            &body,
            &format!("http://{addr}/v2/{repo}/manifests/{tag}"),
        ])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "PUT index: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn manifest_size(addr: &str, repo: &str, digest: &str) -> usize {
    let out = std::process::Command::new("curl")
        .args([
            "-fsS",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &format!("http://{addr}/v2/{repo}/manifests/{digest}"),
        ])
        .output()
        .expect("curl");
    assert!(out.status.success(), "GET manifest");
    out.stdout.len()
}
