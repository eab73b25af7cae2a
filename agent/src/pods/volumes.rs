//! configMap, secret, downwardAPI and projected volumes (service-account tokens among them), written as kubelet's atomic writer writes them so that
//! containers see an update all at once: the files live in a timestamped directory `..TIMESTAMP/`,
//! `..data` is a symlink to it, and each visible name is a symlink through `..data`. An update writes a
//! new directory and swaps `..data` with one rename.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Component, Path},
};

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource, Secret, Volume,
};
use kube::Api;

pub use super::tokens::ServiceAccountTokens;

/// A volume's files: path inside the volume -> (content, mode).
pub type Files = BTreeMap<String, (Vec<u8>, u32)>;

fn safe(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// A ConfigMap or Secret key as the API validates it: `[-._a-zA-Z0-9]+`, not `.`, not starting with
/// `..` (the volume's own `..data` and `..TIMESTAMP` entries).
pub fn config_key(key: &str) -> bool {
    !key.is_empty()
        && key != "."
        && !key.starts_with("..")
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Selects `items` of `data` (all keys when none), with their modes.
fn select(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    what: &str,
) -> Result<Files, String> {
    let mut out = Files::new();
    match items {
        None => {
            for (k, v) in data {
                // The key is the file's name: one that is not a valid key (the API server refuses
                // them; a hostile store might not) would name a path outside the volume.
                if !config_key(&k) {
                    return Err(format!("{what}: key {k:?} is not a valid file name"));
                }
                out.insert(k, (v, default_mode));
            }
        }
        Some(items) => {
            for item in items {
                let v = data
                    .get(&item.key)
                    .ok_or_else(|| format!("{what}: no key {:?}", item.key))?
                    .clone();
                if !safe(&item.path) {
                    return Err(format!(
                        "{what}: path {:?} must be relative without '..'",
                        item.path
                    ));
                }
                let mode = item.mode.map_or(default_mode, |m| m as u32);
                out.insert(item.path.clone(), (v, mode));
            }
        }
    }
    Ok(out)
}

/// The files volume `v` should hold now; `None` if it is not a kind written here. A projected
/// volume is the union of its sources, a service-account token among them ([`ServiceAccountTokens`]).
pub async fn files(
    client: Result<&kube::Client, String>,
    tokens: &mut ServiceAccountTokens,
    pod: &Pod,
    v: &Volume,
    field: impl Fn(&str) -> Result<String, String>,
) -> Option<Result<Files, String>> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(cm) = &v.config_map {
        let mode = cm.default_mode.map_or(0o644, |m| m as u32);
        let client = match client {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        let source = ConfigSource {
            name: &cm.name,
            items: cm.items.as_ref(),
            optional: cm.optional == Some(true),
        };
        return Some(config_map_files(client, namespace, &source, mode).await);
    }
    if let Some(s) = &v.secret {
        let mode = s.default_mode.map_or(0o644, |m| m as u32);
        let client = match client {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        let name = s.secret_name.clone().unwrap_or_default();
        let source = ConfigSource {
            name: &name,
            items: s.items.as_ref(),
            optional: s.optional == Some(true),
        };
        return Some(secret_files(client, namespace, &source, mode).await);
    }
    if let Some(d) = &v.downward_api {
        let mode = d.default_mode.map_or(0o644, |m| m as u32);
        return Some(downward_files(
            pod,
            d.items.as_deref().unwrap_or_default(),
            mode,
            &field,
        ));
    }
    if let Some(p) = &v.projected {
        return Some(projected_files(client, tokens, pod, &v.name, p, &field).await);
    }
    None
}

/// What a configMap or secret source (a volume, or one source of a projected volume) selects.
struct ConfigSource<'a> {
    name: &'a str,
    items: Option<&'a Vec<KeyToPath>>,
    optional: bool,
}

async fn config_map_files(
    client: &kube::Client,
    namespace: &str,
    source: &ConfigSource<'_>,
    mode: u32,
) -> Result<Files, String> {
    let data_of = |found: ConfigMap| {
        let mut data: BTreeMap<String, Vec<u8>> = found
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        data.extend(
            found
                .binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0)),
        );
        data
    };
    source_files(client, namespace, source, mode, "configmap", data_of).await
}

async fn secret_files(
    client: &kube::Client,
    namespace: &str,
    source: &ConfigSource<'_>,
    mode: u32,
) -> Result<Files, String> {
    let data_of = |found: Secret| {
        let mut data: BTreeMap<String, Vec<u8>> = found
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        data.extend(
            found
                .string_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes())),
        );
        data
    };
    source_files(client, namespace, source, mode, "secret", data_of).await
}

/// The files a ConfigMap or Secret (`what`) gives: its data (by `data_of`), the selected items.
async fn source_files<K>(
    client: &kube::Client,
    namespace: &str,
    source: &ConfigSource<'_>,
    mode: u32,
    what: &str,
    data_of: impl FnOnce(K) -> BTreeMap<String, Vec<u8>>,
) -> Result<Files, String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = source.name;
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(found)) => select(data_of(found), source.items, mode, &format!("{what} {name:?}")),
        Ok(None) if source.optional => Ok(Files::new()),
        Ok(None) => Err(format!("{what} {name:?} not found")),
        Err(e) => Err(format!("{what} {name:?}: {e}")),
    }
}

fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    mode: u32,
    field: &impl Fn(&str) -> Result<String, String>,
) -> Result<Files, String> {
    let mut out = Files::new();
    for item in items {
        if !safe(&item.path) {
            return Err(format!(
                "downwardAPI: path {:?} must be relative without '..'",
                item.path
            ));
        }
        let Some(f) = &item.field_ref else {
            return Err(format!(
                "downwardAPI item {:?}: only fieldRef is supported",
                item.path
            ));
        };
        let value = match f.field_path.as_str() {
            "metadata.labels" | "metadata.annotations" => {
                let map = if f.field_path == "metadata.labels" {
                    pod.metadata.labels.clone()
                } else {
                    pod.metadata.annotations.clone()
                };
                map.unwrap_or_default()
                    .iter()
                    .map(|(k, v)| format!("{k}={v:?}\n"))
                    .collect::<String>()
            }
            path => field(path)?,
        };
        out.insert(
            item.path.clone(),
            (value.into_bytes(), item.mode.map_or(mode, |m| m as u32)),
        );
    }
    Ok(out)
}

/// A projected volume: its sources' files in one directory (a path given twice is an error, as
/// the API server validates).
async fn projected_files(
    client: Result<&kube::Client, String>,
    tokens: &mut ServiceAccountTokens,
    pod: &Pod,
    volume: &str,
    p: &ProjectedVolumeSource,
    field: &impl Fn(&str) -> Result<String, String>,
) -> Result<Files, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mode = p.default_mode.map_or(0o644, |m| m as u32);
    let mut out = Files::new();
    for (index, source) in p.sources.iter().flatten().enumerate() {
        let files = if let Some(cm) = &source.config_map {
            let source = ConfigSource {
                name: &cm.name,
                items: cm.items.as_ref(),
                optional: cm.optional == Some(true),
            };
            config_map_files(client.clone()?, namespace, &source, mode).await?
        } else if let Some(s) = &source.secret {
            let source = ConfigSource {
                name: &s.name,
                items: s.items.as_ref(),
                optional: s.optional == Some(true),
            };
            secret_files(client.clone()?, namespace, &source, mode).await?
        } else if let Some(d) = &source.downward_api {
            downward_files(pod, d.items.as_deref().unwrap_or_default(), mode, field)?
        } else if let Some(t) = &source.service_account_token {
            if !safe(&t.path) {
                return Err(format!(
                    "serviceAccountToken: path {:?} must be relative without '..'",
                    t.path
                ));
            }
            let key = format!("{volume}/{index}");
            let token = tokens.get(client.clone()?, pod, &key, t).await?;
            // kubelet writes tokens 0600 unless the volume says otherwise.
            let mode = p.default_mode.map_or(0o600, |m| m as u32);
            Files::from([(t.path.clone(), (token.into_bytes(), mode))])
        } else {
            // clusterTrustBundle, podCertificate: not served by this control plane.
            return Err(format!(
                "projected volume source {index} is of a kind berth does not support"
            ));
        };
        for (path, content) in files {
            if out.insert(path.clone(), content).is_some() {
                return Err(format!("projected volume: path {path:?} is given twice"));
            }
        }
    }
    Ok(out)
}

fn read_current(dir: &Path) -> Option<Files> {
    let data = dir.join("..data");
    let target = std::fs::read_link(&data).ok()?;
    let root = dir.join(target);
    let mut out = Files::new();
    fn walk(base: &Path, at: &Path, out: &mut Files) -> Option<()> {
        for e in std::fs::read_dir(at).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out)?;
            } else {
                let rel = p.strip_prefix(base).ok()?.to_string_lossy().to_string();
                let meta = std::fs::metadata(&p).ok()?;
                out.insert(rel, (std::fs::read(&p).ok()?, meta.permissions().mode() & 0o7777));
            }
        }
        Some(())
    }
    walk(&root, &root, &mut out)?;
    Some(out)
}

/// Makes `dir` hold `files` in the atomic-writer layout; returns whether anything changed.
pub fn write(dir: &Path, files: &Files) -> std::io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    if read_current(dir).as_ref() == Some(files) {
        return Ok(false);
    }
    let stamp = format!(
        "..{}",
        k8s_openapi::jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S.%f")
    );
    let new = dir.join(&stamp);
    std::fs::create_dir_all(&new)?;
    for (path, (content, mode)) in files {
        let p = new.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, content)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))?;
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    // The swap: a new symlink renamed over `..data` in one step.
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    // Visible names: the top-level entries, through `..data`.
    let mut tops: Vec<String> = files
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_string))
        .collect();
    tops.dedup();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(top), &link)?;
        }
    }
    // Names no longer there, and the old directory.
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("..") && !tops.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Some(old) = old
        && old != Path::new(&stamp)
    {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_swap_data_atomically_and_remove_what_went() {
        let dir = std::env::temp_dir().join(format!("berth-volume-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut files = Files::new();
        files.insert("a".into(), (b"1".to_vec(), 0o644));
        files.insert("b".into(), (b"2".to_vec(), 0o600));
        assert!(write(&dir, &files).expect("write"));
        assert_eq!(std::fs::read_to_string(dir.join("a")).expect("a"), "1");
        assert_eq!(
            std::fs::read_link(dir.join("a")).expect("link"),
            Path::new("..data/a")
        );
        assert!(!write(&dir, &files).expect("same"), "no change, no swap");
        let first = std::fs::read_link(dir.join("..data")).expect("data");
        std::thread::sleep(std::time::Duration::from_millis(2));
        files.remove("b");
        files.insert("a".into(), (b"3".to_vec(), 0o644));
        assert!(write(&dir, &files).expect("update"));
        assert_eq!(std::fs::read_to_string(dir.join("a")).expect("a"), "3");
        assert!(std::fs::symlink_metadata(dir.join("b")).is_err(), "b removed");
        assert!(!dir.join(first).exists(), "old data removed");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn items_select_keys_and_refuse_escaping_paths() {
        let data = BTreeMap::from([("k".to_string(), b"v".to_vec()), ("x".to_string(), b"y".to_vec())]);
        let items = vec![KeyToPath {
            key: "k".into(),
            path: "sub/file".into(),
            mode: Some(0o400),
        }];
        let f = select(data.clone(), Some(&items), 0o644, "cm").expect("select");
        assert_eq!(f.get("sub/file"), Some(&(b"v".to_vec(), 0o400)));
        assert_eq!(f.len(), 1);
        let bad = vec![KeyToPath {
            key: "k".into(),
            path: "../x".into(),
            mode: None,
        }];
        assert!(select(data, Some(&bad), 0o644, "cm").is_err());
        // Keys are file names: one that would leave the volume is refused, even if the API let it by.
        for key in ["../../etc/x", "a/b", "..", ""] {
            let hostile = BTreeMap::from([(key.to_string(), b"v".to_vec())]);
            assert!(select(hostile, None, 0o644, "cm").is_err(), "{key:?}");
        }
        assert!(config_key("app.properties") && config_key(".hidden") && config_key("a_b-c"));
        assert!(!config_key("..data"));
    }
}
