//! `/exec/NAMESPACE/POD/CONTAINER?command=...&stdin=..&stdout=..&stderr=..&tty=..`: kubelet's
//! remote command over WebSocket, as kubectl 1.30+ speaks it through the API server.
//!
//! The channel protocol (`v5.channel.k8s.io`, and `v4` for older clients): every binary message
//! starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 the final `Status` (exit code), 4
//! terminal resizes (`{"Width":W,"Height":H}`), and in v5 255 "close channel N" (the client's end
//! of input). With a terminal, stdout carries everything and stderr is unused.

use std::time::Duration;

use berth_runtime::exec::{self, ExecStreams};
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};
use tracing::debug;

/// The subprotocols served, best first.
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// How long output may still drain after the process ended (a background child holding the
/// terminal must not hold the session open).
const DRAIN: Duration = Duration::from_secs(2);
/// How long a terminal session waits for the client's first size before it starts the process.
const FIRST_RESIZE: Duration = Duration::from_millis(300);

/// What the client asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecOptions {
    /// From the query (kubectl's names; kubelet's `input`/`output`/`error` too).
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut o = ExecOptions::default();
        let flag = |v: &str| matches!(v, "1" | "true" | "True");
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = percent_decode(v)?;
            match k {
                "command" => o.command.push(v),
                "stdin" | "input" => o.stdin = flag(&v),
                "stdout" | "output" => o.stdout = flag(&v),
                "stderr" | "error" => o.stderr = flag(&v),
                "tty" => o.tty = flag(&v),
                _ => {}
            }
        }
        if o.command.is_empty() {
            return Err("you must specify at least 1 command".into());
        }
        if !o.stdin && !o.stdout && !o.stderr {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        if o.tty && o.stderr {
            // As kubelet: a terminal has one output stream.
            o.stderr = false;
        }
        Ok(o)
    }
}

/// `{"Width":W,"Height":H}` of a resize message.
fn terminal_size(json: &[u8]) -> Option<(u16, u16)> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let dim = |k: &str| v[k].as_u64().and_then(|d| u16::try_from(d).ok());
    Some((dim("Width")?, dim("Height")?))
}

/// `%XX` and `+` decoded (query values).
fn percent_decode(v: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(&v.replace('+', " "))
        .decode_utf8()
        .map(|d| d.into_owned())
        .map_err(|_| format!("{v:?} is not UTF-8"))
}

/// The `Status` on the error channel for an exit code (kubelet's wording, which kubectl reads).
fn exit_status(code: i32, command: &[String]) -> serde_json::Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// A failure before the process ran, on the error channel.
fn failure(message: &str) -> serde_json::Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500})
}

fn framed(channel: u8, data: &[u8]) -> Message {
    let mut m = Vec::with_capacity(data.len() + 1);
    m.push(channel);
    m.extend_from_slice(data);
    Message::binary(m)
}

/// Copies a stream into channel `channel` until it ends (EIO of a closed terminal counts as the end).
async fn pump(mut from: impl AsyncRead + Unpin, channel: u8, to: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.send(framed(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Runs the session on an upgraded connection: the process, its streams, its exit status.
pub async fn session(
    upgraded: Upgraded,
    v5: bool,
    runc: berth_runtime::runc::Runc,
    instance: berth_runtime::container::Instance,
    options: ExecOptions,
) {
    let ws = WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Server,
        None,
    )
    .await;
    let (mut sink, mut incoming) = ws.split();
    // kubectl sends the terminal's size first thing: start the process with it rather than resize a
    // moment later (a shell would draw its first prompt at 80x24).
    let mut early = None;
    let mut size = None;
    if options.tty
        && let Ok(Some(Ok(Message::Binary(d)))) = tokio::time::timeout(FIRST_RESIZE, incoming.next()).await
    {
        match d.first() {
            Some(&RESIZE) => size = terminal_size(&d[1..]),
            _ => early = Some(d),
        }
    }
    let spawned = exec::spawn(
        &runc,
        &instance,
        &options.command,
        options.tty,
        options.stdin,
        size,
    );
    let mut process = match spawned {
        Ok(p) => p,
        Err(e) => {
            let _ = sink
                .send(framed(ERROR, failure(&e.to_string()).to_string().as_bytes()))
                .await;
            close(&mut sink).await;
            return;
        }
    };
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(16);
    let mut pumps = Vec::new();
    // Where input goes, and the terminal to resize.
    let (mut input, control): (Option<Box<dyn tokio::io::AsyncWrite + Unpin + Send>>, _) =
        match process.streams.take() {
            None => (None, None),
            Some(ExecStreams::Pipes {
                stdin,
                stdout,
                stderr,
            }) => {
                if options.stdout {
                    pumps.push(tokio::spawn(pump(stdout, STDOUT, out_tx.clone())));
                }
                if options.stderr {
                    pumps.push(tokio::spawn(pump(stderr, STDERR, out_tx.clone())));
                }
                (stdin.map(|s| Box::new(s) as Box<_>), None)
            }
            Some(ExecStreams::Terminal {
                input,
                output,
                control,
            }) => {
                pumps.push(tokio::spawn(pump(output, STDOUT, out_tx.clone())));
                let input = options.stdin.then(|| Box::new(input) as Box<_>);
                (input, Some(control))
            }
        };
    drop(out_tx);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        sink
    });
    // Input and resizes until the process ends or the client leaves.
    let exit = loop {
        let message = match early.take() {
            Some(d) => Some(Ok(Message::Binary(d))),
            None => tokio::select! {
                status = process.child.wait() => break status.ok().and_then(|s| s.code()),
                message = incoming.next() => message,
            },
        };
        let data = match message {
            Some(Ok(Message::Binary(d))) => d,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                debug!(container = %instance.id, "exec client left: ending the process");
                process.kill().await;
                break None;
            }
            Some(Ok(_)) => continue,
        };
        match data.split_first().map(|(c, rest)| (*c, rest)) {
            Some((STDIN, bytes)) => {
                if let Some(w) = input.as_mut()
                    && (w.write_all(bytes).await.is_err() || w.flush().await.is_err())
                {
                    input = None;
                }
            }
            Some((RESIZE, size)) => {
                if let (Some(c), Some((columns, rows))) = (&control, terminal_size(size)) {
                    let _ = exec::resize(c, columns, rows);
                }
            }
            Some((CLOSE, [STDIN, ..])) if v5 => {
                if let Some(mut w) = input.take() {
                    let _ = w.shutdown().await;
                }
            }
            _ => {}
        }
    };
    drop(input);
    drop(control);
    for p in pumps {
        let _ = tokio::time::timeout(DRAIN, p).await;
    }
    let Ok(mut sink) = writer.await else {
        return;
    };
    if let Some(code) = exit {
        let status = exit_status(code, &options.command);
        let _ = sink.send(framed(ERROR, status.to_string().as_bytes())).await;
    }
    close(&mut sink).await;
}

/// A normal closure (1000): kubectl reads a close without a code as an error.
async fn close<S>(sink: &mut S)
where
    S: futures::Sink<Message> + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_as_kubectl_sends_them() {
        let o = ExecOptions::parse(
            "command=sh&command=-c&command=echo+hi%3B+exit+3&stdin=true&stdout=true&stderr=true&tty=false",
        )
        .expect("valid");
        assert_eq!(o.command, ["sh", "-c", "echo hi; exit 3"]);
        assert!(o.stdin && o.stdout && o.stderr && !o.tty);
        let t = ExecOptions::parse("command=sh&stdin=1&stdout=1&stderr=1&tty=1").expect("valid");
        assert!(t.tty && !t.stderr, "a terminal has no separate stderr");
        assert!(ExecOptions::parse("stdout=true").is_err());
        assert!(ExecOptions::parse("command=ls").is_err());
    }

    #[test]
    fn exit_codes_become_kubectl_statuses() {
        assert_eq!(exit_status(0, &[])["status"], "Success");
        let s = exit_status(3, &["sh".into(), "-c".into(), "exit 3".into()]);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
    }
}
