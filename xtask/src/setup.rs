//! `cargo xtask setup`: everything builds and tests need on a fresh machine of this kind.
//! Each step checks first and does nothing when already done, so a second run takes about a second.

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::run::{self, workspace_root};

/// Debian packages: iproute2 (namespaces, veth), bpftool (inspection), iptables and nftables (the
/// kube-proxy baselines of the benchmarks, conntrack to reset them between runs), iperf3 (throughput
/// benchmarks), procps (sysctl).
const APT_PACKAGES: &[&str] = &[
    "iproute2",
    "bpftool",
    "iptables",
    "nftables",
    "conntrack",
    "iperf3",
    "procps",
    // The control plane's etcd backend is tested against Debian's etcd; node joins use openssl.
    "etcd-server",
    "openssl",
    "curl",
    // The pod runtime: runc runs containers; tests and the local cluster build images offline from
    // Debian's busybox-static with umoci, push them with skopeo into Debian's docker-registry (the
    // distribution v2 server).
    "runc",
    "umoci",
    "skopeo",
    "docker-registry",
    "busybox-static",
    // `strip`: the agent's image (`cargo xtask image`) carries the binary without debug info.
    "binutils",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> Result<()> {
    apt_packages()?;
    rust_src()?;
    bpf_linker()?;
    Ok(())
}

fn installed(package: &str) -> bool {
    run::output("dpkg-query", &["-W", "-f=${Status}", package])
        .map(|s| s.contains("install ok installed"))
        .unwrap_or(false)
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: installing {}", missing.join(" "));
    run::status(Command::new("apt-get").args(["update", "-qq"]))?;
    run::status(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
}

fn nightly_sysroot() -> Result<PathBuf> {
    if !run::succeeds("rustc", &["+nightly", "--version"]) {
        println!("setup: installing the nightly toolchain");
        run::status(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    Ok(PathBuf::from(
        run::output("rustc", &["+nightly", "--print", "sysroot"])?.trim(),
    ))
}

fn rust_src() -> Result<()> {
    let rustlib = nightly_sysroot()?.join("lib/rustlib");
    if rustlib.join("src/rust/library/core").is_dir() {
        return Ok(());
    }
    println!("setup: adding rust-src to the nightly");
    if run::succeeds(
        "rustup",
        &["component", "add", "rust-src", "--toolchain", "nightly"],
    ) {
        return Ok(());
    }
    // Offline copy kept beside the project (see ../shared/toolchain/README.md); it matches one nightly.
    let offline = workspace_root().join("../shared/toolchain/rust-src-nightly-2026-05-19.tar.xz");
    let version = run::output("rustc", &["+nightly", "-vV"])?;
    if !offline.is_file() || !version.contains("commit-hash: e50aa6fba") {
        bail!("cannot install rust-src for the nightly: rustup failed and no matching offline copy exists");
    }
    run::status(
        Command::new("tar")
            .arg("xJf")
            .arg(&offline)
            .arg("-C")
            .arg(&rustlib),
    )?;
    let components = rustlib.join("components");
    let listed = std::fs::read_to_string(&components).unwrap_or_default();
    if !listed.lines().any(|l| l == "rust-src") {
        std::fs::write(&components, format!("{listed}rust-src\n"))?;
    }
    Ok(())
}

/// bpf-linker must be built against the nightly's own libLLVM (Debian's LLVM cannot read the
/// nightly's bitcode). A stamp next to the binary records which libLLVM it was built for, so a new
/// nightly triggers a rebuild.
fn bpf_linker() -> Result<()> {
    let sysroot_lib = nightly_sysroot()?.join("lib");
    let llvm = std::fs::read_dir(&sysroot_lib)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .context("the nightly ships no libLLVM.so.*")?;
    let home = PathBuf::from(std::env::var("CARGO_HOME").unwrap_or_else(|_| {
        format!(
            "{}/.cargo",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into())
        )
    }));
    let stamp = home.join("bin/.bpf-linker-llvm");
    let have = run::output("bpf-linker", &["--version"]).unwrap_or_default();
    if have.contains(BPF_LINKER_VERSION) && std::fs::read_to_string(&stamp).unwrap_or_default() == llvm {
        return Ok(());
    }
    println!("setup: building bpf-linker {BPF_LINKER_VERSION} against {llvm} (about 80 s)");
    // Beside the installed binary, not in this checkout: bpf-linker finds libLLVM through these links
    // at run time, and the binary is shared by every checkout (a prefix in one checkout's target
    // directory broke bpf-linker for all of them once that directory was removed).
    let prefix = home.join("bpf-linker-llvm");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    for name in ["libLLVM.so", llvm.as_str()] {
        let link = lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(sysroot_lib.join(&llvm), &link)?;
    }
    let major = llvm
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .unwrap_or("22")
        .to_owned();
    run::status(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--force",
            ])
            .args(["--no-default-features", "--features", &format!("llvm-{major}")]),
    )?;
    std::fs::write(&stamp, &llvm)?;
    Ok(())
}
