//! The client against fake agents on real unix sockets: one that answers
//! after noise (stale answers, a wrong sync id), and hostile ones that
//! stall, send garbage, a never-ending line or floods, or close
//! mid-answer. Each call ends with an error within its time-out, and a
//! stalled guest never delays another server's call. (The real qemu-ga is
//! in `manager/tests/agent.rs`.)

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use super::*;

#[derive(Clone, Copy, PartialEq)]
enum Fake {
    /// Stale bytes and a wrong sync answer first, then the protocol.
    Good,
    /// Reads, never answers.
    Stall,
    /// Syncs, then answers every command with non-JSON.
    Garbage,
    /// Syncs, then sends one line that never ends.
    Endless,
    /// Sends bytes without a sentinel forever (no sync answer).
    Flood,
    /// Syncs, then half an answer and a close.
    HalfThenClose,
}

/// A fake agent on a socket in a new temp dir, serving every connection.
fn fake(kind: Fake) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve(conn, kind));
        }
    });
    (dir, path)
}

async fn serve(conn: tokio::net::UnixStream, kind: Fake) {
    let (r, mut w) = conn.into_split();
    let mut lines = BufReader::new(r).split(b'\n');
    while let Ok(Some(line)) = lines.next_segment().await {
        // The client's leading sentinel is not JSON.
        let text: Vec<u8> = line.into_iter().filter(|&b| b != 0xFF).collect();
        let Ok(req) = serde_json::from_slice::<Value>(&text) else {
            continue;
        };
        let cmd = req["execute"].as_str().unwrap_or("").to_owned();
        let out: Vec<u8> = match (kind, cmd.as_str()) {
            (Fake::Stall, _) => continue,
            (Fake::Flood, _) => loop {
                if w.write_all(&[b'x'; 4096]).await.is_err() {
                    return;
                }
            },
            (_, "guest-sync-delimited") => {
                let id = req["arguments"]["id"].as_u64().unwrap();
                let mut out = Vec::new();
                if kind == Fake::Good {
                    // An answer meant for an earlier client, and a stale
                    // delimited sync: both to be discarded.
                    out.extend_from_slice(b"{\"return\": {}}\n\xff{\"return\": 7}\n");
                }
                out.push(0xFF);
                out.extend_from_slice(format!("{{\"return\": {id}}}\n").as_bytes());
                out
            }
            (Fake::Garbage, _) => b"<html>not json</html>\n".to_vec(),
            (Fake::Endless, _) => loop {
                if w.write_all(&[b'a'; 4096]).await.is_err() {
                    return;
                }
            },
            (Fake::HalfThenClose, _) => {
                let _ = w.write_all(b"{\"return\": {\"na").await;
                return;
            }
            (_, "guest-ping") => b"{\"return\": {}}\n".to_vec(),
            (_, "guest-get-host-name") => b"{\"return\": {\"host-name\": \"fake\"}}\n".to_vec(),
            (_, "guest-shutdown") => return,
            _ => b"{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"no\"}}\n".to_vec(),
        };
        if w.write_all(&out).await.is_err() {
            return;
        }
    }
}

const T: Duration = Duration::from_millis(500);

/// What a loaded host (parallel tests on 2 cores) may add to a time-out.
const SLACK: Duration = Duration::from_millis(1500);

/// `f`'s error, checking it came within the time-out (and some slack).
async fn fails_in_time<T: std::fmt::Debug>(
    f: impl std::future::Future<Output = Result<T, AgentError>>,
) -> AgentError {
    let start = Instant::now();
    let e = f.await.expect_err("a hostile agent must give an error");
    let took = start.elapsed();
    assert!(took < T + SLACK, "took {took:?}: {e}");
    e
}

#[tokio::test]
async fn resyncs_past_noise_and_asks() {
    let (_d, path) = fake(Fake::Good);
    let a = Agents::default();
    a.ping("s", &path, T).await.unwrap();
    let info = a.info("s", &path, T).await.unwrap();
    assert_eq!(info.hostname.as_deref(), Some("fake"));
    // Refused commands leave their parts empty.
    assert_eq!(info.os, Default::default());
    assert!(info.interfaces.is_empty() && info.agent_version.is_none());
    // guest-shutdown: no answer and a close count as sent.
    a.shutdown("s", &path, T, Duration::from_millis(100))
        .await
        .unwrap();
}

#[tokio::test]
async fn hostile_agents_fail_within_the_time_out() {
    let a = Agents::default();
    let (_d, stall) = fake(Fake::Stall);
    let e = fails_in_time(a.ping("a", &stall, T)).await;
    assert!(matches!(e, AgentError::Timeout(_)) && e.is_silence(), "{e}");
    let (_d2, garbage) = fake(Fake::Garbage);
    let e = fails_in_time(a.info("b", &garbage, T)).await;
    assert!(
        matches!(e, AgentError::Garbage(_)) && !e.is_silence(),
        "{e}"
    );
    let (_d3, endless) = fake(Fake::Endless);
    let e = fails_in_time(a.ping("c", &endless, T)).await;
    assert!(matches!(e, AgentError::TooLong(conn::MAX_LINE)), "{e}");
    let (_d4, flood) = fake(Fake::Flood);
    let e = fails_in_time(a.ping("d", &flood, T)).await;
    assert!(matches!(e, AgentError::Flood(_)), "{e}");
    let (_d5, half) = fake(Fake::HalfThenClose);
    let e = fails_in_time(a.info("e", &half, T)).await;
    assert!(matches!(e, AgentError::Closed(_)), "{e}");
    // Nobody listening: at once.
    let e = fails_in_time(a.ping("f", &half.with_file_name("none.sock"), T)).await;
    assert!(matches!(e, AgentError::Connect(_)) && e.is_silence(), "{e}");
    // A stalled guest's shutdown is not sent: its ping gets no answer.
    let e = fails_in_time(a.shutdown("a", &stall, T, T)).await;
    assert!(matches!(e, AgentError::Timeout(_)), "{e}");
}

#[tokio::test]
async fn a_stalled_guest_delays_only_itself() {
    let a = std::sync::Arc::new(Agents::default());
    let (_d, stall) = fake(Fake::Stall);
    let (_d2, good) = fake(Fake::Good);
    let long = Duration::from_secs(6);
    let (a2, s2) = (a.clone(), stall.clone());
    let stalled = tokio::spawn(async move { a2.ping("slow", &s2, long).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Another server's call is served meanwhile.
    let start = Instant::now();
    a.info("fast", &good, T).await.unwrap();
    assert!(start.elapsed() < SLACK, "{:?}", start.elapsed());
    // A second call to the stalled server waits for its lock, within its
    // own time-out.
    let e = fails_in_time(a.ping("slow", &stall, T)).await;
    assert!(e.to_string().contains("another call"), "{e}");
    assert!(!stalled.is_finished());
    assert!(matches!(
        stalled.await.unwrap(),
        Err(AgentError::Timeout(_))
    ));
}

#[test]
fn answers_are_checked_not_trusted() {
    let v = json!([
        {"name": "eth0", "hardware-address": "52:54:00:AB:CD:EF", "ip-addresses": [
            {"ip-address-type": "ipv4", "ip-address": "10.0.0.5", "prefix": 24},
            {"ip-address-type": "ipv6", "ip-address": "fe80::1%2", "prefix": 64},
            {"ip-address-type": "ipv4", "ip-address": "10.0.0.6", "prefix": 33},
            {"ip-address-type": "ipv4", "ip-address": "not an ip", "prefix": 8},
            {"ip-address-type": "ipv4", "ip-address": "10.0.0.7", "prefix": -1},
            "garbage"
        ]},
        {"hardware-address": "no name"},
        {"name": "lo"}
    ]);
    let ifs = commands::interfaces(&v);
    assert_eq!(ifs.len(), 2);
    assert_eq!(ifs[0].mac.as_deref(), Some("52:54:00:ab:cd:ef"));
    let addrs: Vec<String> = ifs[0]
        .addresses
        .iter()
        .map(|a| format!("{}/{} {:?}", a.ip, a.prefix, a.kind))
        .collect();
    assert_eq!(addrs, ["10.0.0.5/24 Ipv4", "fe80::1/64 Ipv6"]);
    assert!(ifs[1].addresses.is_empty() && ifs[1].mac.is_none());
    assert!(commands::interfaces(&json!({"not": "a list"})).is_empty());
    let os = commands::osinfo(&json!({"name": "Debian GNU/Linux", "version-id": 12,
        "kernel-release": "6.1.0", "pretty-name": "Debian 12"}));
    assert_eq!(os.name.as_deref(), Some("Debian GNU/Linux"));
    assert_eq!(os.version_id, None, "a number is not a string");
    assert_eq!(os.kernel_release.as_deref(), Some("6.1.0"));
}
