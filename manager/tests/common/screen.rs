//! Helpers of the display tests: raw GETs on kilnd's socket (a PNG is no
//! JSON) and the display probe's VBE pattern (images/mbr/vga.s).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use kiln_tests::screen::Shot;

use super::Kilnd;

/// `GET path` on kilnd's socket: (status, content type, body).
pub fn get_raw(k: &Kilnd, path: &str) -> (u16, String, Vec<u8>) {
    get_on(UnixStream::connect(&k.socket).unwrap(), path)
}

/// `GET path` on an open connection (unix or TCP), no headers but Host:
/// (status, content type, body).
pub fn get_on(mut s: impl Read + Write, path: &str) -> (u16, String, Vec<u8>) {
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").expect("head");
    let head = String::from_utf8_lossy(&all[..end]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_string();
    (status, ctype, all[end + 4..].to_vec())
}

/// The probe's 1024x768 pattern (see images/mbr/vga.s).
pub fn assert_pattern(shot: &Shot) {
    assert_eq!((shot.width, shot.height), (1024, 768));
    for (x, y) in [(0, 0), (255, 0), (0, 255), (17, 200), (255, 255)] {
        assert_eq!(shot.pixel(x, y), [x as u8, y as u8, 0x80], "({x}, {y})");
    }
    for (x, y) in [(0, 400), (1023, 409)] {
        assert_eq!(shot.pixel(x, y), [0xff, 0, 0], "({x}, {y})");
    }
    for (x, y) in [(256, 0), (1023, 767), (600, 399)] {
        assert_eq!(shot.pixel(x, y), [0, 0, 0], "({x}, {y})");
    }
}
