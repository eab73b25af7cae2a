//! `cargo xtask <task>`: the project's tasks, so a fresh machine needs nothing but cargo.
//!
//! - `setup`: installs what builds and tests need (Debian packages, the nightly's `rust-src`,
//!   `bpf-linker` built against the nightly's own LLVM). Idempotent and quick when already done.
//! - `build-ebpf`: builds the eBPF object the agent embeds.
//! - `demo`: berth's main job as far as it exists (see README).
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
    /// Run the demo: a three-node cluster of namespaces, a Service spread over it, traffic through it.
    Demo,
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

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::BuildEbpf => ebpf::build(),
        Task::Demo => {
            setup::run()?;
            ebpf::build()?;
            // The demo runs berth-agent and berth-probe as processes: build every binary first.
            run::cargo(&["build", "--release", "--workspace", "--bins"])?;
            run::cargo(&["run", "--release", "-p", "berth-tests", "--bin", "berth-demo"])
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
