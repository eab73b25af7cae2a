//! The container shim: one small process per running container, as containerd's shim and CRI-O's
//! conmon. It outlives the agent (an agent restart or upgrade does not touch running containers) and:
//!
//! - runs `runc create` with the container's stdout and stderr on pipes it holds, then `runc start`;
//! - is the child subreaper, so the container's init is reparented to it and its exit status is
//!   collected (runc itself exits right after starting the container);
//! - writes the container's output to its log file in the CRI format kubelet writes and `kubectl logs`
//!   reads through the API server: `TIMESTAMP STREAM F|P LINE`, lines split at 16 KiB (`P` parts);
//! - records the exit (`exit.json`: code, signal, time) when the container ends, then exits.
//!
//! The agent learns how the start went from one JSON line on the shim's stdout ([`ShimReport`]).

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use jiff::{Timestamp, fmt::temporal::DateTimePrinter};
use serde::{Deserialize, Serialize};

/// What the shim is told.
#[derive(Clone, Debug)]
pub struct ShimArgs {
    pub id: String,
    /// The OCI bundle (holding `config.json`); `runc.log` and `pid` are written there too.
    pub bundle: PathBuf,
    pub runc: PathBuf,
    pub runc_root: PathBuf,
    /// The container's log file (CRI format).
    pub log: PathBuf,
    /// Where `exit.json` goes when the container ends.
    pub exit_file: PathBuf,
    /// How the log is rotated (kubelet's `containerLogMaxSize` / `containerLogMaxFiles`).
    pub rotation: LogRotation,
}

/// When the shim rotates its container's log: at `max_size` bytes the file is renamed to
/// `N.log.YYYYMMDD-HHMMSS` (kubelet's naming) and a new one started; at most `max_files` files are
/// kept, the current one included. `max_size` 0 never rotates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRotation {
    pub max_size: u64,
    pub max_files: usize,
}

impl Default for LogRotation {
    /// kubelet's defaults: 10 MiB, 5 files.
    fn default() -> Self {
        LogRotation {
            max_size: 10 * 1024 * 1024,
            max_files: 5,
        }
    }
}

/// The shim's one line to the agent: the container started (its init's pid), or why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ShimReport {
    Started { pid: i32 },
    Failed { message: String },
}

/// How a container ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    /// The exit code, or 128 + the signal number when killed, as kubelet reports it.
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// RFC 3339 with nanoseconds.
    pub finished_at: String,
    /// Killed by the kernel's OOM killer (found by the agent in the container's cgroup, not by the shim).
    #[serde(default)]
    pub oom_killed: bool,
}

/// Longest line kept whole in the log; longer output is split into `P` parts, as kubelet does.
const MAX_LINE: usize = 16 * 1024;

/// Runs the shim; returns its exit code. `report` gets the [`ShimReport`] line and is then dropped.
pub fn run(args: &ShimArgs, report: impl Write) -> i32 {
    // SAFETY: prctl and setsid with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::setsid();
    }
    let mut report = Some(report);
    let mut say = |r: ShimReport| {
        if let Some(mut w) = report.take() {
            let _ = serde_json::to_writer(&mut w, &r);
            let _ = w.write_all(b"\n");
            let _ = w.flush();
        }
    };
    let started = match start(args) {
        Ok(s) => s,
        Err(message) => {
            say(ShimReport::Failed { message });
            return 1;
        }
    };
    say(ShimReport::Started { pid: started.pid });
    let mut log = CriLog::open(&args.log, args.rotation);
    let status = pump(&started, &mut log);
    let record = exit_record(status);
    let temp = args.exit_file.with_extension("tmp");
    if let Ok(text) = serde_json::to_vec(&record)
        && std::fs::write(&temp, text).is_ok()
    {
        let _ = std::fs::rename(&temp, &args.exit_file);
    }
    0
}

struct Started {
    pid: i32,
    stdout: File,
    stderr: File,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created and are owned here only.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn runc_error(args: &ShimArgs, what: &str, stderr: &[u8]) -> String {
    // runc's own messages go to --log; its stderr is the container's.
    let log = std::fs::read_to_string(args.bundle.join("runc.log")).unwrap_or_default();
    let last = log
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .filter(|v| v["level"] == "error")
                .and_then(|v| v["msg"].as_str().map(str::to_string))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(stderr).trim().to_string());
    format!("runc {what}: {last}")
}

fn start(args: &ShimArgs) -> Result<Started, String> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let pid_file = args.bundle.join("pid");
    let mut create = Command::new(&args.runc);
    create
        .arg("--root")
        .arg(&args.runc_root)
        .arg("--log")
        .arg(args.bundle.join("runc.log"))
        .args(["--log-format", "json", "create", "--bundle"])
        .arg(&args.bundle)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(&args.id)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w));
    let status = create.status().map_err(|e| format!("runc create: {e}"))?;
    // The write ends now live only in the container.
    drop(create);
    if !status.success() {
        return Err(runc_error(args, "create", &drain_now(err_r)));
    }
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| "runc create wrote no pid".to_string())?;
    let out = Command::new(&args.runc)
        .arg("--root")
        .arg(&args.runc_root)
        .arg("--log")
        .arg(args.bundle.join("runc.log"))
        .args(["--log-format", "json", "start"])
        .arg(&args.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("runc start: {e}"))?;
    if !out.status.success() {
        let _ = Command::new(&args.runc)
            .arg("--root")
            .arg(&args.runc_root)
            .args(["delete", "--force"])
            .arg(&args.id)
            .status();
        return Err(runc_error(args, "start", &out.stderr));
    }
    Ok(Started {
        pid,
        stdout: File::from(out_r),
        stderr: File::from(err_r),
    })
}

/// Whatever a pipe holds right now (after a failed create, nothing else writes to it).
fn drain_now(fd: OwnedFd) -> Vec<u8> {
    // SAFETY: fcntl on a descriptor owned here.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let mut buf = Vec::new();
    let _ = File::from(fd).read_to_end(&mut buf);
    buf
}

/// A descriptor that becomes readable when a child changes state: SIGCHLD blocked and taken through a
/// signalfd, so the shim sleeps in `poll` until output or an exit arrives instead of waking on a timer
/// (a hundred idle containers then cost nothing). Blocked only now, after runc has started the
/// container: the signal mask is inherited across exec, and the container must not start with SIGCHLD
/// blocked.
fn child_events() -> Option<OwnedFd> {
    // SAFETY: a zeroed sigset is valid input to sigemptyset; the calls only touch the local set and the
    // mask of this single-threaded process.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return None;
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        (fd >= 0).then(|| OwnedFd::from_raw_fd(fd))
    }
}

/// Empties a signalfd (the pending SIGCHLDs are coalesced; the reaping loop finds every child).
fn drain_signals(fd: &OwnedFd) {
    let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
    // SAFETY: reading into a live buffer of a siginfo's size from a non-blocking descriptor owned here.
    while unsafe { libc::read(fd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) } > 0 {}
}

/// Copies output to the log until the container has exited and its pipes are drained; returns its
/// wait status.
fn pump(started: &Started, log: &mut CriLog) -> i32 {
    let fds = [started.stdout.as_raw_fd(), started.stderr.as_raw_fd()];
    let signals = child_events();
    let mut open = [true, true];
    let mut status: Option<i32> = None;
    let mut exited_at: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    // The first pass does not wait: an exit before SIGCHLD was blocked raised no event to wait for.
    let mut first = true;
    loop {
        let mut polls: Vec<libc::pollfd> = fds
            .iter()
            .zip(open)
            .filter(|(_, o)| *o)
            .map(|(fd, _)| libc::pollfd {
                fd: *fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if let Some(s) = &signals {
            polls.push(libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // Without a signalfd (should not happen) exits are looked for every 200 ms; after the exit,
        // output still held open by a daemonised grandchild is waited for in short steps.
        let timeout = match (&signals, status) {
            _ if first => 0,
            (_, Some(_)) => 100,
            (Some(_), None) => -1,
            (None, None) => 200,
        };
        // SAFETY: a live array of pollfd of the length given.
        unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, timeout) };
        first = false;
        for p in &polls {
            if p.revents == 0 {
                continue;
            }
            if signals.as_ref().is_some_and(|s| s.as_raw_fd() == p.fd) {
                if let Some(s) = &signals {
                    drain_signals(s);
                }
                continue;
            }
            let stream = if p.fd == fds[0] { 0 } else { 1 };
            // SAFETY: reading into a live buffer from a descriptor owned by `started`.
            let n = unsafe { libc::read(p.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                open[stream] = false;
                log.flush_partial(stream);
            } else {
                log.write(stream, &buf[..n as usize]);
            }
        }
        // Reap every child (the subreaper gets the container's descendants too).
        loop {
            let mut st = 0;
            // SAFETY: waitpid with an out-pointer to a local.
            let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == started.pid {
                status = Some(st);
                exited_at = Some(Instant::now());
            }
        }
        let drained = !open[0] && !open[1];
        // Output a daemonised grandchild still holds is not waited for beyond a second.
        if let (Some(st), Some(at)) = (status, exited_at)
            && (drained || at.elapsed() > Duration::from_secs(1))
        {
            log.flush_partial(0);
            log.flush_partial(1);
            return st;
        }
        if status.is_none() && drained && !alive(started.pid) {
            // Not our child (should not happen): nothing more to learn.
            return 0;
        }
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn exit_record(status: i32) -> ExitRecord {
    let (exit_code, signal) = if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        (128 + sig, Some(sig))
    } else {
        (libc::WEXITSTATUS(status), None)
    };
    ExitRecord {
        exit_code,
        signal,
        finished_at: rfc3339_nanos(SystemTime::now()),
        oom_killed: false,
    }
}

/// The CRI log writer: one timestamped line per line of output, per stream.
struct CriLog {
    file: Option<File>,
    partial: [Vec<u8>; 2],
    path: PathBuf,
    rotation: LogRotation,
    /// Bytes in the current file.
    size: u64,
}

const STREAMS: [&str; 2] = ["stdout", "stderr"];

impl CriLog {
    /// Appends to the log at `path` (output is discarded if it cannot be opened).
    fn open(path: &Path, rotation: LogRotation) -> Self {
        let file = OpenOptions::new().create(true).append(true).open(path).ok();
        let size = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        CriLog {
            file,
            partial: [Vec::new(), Vec::new()],
            path: path.to_path_buf(),
            rotation,
            size,
        }
    }

    /// Renames the full file aside, starts a new one and drops the oldest beyond `max_files`.
    fn rotate(&mut self) {
        let now = rfc3339_nanos(SystemTime::now());
        // 2026-12-06T02:24:11.123Z -> 20261206-022411
        let stamp: String = now[..19]
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == 'T')
            .collect();
        let stamp = stamp.replacen('T', "-", 1);
        let base = self.path.display().to_string();
        let mut aside = PathBuf::from(format!("{base}.{stamp}"));
        let mut n = 1;
        while aside.exists() {
            aside = PathBuf::from(format!("{base}.{stamp}-{n}"));
            n += 1;
        }
        if std::fs::rename(&self.path, &aside).is_err() {
            return;
        }
        self.file = OpenOptions::new().create(true).append(true).open(&self.path).ok();
        self.size = 0;
        let prefix = format!(
            "{}.",
            self.path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        let dir = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut rotated: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        rotated.sort();
        let keep = self.rotation.max_files.saturating_sub(1);
        let excess = rotated.len().saturating_sub(keep);
        for (_, old) in rotated.into_iter().take(excess) {
            let _ = std::fs::remove_file(old);
        }
    }

    fn emit(&mut self, stream: usize, tag: &str, line: &[u8]) {
        if let Some(f) = &mut self.file {
            let mut out = Vec::with_capacity(line.len() + 48);
            out.extend_from_slice(rfc3339_nanos(SystemTime::now()).as_bytes());
            out.push(b' ');
            out.extend_from_slice(STREAMS[stream].as_bytes());
            out.push(b' ');
            out.extend_from_slice(tag.as_bytes());
            out.push(b' ');
            out.extend_from_slice(line);
            out.push(b'\n');
            if f.write_all(&out).is_ok() {
                self.size += out.len() as u64;
            }
            if self.rotation.max_size > 0 && self.size >= self.rotation.max_size {
                self.rotate();
            }
        }
    }

    fn write(&mut self, stream: usize, mut data: &[u8]) {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.partial[stream]);
            line.extend_from_slice(&data[..nl]);
            for (i, chunk) in line.chunks(MAX_LINE).enumerate() {
                let last = (i + 1) * MAX_LINE >= line.len();
                self.emit(stream, if last { "F" } else { "P" }, chunk);
            }
            if line.is_empty() {
                self.emit(stream, "F", b"");
            }
            data = &data[nl + 1..];
        }
        self.partial[stream].extend_from_slice(data);
        while self.partial[stream].len() >= MAX_LINE {
            let rest = self.partial[stream].split_off(MAX_LINE);
            let part = std::mem::replace(&mut self.partial[stream], rest);
            self.emit(stream, "P", &part);
        }
    }

    /// Output without a final newline, written as a partial line at the end.
    fn flush_partial(&mut self, stream: usize) {
        if !self.partial[stream].is_empty() {
            let part = std::mem::take(&mut self.partial[stream]);
            self.emit(stream, "P", &part);
        }
    }
}

/// `2026-12-06T02:24:11.123456789Z`: CRI log lines and exit records carry nanoseconds.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    const NANOS: DateTimePrinter = DateTimePrinter::new().precision(Some(9));
    let at = Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH);
    NANOS.timestamp_to_string(&at)
}

/// Starts the shim for `args` as `shim_exe container-shim ...` (the agent's own binary), detached from
/// the agent, and waits for its report. The shim is reaped by a thread of the caller while the caller
/// lives, by init after.
pub fn spawn(shim_exe: &Path, args: &ShimArgs, timeout: Duration) -> Result<ShimReport, String> {
    let shim_log = args.bundle.join("shim.log");
    let stderr = File::create(&shim_log).map_err(|e| format!("{}: {e}", shim_log.display()))?;
    let mut child = Command::new(shim_exe)
        .arg("container-shim")
        .arg("--id")
        .arg(&args.id)
        .arg("--bundle")
        .arg(&args.bundle)
        .arg("--runc")
        .arg(&args.runc)
        .arg("--runc-root")
        .arg(&args.runc_root)
        .arg("--log")
        .arg(&args.log)
        .arg("--exit-file")
        .arg(&args.exit_file)
        .arg("--log-max-size")
        .arg(args.rotation.max_size.to_string())
        .arg("--log-max-files")
        .arg(args.rotation.max_files.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("starting the shim {}: {e}", shim_exe.display()))?;
    let stdout = child.stdout.take();
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    let stdout = stdout.ok_or("the shim has no stdout")?;
    read_report(stdout, timeout)
}

/// The shim's arguments back from its command line (the agent's `container-shim` subcommand).
pub fn args_from(mut argv: impl Iterator<Item = String>) -> Result<ShimArgs, String> {
    let mut a = ShimArgs {
        id: String::new(),
        bundle: PathBuf::new(),
        runc: PathBuf::from("runc"),
        runc_root: PathBuf::new(),
        log: PathBuf::new(),
        exit_file: PathBuf::new(),
        rotation: LogRotation::default(),
    };
    let number = |flag: &str, v: &str| {
        v.parse::<u64>()
            .map_err(|_| format!("{flag}: not a number: {v:?}"))
    };
    while let Some(flag) = argv.next() {
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--id" => a.id = value,
            "--bundle" => a.bundle = value.into(),
            "--runc" => a.runc = value.into(),
            "--runc-root" => a.runc_root = value.into(),
            "--log" => a.log = value.into(),
            "--exit-file" => a.exit_file = value.into(),
            "--log-max-size" => a.rotation.max_size = number(&flag, &value)?,
            "--log-max-files" => a.rotation.max_files = number(&flag, &value)?.max(1) as usize,
            other => return Err(format!("unknown shim flag {other}")),
        }
    }
    if a.id.is_empty() || a.bundle.as_os_str().is_empty() || a.runc_root.as_os_str().is_empty() {
        return Err("the shim needs --id, --bundle and --runc-root".into());
    }
    Ok(a)
}

/// Where a shim's report is read by the agent: the line, parsed.
pub fn read_report(mut from: impl Read, timeout: Duration) -> Result<ShimReport, String> {
    let started = Instant::now();
    let mut text = Vec::new();
    let mut byte = [0u8; 1];
    while started.elapsed() < timeout {
        match from.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => text.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the shim's report: {e}")),
        }
    }
    serde_json::from_slice(&text).map_err(|_| {
        format!(
            "the shim ended without reporting: {:?}",
            String::from_utf8_lossy(&text)
        )
    })
}

/// Where the shim of the container kept in `container_dir` records its exit.
pub fn exit_file(container_dir: &Path) -> PathBuf {
    container_dir.join("exit.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_with_nanoseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_796_523_851, 123_456_789);
        assert_eq!(rfc3339_nanos(t), "2026-12-06T02:24:11.123456789Z");
        assert_eq!(
            rfc3339_nanos(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000000Z"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(rfc3339_nanos(leap).starts_with("2000-02-29T00:00:00"));
    }

    #[test]
    fn the_log_rotates_at_its_size_and_keeps_its_number_of_files() {
        let dir = std::env::temp_dir().join(format!("berth-rotate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("0.log");
        let mut log = CriLog::open(
            &path,
            LogRotation {
                max_size: 300,
                max_files: 3,
            },
        );
        for i in 0..40 {
            log.write(0, format!("line {i:03}\n").as_bytes());
        }
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("read")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&"0.log".to_string()), "{names:?}");
        assert!(
            names
                .iter()
                .filter(|n| *n != "0.log")
                .all(|n| n.starts_with("0.log.2")),
            "{names:?}"
        );
        // The newest lines are in the current file, each line whole in one file.
        let current = std::fs::read_to_string(&path).expect("current");
        assert!(current.contains("line 039"), "{current}");
        assert!(std::fs::metadata(&path).expect("meta").len() < 300);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn lines_are_written_whole_split_at_16k_and_partial_at_the_end() {
        let path = std::env::temp_dir().join(format!("berth-crilog-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut log = CriLog::open(&path, LogRotation::default());
        log.write(0, b"hello\nwor");
        log.write(1, b"oops\n");
        log.write(0, b"ld\n\n");
        log.write(0, &vec![b'x'; MAX_LINE + 10]);
        log.write(0, b"\nno newline");
        log.flush_partial(0);
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<(&str, &str, usize)> = text
            .lines()
            .map(|l| {
                let mut it = l.splitn(4, ' ');
                let _ts = it.next();
                let stream = it.next().expect("stream");
                let tag = it.next().expect("tag");
                (stream, tag, it.next().map_or(0, str::len))
            })
            .collect();
        assert_eq!(
            lines,
            vec![
                ("stdout", "F", 5),
                ("stderr", "F", 4),
                ("stdout", "F", 5),
                ("stdout", "F", 0),
                ("stdout", "P", MAX_LINE),
                ("stdout", "F", 10),
                ("stdout", "P", 10),
            ]
        );
        assert!(text.contains(" stdout F world\n"));
        std::fs::remove_file(&path).ok();
    }
}
