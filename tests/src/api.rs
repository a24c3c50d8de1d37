//! A minimal HTTP/1.1 client for the VMM control socket: one request per
//! connection, `Connection: close`, body read to EOF (or Content-Length).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the VM has no api socket")]
    NoSocket,
    #[error("control socket i/o")]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP answer: {0:?}")]
    Malformed(String),
    #[error("HTTP {0}: {1}")]
    Status(u16, String),
    #[error("bad JSON ({0}): {1}")]
    Json(String, String),
}

/// Longest answer we read.
const MAX_ANSWER: u64 = 1 << 20;

/// Send `method path` to the socket; returns (status, body).
pub fn request(sock: &Path, method: &str, path: &str) -> Result<(u16, String), ApiError> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    parse_answer(&text)
}

/// Split an HTTP answer into status and body.
pub fn parse_answer(text: &str) -> Result<(u16, String), ApiError> {
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| ApiError::Malformed(text.to_string()))?;
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(ApiError::Malformed(status_line.to_string()));
    }
    let status = parts
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| ApiError::Malformed(status_line.to_string()))?;
    let length = head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    let body = match length {
        Some(n) if n <= body.len() => body[..n].to_string(),
        Some(_) => return Err(ApiError::Malformed(format!("short body: {text}"))),
        None => body.to_string(),
    };
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let (s, b) =
            parse_answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}trailing").unwrap();
        assert_eq!((s, b.as_str()), (200, "{}"));
        let (s, b) = parse_answer("HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!((s, b.as_str()), (204, ""));
        assert!(parse_answer("garbage").is_err());
        assert!(parse_answer("HTTP/1.1 abc\r\n\r\n").is_err());
        assert!(parse_answer("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
    }
}
