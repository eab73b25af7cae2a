//! What this machine costs before berth does anything: the `BPF_PROG_TEST_RUN` harness around a
//! program that does nothing, and the latency of a load that misses every cache. The per-packet table
//! is read against these: a new flow must touch fresh lines of a conntrack map far larger than the
//! caches, and no program can be cheaper than the harness that times it.

use std::{
    hint::black_box,
    os::fd::{FromRawFd, OwnedFd, RawFd},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// `BPF_PROG_LOAD` and `BPF_PROG_TEST_RUN` (uapi `enum bpf_cmd`).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `BPF_PROG_TYPE_SCHED_CLS`: the program type of berth's TC programs.
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD`; the kernel takes the rest as zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// The leading fields of `union bpf_attr` for `BPF_PROG_TEST_RUN`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised prefix of `union bpf_attr` of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A TC program of two instructions (`r0 = 0; exit`).
fn load_empty_tc() -> Result<OwnedFd> {
    // mov64 r0, 0 (opcode 0xb7); exit (0x95).
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    attr.prog_name[..10].copy_from_slice(b"bench_noop");
    let fd = bpf(BPF_PROG_LOAD, &mut attr).context("load an empty TC program")?;
    // SAFETY: a new descriptor the kernel just returned, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Mean time of one run of `prog` on `packet` as the kernel reports it, over `repeat` runs.
fn test_run(prog: &OwnedFd, packet: &[u8], repeat: u32) -> Result<f64> {
    use std::os::fd::AsRawFd;
    let mut out = vec![0u8; packet.len() + 64];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: packet.len() as u32,
        data_size_out: out.len() as u32,
        data_in: packet.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN of the empty program")?;
    Ok(attr.duration as f64)
}

/// The harness alone: median per-run time of an empty TC program on `packet`, `repeat`-times per call
/// (what the established and not-a-Service paths use) and once per call (what a new flow must use).
pub struct Harness {
    pub repeated: f64,
    pub single: f64,
}

/// Measures [`Harness`] over `calls` calls each way (run in the namespace the bench uses).
pub fn harness(packet: &[u8], repeat: u32, calls: usize) -> Result<Harness> {
    let prog = load_empty_tc()?;
    let mut repeated = Vec::with_capacity(calls);
    let mut single = Vec::with_capacity(calls);
    for _ in 0..calls {
        repeated.push(test_run(&prog, packet, repeat)?);
        single.push(test_run(&prog, packet, 1)?);
    }
    Ok(Harness {
        repeated: median(&mut repeated),
        single: median(&mut single),
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Cache line size assumed for the chase (x86-64 and arm64 servers).
const LINE: usize = 64;

/// Latency of a load that depends on the one before, to a random cache line of a buffer of `bytes`:
/// each line holds the index of the next, in one random cycle through all of them, so neither the
/// caches (once the buffer outgrows them) nor the prefetchers help. Bounded to `loads` loads and one
/// second.
pub fn dependent_load_ns(bytes: usize, loads: usize) -> Result<f64> {
    let lines = bytes / LINE;
    if lines < 2 {
        bail!("buffer of {bytes} bytes is too small for a chase");
    }
    let stride = LINE / std::mem::size_of::<usize>();
    let mut buf = vec![0usize; lines * stride];
    // Sattolo's shuffle: a permutation that is one cycle through every line.
    let mut order: Vec<usize> = (0..lines).collect();
    let mut rng = crate::prog_cost::Lcg(bytes as u64);
    for i in (1..lines).rev() {
        let j = rng.next(i);
        order.swap(i, j);
    }
    for (i, &line) in order.iter().enumerate() {
        buf[line * stride] = order[(i + 1) % lines] * stride;
    }
    // One pass to map the pages (first touches would count page faults, not loads).
    let mut at = 0usize;
    for _ in 0..lines {
        at = buf[at];
    }
    let budget = Duration::from_secs(1);
    let started = Instant::now();
    let mut done = 0usize;
    while done < loads && started.elapsed() < budget {
        for _ in 0..10_000 {
            at = buf[at];
        }
        done += 10_000;
    }
    black_box(at);
    Ok(started.elapsed().as_nanos() as f64 / done as f64)
}
