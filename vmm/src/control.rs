//! The control API: HTTP/1.1 with JSON on the `--api-socket` unix socket.
//! Routes and bodies are documented in `kiln_api::control`.
//!
//! How a request travels: the control loop (`controller.rs`) accepts a
//! connection and calls [`serve_connection`], which reads one request
//! (bounded in size and time), parses it with `httparse`, turns it into a
//! [`Command`] with [`route_request`], asks the [`ControlTarget`] to carry it out,
//! and writes the answer. One request per connection (`Connection: close`),
//! which is all `kilnd` and `curl --unix-socket` need.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use kiln_api::control::{ErrorBody, ScreenInfo, VmInfo};

/// Longest request head we read.
const MAX_HEAD: usize = 8192;
/// Longest body we accept (only `PUT /v1/vm/net/{index}` takes one).
const MAX_BODY: usize = 4096;

/// A control request, parsed: kiln-api's typed protocol, which `kilnd`
/// builds its requests from too.
pub use kiln_api::control::Request as Command;

/// An answer: status and optional JSON body, or a PNG.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Option<String>,
    /// A PNG body (`image/png`) instead of JSON.
    pub png: Option<Vec<u8>>,
}

impl Reply {
    pub fn no_content() -> Self {
        Reply {
            status: 204,
            body: None,
            png: None,
        }
    }

    pub fn json<T: serde::Serialize>(status: u16, value: &T) -> Self {
        Reply {
            status,
            body: Some(serde_json::to_string(value).expect("API types serialize")),
            png: None,
        }
    }

    pub fn png(data: Vec<u8>) -> Self {
        Reply {
            status: 200,
            body: None,
            png: Some(data),
        }
    }

    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Reply::json(
            status,
            &ErrorBody {
                error: message.into(),
            },
        )
    }
}

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActError {
    /// Not in this state (409).
    #[error("{0}")]
    Conflict(String),
    /// The command names something that does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request's body names something that cannot be (400).
    #[error("{0}")]
    BadRequest(String),
    /// The VMM failed at it (500).
    #[error("{0}")]
    Internal(String),
}

impl ActError {
    pub fn status(&self) -> u16 {
        match self {
            ActError::Conflict(_) => 409,
            ActError::NotFound(_) => 404,
            ActError::BadRequest(_) => 400,
            ActError::Internal(_) => 500,
        }
    }
}

impl From<String> for ActError {
    fn from(s: String) -> Self {
        ActError::Conflict(s)
    }
}

impl From<&str> for ActError {
    fn from(s: &str) -> Self {
        ActError::Conflict(s.to_string())
    }
}

/// What the control API acts on: the running VM.
pub trait ControlTarget {
    fn info(&self) -> VmInfo;
    /// Carry out a state change.
    fn act(&mut self, cmd: Command) -> Result<(), ActError>;
    /// The display's picture as a PNG.
    fn screenshot(&self) -> Result<Vec<u8>, ActError>;
    /// What the display shows.
    fn screen(&self) -> Result<ScreenInfo, ActError>;
}

/// Map a request with its body to a command ([`Command::parse`]), or the
/// error reply.
pub fn route_request(method: &str, path: &str, body: &[u8]) -> Result<Command, Reply> {
    Command::parse(method, path, body).map_err(|r| Reply::error(r.status, r.message))
}

/// A request head's method, path and announced body length.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub content_length: usize,
    /// Bytes after the head already read (start of the body).
    pub head_len: usize,
}

/// Parse a request head from `buf`; `Ok(None)` means more bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<RequestHead>, Reply> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let status = req
        .parse(buf)
        .map_err(|e| Reply::error(400, format!("malformed HTTP request: {e}")))?;
    let head_len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let mut content_length = 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            content_length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| Reply::error(400, "Content-Length is not a number"))?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Reply::error(
                411,
                "chunked bodies are not accepted; send Content-Length",
            ));
        }
    }
    if content_length > MAX_BODY {
        return Err(Reply::error(
            413,
            format!("body of {content_length} bytes is larger than {MAX_BODY}"),
        ));
    }
    Ok(Some(RequestHead {
        method: req.method.unwrap_or_default().to_string(),
        path: req.path.unwrap_or_default().to_string(),
        content_length,
        head_len,
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

pub fn write_reply(out: &mut impl Write, reply: &Reply) -> io::Result<()> {
    let body = match (&reply.png, &reply.body) {
        (Some(png), _) => png.as_slice(),
        (None, Some(json)) => json.as_bytes(),
        (None, None) => &[],
    };
    let mut msg = format!(
        "HTTP/1.1 {} {}\r\nConnection: close\r\n",
        reply.status,
        reason(reply.status)
    );
    if reply.png.is_some() {
        msg.push_str("Content-Type: image/png\r\n");
    } else if reply.body.is_some() {
        msg.push_str("Content-Type: application/json\r\n");
    }
    msg.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    out.write_all(msg.as_bytes())?;
    out.write_all(body)
}

/// Read one request: its head and its (bounded) body.
fn read_request(stream: &mut UnixStream) -> Result<(RequestHead, Vec<u8>), Reply> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .map_err(|e| Reply::error(400, format!("reading the request failed: {e}")))?;
        if n == 0 {
            return Err(Reply::error(
                400,
                "connection closed before a complete request",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head) = parse_head(&buf)? {
            // The body: at most MAX_BODY bytes (parse_head checked).
            let mut body = buf.split_off(head.head_len);
            while body.len() < head.content_length {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                }
            }
            body.truncate(head.content_length);
            return Ok((head, body));
        }
        if buf.len() > MAX_HEAD {
            return Err(Reply::error(431, "request head too large"));
        }
    }
}

/// Serve one request on `stream`. Returns the command carried out, if any,
/// so the caller can act after the answer went out (reset, kill).
pub fn serve_connection(mut stream: UnixStream, target: &mut dyn ControlTarget) -> Option<Command> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let (reply, done) = match read_request(&mut stream)
        .and_then(|(h, body)| route_request(&h.method, &h.path, &body))
    {
        Err(reply) => (reply, None),
        Ok(Command::Info) => (Reply::json(200, &target.info()), None),
        Ok(Command::Screenshot) => match target.screenshot() {
            Ok(png) => (Reply::png(png), None),
            Err(e) => (Reply::error(e.status(), e.to_string()), None),
        },
        Ok(Command::Screen) => match target.screen() {
            Ok(s) => (Reply::json(200, &s), None),
            Err(e) => (Reply::error(e.status(), e.to_string()), None),
        },
        Ok(cmd) => match target.act(cmd.clone()) {
            Ok(()) => (Reply::no_content(), Some(cmd)),
            Err(msg) => (Reply::error(msg.status(), msg.to_string()), None),
        },
    };
    let _ = write_reply(&mut stream, &reply);
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::control::LinkState;

    fn route(method: &str, path: &str) -> Result<Command, Reply> {
        route_request(method, path, b"")
    }

    #[test]
    fn routes_methods_and_paths() {
        assert_eq!(route("GET", "/v1/vm"), Ok(Command::Info));
        assert_eq!(route("GET", "/v1/vm/?x=1"), Ok(Command::Info));
        assert_eq!(route("PUT", "/v1/vm/pause"), Ok(Command::Pause));
        assert_eq!(
            route("POST", "/v1/vm/power-button"),
            Ok(Command::PowerButton)
        );
        assert_eq!(route("PUT", "/v1/vm/kill"), Ok(Command::Kill));
        assert_eq!(route("DELETE", "/v1/vm").unwrap_err().status, 405);
        assert_eq!(route("GET", "/v1/vm/pause").unwrap_err().status, 405);
        let e = route("GET", "/v1/nothing").unwrap_err();
        assert_eq!(e.status, 404);
        assert!(e.body.unwrap().contains("/v1/nothing"));
    }

    #[test]
    fn routes_nic_link_changes_with_their_body() {
        assert_eq!(
            route_request("PUT", "/v1/vm/net/1", br#"{"link":"down"}"#),
            Ok(Command::NetLink {
                index: 1,
                link: LinkState::Down
            })
        );
        assert_eq!(
            route_request("PUT", "/v1/vm/net/0/", br#"{"link":"up"}"#),
            Ok(Command::NetLink {
                index: 0,
                link: LinkState::Up
            })
        );
        assert_eq!(
            route_request("PUT", "/v1/vm/pause", b""),
            Ok(Command::Pause)
        );
        for (method, path, body, status) in [
            ("GET", "/v1/vm/net/0", &br#"{"link":"up"}"#[..], 405),
            ("PUT", "/v1/vm/net/x", br#"{"link":"up"}"#, 404),
            ("PUT", "/v1/vm/net/0", br#"{"link":"sideways"}"#, 400),
            ("PUT", "/v1/vm/net/0", br#"{"link":"up","mtu":9000}"#, 400),
            ("PUT", "/v1/vm/net/0", b"", 400),
            ("PUT", "/v1/vm/net/0", b"\xff\xfe", 400),
        ] {
            let e = route_request(method, path, body).unwrap_err();
            assert_eq!(e.status, status, "{method} {path}");
        }
    }

    #[test]
    fn parses_heads_and_refuses_bad_ones() {
        assert_eq!(parse_head(b"GET /v1/vm HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        let h = parse_head(b"PUT /v1/vm/pause HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.method.as_str(), h.path.as_str(), h.content_length),
            ("PUT", "/v1/vm/pause", 2)
        );
        assert_eq!(h.head_len, 48);
        assert_eq!(
            parse_head(b"\x01\x02 garbage\r\n\r\n").unwrap_err().status,
            400
        );
        assert_eq!(
            parse_head(b"PUT / HTTP/1.1\r\nContent-Length: x\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            parse_head(b"PUT / HTTP/1.1\r\nContent-Length: 99999\r\n\r\n")
                .unwrap_err()
                .status,
            413
        );
        assert_eq!(
            parse_head(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap_err()
                .status,
            411
        );
    }

    #[test]
    fn replies_are_well_formed_http() {
        let mut out = Vec::new();
        write_reply(&mut out, &Reply::error(409, "not paused")).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 409 Conflict\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
        let parsed: ErrorBody = serde_json::from_str(body).unwrap();
        assert_eq!(parsed.error, "not paused");
    }
}
