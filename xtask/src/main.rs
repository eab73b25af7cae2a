//! `cargo xtask <task>`: the project's tasks, so a fresh machine needs nothing but cargo.
//!
//! - `setup`: installs what builds and tests need (Debian packages, the nightly's `rust-src`,
//!   `bpf-linker` built against the nightly's own LLVM). Idempotent and quick when already done.
//! - `build-ebpf`: builds the eBPF object the agent embeds.
//! - `up` / `down`: a local cluster left running (control plane, registry, N nodes as namespaces with
//!   joined agents), its files in `target/berth-cluster/`; and its removal.
//! - `demo`: berth's main job: the local cluster (started if needed) running a demo Deployment
//!   behind a NodePort Service.
//! - `test`: setup, build-ebpf, then every test.
//! - `bench`: the benchmarks (`--smoke` for the short pass CI runs).

mod ebpf;
mod run;
mod setup;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "berth project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install build and test dependencies (apt packages, rust-src, bpf-linker).
    Setup,
    /// Build the eBPF programs into target/berth-ebpf/berth.bpf.o.
    BuildEbpf,
    /// Start a local cluster (control plane, registry, nodes as namespaces with joined agents) and
    /// leave it running; its kubeconfig and env file go to target/berth-cluster/.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: u8,
    },
    /// Stop the local cluster and remove everything it made.
    Down,
    /// Run the demo on the local cluster (started first if none is up): a Deployment from the local
    /// registry behind a NodePort Service, requests from outside, a pod replaced, its logs.
    Demo,
    /// Build berth's agent as an OCI image into target/berth-image (for
    /// deploy/kube-proxy-replacement.yaml), and push it if asked.
    Image {
        /// Push it here: `HOST[:PORT]/REPOSITORY:TAG`.
        #[arg(long)]
        push: Option<String>,
        /// Push over plain HTTP / without verifying the registry's certificate.
        #[arg(long)]
        insecure: bool,
    },
    /// Run every test (setup and build-ebpf first).
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks and record their results under bench/results/.
    Bench {
        /// Short pass with small sizes (what CI runs).
        #[arg(long)]
        smoke: bool,
    },
}

/// Everything the cluster runs: dependencies, the eBPF object, every binary.
fn build_all() -> Result<()> {
    setup::run()?;
    ebpf::build()?;
    run::cargo(&["build", "--release", "--workspace", "--bins"])
}

/// `berth-cluster ARGS` with its files in target/berth-cluster/.
fn cluster(args: &[&str]) -> Result<()> {
    let root = run::workspace_root();
    let mut full = vec!["--dir", "target/berth-cluster"];
    full.extend_from_slice(args);
    run::status(
        std::process::Command::new(root.join("target/release/berth-cluster"))
            .current_dir(&root)
            .args(&full),
    )
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::BuildEbpf => ebpf::build(),
        Task::Up { nodes } => {
            build_all()?;
            cluster(&["up", "--nodes", &nodes.to_string()])
        }
        Task::Down => {
            run::cargo(&[
                "build",
                "--release",
                "-p",
                "berth-tests",
                "--bin",
                "berth-cluster",
            ])?;
            cluster(&["down"])
        }
        Task::Demo => {
            build_all()?;
            // `berth-cluster demo` starts the cluster itself when none is up.
            cluster(&["demo"])
        }
        Task::Image { push, insecure } => {
            build_all()?;
            let root = run::workspace_root();
            let mut cmd = std::process::Command::new(root.join("target/release/berth-cluster"));
            cmd.current_dir(&root).arg("image");
            if let Some(dest) = &push {
                cmd.args(["--push", dest]);
            }
            if insecure {
                cmd.arg("--insecure");
            }
            run::status(&mut cmd)
        }
        Task::Test { args } => {
            setup::run()?;
            ebpf::build()?;
            run::cargo(&["fmt", "--all", "--", "--check"])?;
            run::cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--release",
                "--",
                "-D",
                "warnings",
            ])?;
            // The integration tests run the agent and probe binaries as separate processes.
            run::cargo(&["build", "--release", "--workspace", "--bins"])?;
            let mut test = vec!["test", "--workspace", "--release"];
            test.extend(args.iter().map(String::as_str));
            run::cargo(&test)
        }
        Task::Bench { smoke } => {
            setup::run()?;
            ebpf::build()?;
            run::cargo(&["build", "--release", "--workspace", "--bins"])?;
            let mut args = vec![
                "run",
                "--release",
                "-p",
                "berth-bench",
                "--bin",
                "berth-bench",
                "--",
            ];
            if smoke {
                args.push("--smoke");
            }
            run::cargo(&args)
        }
    }
}
