//! kilnd's listeners under abuse (`http/serve.rs`): thousands of idle
//! half-requests do not starve other clients on the unix socket or the TCP
//! listener, a stalled head or body is closed within its time-out, and a
//! listener full of busy connections answers 503 rather than hanging.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{percentile, Kilnd};

/// A config with a TCP listener on a free port and its token file.
fn with_tcp(dir: &std::path::Path, http: &str) -> (String, String, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token = "abuse-test-token-0123456789".to_owned();
    let file = dir.join("token");
    std::fs::write(&file, &token).unwrap();
    let addr = format!("127.0.0.1:{port}");
    let extra = format!(
        "[http]\n{http}\n[tcp]\nlisten = \"{addr}\"\ntoken_file = \"{}\"\n",
        file.display()
    );
    (extra, addr, token)
}

/// `GET path` over TCP with the bearer token: the status.
fn tcp_get(addr: &str, path: &str, token: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: kiln\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn two_thousand_idle_half_requests_do_not_starve_other_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let (extra, addr, token) = with_tcp(
        tmp.path(),
        "max_connections = 256\nmax_connections_per_peer = 256\nheader_timeout_s = 60",
    );
    let k = Kilnd::start(&extra);
    let baseline = open_fds(k.pid());
    // 2,000 half-requests on each listener, held open by this test.
    let mut held_unix = Vec::new();
    let mut held_tcp = Vec::new();
    for _ in 0..2000 {
        let mut u = UnixStream::connect(&k.socket).unwrap();
        let _ = u.write_all(b"GET /v1/ho");
        held_unix.push(u);
        let mut t = TcpStream::connect(&addr).unwrap();
        let _ = t.write_all(b"GET /v1/ho");
        held_tcp.push(t);
    }
    // Meanwhile, other clients on both listeners are answered.
    let mut unix_lat = Vec::new();
    let mut tcp_lat = Vec::new();
    for _ in 0..100 {
        let t0 = Instant::now();
        let r = k.req("GET", "/v1/host", None);
        unix_lat.push(t0.elapsed());
        assert_eq!(r.status, 200, "{}", r.text());
        let t0 = Instant::now();
        assert_eq!(tcp_get(&addr, "/v1/host", &token), 200);
        tcp_lat.push(t0.elapsed());
    }
    unix_lat.sort();
    tcp_lat.sort();
    eprintln!(
        "GET /v1/host beside 2,000 idle half-requests per listener: unix p50 {:?} p99 {:?}, \
         TCP p50 {:?} p99 {:?}",
        percentile(&unix_lat, 0.5),
        percentile(&unix_lat, 0.99),
        percentile(&tcp_lat, 0.5),
        percentile(&tcp_lat, 0.99)
    );
    // Bounded by the two caps, not by what the peers opened.
    let fds = open_fds(k.pid());
    assert!(
        fds <= baseline + 2 * 256 + 16,
        "kilnd holds {fds} descriptors (baseline {baseline})"
    );
    assert!(
        k.log().contains("connection pushed out"),
        "pushing out is logged"
    );
    drop(held_unix);
    drop(held_tcp);
}

#[test]
fn a_stalled_head_or_body_is_closed_and_a_listener_full_of_busy_connections_answers_503() {
    let k = Kilnd::start(
        "[http]\nmax_connections = 4\nmax_connections_per_peer = 8\n\
         header_timeout_s = 1\nbody_idle_timeout_s = 2\n",
    );
    // Half a head: closed after about a second.
    let mut u = UnixStream::connect(&k.socket).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    u.write_all(b"GET /v1/host HTTP/1.1\r\nHo").unwrap();
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let _ = u.read_to_end(&mut buf);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );

    // Four bodies announced and stalled: the listener is full of busy
    // connections, so a fifth is answered 503 at once.
    let body = r#"{"name":"stalled","vcpus":1,"ram_mb":64,"disk_gb":0}"#;
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut s = UnixStream::connect(&k.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "POST /v1/flavors HTTP/1.1\r\nhost: kiln\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{}",
            body.len(),
            &body[..10]
        )
        .unwrap();
        stalled.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut fifth = UnixStream::connect(&k.socket).unwrap();
    fifth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // kilnd may answer and close before the request is sent: a write error
    // is fine, the answer is what counts.
    let _ = fifth.write_all(b"GET /v1/host HTTP/1.1\r\nhost: kiln\r\n\r\n");
    let mut answer = String::new();
    let _ = fifth.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("all busy"), "{answer}");
    assert!(
        k.log().contains("connection refused"),
        "refusals are logged"
    );

    // The stalled bodies end in a 4xx that says why, and nothing is made.
    for mut s in stalled {
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 4"), "{out}");
        assert!(out.contains("paused"), "{out}");
    }
    let flavors = k.req("GET", "/v1/flavors", None).text();
    assert!(!flavors.contains("stalled"), "{flavors}");
    // And the listener serves again.
    assert_eq!(k.req("GET", "/v1/host", None).status, 200);
}
