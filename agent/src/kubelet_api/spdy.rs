//! SPDY/3.1 framing, the part `kubectl port-forward` uses: kubelet's port forwarding is
//! `portforward.k8s.io` over SPDY streams, carried on the upgraded connection by kubectl before 1.31
//! and tunnelled inside a WebSocket (`SPDY/3.1+portforward.k8s.io`) since.
//!
//! Frames (all integers big-endian): a control frame is `1 | version(15) | type(16) | flags(8) |
//! length(24) | payload`; a data frame is `0 | stream(31) | flags(8) | length(24) | data`. Header
//! blocks (`count(32) | (len(32) name len(32) value)*`) are compressed with one zlib stream per
//! direction for the whole session, primed with SPDY/3's dictionary and flushed at each block's end.
//! Flow control (WINDOW_UPDATE) is not used by Kubernetes' SPDY library and is ignored here.

use std::sync::OnceLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use thiserror::Error;

/// Why a SPDY byte stream could not be read or written.
#[derive(Debug, Error)]
pub enum SpdyError {
    /// A control frame of a version other than 3.
    #[error("SPDY version {0} is not supported (3 is)")]
    Version(u16),
    /// A frame shorter than its type requires, or a header block that does not parse.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A header block decompressing to more than [`MAX_HEADERS`].
    #[error("a header block larger than {MAX_HEADERS} bytes")]
    HeadersTooLarge,
    /// The header block's zlib stream is corrupt (or primed with another dictionary).
    #[error("header block decompression: {0}")]
    Inflate(String),
    /// Compressing a header block failed.
    #[error("header block compression: {0}")]
    Deflate(String),
}

/// The largest decompressed header block accepted (kubectl's are a few dozen bytes).
pub const MAX_HEADERS: usize = 64 * 1024;
/// A frame's length field has 24 bits.
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;

const VERSION: u16 = 3;
const FLAG_FIN: u8 = 0x01;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;

/// RST_STREAM status: the frame broke the protocol.
pub const PROTOCOL_ERROR: u32 = 1;

/// One frame, decoded. Types this side never needs (SETTINGS, WINDOW_UPDATE, CREDENTIAL) are
/// [`Frame::Other`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The peer opens a stream.
    SynStream {
        stream: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    /// The answer that makes a peer's stream usable.
    SynReply {
        stream: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    /// The stream is abandoned.
    RstStream { stream: u32, status: u32 },
    /// A liveness check: answered with the same id.
    Ping { id: u32 },
    /// The session ends.
    GoAway { last_stream: u32, status: u32 },
    /// More headers on a stream.
    Headers {
        stream: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    /// Bytes of a stream; `fin` half-closes it.
    Data { stream: u32, fin: bool, data: Vec<u8> },
    /// A control frame of this type, not used here.
    Other(u16),
}

/// SPDY/3's header compression dictionary (draft 3, section 2.6.10.1): these names, each with a
/// 32-bit length before it, then the tail as it is.
fn dictionary() -> &'static [u8] {
    const NAMES: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
        "503 Service Unavailable",
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
        "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
        "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        let mut d = Vec::new();
        for name in NAMES {
            d.extend_from_slice(&(name.len() as u32).to_be_bytes());
            d.extend_from_slice(name.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Reads frames from the bytes of one direction of a session.
pub struct Decoder {
    buf: Vec<u8>,
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            buf: Vec::new(),
            inflate: Decompress::new(true),
        }
    }
}

impl Decoder {
    /// Adds bytes as they arrive (frames may span or share chunks).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if the bytes so far hold one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SpdyError> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let length = u32::from_be_bytes([0, self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if self.buf.len() < 8 + length {
            return Ok(None);
        }
        let frame: Vec<u8> = self.buf.drain(..8 + length).collect();
        let flags = frame[4];
        let payload = &frame[8..];
        if frame[0] & 0x80 == 0 {
            return Ok(Some(Frame::Data {
                stream: u32_at(&frame, 0).unwrap_or_default() & 0x7fff_ffff,
                fin: flags & FLAG_FIN != 0,
                data: payload.to_vec(),
            }));
        }
        let version = u16::from_be_bytes([frame[0], frame[1]]) & 0x7fff;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = u16::from_be_bytes([frame[2], frame[3]]);
        let fin = flags & FLAG_FIN != 0;
        let stream = |what| {
            u32_at(payload, 0)
                .map(|s| s & 0x7fff_ffff)
                .ok_or(SpdyError::Malformed(what))
        };
        Ok(Some(match kind {
            SYN_STREAM => {
                let stream = stream("SYN_STREAM")?;
                let block = payload.get(10..).ok_or(SpdyError::Malformed("SYN_STREAM"))?;
                Frame::SynStream {
                    stream,
                    fin,
                    headers: self.headers(block)?,
                }
            }
            SYN_REPLY => {
                let stream = stream("SYN_REPLY")?;
                Frame::SynReply {
                    stream,
                    fin,
                    headers: self.headers(&payload[4..])?,
                }
            }
            HEADERS => {
                let stream = stream("HEADERS")?;
                Frame::Headers {
                    stream,
                    fin,
                    headers: self.headers(&payload[4..])?,
                }
            }
            RST_STREAM => Frame::RstStream {
                stream: stream("RST_STREAM")?,
                status: u32_at(payload, 4).ok_or(SpdyError::Malformed("RST_STREAM"))?,
            },
            PING => Frame::Ping {
                id: u32_at(payload, 0).ok_or(SpdyError::Malformed("PING"))?,
            },
            GOAWAY => Frame::GoAway {
                last_stream: stream("GOAWAY")?,
                status: u32_at(payload, 4).unwrap_or_default(),
            },
            other => Frame::Other(other),
        }))
    }

    /// Decompresses a header block (continuing the session's zlib stream) and parses it.
    fn headers(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let mut out = Vec::with_capacity(256);
        let mut at = 0;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(1024);
            }
            let (in0, out0) = (self.inflate.total_in(), out.len());
            match self
                .inflate
                .decompress_vec(&block[at..], &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| SpdyError::Inflate(e.to_string()))?;
                }
                Err(e) => return Err(SpdyError::Inflate(e.to_string())),
            }
            at += (self.inflate.total_in() - in0) as usize;
            if out.len() > MAX_HEADERS {
                return Err(SpdyError::HeadersTooLarge);
            }
            let progressed = self.inflate.total_in() != in0 || out.len() != out0;
            let room_left = out.capacity() > out.len();
            if at >= block.len() && room_left {
                break;
            }
            if !progressed && at >= block.len() {
                break;
            }
        }
        parse_block(&out)
    }
}

fn parse_block(b: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let bad = || SpdyError::Malformed("header block");
    let count = u32_at(b, 0).ok_or_else(bad)? as usize;
    let mut at = 4;
    let string = |at: &mut usize| -> Result<String, SpdyError> {
        let len = u32_at(b, *at).ok_or_else(bad)? as usize;
        let s = b.get(*at + 4..*at + 4 + len).ok_or_else(bad)?;
        *at += 4 + len;
        Ok(String::from_utf8_lossy(s).into_owned())
    };
    // Each pair takes at least 8 bytes: a count beyond that is a lie, not an allocation.
    let mut headers = Vec::with_capacity(count.min(b.len() / 8));
    for _ in 0..count {
        let name = string(&mut at)?;
        let value = string(&mut at)?;
        headers.push((name, value));
    }
    Ok(headers)
}

/// Writes frames for one direction of a session.
pub struct Encoder {
    deflate: Compress,
}

impl Encoder {
    pub fn new() -> Result<Self, SpdyError> {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(dictionary())
            .map_err(|e| SpdyError::Deflate(e.to_string()))?;
        Ok(Encoder { deflate })
    }

    /// The frame's bytes.
    pub fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>, SpdyError> {
        let control = |kind: u16, flags: u8, payload: Vec<u8>| {
            let mut f = Vec::with_capacity(8 + payload.len());
            f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            f.extend_from_slice(&kind.to_be_bytes());
            f.push(flags);
            f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
            f.extend_from_slice(&payload);
            f
        };
        let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
        Ok(match frame {
            Frame::Data { stream, fin, data } => {
                if data.len() > MAX_PAYLOAD {
                    return Err(SpdyError::Malformed("oversized data frame"));
                }
                let mut f = Vec::with_capacity(8 + data.len());
                f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                f.push(fin_flag(*fin));
                f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                f.extend_from_slice(data);
                f
            }
            Frame::SynStream { stream, fin, headers } => {
                let mut p = Vec::new();
                p.extend_from_slice(&stream.to_be_bytes());
                p.extend_from_slice(&0u32.to_be_bytes());
                p.extend_from_slice(&[0, 0]);
                p.extend(self.block(headers)?);
                control(SYN_STREAM, fin_flag(*fin), p)
            }
            Frame::SynReply { stream, fin, headers } | Frame::Headers { stream, fin, headers } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                let mut p = stream.to_be_bytes().to_vec();
                p.extend(self.block(headers)?);
                control(kind, fin_flag(*fin), p)
            }
            Frame::RstStream { stream, status } => {
                let mut p = stream.to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(RST_STREAM, 0, p)
            }
            Frame::Ping { id } => control(PING, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway { last_stream, status } => {
                let mut p = last_stream.to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(GOAWAY, 0, p)
            }
            Frame::Other(kind) => return Err(SpdyError::Deflate(format!("cannot write frame type {kind}"))),
        })
    }

    /// A header block, compressed and flushed so the peer can read it whole.
    fn block(&mut self, headers: &[(String, String)]) -> Result<Vec<u8>, SpdyError> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (name, value) in headers {
            for s in [name, value] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut at = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let in0 = self.deflate.total_in();
            let status = self
                .deflate
                .compress_vec(&raw[at..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Deflate(e.to_string()))?;
            at += (self.deflate.total_in() - in0) as usize;
            // Done when all input is in and the flush fit (output room left over).
            if at >= raw.len() && out.len() < out.capacity() && status != Status::BufError {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        // Its size and Adler-32 as zlib announces it (FDICT) in every SPDY/3 session.
        assert_eq!(d.len(), 1423);
        assert!(d.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(d.ends_with(b"utf-,*,enq=0."));
    }

    #[test]
    fn frames_round_trip_with_one_compression_stream_per_direction() {
        let mut enc = Encoder::new().expect("encoder");
        let mut dec = Decoder::default();
        let frames = vec![
            Frame::SynStream {
                stream: 1,
                fin: false,
                headers: headers(&[("streamtype", "error"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynStream {
                stream: 3,
                fin: false,
                headers: headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream: 3,
                fin: false,
                headers: vec![],
            },
            Frame::Data {
                stream: 3,
                fin: true,
                data: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            },
            Frame::Ping { id: 7 },
            Frame::RstStream {
                stream: 3,
                status: PROTOCOL_ERROR,
            },
            Frame::GoAway {
                last_stream: 3,
                status: 0,
            },
        ];
        let mut bytes = Vec::new();
        for f in &frames {
            bytes.extend(enc.encode(f).expect("encode"));
        }
        // Fed in awkward pieces, as a WebSocket or TCP may cut them.
        let mut got = Vec::new();
        for chunk in bytes.chunks(5) {
            dec.feed(chunk);
            while let Some(f) = dec.next_frame().expect("decode") {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut dec = Decoder::default();
        // SPDY/2 control frame.
        dec.feed(&[0x80, 0x02, 0, 1, 0, 0, 0, 0]);
        assert!(matches!(dec.next_frame(), Err(SpdyError::Version(2))));
        // A SYN_STREAM too short for its fields, and one whose block is not zlib.
        let mut dec = Decoder::default();
        dec.feed(&[0x80, 0x03, 0, 1, 0, 0, 0, 2, 0, 1]);
        assert!(dec.next_frame().is_err());
        let mut dec = Decoder::default();
        dec.feed(&[
            0x80, 0x03, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4,
        ]);
        assert!(dec.next_frame().is_err());
        // A header count that the block cannot hold.
        assert!(parse_block(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
