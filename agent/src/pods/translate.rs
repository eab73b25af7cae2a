//! A Kubernetes container in runtime terms: the command as kubelet merges it with the image's
//! configuration, the environment (values, field references, ConfigMap and Secret keys), the working
//! directory, the user, the security context, the pod's files and volumes as mounts. Pure: everything
//! it reads is handed to it, so every rule has a unit test.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use berth_runtime::{
    image::ImageConfig,
    spec::{ContainerSpec, MountKind, MountSpec, SharedNamespaces},
};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};
use thiserror::Error;

/// Why a container cannot be made: kubelet's `CreateContainerConfigError` (the message goes to the
/// container's waiting state).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TranslateError {
    #[error("no command specified")]
    NoCommand,
    #[error("configmap \"{0}\" not found")]
    ConfigMapMissing(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyMissing {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("secret \"{0}\" not found")]
    SecretMissing(String),
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyMissing {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("unsupported fieldRef {0:?}")]
    FieldRef(String),
    #[error("image's user {0:?} is not numeric (name lookup in the image is not supported)")]
    User(String),
    #[error("volume {0:?} is not defined in the pod")]
    UnknownVolume(String),
    #[error("volume {name:?}: {kind} volumes are not supported")]
    UnsupportedVolume { name: String, kind: &'static str },
    #[error("subPath {0:?} must be a relative path without '..'")]
    SubPath(String),
}

/// ConfigMaps and Secrets of the pod's namespace that its containers reference, as fetched.
#[derive(Clone, Debug, Default)]
pub struct EnvSources {
    pub config_maps: HashMap<String, BTreeMap<String, String>>,
    pub secrets: HashMap<String, BTreeMap<String, String>>,
    /// The service link variables ([`service_links`]).
    pub services: Vec<(String, String)>,
}

/// The Docker-links-style variables kubelet gives every container for the Services of its
/// namespace (`enableServiceLinks`, default true) and, always, for the `kubernetes` Service of the
/// `default` namespace: `NAME_SERVICE_HOST`, `NAME_SERVICE_PORT[_PORTNAME]`, `NAME_PORT` and
/// `NAME_PORT_PORT_PROTO[_PROTO|_PORT|_ADDR]`, NAME upper-cased with `-` as `_`. Services without a
/// cluster IP (headless, ExternalName) have none. Sorted by Service name, so a restart sees the same.
pub fn service_links<'a>(
    services: impl IntoIterator<Item = &'a crate::model::Service>,
    namespace: &str,
    enable: bool,
) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<String, &crate::model::Service> = BTreeMap::new();
    for svc in services {
        let (ns, name) = (
            svc.metadata.namespace.as_deref().unwrap_or_default(),
            svc.metadata.name.as_deref().unwrap_or_default(),
        );
        let wanted = (enable && ns == namespace) || (ns == "default" && name == "kubernetes");
        // The namespace's own Service wins over default/kubernetes of the same name.
        if wanted && (ns == namespace || !chosen.contains_key(name)) {
            chosen.insert(name.to_string(), svc);
        }
    }
    let mut env = Vec::new();
    for (name, svc) in chosen {
        let Some(spec) = &svc.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        else {
            continue;
        };
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let prefix = name.to_uppercase().replace('-', "_");
        env.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        env.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                let port_name = port_name.to_uppercase().replace('-', "_");
                env.push((format!("{prefix}_SERVICE_PORT_{port_name}"), p.port.to_string()));
            }
        }
        let proto = |p: &crate::model::ServicePort| p.protocol.clone().unwrap_or_else(|| "TCP".into());
        env.push((
            format!("{prefix}_PORT"),
            format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port),
        ));
        for p in &ports {
            let base = format!("{prefix}_PORT_{}_{}", p.port, proto(p).to_uppercase());
            env.push((
                base.clone(),
                format!("{}://{ip}:{}", proto(p).to_lowercase(), p.port),
            ));
            env.push((format!("{base}_PROTO"), proto(p).to_lowercase()));
            env.push((format!("{base}_PORT"), p.port.to_string()));
            env.push((format!("{base}_ADDR"), ip.to_string()));
        }
    }
    env
}

/// What the pod's sandbox gives every container.
#[derive(Clone, Debug, Default)]
pub struct PodContext {
    pub namespaces: SharedNamespaces,
    pub pod_ip: String,
    pub host_ip: String,
    /// `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname` as kubelet writes them for the pod.
    pub hosts_file: PathBuf,
    pub resolv_file: PathBuf,
    pub hostname_file: PathBuf,
    /// Directory holding the pod's emptyDir volumes (`NAME/`).
    pub volumes_dir: PathBuf,
    /// `cgroupsPath` for this container.
    pub cgroups_path: String,
}

/// The container's runtime spec (its root filled in by the runtime).
pub fn container_spec(
    pod: &Pod,
    container: &Container,
    image: &ImageConfig,
    ctx: &PodContext,
    sources: &EnvSources,
) -> Result<ContainerSpec, TranslateError> {
    let env = environment(pod, container, image, ctx, sources)?;
    let args = command(container, image, &env)?;
    let (uid, gid) = user(pod, container, image)?;
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let mut additional_gids: Vec<u32> = pod_sc
        .and_then(|s| s.supplemental_groups.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|g| u32::try_from(g).ok())
        .collect();
    if let Some(fs_group) = pod_sc
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok())
    {
        additional_gids.push(fs_group);
    }
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let mut mounts = vec![
        bind("/etc/hosts", ctx.hosts_file.clone(), false),
        bind("/etc/resolv.conf", ctx.resolv_file.clone(), false),
        bind("/etc/hostname", ctx.hostname_file.clone(), false),
    ];
    mounts.extend(volume_mounts(pod, container, ctx)?);
    Ok(ContainerSpec {
        rootfs: PathBuf::new(),
        args,
        env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd: container
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .or_else(|| image.working_dir.clone())
            .unwrap_or_else(|| "/".into()),
        uid,
        gid,
        additional_gids,
        read_only_root: sc.and_then(|s| s.read_only_root_filesystem).unwrap_or(false),
        privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
        cap_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
        cap_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
        allow_privilege_escalation: sc.and_then(|s| s.allow_privilege_escalation).unwrap_or(false),
        mounts,
        namespaces: ctx.namespaces.clone(),
        cgroups_path: ctx.cgroups_path.clone(),
        resources: super::resources::container_resources(container),
        oom_score_adj: None,
    })
}

fn bind(destination: &str, source: PathBuf, read_only: bool) -> MountSpec {
    MountSpec {
        destination: destination.into(),
        kind: MountKind::Bind(source),
        read_only,
    }
}

/// The environment in order: the image's, the service links, then the container's `envFrom` and
/// `env` (later ones win, as kubelet adds a service link only where the container set nothing).
fn environment(
    pod: &Pod,
    container: &Container,
    image: &ImageConfig,
    ctx: &PodContext,
    sources: &EnvSources,
) -> Result<Vec<(String, String)>, TranslateError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(e) = env.iter_mut().find(|(n, _)| *n == k) {
            e.1 = v;
        } else {
            env.push((k, v));
        }
    };
    for kv in &image.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(&mut env, k.into(), v.into());
    }
    for (k, v) in &sources.services {
        set(&mut env, k.clone(), v.clone());
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match sources.config_maps.get(&r.name) {
                Some(data) => data
                    .iter()
                    .for_each(|(k, v)| set(&mut env, format!("{prefix}{k}"), v.clone())),
                None if r.optional == Some(true) => {}
                None => return Err(TranslateError::ConfigMapMissing(r.name.clone())),
            }
        }
        if let Some(r) = &from.secret_ref {
            match sources.secrets.get(&r.name) {
                Some(data) => data
                    .iter()
                    .for_each(|(k, v)| set(&mut env, format!("{prefix}{k}"), v.clone())),
                None if r.optional == Some(true) => {}
                None => return Err(TranslateError::SecretMissing(r.name.clone())),
            }
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = env_value(pod, var, &namespace, ctx, sources, &env)? {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

fn env_value(
    pod: &Pod,
    var: &EnvVar,
    namespace: &str,
    ctx: &PodContext,
    sources: &EnvSources,
    so_far: &[(String, String)],
) -> Result<Option<String>, TranslateError> {
    let Some(from) = &var.value_from else {
        // `$(VAR)` refers to variables defined before it, as kubelet expands them.
        return Ok(Some(expand(var.value.as_deref().unwrap_or_default(), so_far)));
    };
    if let Some(f) = &from.field_ref {
        return field(pod, &f.field_path, ctx).map(Some);
    }
    if let Some(r) = &from.config_map_key_ref {
        let optional = r.optional == Some(true);
        return match sources.config_maps.get(&r.name).map(|d| d.get(&r.key)) {
            Some(Some(v)) => Ok(Some(v.clone())),
            _ if optional => Ok(None),
            Some(None) => Err(TranslateError::ConfigMapKeyMissing {
                namespace: namespace.into(),
                name: r.name.clone(),
                key: r.key.clone(),
            }),
            None => Err(TranslateError::ConfigMapMissing(r.name.clone())),
        };
    }
    if let Some(r) = &from.secret_key_ref {
        let optional = r.optional == Some(true);
        return match sources.secrets.get(&r.name).map(|d| d.get(&r.key)) {
            Some(Some(v)) => Ok(Some(v.clone())),
            _ if optional => Ok(None),
            Some(None) => Err(TranslateError::SecretKeyMissing {
                namespace: namespace.into(),
                name: r.name.clone(),
                key: r.key.clone(),
            }),
            None => Err(TranslateError::SecretMissing(r.name.clone())),
        };
    }
    Ok(None)
}

/// The downward API's `fieldRef` paths.
pub fn field(pod: &Pod, path: &str, ctx: &PodContext) -> Result<String, TranslateError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_key = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => ctx.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => ctx.host_ip.clone(),
        _ => {
            if let Some(k) = map_key("metadata.labels['") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(&k))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(k) = map_key("metadata.annotations['") {
                meta.annotations
                    .as_ref()
                    .and_then(|l| l.get(&k))
                    .cloned()
                    .unwrap_or_default()
            } else {
                return Err(TranslateError::FieldRef(path.into()));
            }
        }
    })
}

/// Kubernetes' `$(VAR)` expansion: defined variables replaced, `$$` an escaped `$`, anything else kept.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('(')
            && let Some(end) = r.find(')')
        {
            let name = &r[..end];
            match env.iter().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// kubelet's rule: `command` replaces the image's entrypoint (and then its cmd too); `args` replaces
/// the image's cmd.
fn command(
    container: &Container,
    image: &ImageConfig,
    env: &[(String, String)],
) -> Result<Vec<String>, TranslateError> {
    let expanded = |v: &Vec<String>| v.iter().map(|a| expand(a, env)).collect::<Vec<_>>();
    let (entrypoint, args) = match (&container.command, &container.args) {
        (Some(cmd), args) if !cmd.is_empty() => {
            (expanded(cmd), args.as_ref().map(expanded).unwrap_or_default())
        }
        (_, Some(args)) if !args.is_empty() => (image.entrypoint.clone().unwrap_or_default(), expanded(args)),
        _ => (
            image.entrypoint.clone().unwrap_or_default(),
            image.cmd.clone().unwrap_or_default(),
        ),
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(args).collect();
    if argv.is_empty() {
        return Err(TranslateError::NoCommand);
    }
    Ok(argv)
}

/// runAsUser / runAsGroup (the container's over the pod's), else the image's `USER` (numeric).
fn user(pod: &Pod, container: &Container, image: &ImageConfig) -> Result<(u32, u32), TranslateError> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or_else(|| pod_sc.and_then(|s| s.run_as_user));
    let run_as_group = sc
        .and_then(|s| s.run_as_group)
        .or_else(|| pod_sc.and_then(|s| s.run_as_group));
    let (image_uid, image_gid) = match image.user.as_deref() {
        None | Some("") | Some("root") => (0, 0),
        Some(u) => {
            let (user, group) = u.split_once(':').unwrap_or((u, ""));
            let uid: u32 = user.parse().map_err(|_| TranslateError::User(u.into()))?;
            let gid: u32 = if group.is_empty() {
                uid
            } else {
                group.parse().map_err(|_| TranslateError::User(u.into()))?
            };
            (uid, gid)
        }
    };
    let uid = run_as_user
        .and_then(|u| u32::try_from(u).ok())
        .unwrap_or(image_uid);
    let gid = run_as_group
        .and_then(|g| u32::try_from(g).ok())
        .unwrap_or(if run_as_user.is_some() { 0 } else { image_gid });
    Ok((uid, gid))
}

/// The container's `volumeMounts` as mounts: emptyDir (a directory of the pod, or tmpfs with
/// `medium: Memory`) and hostPath; the other kinds are refused by name.
fn volume_mounts(
    pod: &Pod,
    container: &Container,
    ctx: &PodContext,
) -> Result<Vec<MountSpec>, TranslateError> {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let v = volumes
            .and_then(|vs| vs.iter().find(|v| v.name == m.name))
            .ok_or_else(|| TranslateError::UnknownVolume(m.name.clone()))?;
        let mut read_only_volume = false;
        let kind = if let Some(e) = &v.empty_dir {
            if e.medium.as_deref() == Some("Memory") && m.sub_path.is_none() {
                MountKind::Tmpfs(None)
            } else {
                MountKind::Bind(ctx.volumes_dir.join(&v.name))
            }
        } else if let Some(h) = &v.host_path {
            MountKind::Bind(PathBuf::from(&h.path))
        } else if v.config_map.is_some()
            || v.secret.is_some()
            || v.downward_api.is_some()
            || v.projected.is_some()
        {
            // Written by the worker (`volumes.rs`); read-only in the container, as kubelet mounts them.
            read_only_volume = true;
            MountKind::Bind(ctx.volumes_dir.join(&v.name))
        } else {
            let kind = if v.persistent_volume_claim.is_some() {
                "persistentVolumeClaim"
            } else {
                "this kind of"
            };
            return Err(TranslateError::UnsupportedVolume {
                name: v.name.clone(),
                kind,
            });
        };
        let kind = match (kind, m.sub_path.as_deref().filter(|s| !s.is_empty())) {
            (MountKind::Bind(base), Some(sub)) => {
                let safe = std::path::Path::new(sub)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
                if !safe {
                    return Err(TranslateError::SubPath(sub.into()));
                }
                MountKind::Bind(base.join(sub))
            }
            (kind, _) => kind,
        };
        out.push(MountSpec {
            destination: m.mount_path.clone(),
            kind,
            read_only: read_only_volume || m.read_only.unwrap_or(false),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_norway::from_str(yaml).expect("pod yaml")
    }

    fn image(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfig {
        let v = |s: Option<&[&str]>| s.map(|s| s.iter().map(|a| a.to_string()).collect());
        ImageConfig {
            entrypoint: v(entrypoint),
            cmd: v(cmd),
            env: vec!["PATH=/bin".into(), "MODE=image".into()],
            working_dir: Some("/data".into()),
            user: None,
            stop_signal: None,
        }
    }

    const POD: &str = r#"
metadata: {name: web-0, namespace: shop, uid: u-1, labels: {app: web}}
spec:
  nodeName: n1
  securityContext: {runAsUser: 1000, supplementalGroups: [5]}
  volumes:
  - {name: scratch, emptyDir: {}}
  - {name: mem, emptyDir: {medium: Memory}}
  - {name: cfg, configMap: {name: settings}}
  containers:
  - name: c
    image: busybox
"#;

    fn ctx() -> PodContext {
        PodContext {
            pod_ip: "10.244.1.5".into(),
            host_ip: "192.168.70.1".into(),
            volumes_dir: "/pods/u-1/volumes".into(),
            ..Default::default()
        }
    }

    fn container(yaml: &str) -> Container {
        serde_norway::from_str(yaml).expect("container yaml")
    }

    fn service(namespace: &str, name: &str, cluster_ip: &str, ports: &str) -> crate::model::Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": cluster_ip, "ports": serde_json::from_str::<serde_json::Value>(ports).expect("ports")}
        }))
        .expect("service")
    }

    #[test]
    fn service_links_as_kubelet_names_them() {
        let services = [
            service(
                "default",
                "kubernetes",
                "10.96.0.1",
                r#"[{"name": "https", "port": 443, "protocol": "TCP"}]"#,
            ),
            service(
                "shop",
                "redis-main",
                "10.96.0.20",
                r#"[{"name": "db", "port": 6379, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]"#,
            ),
            service("shop", "headless", "None", r#"[{"port": 80}]"#),
            service("other", "web", "10.96.0.30", r#"[{"port": 80}]"#),
        ];
        let env: BTreeMap<String, String> = service_links(&services, "shop", true).into_iter().collect();
        let want = [
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
            ("REDIS_MAIN_SERVICE_HOST", "10.96.0.20"),
            ("REDIS_MAIN_SERVICE_PORT", "6379"),
            ("REDIS_MAIN_SERVICE_PORT_DB", "6379"),
            ("REDIS_MAIN_PORT", "tcp://10.96.0.20:6379"),
            ("REDIS_MAIN_PORT_6379_TCP", "tcp://10.96.0.20:6379"),
            ("REDIS_MAIN_PORT_6379_TCP_PROTO", "tcp"),
            ("REDIS_MAIN_PORT_6379_TCP_PORT", "6379"),
            ("REDIS_MAIN_PORT_53_UDP", "udp://10.96.0.20:53"),
        ];
        for (k, v) in want {
            assert_eq!(env.get(k).map(String::as_str), Some(v), "{k} in {env:?}");
        }
        assert!(
            !env.keys()
                .any(|k| k.starts_with("HEADLESS_") || k.starts_with("WEB_")),
            "{env:?}"
        );
        let off: Vec<String> = service_links(&services, "shop", false)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert!(
            off.iter().all(|k| k.starts_with("KUBERNETES_")),
            "only the API server's: {off:?}"
        );
        assert!(!off.is_empty());

        // The container's own variables win; `$(VAR)` sees the links.
        let c = container(
            "{name: c, env: [{name: REDIS_MAIN_SERVICE_PORT, value: '1'}, {name: URL, value: 'redis://$(REDIS_MAIN_SERVICE_HOST)'}]}",
        );
        let sources = EnvSources {
            services: service_links(&services, "shop", true),
            ..EnvSources::default()
        };
        let mut p = pod("metadata: {name: p, namespace: shop}\nspec: {containers: [{name: c}]}");
        p.metadata.namespace = Some("shop".into());
        let env: BTreeMap<String, String> = environment(&p, &c, &image(None, None), &ctx(), &sources)
            .expect("env")
            .into_iter()
            .collect();
        assert_eq!(env["REDIS_MAIN_SERVICE_PORT"], "1");
        assert_eq!(env["URL"], "redis://10.96.0.20");
    }

    #[test]
    fn command_and_args_merge_with_the_image_as_kubelet_does() {
        let img = image(Some(&["/entry"]), Some(&["--default"]));
        let p = pod(POD);
        let s = EnvSources::default();
        let run = |c: &str| container_spec(&p, &container(c), &img, &ctx(), &s).map(|s| s.args);
        assert_eq!(run("{name: c}").expect("none"), ["/entry", "--default"]);
        assert_eq!(run("{name: c, args: [x]}").expect("args"), ["/entry", "x"]);
        assert_eq!(run("{name: c, command: [sh]}").expect("command"), ["sh"]);
        assert_eq!(
            run("{name: c, command: [sh], args: [-c, 'echo $(MODE) $$(MODE) $(NOPE)']}").expect("both"),
            ["sh", "-c", "echo image $(MODE) $(NOPE)"]
        );
        let empty = image(None, None);
        assert_eq!(
            container_spec(&p, &container("{name: c}"), &empty, &ctx(), &s).map(|s| s.args),
            Err(TranslateError::NoCommand)
        );
    }

    #[test]
    fn environment_from_values_fields_configmaps_and_secrets() {
        let p = pod(POD);
        let c = container(
            r#"
name: c
envFrom: [{configMapRef: {name: settings}, prefix: CFG_}]
env:
- {name: MODE, value: container}
- {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
- {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
- {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
- {name: PASS, valueFrom: {secretKeyRef: {name: creds, key: password}}}
- {name: URL, value: "http://$(IP):80"}
"#,
        );
        let mut s = EnvSources::default();
        s.config_maps.insert(
            "settings".into(),
            BTreeMap::from([("level".into(), "debug".into())]),
        );
        s.secrets.insert(
            "creds".into(),
            BTreeMap::from([("password".into(), "hunter2".into())]),
        );
        let env = container_spec(&p, &c, &image(None, Some(&["sh"])), &ctx(), &s)
            .expect("spec")
            .env;
        for want in [
            "PATH=/bin",
            "MODE=container",
            "CFG_level=debug",
            "POD=web-0",
            "IP=10.244.1.5",
            "APP=web",
            "PASS=hunter2",
            "URL=http://10.244.1.5:80",
        ] {
            assert!(env.contains(&want.to_string()), "{want} in {env:?}");
        }
        s.secrets.clear();
        assert_eq!(
            container_spec(&p, &c, &image(None, Some(&["sh"])), &ctx(), &s).map(|_| ()),
            Err(TranslateError::SecretMissing("creds".into()))
        );
    }

    #[test]
    fn user_workdir_security_and_volumes() {
        let p = pod(POD);
        let c = container(
            r#"
name: c
workingDir: /srv
securityContext: {runAsGroup: 2000, readOnlyRootFilesystem: true, capabilities: {add: [NET_ADMIN], drop: [ALL]}}
volumeMounts:
- {name: scratch, mountPath: /scratch}
- {name: scratch, mountPath: /sub, subPath: a/b, readOnly: true}
- {name: mem, mountPath: /mem}
"#,
        );
        let spec = container_spec(
            &p,
            &c,
            &image(None, Some(&["sh"])),
            &ctx(),
            &EnvSources::default(),
        )
        .expect("spec");
        assert_eq!((spec.uid, spec.gid), (1000, 2000));
        assert_eq!(spec.additional_gids, vec![5]);
        assert_eq!(spec.cwd, "/srv");
        assert!(spec.read_only_root);
        assert!(!spec.allow_privilege_escalation, "no new privileges by default");
        assert_eq!(spec.cap_add, ["NET_ADMIN"]);
        let dests: Vec<(&str, &MountKind, bool)> = spec
            .mounts
            .iter()
            .map(|m| (m.destination.as_str(), &m.kind, m.read_only))
            .collect();
        assert!(dests.contains(&(
            "/scratch",
            &MountKind::Bind("/pods/u-1/volumes/scratch".into()),
            false
        )));
        assert!(dests.contains(&(
            "/sub",
            &MountKind::Bind("/pods/u-1/volumes/scratch/a/b".into()),
            true
        )));
        assert!(dests.contains(&("/mem", &MountKind::Tmpfs(None), false)));
        assert!(dests.iter().any(|d| d.0 == "/etc/hosts"));
        let escaping =
            container("{name: c, volumeMounts: [{name: scratch, mountPath: /x, subPath: ../../etc}]}");
        assert!(matches!(
            container_spec(
                &p,
                &escaping,
                &image(None, Some(&["sh"])),
                &ctx(),
                &EnvSources::default()
            ),
            Err(TranslateError::SubPath(_))
        ));
        let cfg = container("{name: c, volumeMounts: [{name: cfg, mountPath: /cfg}]}");
        let spec = container_spec(
            &p,
            &cfg,
            &image(None, Some(&["sh"])),
            &ctx(),
            &EnvSources::default(),
        )
        .expect("configMap volume");
        let m = spec
            .mounts
            .iter()
            .find(|m| m.destination == "/cfg")
            .expect("cfg mount");
        assert_eq!(m.kind, MountKind::Bind("/pods/u-1/volumes/cfg".into()));
        assert!(m.read_only, "configMap volumes are read-only");
    }
}
