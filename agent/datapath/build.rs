//! Embeds the eBPF object built by `cargo xtask build-ebpf`, so `berth-agent` is one self-contained file.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let object = manifest.join("../../target/berth-ebpf/berth.bpf.o");
    println!("cargo:rerun-if-changed={}", object.display());
    if !object.is_file() {
        eprintln!(
            "\nerror: the eBPF object {} is missing.\n       Build it with `cargo xtask build-ebpf` \
             (first time on this machine: `cargo xtask setup`).\n",
            object.display()
        );
        std::process::exit(1);
    }
    println!("cargo:rustc-env=BERTH_EBPF_OBJECT={}", object.display());
}
