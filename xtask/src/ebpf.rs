//! `cargo xtask build-ebpf`: nightly + `-Z build-std=core` for `bpfel-unknown-none`, linked by
//! bpf-linker, copied to `target/berth-ebpf/berth.bpf.o` where the agent's build script embeds it.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::run::{self, workspace_root};

/// Where the agent's build script looks for the object.
pub const OBJECT: &str = "target/berth-ebpf/berth.bpf.o";

pub fn build() -> Result<()> {
    if !run::succeeds("rustc", &["+nightly", "--version"]) {
        bail!(
            "the nightly toolchain is missing: run `cargo xtask setup` (or `rustup toolchain install nightly`)"
        );
    }
    if !run::succeeds("bpf-linker", &["--version"]) {
        bail!("bpf-linker is missing: run `cargo xtask setup`");
    }
    let root = workspace_root();
    let crate_dir = root.join("ebpf/berth-ebpf");
    let target_dir = root.join("target/ebpf");
    // Run with a clean environment for the nightly: variables set by the outer (stable) cargo would
    // otherwise leak into the nested build.
    let mut cmd = Command::new("cargo");
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO")
            || key == "RUSTC"
            || key == "RUSTDOC"
            || key.starts_with("RUSTUP_TOOLCHAIN")
        {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(&crate_dir)
        .args([
            "+nightly",
            "build",
            "--release",
            "-Z",
            "build-std=core",
            "--target",
            "bpfel-unknown-none",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    run::status(&mut cmd)
        .context("building the eBPF programs (if rust-src or bpf-linker is missing: `cargo xtask setup`)")?;
    let built = target_dir.join("bpfel-unknown-none/release/berth-ebpf");
    let dest = root.join(OBJECT);
    std::fs::create_dir_all(dest.parent().unwrap_or(&root))?;
    std::fs::copy(&built, &dest)
        .with_context(|| format!("copying {} to {}", built.display(), dest.display()))?;
    println!("eBPF object: {}", dest.display());
    Ok(())
}
