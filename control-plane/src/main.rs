//! `berth-control-plane --data-dir DIR`: serves the Kubernetes API over HTTPS from an embedded store in
//! `DIR`, writing `DIR/admin.kubeconfig` for the real `kubectl`. A second start on the same directory
//! resumes with all state.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use berth_control_plane::{
    api::{Api, ApiError, apiservers, kinds},
    controllers, pki, server, sim,
    store::Store,
};
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "berth-control-plane",
    version,
    about = "berth's compact Kubernetes control plane",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Where the store, certificates and admin.kubeconfig live.
    #[arg(long, required = true)]
    data_dir: Option<PathBuf>,
    /// How long the join token made at start is valid (kubeadm's `--token-ttl`: `24h`, `1h30m`;
    /// `0`: never expires). A restart keeps a valid token and makes a new one for an expired one;
    /// `berth-control-plane token create` makes more.
    #[arg(long, default_value = "24h")]
    token_ttl: String,
    /// Connections served at once; more wait in the listen backlog until one ends (each is also
    /// bounded in time: TLS handshake 10 s, HTTP/1.1 headers 32 s, HTTP/2 pings).
    #[arg(long, default_value_t = 2048)]
    max_connections: usize,
    /// Address to serve the API on (port 0: any free port, written into admin.kubeconfig).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// The address other machines reach this API server at (kubeconfig, `kube-public/cluster-info`,
    /// the `default/kubernetes` Endpoints); default: the --listen address, or 127.0.0.1 when that is
    /// 0.0.0.0 or `::`.
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// Every this many seconds, forget the history older than the previous interval's newest revision
    /// (kube-apiserver's --etcd-compaction-interval, 5 minutes); 0: never.
    #[arg(long, default_value_t = 300)]
    compaction_interval_seconds: u64,
    /// Seconds a node may go without renewing its Lease before it is marked NotReady.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_seconds: u64,
    /// Seconds pods stay on a NotReady or unreachable node before they are evicted, unless their
    /// tolerations say otherwise.
    #[arg(long, default_value_t = 300)]
    default_toleration_seconds: i64,
    /// Serve the API only: no scheduler, no controllers.
    #[arg(long)]
    no_controllers: bool,
    /// Keep the cluster state in etcd (`http://host:port`, comma-separated members, as kube-apiserver's
    /// `--etcd-servers`)
    /// instead of `DATA_DIR/state.db`; several control planes may share it, electing one to run the
    /// scheduler and controllers.
    #[arg(long)]
    etcd_servers: Option<String>,
    /// The CA that signed etcd's serving certificate, for an `https://` --etcd-servers.
    #[arg(long)]
    etcd_cafile: Option<PathBuf>,
    /// Client certificate shown to etcd (etcd's `--client-cert-auth`), with --etcd-keyfile.
    #[arg(long, requires = "etcd_keyfile")]
    etcd_certfile: Option<PathBuf>,
    /// The key of --etcd-certfile.
    #[arg(long, requires = "etcd_certfile")]
    etcd_keyfile: Option<PathBuf>,
    /// This control plane's name in leader election (default: host name and process id).
    #[arg(long)]
    id: Option<String>,
    /// Seconds a Lease of this control plane holds without renewal: the controllers' leader Lease
    /// (with --etcd-servers) and this API server's identity Lease, by which the `default/kubernetes`
    /// Endpoints name every live API server.
    #[arg(long, default_value_t = 15)]
    leader_lease_seconds: u64,
    /// Also run this many hollow nodes (`hollow-<i>`: they register, renew leases and report the
    /// pods bound to them running, without containers), for tests, demos and benchmarks.
    #[arg(long, default_value_t = 0)]
    hollow_nodes: usize,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Bootstrap tokens for joining nodes (kubeadm's `token`).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(clap::Subcommand)]
enum TokenAction {
    /// Makes a new token through the running control plane of DATA_DIR and prints the join command
    /// that uses it (`kubeadm token create --print-join-command`).
    Create {
        /// The control plane's data directory (its admin.kubeconfig, admin.token and ca.crt).
        #[arg(long)]
        data_dir: PathBuf,
        /// How long the token is valid (`24h`, `1h30m`; `0`: never expires).
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// What the token is for, kept in its Secret.
        #[arg(long, default_value = "made by berth-control-plane token create")]
        description: String,
    },
}

/// `berth-control-plane token create`.
fn token_create(data_dir: &std::path::Path, ttl: &str, description: &str) -> anyhow::Result<()> {
    let ttl = berth_control_plane::tokens::parse_ttl(ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let join = runtime.block_on(berth_control_plane::tokens::create(data_dir, ttl, description))?;
    println!("{join}");
    Ok(())
}

/// Large buffers (list answers of thousands of objects) from their own mappings, given back to the
/// system when freed. glibc otherwise raises its mmap threshold to the largest buffer freed so far and
/// serves the next ones from the heap, where a few 20 MB answers leave the resident size 150 MB higher
/// for good.
fn return_large_buffers() {
    // SAFETY: mallopt only changes allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

fn main() -> ExitCode {
    return_large_buffers();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Some(Command::Token {
            action:
                TokenAction::Create {
                    data_dir,
                    ttl,
                    description,
                },
        }) => token_create(data_dir, ttl, description),
        None => run(cli),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-control-plane: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The address clients are told: the flag's IP, else the bound one unless it is "any address"; the
/// bound port either way.
fn advertised(bound: SocketAddr, flag: Option<IpAddr>) -> SocketAddr {
    let ip = match flag {
        Some(ip) => ip,
        None if bound.ip().is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        None => bound.ip(),
    };
    SocketAddr::new(ip, bound.port())
}

/// Compacts the store every `interval` up to the newest revision of one interval before, so watchers
/// always have at least an interval of history to resume from.
fn compact_every(store: &Store, interval: Duration, stop: &AtomicBool) {
    let mut previous = store.revision();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(interval);
        let newest = store.revision();
        match store.compact(previous) {
            Ok(removed) => tracing::debug!(revision = previous, removed, "compacted the store"),
            Err(e) => tracing::warn!(error = %e, revision = previous, "compacting the store"),
        }
        previous = newest;
    }
}

/// A start-up step over a store other control planes write too: a conflict or an unavailable store
/// is retried for a few seconds before the process gives up, saying which step failed.
fn at_start<T>(what: &str, mut step: impl FnMut() -> Result<T, ApiError>) -> anyhow::Result<T> {
    let mut attempt = 0;
    loop {
        match step() {
            Ok(v) => return Ok(v),
            Err(e) if attempt < 10 && (e.code == 409 || e.code >= 500) => {
                attempt += 1;
                tracing::warn!(error = %e.message, attempt, "{what}; retrying");
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(e) => return Err(anyhow::anyhow!("{what}: {}", e.message)),
        }
    }
}

/// The data directory holds every Secret (the bootstrap tokens' too), the CA's key and the admin
/// token: it is the server's alone. Everything the process creates gets no group or other access
/// (umask 077); a directory made by an earlier version is closed up too: the directory 0700, its
/// files 0600.
fn keep_private(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: umask only changes this process's file creation mask.
    unsafe { libc::umask(0o077) };
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", data_dir.display()))?;
    for entry in std::fs::read_dir(data_dir)?.flatten() {
        let mode = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            0o700
        } else {
            0o600
        };
        let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode));
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = cli.data_dir.clone().context("--data-dir is required")?;
    let token_ttl = berth_control_plane::tokens::parse_ttl(&cli.token_ttl)
        .map_err(|e| anyhow::anyhow!("--token-ttl: {e}"))?;
    keep_private(&data_dir)?;
    let store = match &cli.etcd_servers {
        Some(endpoint) => {
            let tls = match &cli.etcd_cafile {
                Some(ca) => {
                    let client = cli.etcd_certfile.as_deref().zip(cli.etcd_keyfile.as_deref());
                    Some(berth_control_plane::store::etcd::EtcdTls::load(ca, client)?)
                }
                None => None,
            };
            Store::open_etcd(endpoint, tls)
                .with_context(|| format!("opening the store in etcd at {endpoint}"))?
        }
        None => Arc::new(Store::open(&data_dir.join("state.db"))?),
    };
    // Bound first: with port 0 the kubeconfig must name the port actually used.
    let listener = server::bind(cli.listen)?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let listen = advertised(bound, cli.advertise_address);
    if cli.advertise_address.is_none() && bound.ip().is_unspecified() {
        tracing::warn!(%bound, advertised = %listen, "listening on every address without --advertise-address: other machines are told 127.0.0.1");
    }
    let ip = listen.ip().to_string();
    let mut names: Vec<String> = Vec::new();
    for name in [
        ip.clone(),
        bound.ip().to_string(),
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
        // In-cluster clients reach the API server at the `kubernetes` Service's ClusterIP
        // (KUBERNETES_SERVICE_HOST) and verify it with the CA their service-account volume holds.
        berth_control_plane::api::allocator::KUBERNETES_SERVICE_IP.to_string(),
    ] {
        if !names.contains(&name) && name != "0.0.0.0" && name != "::" {
            names.push(name);
        }
    }
    let creds = pki::ensure(&data_dir, &names)?;
    let (mut token_id, mut token_secret, made_now) = pki::ensure_join_token(&data_dir)?;
    let kubeconfig = pki::write_admin_kubeconfig(&data_dir, &format!("https://{listen}"), &creds)?;
    tracing::info!(kubeconfig = %kubeconfig.display(), revision = store.revision(), "store open");
    let signer = berth_control_plane::jwt::Signer::load_or_create(&data_dir.join("sa.key"))
        .context("loading the service-account signing key")?;
    let signer = Arc::new(signer);
    let api = Arc::new(Api::with_signer(
        store,
        creds.admin_token.clone(),
        Arc::clone(&signer),
    ));
    at_start("creating the cluster's base objects", || api.bootstrap(listen))?;
    // A restart keeps a join token that is still valid (and its expiry); one that expired, or whose
    // Secret the token cleaner deleted, is replaced by a new one.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let kept = api
        .join_token_secret(&token_id)
        .filter(|t| t.secret == token_secret && !t.expired(now));
    let expiration = match kept {
        Some(t) => t
            .expires
            .map(|e| berth_control_plane::api::times::rfc3339_at(e.max(0) as u64)),
        None => {
            if !made_now {
                (token_id, token_secret) = pki::new_join_token(&data_dir)?;
                tracing::info!(token = %token_id, "the join token expired: made a new one");
            }
            berth_control_plane::tokens::expiration(token_ttl)
        }
    };
    at_start("publishing the join information", || {
        api.publish_join(
            &format!("https://{listen}"),
            &creds.ca_pem,
            &token_id,
            &token_secret,
            expiration.as_deref(),
        )
    })?;
    // As `kubeadm init` ends: the command a node runs to join, printed and kept in DATA_DIR/join-command.
    let join = format!(
        "berth-agent run --server https://{listen} --token {token_id}.{token_secret} --ca-cert-hash {}",
        pki::ca_cert_hash(&creds.ca_pem)?
    );
    pki::write_join_command(&data_dir, &join)?;
    println!("To join a node, run on it (add --node NAME and the node's network flags):\n\n  {join}\n");
    match &expiration {
        Some(when) => println!(
            "The token expires at {when}; `berth-control-plane token create --data-dir {}` makes another.\n",
            data_dir.display()
        ),
        None => println!("The token never expires (--token-ttl 0).\n"),
    }
    kinds::set_default_toleration_seconds(cli.default_toleration_seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let identity = cli.id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}_{}", host.trim(), std::process::id())
    });
    let lease_duration = Duration::from_secs(cli.leader_lease_seconds.max(1));
    // The `default/kubernetes` Endpoints name every live API server: this one from the start.
    let mut endpoints = apiservers::ApiServerEndpoints::new(&identity, listen, lease_duration);
    if let Err(e) = endpoints.tick(api.store()) {
        tracing::warn!(error = %e.message, "announcing this API server in the kubernetes Endpoints; retrying");
    }
    {
        let (store, stop) = (Arc::clone(api.store()), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("apiserver-endpoints".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(endpoints.interval());
                    if let Err(e) = endpoints.tick(&store) {
                        tracing::warn!(error = %e.message, "renewing this API server's Lease and the kubernetes Endpoints");
                    }
                }
            })
            .context("starting the API server Lease")?;
    }
    if cli.compaction_interval_seconds > 0 {
        let (store, stop) = (Arc::clone(api.store()), Arc::clone(&stop));
        let interval = Duration::from_secs(cli.compaction_interval_seconds);
        std::thread::Builder::new()
            .name("compactor".into())
            .spawn(move || compact_every(&store, interval, &stop))
            .context("starting the compactor")?;
    }
    if !cli.no_controllers {
        let config = controllers::Config {
            node_monitor_grace: Duration::from_secs(cli.node_monitor_grace_seconds),
            ca_key_pem: Some(creds.ca_key_pem.clone()),
            ca_pem: Some(creds.ca_pem.clone()),
            token_signer: Some(Arc::clone(&signer)),
            lease_duration,
            leader_identity: cli.etcd_servers.as_ref().map(|_| identity.clone()),
            ..controllers::Config::default()
        };
        controllers::Manager::new(Arc::clone(api.store()), config)
            .spawn(Arc::clone(&stop))
            .context("starting the controllers")?;
    }
    if cli.hollow_nodes > 0 {
        at_start("registering the hollow nodes", || {
            sim::HollowNodes::register(Arc::clone(api.store()), "hollow", cli.hollow_nodes)
        })?
        .spawn(Arc::clone(&stop))
        .context("starting the hollow nodes")?;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(server::serve(listener, &creds, api, cli.max_connections))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertised_address_is_never_any_address() {
        let bound: SocketAddr = "0.0.0.0:6443".parse().expect("address");
        assert_eq!(advertised(bound, None).to_string(), "127.0.0.1:6443");
        let given = Some("10.0.0.5".parse().expect("ip"));
        assert_eq!(advertised(bound, given).to_string(), "10.0.0.5:6443");
        let bound: SocketAddr = "192.168.1.2:7000".parse().expect("address");
        assert_eq!(advertised(bound, None), bound);
    }
}
