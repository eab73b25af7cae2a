//! Container logs read back as kubelet serves them to `kubectl logs` (through the API server): the CRI
//! files the shims write (`LOG_DIR/NAMESPACE_POD_UID/CONTAINER/N.log`), turned back into the
//! container's output, with kubelet's options: `previous`, `tailLines`, `sinceSeconds`/`sinceTime`,
//! `timestamps`, `limitBytes`, `follow`.

use std::{
    io::{BufRead, BufReader, Seek, SeekFrom},
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::jiff::Timestamp;
use thiserror::Error;

/// Why a log cannot be served (kubelet answers these as 400/404 with the message).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LogError {
    #[error("pod {0:?} has no logs on this node")]
    NoPod(String),
    #[error("container {container:?} in pod {pod:?} has no logs yet")]
    NoContainer { pod: String, container: String },
    #[error("previous terminated container {container:?} in pod {pod:?} not found")]
    NoPrevious { pod: String, container: String },
    #[error("invalid {0}")]
    Option(String),
}

/// `PodLogOptions` as kubelet reads them from the query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
    /// Only lines at or after this time (`sinceSeconds` or `sinceTime`).
    pub since: Option<Timestamp>,
}

impl LogOptions {
    /// From a query string (`follow=true&tailLines=10`).
    pub fn parse(query: &str, now: Timestamp) -> Result<Self, LogError> {
        let mut o = LogOptions::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
            let v = percent_decode(v);
            let flag = || v == "true" || v == "1";
            let number = || {
                v.parse::<usize>()
                    .map_err(|_| LogError::Option(format!("{k}={v}")))
            };
            match k {
                "follow" => o.follow = flag(),
                "previous" => o.previous = flag(),
                "timestamps" => o.timestamps = flag(),
                "tailLines" => o.tail_lines = Some(number()?),
                "limitBytes" => o.limit_bytes = Some(number()?),
                "sinceSeconds" => {
                    let secs = number()? as i64;
                    o.since = now
                        .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(secs))
                        .ok();
                }
                "sinceTime" => {
                    o.since = Some(
                        v.parse()
                            .map_err(|_| LogError::Option(format!("sinceTime={v}")))?,
                    );
                }
                _ => {}
            }
        }
        Ok(o)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The log files of one container: the current instance's and, if any, the previous one's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerLogs {
    pub dir: PathBuf,
    pub current: u32,
}

/// Finds the logs of `container` in pod `namespace/pod` under `log_dir`, preferring the pod `uid`
/// when several pods of that name left logs.
pub fn find(
    log_dir: &Path,
    namespace: &str,
    pod: &str,
    uid: Option<&str>,
    container: &str,
) -> Result<ContainerLogs, LogError> {
    let prefix = format!("{namespace}_{pod}_");
    let mut candidates: Vec<(std::time::SystemTime, PathBuf, bool)> = std::fs::read_dir(log_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let wanted = uid.is_some_and(|u| name.ends_with(u));
            let modified = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (modified, e.path(), wanted)
        })
        .collect();
    candidates.sort_by_key(|(m, _, wanted)| (*wanted, *m));
    let pod_dir = candidates
        .pop()
        .map(|(_, p, _)| p)
        .ok_or_else(|| LogError::NoPod(format!("{namespace}/{pod}")))?;
    let dir = pod_dir.join(container);
    let current = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".log")?
                .parse::<u32>()
                .ok()
        })
        .max()
        .ok_or_else(|| LogError::NoContainer {
            pod: pod.into(),
            container: container.into(),
        })?;
    Ok(ContainerLogs { dir, current })
}

impl ContainerLogs {
    /// The file to read for `options` (the previous instance's with `previous`).
    pub fn file(&self, options: &LogOptions, pod: &str, container: &str) -> Result<PathBuf, LogError> {
        let n = if options.previous {
            self.current.checked_sub(1).ok_or_else(|| LogError::NoPrevious {
                pod: pod.into(),
                container: container.into(),
            })?
        } else {
            self.current
        };
        let path = self.dir.join(format!("{n}.log"));
        if options.previous && !path.exists() {
            return Err(LogError::NoPrevious {
                pod: pod.into(),
                container: container.into(),
            });
        }
        Ok(path)
    }
}

/// One CRI line back as output: (time, text with its newline unless a partial line).
fn decode(line: &str) -> Option<(Timestamp, String)> {
    let mut it = line.splitn(4, ' ');
    let ts: Timestamp = it.next()?.parse().ok()?;
    let _stream = it.next()?;
    let tag = it.next()?;
    let text = it.next().unwrap_or_default();
    Some((
        ts,
        if tag == "P" {
            text.to_string()
        } else {
            format!("{text}\n")
        },
    ))
}

fn render(ts: Timestamp, text: &str, options: &LogOptions) -> String {
    if options.timestamps {
        format!("{ts} {text}")
    } else {
        text.to_string()
    }
}

/// The log so far, with the options applied; and the file offset reached (where `follow` goes on).
pub fn read(path: &Path, options: &LogOptions) -> std::io::Result<(String, u64)> {
    let file = std::fs::File::open(path)?;
    let mut reader = BufReader::new(file);
    let mut lines: Vec<String> = Vec::new();
    let mut offset = 0u64;
    let mut raw = String::new();
    loop {
        raw.clear();
        let n = reader.read_line(&mut raw)?;
        if n == 0 || !raw.ends_with('\n') {
            break; // a line the shim is still writing is read next time
        }
        offset += n as u64;
        if let Some((ts, text)) = decode(raw.trim_end_matches('\n'))
            && options.since.is_none_or(|s| ts >= s)
        {
            lines.push(render(ts, &text, options));
        }
    }
    let start = options.tail_lines.map_or(0, |t| lines.len().saturating_sub(t));
    let mut out: String = lines[start..].concat();
    if let Some(limit) = options.limit_bytes
        && out.len() > limit
    {
        let mut cut = limit;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    Ok((out, offset))
}

/// What was appended to the log since `offset`: the text and the new offset.
pub fn read_from(path: &Path, offset: u64, options: &LogOptions) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    // A file shorter than where the reader was has been rotated: the new one is read from its start.
    let offset = if file.metadata()?.len() < offset {
        0
    } else {
        offset
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(file);
    let mut out = String::new();
    let mut offset = offset;
    let mut raw = String::new();
    loop {
        raw.clear();
        let n = reader.read_line(&mut raw)?;
        if n == 0 || !raw.ends_with('\n') {
            break;
        }
        offset += n as u64;
        if let Some((ts, text)) = decode(raw.trim_end_matches('\n')) {
            out.push_str(&render(ts, &text, options));
        }
    }
    Ok((out, offset))
}

/// How often a followed log is looked at for new lines.
pub const FOLLOW_POLL: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    fn write_log(dir: &Path, n: u32, lines: &[&str]) {
        std::fs::create_dir_all(dir).expect("dir");
        std::fs::write(dir.join(format!("{n}.log")), lines.join("\n") + "\n").expect("log");
    }

    #[test]
    fn logs_are_found_decoded_and_filtered_as_kubelet_does() {
        let root = std::env::temp_dir().join(format!("berth-logs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("shop_web-0_u1/httpd");
        write_log(&dir, 0, &["2026-12-06T01:00:00.000000000Z stdout F first run"]);
        write_log(
            &dir,
            1,
            &[
                "2026-12-06T02:00:00.000000000Z stdout F one",
                "2026-12-06T02:00:01.000000000Z stderr P tw",
                "2026-12-06T02:00:01.000000000Z stderr F o",
                "2026-12-06T02:00:02.000000000Z stdout F three",
            ],
        );
        let logs = find(&root, "shop", "web-0", Some("u1"), "httpd").expect("found");
        assert_eq!(logs.current, 1);
        let now: Timestamp = "2026-12-06T02:00:10Z".parse().expect("now");
        let opts = |q: &str| LogOptions::parse(q, now).expect("options");
        let read_with = |q: &str| {
            let o = opts(q);
            read(&logs.file(&o, "web-0", "httpd").expect("file"), &o)
                .expect("read")
                .0
        };
        assert_eq!(read_with(""), "one\ntwo\nthree\n");
        assert_eq!(read_with("tailLines=1"), "three\n");
        assert_eq!(read_with("sinceSeconds=9"), "two\nthree\n");
        assert_eq!(read_with("previous=true"), "first run\n");
        assert_eq!(read_with("limitBytes=5"), "one\nt");
        assert!(read_with("timestamps=true").starts_with("2026-12-06T02:00:00Z one\n"));
        assert_eq!(
            find(&root, "shop", "nope", None, "httpd"),
            Err(LogError::NoPod("shop/nope".into()))
        );
        let first = ContainerLogs {
            dir: dir.clone(),
            current: 0,
        };
        assert!(matches!(
            first.file(&opts("previous=true"), "web-0", "httpd"),
            Err(LogError::NoPrevious { .. })
        ));
        assert!(LogOptions::parse("tailLines=x", now).is_err());
        std::fs::remove_dir_all(&root).ok();
    }
}
