//! `berth-control-plane --data-dir DIR`: serves the Kubernetes API over HTTPS from an embedded store in
//! `DIR`, writing `DIR/admin.kubeconfig` for the real `kubectl`. A second start on the same directory
//! resumes with all state.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context;
use berth_control_plane::{api::Api, pki, server, store::Store};
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "berth-control-plane",
    version,
    about = "berth's compact Kubernetes control plane"
)]
struct Cli {
    /// Where the store, certificates and admin.kubeconfig live.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to serve the API on (port 0: any free port, written into admin.kubeconfig).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-control-plane: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cli.data_dir).with_context(|| format!("creating {}", cli.data_dir.display()))?;
    let store = Arc::new(Store::open(&cli.data_dir.join("state.db"))?);
    // Bound first: with port 0 the kubeconfig must name the port actually used.
    let listener = server::bind(cli.listen)?;
    let listen = listener.local_addr().context("reading the bound address")?;
    let ip = listen.ip().to_string();
    let names = vec![
        ip.clone(),
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
    ];
    let creds = pki::ensure(&cli.data_dir, &names)?;
    let kubeconfig = pki::write_admin_kubeconfig(&cli.data_dir, &format!("https://{listen}"), &creds)?;
    tracing::info!(kubeconfig = %kubeconfig.display(), revision = store.revision(), "store open");
    let api = Arc::new(Api::new(store, creds.admin_token.clone()));
    api.bootstrap(listen)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(server::serve(listener, &creds, api))?;
    Ok(())
}
