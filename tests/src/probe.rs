//! `berth-probe`: the servers and clients of the test bed, run as processes inside namespaces (and, for
//! socket-LB tests, inside the node's cgroup).
//!
//! Protocol: a TCP server greets every connection with `ID PEER\n` (its name and the client address it
//! sees), then echoes lines. A UDP server answers every datagram with `ID PEER`. Clients print one line
//! per attempt: `ok ID PEER FROM MICROS` (FROM: the address the reply came from) or `err KIND MICROS`.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

/// Result of one client attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Served: backend id, client address the backend saw, address the reply came from.
    Ok {
        id: String,
        peer: String,
        from: String,
        micros: u64,
    },
    /// Failed: error kind (`refused`, `timeout`, `denied`, ...).
    Err { kind: String, micros: u64 },
}

impl Attempt {
    /// Parses one line of client output.
    pub fn parse(line: &str) -> Option<Attempt> {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["ok", id, peer, from, micros] => Some(Attempt::Ok {
                id: id.to_string(),
                peer: peer.to_string(),
                from: from.to_string(),
                micros: micros.parse().ok()?,
            }),
            ["err", kind, micros] => Some(Attempt::Err {
                kind: kind.to_string(),
                micros: micros.parse().ok()?,
            }),
            _ => None,
        }
    }

    /// The serving backend's id, if served.
    pub fn id(&self) -> Option<&str> {
        match self {
            Attempt::Ok { id, .. } => Some(id),
            Attempt::Err { .. } => None,
        }
    }

    fn line(&self) -> String {
        match self {
            Attempt::Ok {
                id,
                peer,
                from,
                micros,
            } => format!("ok {id} {peer} {from} {micros}"),
            Attempt::Err { kind, micros } => format!("err {kind} {micros}"),
        }
    }
}

fn error_kind(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "refused".into(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "timeout".into(),
        std::io::ErrorKind::PermissionDenied => "denied".into(),
        std::io::ErrorKind::ConnectionReset => "reset".into(),
        _ => format!("{:?}", e.kind()).to_lowercase(),
    }
}

/// Serves TCP on `port`: greeting, then line echo. Runs until killed.
///
/// The greeting is written on the accept thread and the echo handed to a pool of worker threads that
/// grows only when all are busy: spawning a thread per connection would cost more CPU than the data
/// planes the benchmarks compare.
pub fn serve_tcp(id: String, port: u16) -> std::io::Result<()> {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    };
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))?;
    let (tx, rx) = mpsc::channel::<TcpStream>();
    let rx = Arc::new(Mutex::new(rx));
    let idle = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        if stream.write_all(format!("{id} {peer}\n").as_bytes()).is_err() {
            continue;
        }
        if idle.load(Ordering::SeqCst) == 0 {
            let (rx, idle) = (rx.clone(), idle.clone());
            idle.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                loop {
                    let next = rx.lock().map(|r| r.recv());
                    let Ok(Ok(stream)) = next else { return };
                    idle.fetch_sub(1, Ordering::SeqCst);
                    echo_lines(stream);
                    idle.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        if tx.send(stream).is_err() {
            break;
        }
    }
    Ok(())
}

/// Byte `i` of the bulk-transfer pattern: not periodic at any power of two, so a misplaced segment
/// shows as corruption.
pub fn pattern_byte(i: u64) -> u8 {
    ((i * 7 + i / 251) % 251) as u8
}

fn pattern(offset: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(offset + k as u64);
    }
}

/// Line echo, plus two bulk commands: `sink N` (the client sends N pattern bytes; the answer is
/// `sank N ok` or `sank N bad`) and `bulk N` (N pattern bytes follow).
fn echo_lines(mut stream: TcpStream) {
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = line.trim_end();
        let reply = if let Some(n) = text.strip_prefix("sink ").and_then(|n| n.parse::<u64>().ok()) {
            let ok = receive_pattern(&mut reader, n).is_ok_and(|good| good);
            format!("sank {n} {}\n", if ok { "ok" } else { "bad" })
        } else if let Some(n) = text.strip_prefix("bulk ").and_then(|n| n.parse::<u64>().ok()) {
            if send_pattern(&mut stream, n).is_err() {
                break;
            }
            continue;
        } else {
            format!("{text}\n")
        };
        if stream.write_all(reply.as_bytes()).is_err() {
            break;
        }
    }
}

fn send_pattern(stream: &mut impl Write, n: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0;
    while sent < n {
        let len = (n - sent).min(buf.len() as u64) as usize;
        pattern(sent, &mut buf[..len]);
        stream.write_all(&buf[..len])?;
        sent += len as u64;
    }
    stream.flush()
}

/// Reads `n` bytes; whether they are the pattern.
fn receive_pattern(reader: &mut impl Read, n: u64) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let mut got = 0;
    let mut good = true;
    while got < n {
        let len = (n - got).min(buf.len() as u64) as usize;
        reader.read_exact(&mut buf[..len])?;
        pattern(got, &mut want[..len]);
        good &= buf[..len] == want[..len];
        got += len as u64;
    }
    Ok(good)
}

/// One bulk exchange on a new connection: `bytes` up (verified by the server), then `bytes` down
/// (verified here). Errors: `corrupt` (wrong bytes), `closed`, or the socket error (a stall shows as
/// `timeout`).
pub fn bulk(target: SocketAddr, bytes: u64, timeout: Duration) -> Attempt {
    let start = Instant::now();
    let micros = || start.elapsed().as_micros() as u64;
    let fail = |kind: String| Attempt::Err {
        kind,
        micros: micros(),
    };
    let mut stream = match TcpStream::connect_timeout(&target, timeout) {
        Ok(s) => s,
        Err(e) => return fail(error_kind(&e)),
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let from = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let Ok(read_half) = stream.try_clone() else {
        return fail("clone".into());
    };
    let mut reader = BufReader::new(read_half);
    let mut greeting = String::new();
    match reader.read_line(&mut greeting) {
        Ok(0) => return fail("closed".into()),
        Err(e) => return fail(error_kind(&e)),
        Ok(_) => {}
    }
    let sent = stream
        .write_all(format!("sink {bytes}\n").as_bytes())
        .and_then(|()| send_pattern(&mut stream, bytes));
    if let Err(e) = sent {
        return fail(error_kind(&e));
    }
    let mut answer = String::new();
    match reader.read_line(&mut answer) {
        Ok(0) => return fail("closed".into()),
        Err(e) => return fail(error_kind(&e)),
        Ok(_) if answer.trim_end() != format!("sank {bytes} ok") => return fail("corrupt".into()),
        Ok(_) => {}
    }
    if let Err(e) = stream.write_all(format!("bulk {bytes}\n").as_bytes()) {
        return fail(error_kind(&e));
    }
    match receive_pattern(&mut reader, bytes) {
        Ok(true) => {}
        Ok(false) => return fail("corrupt".into()),
        Err(e) => return fail(error_kind(&e)),
    }
    let mut it = greeting.split_whitespace();
    Attempt::Ok {
        id: it.next().unwrap_or("?").to_string(),
        peer: it.next().unwrap_or("?").to_string(),
        from,
        micros: micros(),
    }
}

/// Serves UDP on `port`: answers each datagram with `ID PEER`, padded to the request's size when the
/// request is larger (so a datagram above the MTU gets one back: fragments both ways). Runs until
/// killed.
pub fn serve_udp(id: String, port: u16) -> std::io::Result<()> {
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))?;
    // Large enough for any datagram: large ones arrive as IP fragments, reassembled.
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = sock.recv_from(&mut buf)?;
        let mut reply = format!("{id} {peer}").into_bytes();
        if n > reply.len() + 1 {
            reply.push(b' ');
            reply.resize(n, b'.');
        }
        let _ = sock.send_to(&reply, peer);
    }
}

/// One TCP attempt: connect, read the greeting.
pub fn tcp_once(target: SocketAddr, timeout: Duration) -> Attempt {
    tcp_once_from(target, timeout, None)
}

/// `setsockopt(fd, level, name, value)`: an option whose value is a plain C struct or integer.
fn set_option<T>(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    // SAFETY: a pointer to a live `T` and its size; the kernel reads at most that many bytes.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A TCP stream to `target` from local port `port` (SO_REUSEADDR), connect bounded by `timeout`.
fn connect_from(target: SocketAddr, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = target else {
        return Err(std::io::Error::from(std::io::ErrorKind::Unsupported));
    };
    // SAFETY: plain socket(2); the descriptor is owned by the TcpStream made below (or closed here).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a socket this function just made and nothing else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let local = sockaddr(Ipv4Addr::UNSPECIFIED, port);
    let remote = sockaddr(*v4.ip(), v4.port());
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    set_option(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one)?;
    set_option(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv)?;
    // SAFETY: sockaddr_in pointers with their size.
    let ok = unsafe {
        libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) == 0
            && libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) == 0
    };
    if ok {
        Ok(stream)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One ICMP echo to `target` (a raw socket: the test bed runs as root), identifier `id`: `ok icmp
/// RESPONDER RESPONDER MICROS` when the matching echo reply arrives within `timeout`.
pub fn ping_once(target: Ipv4Addr, id: u16, seq: u16, timeout: Duration) -> Attempt {
    let start = Instant::now();
    let micros = || start.elapsed().as_micros() as u64;
    let fail = |kind: &str| Attempt::Err {
        kind: kind.to_string(),
        micros: micros(),
    };
    // SAFETY: plain socket calls on a descriptor this function owns and closes.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        if fd < 0 {
            return fail("socket");
        }
        let close = |a: Attempt| {
            libc::close(fd);
            a
        };
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        let mut packet = [0u8; 16];
        packet[0] = 8; // echo request
        packet[4..6].copy_from_slice(&id.to_be_bytes());
        packet[6..8].copy_from_slice(&seq.to_be_bytes());
        packet[8..16].copy_from_slice(b"berthpng");
        let mut sum: u32 = packet
            .chunks(2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
            .sum();
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        packet[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(target.octets()),
            },
            sin_zero: [0; 8],
        };
        let sent = libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if sent < 0 {
            return close(fail("send"));
        }
        let mut buf = [0u8; 1500];
        while start.elapsed() < timeout {
            let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
            if n < 0 {
                return close(fail("timeout"));
            }
            let n = n as usize;
            let ihl = ((buf[0] & 0x0f) as usize) * 4;
            if n < ihl + 8 {
                continue;
            }
            let from = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
            let icmp = &buf[ihl..n];
            if icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() && icmp[6..8] == seq.to_be_bytes() {
                return close(Attempt::Ok {
                    id: "icmp".into(),
                    peer: from.to_string(),
                    from: from.to_string(),
                    micros: micros(),
                });
            }
        }
        close(fail("timeout"))
    }
}

/// One TCP attempt, from local port `source_port` when given. A connection from a fixed port ends
/// with a reset (SO_LINGER 0), so the same port can connect again at once: a client reusing a tuple.
pub fn tcp_once_from(target: SocketAddr, timeout: Duration, source_port: Option<u16>) -> Attempt {
    let start = Instant::now();
    let micros = || start.elapsed().as_micros() as u64;
    let connected = match source_port {
        Some(port) => connect_from(target, port, timeout),
        None => TcpStream::connect_timeout(&target, timeout),
    };
    let stream = match connected {
        Ok(s) => s,
        Err(e) => {
            return Attempt::Err {
                kind: error_kind(&e),
                micros: micros(),
            };
        }
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let from = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut line = String::new();
    let read = BufReader::new(&stream).read_line(&mut line);
    if source_port.is_some() {
        use std::os::fd::AsRawFd;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let _ = set_option(stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, &linger);
    }
    match read {
        Ok(n) if n > 0 => {
            let mut it = line.split_whitespace();
            let id = it.next().unwrap_or("?").to_string();
            let peer = it.next().unwrap_or("?").to_string();
            Attempt::Ok {
                id,
                peer,
                from,
                micros: micros(),
            }
        }
        Ok(_) => Attempt::Err {
            kind: "closed".into(),
            micros: micros(),
        },
        Err(e) => Attempt::Err {
            kind: error_kind(&e),
            micros: micros(),
        },
    }
}

/// One UDP attempt on a fresh unconnected socket (sendto / recvfrom), or a connected one.
pub fn udp_once(target: SocketAddr, timeout: Duration, connected: bool, payload: &[u8]) -> Attempt {
    match UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)) {
        Ok(sock) => udp_on(&sock, target, timeout, connected, payload),
        Err(e) => Attempt::Err {
            kind: error_kind(&e),
            micros: 0,
        },
    }
}

/// One UDP request/response on an existing socket; the request carries `payload`.
pub fn udp_on(
    sock: &UdpSocket,
    target: SocketAddr,
    timeout: Duration,
    connected: bool,
    payload: &[u8],
) -> Attempt {
    let start = Instant::now();
    let micros = || start.elapsed().as_micros() as u64;
    let _ = sock.set_read_timeout(Some(timeout));
    let sent = if connected {
        sock.connect(target).and_then(|()| sock.send(payload))
    } else {
        sock.send_to(payload, target)
    };
    if let Err(e) = sent {
        return Attempt::Err {
            kind: error_kind(&e),
            micros: micros(),
        };
    }
    let mut buf = vec![0u8; 65536];
    match sock.recv_from(&mut buf) {
        Ok((n, from)) => udp_answer(&buf[..n], from, micros()),
        Err(e) => Attempt::Err {
            kind: error_kind(&e),
            micros: micros(),
        },
    }
}

/// A test server's UDP answer (`ID PEER ...`) from `from`.
fn udp_answer(answer: &[u8], from: SocketAddr, micros: u64) -> Attempt {
    let text = String::from_utf8_lossy(answer);
    let mut it = text.split_whitespace();
    Attempt::Ok {
        id: it.next().unwrap_or("?").to_string(),
        peer: it.next().unwrap_or("?").to_string(),
        from: from.to_string(),
        micros,
    }
}

/// Prints attempts as protocol lines.
pub fn print(attempt: &Attempt) {
    println!("{}", attempt.line());
}

/// Holds one TCP connection: prints the greeting, then for every stdin line sends it and prints the
/// echo (`echo LINE` or `err KIND 0`). Exits at stdin EOF.
pub fn hold(target: SocketAddr, timeout: Duration) -> std::io::Result<()> {
    let stream = TcpStream::connect_timeout(&target, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut greeting = String::new();
    reader.read_line(&mut greeting)?;
    println!("ok {} {} 0", greeting.trim(), target);
    std::io::stdout().flush()?;
    for line in std::io::stdin().lines() {
        let line = line?;
        let reply = writer.write_all(format!("{line}\n").as_bytes()).and_then(|()| {
            let mut r = String::new();
            reader.read_line(&mut r).map(|_| r)
        });
        match reply {
            Ok(r) if !r.is_empty() => println!("echo {}", r.trim()),
            Ok(_) => println!("err closed 0"),
            Err(e) => println!("err {} 0", error_kind(&e)),
        }
        std::io::stdout().flush()?;
    }
    Ok(())
}

/// Sends one `size`-byte datagram with DF set (`IP_PMTUDISC_DO`) on a socket connected to `target`,
/// waits up to `timeout` for an answer or an error ("fragmentation needed" arrives as `EMSGSIZE`), and
/// returns the path MTU the socket knows then (`IP_MTU`).
pub fn path_mtu(target: SocketAddr, size: usize, timeout: Duration) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    let fd = sock.as_raw_fd();
    set_option(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, &libc::IP_PMTUDISC_DO)?;
    sock.connect(target)?;
    sock.set_read_timeout(Some(timeout))?;
    let payload: Vec<u8> = (0..size as u64).map(pattern_byte).collect();
    let _ = sock.send(&payload);
    let _ = sock.recv(&mut [0u8; 2048]);
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as u32;
    // SAFETY: getsockopt into an int of the given length.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(mtu as u32)
}

/// `segments` datagrams of `segment` bytes sent by one `send_to` with UDP GSO (`UDP_SEGMENT`): the
/// sender's kernel keeps them one aggregate as far as it can (through veths, and through berth's
/// encapsulation). One attempt per answer the server sends (one per datagram), errors for the missing.
pub fn udp_gso(target: SocketAddr, segment: u16, segments: u16, timeout: Duration) -> Vec<Attempt> {
    use std::os::fd::AsRawFd;
    let start = Instant::now();
    let fail = |e: &std::io::Error| Attempt::Err {
        kind: error_kind(e),
        micros: start.elapsed().as_micros() as u64,
    };
    let sock = match UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)) {
        Ok(s) => s,
        Err(e) => return vec![fail(&e)],
    };
    let size = libc::c_int::from(segment);
    if let Err(e) = set_option(sock.as_raw_fd(), libc::SOL_UDP, libc::UDP_SEGMENT, &size) {
        return vec![fail(&e)];
    }
    let payload: Vec<u8> = (0..u64::from(segment) * u64::from(segments))
        .map(pattern_byte)
        .collect();
    if let Err(e) = sock.send_to(&payload, target) {
        return vec![fail(&e)];
    }
    let _ = sock.set_read_timeout(Some(timeout));
    let mut buf = vec![0u8; 65536];
    (0..segments)
        .map(|_| match sock.recv_from(&mut buf) {
            Ok((n, from)) => udp_answer(&buf[..n], from, start.elapsed().as_micros() as u64),
            Err(e) => fail(&e),
        })
        .collect()
}

/// Holds one connected UDP socket to `target`: prints `ok connected TARGET 0`, then for each stdin
/// line sends it and prints `echo ID` (the answering server) or `err KIND 0` (an ended socket reports
/// `connectionaborted`).
pub fn hold_udp(target: SocketAddr, timeout: Duration) -> std::io::Result<()> {
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    sock.connect(target)?;
    sock.set_read_timeout(Some(timeout))?;
    println!("ok connected {target} 0");
    std::io::stdout().flush()?;
    let mut buf = [0u8; 2048];
    for line in std::io::stdin().lines() {
        let line = line?;
        let reply = sock.send(line.as_bytes()).and_then(|_| sock.recv(&mut buf));
        match reply {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                println!("echo {}", text.split_whitespace().next().unwrap_or("?"));
            }
            // A socket ended by SOCK_DESTROY fails a send for want of a peer; the reason is the
            // socket's pending error.
            Err(e) => {
                let e = sock.take_error().ok().flatten().unwrap_or(e);
                println!("err {} 0", error_kind(&e));
            }
        }
        std::io::stdout().flush()?;
    }
    Ok(())
}

/// Summary of a load run or an RTT run (latencies in microseconds).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoadSummary {
    pub ok: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl LoadSummary {
    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ok as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// `summary OK ERRORS SECONDS P50 P99`.
    pub fn line(&self) -> String {
        format!(
            "summary {} {} {:.3} {:.1} {:.1}",
            self.ok, self.errors, self.seconds, self.p50_us, self.p99_us
        )
    }

    /// Parses [`line`](Self::line) output.
    pub fn parse(line: &str) -> Option<LoadSummary> {
        let p: Vec<&str> = line.split_whitespace().collect();
        match p.as_slice() {
            ["summary", ok, err, secs, p50, p99] => Some(LoadSummary {
                ok: ok.parse().ok()?,
                errors: err.parse().ok()?,
                seconds: secs.parse().ok()?,
                p50_us: p50.parse().ok()?,
                p99_us: p99.parse().ok()?,
            }),
            _ => None,
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// New TCP connections (connect + greeting) to random targets for `duration`, on `threads` threads,
/// at most `max` in total: the load is bounded in count and time.
pub fn load(targets: &[SocketAddr], duration: Duration, threads: usize, max: u64) -> LoadSummary {
    let start = Instant::now();
    let per_thread = max / threads.max(1) as u64;
    let results: Vec<(Vec<f64>, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|t| {
                s.spawn(move || {
                    let mut lat = Vec::new();
                    let mut errors = 0u64;
                    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1);
                    let mut n = 0u64;
                    while start.elapsed() < duration && n < per_thread {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let target = targets[(x % targets.len() as u64) as usize];
                        match tcp_once(target, Duration::from_secs(2)) {
                            Attempt::Ok { micros, .. } => lat.push(micros as f64),
                            Attempt::Err { .. } => errors += 1,
                        }
                        n += 1;
                    }
                    (lat, errors)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut all: Vec<f64> = results.iter().flat_map(|(l, _)| l.iter().copied()).collect();
    let errors = results.iter().map(|(_, e)| *e).sum();
    all.sort_by(|a, b| a.total_cmp(b));
    LoadSummary {
        ok: all.len() as u64,
        errors,
        seconds,
        p50_us: percentile(&all, 0.5),
        p99_us: percentile(&all, 0.99),
    }
}

/// `count` request/response round trips (a line echoed) on one established connection.
pub fn rtt(target: SocketAddr, count: u32) -> std::io::Result<LoadSummary> {
    let start = Instant::now();
    let stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut lat = Vec::with_capacity(count as usize);
    for i in 0..count {
        let t = Instant::now();
        writer.write_all(format!("{i}\n").as_bytes())?;
        line.clear();
        reader.read_line(&mut line)?;
        lat.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(LoadSummary {
        ok: count as u64,
        errors: 0,
        seconds: start.elapsed().as_secs_f64(),
        p50_us: percentile(&lat, 0.5),
        p99_us: percentile(&lat, 0.99),
    })
}
