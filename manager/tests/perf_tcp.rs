//! Measurements of the API with a real kilnd: list latency with 1,000
//! records and create throughput; and the optional TCP listener.

mod common;

use std::time::Duration;

use common::api::*;
use common::{percentile, Kilnd};
use kiln_api::compute::ServerList;

/// `GET /v1/servers` with 1,000 records: p50/p99 (printed; the bound
/// asserted is loose because debug builds are slow; the goal, 5 ms
/// p99, is for release builds: `cargo test --release`).
#[test]
fn list_latency_with_1000_servers() {
    let k = std::sync::Arc::new(Kilnd::start(&small_host(1000, 1.0, 1_000_000, 100_000)));
    kernel_image(&k, "kern");
    let t0 = std::time::Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let k = k.clone();
            std::thread::spawn(move || {
                for i in 0..250 {
                    assert_eq!(
                        create(&k, &format!("s{t}-{i}"), "k1.probe", "kern").status,
                        202
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "1000 creates accepted in {secs:.2} s: {:.0} creates/s",
        1000.0 / secs
    );
    let mut lat = Vec::new();
    for _ in 0..200 {
        let t = std::time::Instant::now();
        let r = k.req("GET", "/v1/servers", None);
        lat.push(t.elapsed());
        assert_eq!(r.status, 200);
    }
    let l: ServerList = k.req("GET", "/v1/servers", None).json().unwrap();
    assert_eq!(l.servers.len(), 1000);
    lat.sort();
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    eprintln!("GET /v1/servers with 1000 records: p50 {p50:?}, p99 {p99:?}");
    let limit = if cfg!(debug_assertions) { 1000 } else { 25 };
    assert!(p99 < Duration::from_millis(limit), "p99 {p99:?}");
}

/// Plain HTTP over TCP: (status, body).
fn tcp_get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    (status, out.split_once("\r\n\r\n").unwrap().1.to_owned())
}

/// The optional TCP listener requires the bearer token. Runs in a network
/// namespace of its own (made for this thread with unshare), so the
/// traffic stays on that namespace's loopback.
#[test]
fn tcp_listener_needs_the_token() {
    std::thread::spawn(|| {
        // SAFETY: unshare on this thread only (CLONE_NEWNET is per thread).
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare: {}", std::io::Error::last_os_error());
        let st = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(st.success());
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        let token = "s3cret-token-0123456789";
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        let addr = "127.0.0.1:18774";
        let k = Kilnd::start(&format!(
            "[tcp]\nlisten = \"{addr}\"\ntoken_file = \"{}\"\n{NO_VMM}",
            token_file.display()
        ));
        let (status, body) = tcp_get(addr, "/v1/flavors", None);
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("Bearer"), "{body}");
        assert_eq!(
            tcp_get(addr, "/v1/flavors", Some("s3cret-token-0123456780")).0,
            401
        );
        let (status, body) = tcp_get(addr, "/v1/flavors", Some(token));
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("m1.tiny"));
        // The unix socket needs no token.
        assert_eq!(k.req("GET", "/v1/flavors", None).status, 200);
        drop(k);

        // No token file, or a short token: kilnd refuses to start.
        std::fs::write(&token_file, "short\n").unwrap();
        let cfg = dir.path().join("bad.toml");
        std::fs::write(
            &cfg,
            format!(
                "[tcp]\nlisten = \"{addr}\"\ntoken_file = \"{}\"\n",
                token_file.display()
            ),
        )
        .unwrap();
        let out = std::process::Command::new(common::kilnd_bin())
            .arg("--config")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(dir.path().join("s"))
            .arg("--socket")
            .arg(dir.path().join("k.sock"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("shorter than 16"), "{err}");
    })
    .join()
    .unwrap();
}
