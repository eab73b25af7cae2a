//! `berth-probe`: test-bed servers and clients (see `berth_tests::probe` for the protocol).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use berth_tests::probe;
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    /// Join this cgroup (v2 directory) before opening any socket.
    #[arg(long, global = true)]
    cgroup: Option<PathBuf>,
    /// Enter this named network namespace (after joining the cgroup: `ip netns exec` would hide the
    /// cgroup2 mount behind a fresh /sys).
    #[arg(long, global = true)]
    netns: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve TCP and/or UDP until killed.
    Serve {
        #[arg(long)]
        id: String,
        #[arg(long)]
        tcp: Vec<u16>,
        #[arg(long)]
        udp: Vec<u16>,
    },
    /// COUNT TCP connections, one line each.
    Tcp {
        target: SocketAddr,
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// Connect from this local port (each connection then ends with a reset, so the next one can
        /// reuse the port at once).
        #[arg(long)]
        source_port: Option<u16>,
    },
    /// COUNT UDP request/responses, one line each.
    Udp {
        target: SocketAddr,
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// Use connect() + send() instead of sendto().
        #[arg(long)]
        connected: bool,
        /// Send every datagram from one socket (default: a new socket each).
        #[arg(long)]
        same_socket: bool,
        /// Request size in bytes (above the MTU it travels as IP fragments).
        #[arg(long, default_value_t = 5)]
        size: usize,
    },
    /// COUNT bulk exchanges, each on a new connection: BYTES up, then BYTES down, both verified.
    Bulk {
        target: SocketAddr,
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long, default_value_t = 1 << 20)]
        bytes: u64,
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
    /// New connections to random targets (one `ip:port` per line of the file) for a bounded time.
    Load {
        #[arg(long)]
        targets_file: PathBuf,
        #[arg(long, default_value_t = 3000)]
        duration_ms: u64,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Upper bound on connections in total.
        #[arg(long, default_value_t = 1_000_000)]
        max: u64,
    },
    /// COUNT ICMP echo requests (one identifier, rising sequence numbers), one line each.
    Ping {
        target: std::net::Ipv4Addr,
        #[arg(long, default_value_t = 1)]
        count: u16,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Request/response round trips on one established connection.
    Rtt {
        target: SocketAddr,
        #[arg(long, default_value_t = 2000)]
        count: u32,
    },
    /// Hold one TCP connection, echoing stdin lines through it.
    Hold {
        target: SocketAddr,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Path MTU discovery with a connected UDP socket: sends SIZE bytes with DF set and prints the path
    /// MTU the socket learned (`mtu N`).
    Pmtu {
        target: SocketAddr,
        #[arg(long)]
        size: usize,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Hold one connected UDP socket: one datagram per stdin line, prints which server answered.
    HoldUdp {
        target: SocketAddr,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// SEGMENTS datagrams of SEGMENT bytes sent in one send with UDP GSO (`UDP_SEGMENT`), one line per
    /// expected answer.
    UdpGso {
        target: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        segment: u16,
        #[arg(long, default_value_t = 8)]
        segments: u16,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(cg) = &cli.cgroup {
        std::fs::write(cg.join("cgroup.procs"), std::process::id().to_string())
            .with_context(|| format!("joining cgroup {}", cg.display()))?;
    }
    if let Some(ns) = &cli.netns {
        let path = format!("/var/run/netns/{ns}");
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: valid namespace descriptor; no other thread exists yet.
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setns");
        }
    }
    match cli.cmd {
        Cmd::Serve { id, tcp, udp } => {
            let mut threads = Vec::new();
            for port in tcp {
                let id = id.clone();
                threads.push(std::thread::spawn(move || probe::serve_tcp(id, port)));
            }
            for port in udp {
                let id = id.clone();
                threads.push(std::thread::spawn(move || probe::serve_udp(id, port)));
            }
            for t in threads {
                t.join()
                    .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
            }
        }
        Cmd::Tcp {
            target,
            count,
            timeout_ms,
            source_port,
        } => {
            for _ in 0..count {
                let timeout = Duration::from_millis(timeout_ms);
                probe::print(&probe::tcp_once_from(target, timeout, source_port));
            }
        }
        Cmd::Ping {
            target,
            count,
            timeout_ms,
        } => {
            let id = std::process::id() as u16;
            for seq in 0..count {
                probe::print(&probe::ping_once(
                    target,
                    id,
                    seq,
                    Duration::from_millis(timeout_ms),
                ));
            }
        }
        Cmd::Udp {
            target,
            count,
            timeout_ms,
            connected,
            same_socket,
            size,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            let payload: Vec<u8> = (0..size as u64).map(probe::pattern_byte).collect();
            let shared = if same_socket {
                Some(std::net::UdpSocket::bind("0.0.0.0:0")?)
            } else {
                None
            };
            for _ in 0..count {
                let attempt = match &shared {
                    Some(sock) => probe::udp_on(sock, target, timeout, connected, &payload),
                    None => probe::udp_once(target, timeout, connected, &payload),
                };
                probe::print(&attempt);
            }
        }
        Cmd::Load {
            targets_file,
            duration_ms,
            threads,
            max,
        } => {
            let text = std::fs::read_to_string(&targets_file)
                .with_context(|| format!("reading {}", targets_file.display()))?;
            let targets: Vec<SocketAddr> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            anyhow::ensure!(!targets.is_empty(), "no targets in {}", targets_file.display());
            println!(
                "{}",
                probe::load(&targets, Duration::from_millis(duration_ms), threads, max).line()
            );
        }
        Cmd::Bulk {
            target,
            count,
            bytes,
            timeout_ms,
        } => {
            for _ in 0..count {
                probe::print(&probe::bulk(target, bytes, Duration::from_millis(timeout_ms)));
            }
        }
        Cmd::Rtt { target, count } => println!("{}", probe::rtt(target, count)?.line()),
        Cmd::Hold { target, timeout_ms } => probe::hold(target, Duration::from_millis(timeout_ms))?,
        Cmd::Pmtu {
            target,
            size,
            timeout_ms,
        } => println!(
            "mtu {}",
            probe::path_mtu(target, size, Duration::from_millis(timeout_ms))?
        ),
        Cmd::HoldUdp { target, timeout_ms } => probe::hold_udp(target, Duration::from_millis(timeout_ms))?,
        Cmd::UdpGso {
            target,
            segment,
            segments,
            timeout_ms,
        } => {
            for attempt in probe::udp_gso(target, segment, segments, Duration::from_millis(timeout_ms)) {
                probe::print(&attempt);
            }
        }
    }
    Ok(())
}
