//! What this machine costs before berth does anything: the `BPF_PROG_TEST_RUN` harness around a
//! program that does nothing, the kernel's own work for a new flow's conntrack operations in a map of
//! the conntrack's shape, and the latency of a load that misses every cache. The per-packet table is
//! read against these: no program can be cheaper than the harness that times it, nor a new flow than
//! the map operations it needs.

use std::{
    hint::black_box,
    os::fd::{FromRawFd, OwnedFd, RawFd},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::report::Stats;

/// `BPF_MAP_CREATE`, `BPF_PROG_LOAD` and `BPF_PROG_TEST_RUN` (uapi `enum bpf_cmd`).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `BPF_PROG_TYPE_SCHED_CLS`: the program type of berth's TC programs.
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

/// `BPF_MAP_TYPE_LRU_HASH`: the type of `BERTH_CT`.
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;

/// The leading fields of `union bpf_attr` for `BPF_MAP_CREATE`.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

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

/// `bpf(cmd, attr)`, for one of the attribute prefixes above (aya loads ELF objects; these calibration
/// programs are a handful of instructions built here).
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

/// One eBPF instruction: opcode, registers, offset, immediate (uapi `struct bpf_insn`, little endian).
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | u64::from((src << 4) | dst) << 8
        | u64::from(off as u16) << 16
        | u64::from(imm as u32) << 32
}

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const FP: u8 = 10;
/// `BPF_PSEUDO_MAP_FD`: the immediate of a 64-bit load is a map's descriptor.
const PSEUDO_MAP_FD: u8 = 1;
/// Helpers by number (uapi `enum bpf_func_id`).
const MAP_LOOKUP_ELEM: i32 = 1;
const MAP_UPDATE_ELEM: i32 = 2;
const GET_PRANDOM_U32: i32 = 7;
/// `BPF_NOEXIST` and `BPF_ANY` update flags.
const NOEXIST: i32 = 1;
const ANY: i32 = 0;

fn call(helper: i32) -> u64 {
    insn(0x85, 0, 0, 0, helper)
}
fn exit() -> u64 {
    insn(0x95, 0, 0, 0, 0)
}
fn mov_imm(dst: u8, imm: i32) -> u64 {
    insn(0xb7, dst, 0, 0, imm)
}
/// `dst = fp + off`: a pointer to the stack.
fn stack_ptr(dst: u8, off: i16) -> [u64; 2] {
    [insn(0xbf, dst, FP, 0, 0), insn(0x07, dst, 0, 0, i32::from(off))]
}
/// `*(u32 *)(fp + off) = src`.
fn store_w(off: i16, src: u8) -> u64 {
    insn(0x63, FP, src, off, 0)
}
/// `*(u32 *)(fp + off) = imm`.
fn store_w_imm(off: i16, imm: i32) -> u64 {
    insn(0x62, FP, 0, off, imm)
}
/// `*(u64 *)(fp + off) = imm`.
fn store_dw_imm(off: i16, imm: i32) -> u64 {
    insn(0x7a, FP, 0, off, imm)
}
/// `r1 = map` (two instruction slots).
fn load_map(fd: RawFd) -> [u64; 2] {
    [insn(0x18, R1, PSEUDO_MAP_FD, 0, fd), 0]
}

/// Loads a TC program made of `insns`.
fn load_tc(insns: &[u64], name: &[u8]) -> Result<OwnedFd> {
    let license = c"GPL";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    let len = name.len().min(15);
    attr.prog_name[..len].copy_from_slice(&name[..len]);
    let fd = bpf(BPF_PROG_LOAD, &mut attr).context("load a calibration TC program")?;
    // SAFETY: a new descriptor the kernel just returned, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A TC program of two instructions (`r0 = 0; exit`).
fn load_empty_tc() -> Result<OwnedFd> {
    load_tc(&[mov_imm(R0, 0), exit()], b"bench_noop")
}

/// An LRU hash map shaped like `BERTH_CT` (key and value sizes, capacity, flags).
fn create_conntrack_like(key_size: u32, value_size: u32, max_entries: u32) -> Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_LRU_HASH,
        key_size,
        value_size,
        max_entries,
        map_flags: 0,
    };
    let fd = bpf(BPF_MAP_CREATE, &mut attr).context("create an LRU hash map")?;
    // SAFETY: as in `load_tc`.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A TC program doing a new flow's conntrack work and nothing else, in the order berth's does it: look
/// up a fresh random 16-byte tuple (a miss), insert a second tuple exclusively (the reply entry), then
/// the first (the forward entry), each with a zeroed value of `value_size` bytes.
fn load_conntrack_ops(map: &OwnedFd, value_size: i16) -> Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let fd = map.as_raw_fd();
    const KEY: i16 = -16;
    let value = KEY - value_size;
    let mut p = Vec::new();
    // The key: 12 random bytes and a zero word (the second tuple differs in that word).
    for word in 0..3 {
        p.push(call(GET_PRANDOM_U32));
        p.push(store_w(KEY + 4 * word, R0));
    }
    p.push(store_w_imm(KEY + 12, 0));
    for off in (value..KEY).step_by(8) {
        p.push(store_dw_imm(off, 0));
    }
    p.extend(load_map(fd));
    p.extend(stack_ptr(R2, KEY));
    p.push(call(MAP_LOOKUP_ELEM));
    // Insert the tuple whose last word is `last`, with update flags `flags`.
    let insert = |p: &mut Vec<u64>, last: i32, flags: i32| {
        p.push(store_w_imm(KEY + 12, last));
        p.extend(load_map(fd));
        p.extend(stack_ptr(R2, KEY));
        p.extend(stack_ptr(R3, value));
        p.push(mov_imm(R4, flags));
        p.push(call(MAP_UPDATE_ELEM));
    };
    insert(&mut p, 1, NOEXIST);
    insert(&mut p, 0, ANY);
    p.push(mov_imm(R0, 0));
    p.push(exit());
    load_tc(&p, b"bench_ct_ops")
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
    bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN of a calibration program")?;
    Ok(attr.duration as f64)
}

/// Median per-run time of a calibration program, run `repeat`-times per call (as the established and
/// not-a-Service paths are measured) and once per call (as a new flow must be).
pub struct Runs {
    pub repeated: f64,
    pub single: f64,
}

/// The harness alone: an empty TC program on `packet`, `calls` calls each way.
pub fn harness(packet: &[u8], repeat: u32, calls: usize) -> Result<Runs> {
    let prog = load_empty_tc()?;
    runs(&prog, packet, repeat, calls, calls)
}

/// A new flow's conntrack work alone (see [`load_conntrack_ops`]) in a map of `BERTH_CT`'s shape and
/// capacity, each way in a map of its own: `repeated_calls` calls of `repeat` runs, `single_calls`
/// single runs. Keep `2 * repeat * repeated_calls` under the capacity to measure inserts, not evictions.
pub fn conntrack_ops(packet: &[u8], repeat: u32, repeated_calls: usize, single_calls: usize) -> Result<Runs> {
    use berth_common::{CtEntry, CtKey, capacity};
    let ops = |repeated: usize, single: usize| -> Result<Runs> {
        let map = create_conntrack_like(
            std::mem::size_of::<CtKey>() as u32,
            std::mem::size_of::<CtEntry>() as u32,
            capacity::CONNTRACK,
        )?;
        let prog = load_conntrack_ops(&map, std::mem::size_of::<CtEntry>() as i16)?;
        runs(&prog, packet, repeat, repeated, single)
    };
    Ok(Runs {
        repeated: ops(repeated_calls, 0)?.repeated,
        single: ops(0, single_calls)?.single,
    })
}

fn runs(prog: &OwnedFd, packet: &[u8], repeat: u32, repeated: usize, single: usize) -> Result<Runs> {
    let mut r = Vec::with_capacity(repeated);
    let mut s = Vec::with_capacity(single);
    for _ in 0..repeated {
        r.push(test_run(prog, packet, repeat)?);
    }
    for _ in 0..single {
        s.push(test_run(prog, packet, 1)?);
    }
    Ok(Runs {
        repeated: Stats::of(&mut r).p50,
        single: Stats::of(&mut s).p50,
    })
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

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    /// The leading fields of `union bpf_attr` for `BPF_MAP_GET_NEXT_KEY`.
    #[repr(C)]
    struct NextKeyAttr {
        map_fd: u32,
        pad: u32,
        key: u64,
        next_key: u64,
    }

    /// Entries in `map` (16-byte keys), by walking its keys.
    fn entries(map: &OwnedFd) -> usize {
        const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
        let mut key = [0u8; 16];
        let mut next = [0u8; 16];
        let mut n = 0;
        let mut first = true;
        loop {
            let mut attr = NextKeyAttr {
                map_fd: map.as_raw_fd() as u32,
                pad: 0,
                // A null key asks for the first one.
                key: if first { 0 } else { key.as_ptr() as u64 },
                next_key: next.as_mut_ptr() as u64,
            };
            if bpf(BPF_MAP_GET_NEXT_KEY, &mut attr).is_err() {
                return n;
            }
            first = false;
            key = next;
            n += 1;
        }
    }

    /// The calibration must do what the report says it measures: each run inserts two fresh entries
    /// (a program whose inserts failed, or hit the same keys, would look cheap).
    #[test]
    fn the_conntrack_calibration_inserts_two_fresh_entries_per_run() {
        let map = create_conntrack_like(16, 56, 1024).expect("map");
        let prog = load_conntrack_ops(&map, 56).expect("program");
        let packet = [0u8; 64];
        test_run(&prog, &packet, 10).expect("10 runs");
        test_run(&prog, &packet, 1).expect("one run");
        assert_eq!(entries(&map), 22);
    }
}
