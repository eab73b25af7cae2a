//! `grpc` probes: the gRPC health checking protocol (`grpc.health.v1.Health/Check`) over HTTP/2
//! without TLS, as kubelet speaks it. The request is one length-prefixed protobuf message
//! (`HealthCheckRequest { string service = 1 }`), the answer `HealthCheckResponse { ServingStatus
//! status = 1 }`, where 1 is SERVING; the call's own status comes in the `grpc-status` trailer (or
//! header, for an answer without a body).

use std::{net::SocketAddr, time::Duration};

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The serving statuses' names, as kubelet quotes them in its messages.
fn status_name(status: u64) -> &'static str {
    match status {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNRECOGNIZED",
    }
}

/// The request body: the gRPC frame (uncompressed flag, length) around the protobuf message.
pub fn request_body(service: &str) -> Vec<u8> {
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        push_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The serving status in a response body (an absent field is 0, UNKNOWN, as protobuf defaults it).
pub fn response_status(body: &[u8]) -> Result<u64, String> {
    let len = body
        .get(1..5)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .ok_or("a health check answer without a message")?;
    if body[0] != 0 {
        return Err("a compressed health check answer".into());
    }
    let message = body.get(5..5 + len).ok_or("a truncated health check answer")?;
    let mut at = 0;
    let mut status = 0;
    while at < message.len() {
        let key = read_varint(message, &mut at).ok_or("a malformed health check answer")?;
        match key & 7 {
            0 => {
                let v = read_varint(message, &mut at).ok_or("a malformed health check answer")?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let n = read_varint(message, &mut at).ok_or("a malformed health check answer")? as usize;
                at += n;
            }
            _ => return Err("a malformed health check answer".into()),
        }
    }
    Ok(status)
}

/// One health check of `service` at `addr`; Ok when the answer is SERVING.
pub async fn check(addr: SocketAddr, service: &str, timeout: Duration) -> Result<(), String> {
    let call = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("failed to connect service {addr:?}: {e}"))?;
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .map_err(|e| format!("failed to connect service {addr:?}: {e}"))?;
        tokio::spawn(conn);
        let req = Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from(request_body(service))))
            .map_err(|e| e.to_string())?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("health rpc failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("health rpc failed: HTTP {}", resp.status()));
        }
        let headers = resp.headers().clone();
        let collected = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("health rpc failed: {e}"))?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let grpc = |name: &str| {
            trailers
                .get(name)
                .or_else(|| headers.get(name))
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let code = grpc("grpc-status");
        if code != "0" {
            return Err(format!(
                "health rpc failed: rpc error: code = {code} desc = {}",
                grpc("grpc-message")
            ));
        }
        match response_status(&collected.to_bytes())? {
            1 => Ok(()),
            s => Err(format!("service unhealthy (responded with {:?})", status_name(s))),
        }
    };
    tokio::time::timeout(timeout, call).await.map_err(|_| {
        format!(
            "timeout: health rpc did not complete within {}s",
            timeout.as_secs()
        )
    })?
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };

    use http_body_util::combinators::UnsyncBoxBody;
    use hyper::{Response, body::Incoming, service::service_fn};

    use super::*;

    #[test]
    fn messages_encode_and_decode_as_protobuf() {
        assert_eq!(request_body(""), vec![0, 0, 0, 0, 0]);
        assert_eq!(request_body("db"), vec![0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']);
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 1]), Ok(1));
        assert_eq!(response_status(&[0, 0, 0, 0, 0]), Ok(0));
        assert!(response_status(&[0, 0, 0, 0, 9, 0x08]).is_err());
        assert!(response_status(&[]).is_err());
    }

    /// A real HTTP/2 gRPC health server on loopback, answering with `status` for service "ok-svc".
    async fn server(status: Arc<AtomicU64>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let status = Arc::clone(&status);
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let status = status.load(Ordering::Relaxed);
                        async move {
                            let body = req.into_body().collect().await?.to_bytes();
                            let mut resp = vec![0, 0, 0, 0, 2, 0x08, status as u8];
                            let mut grpc_status = "0";
                            if body.as_ref() != request_body("ok-svc").as_slice() {
                                resp.clear();
                                grpc_status = "5"; // NOT_FOUND
                            }
                            let mut trailers = hyper::HeaderMap::new();
                            trailers.insert("grpc-status", grpc_status.parse().expect("value"));
                            let body = Full::new(Bytes::from(resp))
                                .map_err(|never| match never {})
                                .with_trailers(async move { Some(Ok(trailers)) });
                            Ok::<_, hyper::Error>(
                                Response::builder()
                                    .header("content-type", "application/grpc")
                                    .body(UnsyncBoxBody::new(body))
                                    .expect("response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn serving_passes_anything_else_fails_with_kubelets_words() {
        let status = Arc::new(AtomicU64::new(1));
        let addr = server(Arc::clone(&status)).await;
        let t = Duration::from_secs(2);
        assert_eq!(check(addr, "ok-svc", t).await, Ok(()));
        status.store(2, Ordering::Relaxed);
        let e = check(addr, "ok-svc", t).await.expect_err("not serving");
        assert!(e.contains("NOT_SERVING"), "{e}");
        let e = check(addr, "other", t).await.expect_err("unknown service");
        assert!(e.contains("code = 5"), "{e}");
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let nobody = closed.local_addr().expect("addr");
        drop(closed);
        assert!(check(nobody, "", t).await.is_err());
    }
}
