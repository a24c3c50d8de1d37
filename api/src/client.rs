//! Kiln's one HTTP client: blocking HTTP/1.1 over a unix socket, std only,
//! one request per connection (`Connection: close`), JSON bodies.
//!
//! - against `kilnd`'s REST API: the `kiln` CLI, kilnd's tests and
//!   `kilnd_bench` ([`request`], [`request_json`], [`upload`] streaming a
//!   file, [`attach_console`]);
//! - against a `kiln-vmm`'s control socket: kilnd's supervisor (from
//!   `spawn_blocking`), the end-to-end tests and `boot_bench` ([`control`],
//!   with a typed [`Request`]).
//!
//! Head and body go out in one write; an answer that came counts even if
//! the write failed or the read ended in a reset (see [`request`]).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::control::Request;

/// Answers larger than this are refused (a console log is the largest).
const MAX_RESPONSE: usize = 64 << 20;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot connect to {0}")]
    Connect(String, #[source] std::io::Error),
    #[error("i/o error on the socket")]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP answer: {0}")]
    Malformed(&'static str),
    #[error("HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("unexpected answer body")]
    Json(#[from] serde_json::Error),
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as `T` if the status is 2xx, else the error message.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        self.ok()?;
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// An error for a non-2xx status, with the `error` of its body.
    pub fn ok(&self) -> Result<(), ClientError> {
        if (200..300).contains(&self.status) {
            return Ok(());
        }
        let message = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        Err(ClientError::Status {
            status: self.status,
            message,
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request with an optional JSON (or raw) body.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let mut s = UnixStream::connect(socket)
        .map_err(|e| ClientError::Connect(socket.display().to_string(), e))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let body = body.unwrap_or(&[]);
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    // Head and body go out in one write, and a failed write still reads
    // the answer: a server may answer (404, 413) and close before it has
    // read the body, and then the write fails with EPIPE although the
    // answer is waiting in the socket.
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    let wrote = s.write_all(&out);
    answer(s, wrote)
}

/// Sends one control request to the kiln-vmm listening on `socket`.
pub fn control(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let body = req.body();
    request(socket, req.method(), &req.path(), body.as_deref(), timeout)
}

/// `POST /v1/vm/keys` on the VMM's control socket, waiting as long as the
/// typing takes (and `slack` more).
pub fn send_keys(
    socket: &Path,
    keys: &crate::control::KeysRequest,
    slack: Duration,
) -> Result<Response, ClientError> {
    let req = Request::Keys(keys.clone());
    control(socket, &req, keys.duration() + slack)
}

/// `PUT`s the contents of `file` to `path` as an `application/octet-stream`
/// body, streamed in 1 MiB pieces; `progress(sent, total)` is called after
/// each. If the server answers early (an error such as 413) the answer is
/// still read.
pub fn upload(
    socket: &Path,
    path: &str,
    file: &Path,
    timeout: Duration,
    mut progress: impl FnMut(u64, u64),
) -> Result<Response, ClientError> {
    let mut input = std::fs::File::open(file)?;
    let total = input.metadata()?.len();
    let mut s = UnixStream::connect(socket)
        .map_err(|e| ClientError::Connect(socket.display().to_string(), e))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n"
    );
    let mut sent = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let wrote = (|| -> std::io::Result<()> {
        s.write_all(head.as_bytes())?;
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            s.write_all(&buf[..n])?;
            sent += n as u64;
            progress(sent, total);
        }
    })();
    answer(s, wrote)
}

/// Reads the answer to a request whose sending ended with `wrote`. A server
/// may answer (404, 413) and close before it has read the whole body: the
/// write then failed (EPIPE) or the read ends in a reset, although the
/// answer came, so an error counts only when no answer did.
fn answer(s: UnixStream, wrote: std::io::Result<()>) -> Result<Response, ClientError> {
    let mut raw = Vec::new();
    let read = s.take(MAX_RESPONSE as u64 + 1).read_to_end(&mut raw);
    if raw.is_empty() {
        wrote?;
        read?;
    } else if let Err(e) = read {
        if e.kind() != std::io::ErrorKind::ConnectionReset {
            return Err(e.into());
        }
    }
    if raw.len() > MAX_RESPONSE {
        return Err(ClientError::Malformed("answer too large"));
    }
    parse_response(&raw)
}

/// `request` with a JSON value as the body.
pub fn request_json(
    socket: &Path,
    method: &str,
    path: &str,
    body: &impl serde::Serialize,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let b = serde_json::to_vec(body)?;
    request(socket, method, path, Some(&b), timeout)
}

/// Attaches to a server's interactive console (`GET
/// /v1/servers/{id}/console/attach` with an HTTP upgrade); the stream then
/// carries the console's raw bytes both ways.
pub fn attach_console(socket: &Path, id: &str) -> Result<UnixStream, ClientError> {
    let mut s = UnixStream::connect(socket)
        .map_err(|e| ClientError::Connect(socket.display().to_string(), e))?;
    write!(
        s,
        "GET /v1/servers/{id}/console/attach HTTP/1.1\r\nHost: localhost\r\n\
         Connection: Upgrade\r\nUpgrade: kiln-console\r\n\r\n"
    )?;
    // Read the head byte by byte: what follows it is console output.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 << 10 {
            return Err(ClientError::Malformed("answer head too large"));
        }
        if s.read(&mut byte)? == 0 {
            return Err(ClientError::Malformed(
                "connection closed before the answer",
            ));
        }
        head.push(byte[0]);
    }
    let status = head.split(|b| *b == b' ').nth(1);
    if status == Some(b"101") {
        return Ok(s);
    }
    // An error: its body follows (the connection stays open: read only
    // content-length bytes).
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0)
        .min(1 << 20);
    let mut rest = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    (&mut s).take(len).read_to_end(&mut rest)?;
    head.extend_from_slice(&rest);
    let r = parse_response(&head)?;
    r.ok()?;
    Err(ClientError::Malformed("expected 101 Switching Protocols"))
}

fn parse_response(raw: &[u8]) -> Result<Response, ClientError> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(ClientError::Malformed("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end])
        .map_err(|_| ClientError::Malformed("headers not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines
        .next()
        .ok_or(ClientError::Malformed("no status line"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(ClientError::Malformed("bad status line"))?;
    let mut chunked = false;
    let mut length = None;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k.eq_ignore_ascii_case("content-length") {
            length = Some(
                v.parse::<usize>()
                    .map_err(|_| ClientError::Malformed("bad content-length"))?,
            );
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or(ClientError::Malformed("body shorter than content-length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(ClientError::Malformed("bad chunk header"))?;
        let size_str = std::str::from_utf8(&rest[..eol])
            .map_err(|_| ClientError::Malformed("bad chunk size"))?;
        let size_str = size_str.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_str, 16)
            .map_err(|_| ClientError::Malformed("bad chunk size"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest
            .get(..size)
            .ok_or(ClientError::Malformed("truncated chunk"))?;
        out.extend_from_slice(chunk);
        rest = rest
            .get(size + 2..)
            .ok_or(ClientError::Malformed("truncated chunk"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_chunked_bodies() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        let r = parse_response(b"HTTP/1.1 404 NF\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
        assert!(parse_response(b"garbage").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }

    #[test]
    fn error_message_comes_from_the_body() {
        let r = Response {
            status: 409,
            body: br#"{"error":"no room"}"#.to_vec(),
        };
        assert_eq!(r.ok().unwrap_err().to_string(), "HTTP 409: no room");
    }

    /// A server that answers after the head and closes without reading the
    /// body: the client's write fails (EPIPE or reset) but the answer is
    /// still returned.
    #[test]
    fn an_early_answer_is_read_although_the_body_write_fails() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                c.read_exact(&mut b).unwrap();
                head.push(b[0]);
            }
            c.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 16\r\n\r\n{\"error\":\"gone\"}",
            )
            .unwrap();
        });
        let body = vec![b'x'; 8 << 20];
        let r = request(&sock, "PUT", "/x", Some(&body), Duration::from_secs(10)).unwrap();
        server.join().unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.ok().unwrap_err().to_string(), "HTTP 404: gone");
    }
}
