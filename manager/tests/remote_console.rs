//! The browser console through kilnd, with real kilnd, real kiln-vmm on
//! KVM running SeaBIOS and the display probe (images/mbr/vga.s, left in
//! text mode), noVNC from npm (cache/novnc) and Debian's chromium, on
//! kilnd's TCP listener in a network namespace of this test's own:
//!
//! - `POST /v1/servers/{id}/remote-consoles` answers Nova's body with a
//!   URL on the TCP listener; other protocols or types are a 400, a server
//!   without a display a 409, a stopped one a 409, kilnd without a TCP
//!   listener a 409;
//! - an RFB 3.8 viewer (kiln-tests' `rfb`) through kilnd's websocket
//!   shakes hands and draws the same picture as `GET .../screenshot`;
//! - a used, expired, garbage or missing token, or one for another
//!   server, is refused before the upgrade, and no viewer reaches the VMM
//!   (its log counts them);
//! - headless chromium opens the page and its screenshot shows the
//!   server's screen: SeaBIOS's banner where kiln-vmm's screenshot has it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::api::NO_VMM;
use common::firmware::{firmware_config, fw_flavor};
use common::vm::{console, start_kilnd, wait_until};
use common::Kilnd;
use kiln_api::compute::ServerStatus;
use kiln_tests::cache_dir;
use kiln_tests::disk::vga_probe_disk;
use kiln_tests::rfb::{Viewer, ENC_RAW, ENC_ZLIB};
use kiln_tests::screen::{decode_png, Shot};

const BOOT: Duration = Duration::from_secs(180);
const ADDR: &str = "127.0.0.1:18775";
/// Seconds a token lives in this test's kilnd.
const TTL: u64 = 10;

/// Runs `f` on a thread in a network namespace of its own (with `lo` up).
fn in_netns(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        // SAFETY: unshare on this thread only (CLONE_NEWNET is per thread).
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare: {}", std::io::Error::last_os_error());
        let st = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(st.success());
        f()
    })
    .join()
    .expect("the test thread");
}

/// Asks for a console of `id`: (status, body).
fn ask(k: &Kilnd, id: &str, body: &str) -> (u16, String) {
    let r = k.req(
        "POST",
        &format!("/v1/servers/{id}/remote-consoles"),
        Some(body),
    );
    (r.status, r.text())
}

const NOVNC: &str = r#"{"remote_console":{"protocol":"vnc","type":"novnc"}}"#;

/// A fresh console URL's token for `id`.
fn token(k: &Kilnd, id: &str) -> (String, String) {
    let (status, body) = ask(k, id, NOVNC);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let c = &v["remote_console"];
    assert_eq!(
        (c["protocol"].as_str(), c["type"].as_str()),
        (Some("vnc"), Some("novnc"))
    );
    let url = c["url"].as_str().unwrap().to_string();
    let prefix = format!("http://{ADDR}/console/vnc.html?server={id}&token=");
    let t = url.strip_prefix(&prefix).unwrap_or_else(|| panic!("{url}"));
    assert_eq!(t.len(), 64, "256 bits in hex: {t}");
    (t.to_string(), url)
}

/// `GET path` on the TCP listener without a bearer token: (status, type, body).
fn tcp_get(path: &str) -> (u16, String, Vec<u8>) {
    common::screen::get_on(std::net::TcpStream::connect(ADDR).unwrap(), path)
}

/// Opens kilnd's websocket for `server` with `token`: the upgrade's
/// status (101 when it opened; the socket is then dropped).
fn ws_status(server: &str, token: &str) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!("ws://{ADDR}/console/websockify?server={server}&token={token}");
    rt.block_on(async {
        match tokio_tungstenite::connect_async(url).await {
            Ok((_, resp)) => resp.status().as_u16(),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
            Err(e) => panic!("websocket: {e}"),
        }
    })
}

/// A unix socket at `path` whose one connection is relayed to kilnd's
/// websocket (the reverse of websockify), so the RFB viewer of kiln-tests
/// talks to the VMM through kilnd.
fn ws_bridge(path: &Path, server: &str, token: &str) {
    let url = format!("ws://{ADDR}/console/websockify?server={server}&token={token}");
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        use futures_util::{SinkExt, StreamExt};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_tungstenite::tungstenite::Message;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (unix, _) = listener.accept().unwrap();
            unix.set_nonblocking(true).unwrap();
            let unix = tokio::net::UnixStream::from_std(unix).unwrap();
            let (ws, resp) = tokio_tungstenite::connect_async(url)
                .await
                .expect("the websocket");
            assert_eq!(resp.status().as_u16(), 101);
            let (mut tx, mut rx) = ws.split();
            let (mut rd, mut wr) = unix.into_split();
            let up = async {
                let mut buf = vec![0u8; 4096];
                while let Ok(n @ 1..) = rd.read(&mut buf).await {
                    let m = Message::Binary(buf[..n].to_vec().into());
                    if tx.send(m).await.is_err() {
                        break;
                    }
                }
            };
            let down = async {
                while let Some(Ok(m)) = rx.next().await {
                    if let Message::Binary(b) = m {
                        assert!(wr.write_all(&b).await.is_ok());
                    }
                }
            };
            tokio::select! { () = up => {}, () = down => {} }
        });
    });
}

/// Viewers the VMM has accepted so far (its log says each).
fn viewers(k: &Kilnd, id: &str) -> usize {
    std::fs::read_to_string(k.state_path(&format!("servers/{id}/vmm.log")))
        .unwrap_or_default()
        .matches("vnc: viewer connected")
        .count()
}

fn screenshot(k: &Kilnd, id: &str) -> Shot {
    let r = k.req("GET", &format!("/v1/servers/{id}/screenshot"), None);
    assert_eq!(r.status, 200);
    decode_png(&r.body)
}

/// Pixels lit in text row `row` (16 lines from `y0`, 720 wide).
fn lit(shot: &Shot, x0: usize, y0: usize, row: usize) -> usize {
    (y0 + row * 16..y0 + row * 16 + 16)
        .flat_map(|y| (x0..x0 + 720).map(move |x| (x, y)))
        .filter(|&(x, y)| shot.pixel(x, y) != [0, 0, 0])
        .count()
}

#[test]
fn the_browser_console_shows_the_server_through_kilnd() {
    assert!(Path::new("/dev/kvm").exists(), "needs KVM (/dev/kvm)");
    let novnc = cache_dir().join("novnc");
    assert!(
        novnc.join("core/rfb.js").exists(),
        "noVNC in cache/novnc: run scripts/setup.sh"
    );
    in_netns(move || run(&novnc));
}

fn run(novnc: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "api-bearer-token-0123456789\n").unwrap();
    let k = start_kilnd(&format!(
        "{}[tcp]\nlisten = \"{ADDR}\"\ntoken_file = \"{}\"\n[console]\ntoken_ttl = {TTL}\nnovnc_dir = \"{}\"\n",
        firmware_config(),
        token_file.display(),
        novnc.display()
    ));
    fw_flavor(&k);
    let disk = vga_probe_disk(k.dir.path());
    k.import_disk_with("vga", &disk, "raw", r#","firmware":"bios","display":"vga""#);

    // A server without a display has no console.
    let plain =
        k.create_server(r#"{"name":"plain","flavor":"fw.small","image":"vga","display":"none"}"#);
    let (status, body) = ask(&k, &plain.id, NOVNC);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("no display"), "{body}");
    k.delete_server(&plain.id);

    let s = k.create_server(r#"{"name":"screen","flavor":"fw.small","image":"vga"}"#);
    // Bad input: 400 naming what is offered; unknown servers 404.
    for (body, why) in [
        (
            r#"{"remote_console":{"protocol":"spice","type":"spice-html5"}}"#,
            "spice",
        ),
        (r#"{"protocol":"vnc","type":"xvpvnc"}"#, "xvpvnc"),
        (r#"{"remote_console":{"protocol":"vnc"}}"#, "type"),
        (
            r#"{"remote_console":{"protocol":"vnc","type":"novnc","x":1}}"#,
            "x",
        ),
        (
            r#"{"remote_console":{"protocol":"vnc","type":"novnc"},"x":1}"#,
            "remote_console",
        ),
        ("[]", "invalid"),
    ] {
        let (status, text) = ask(&k, &s.id, body);
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(why), "{body}: {text}");
    }
    let (_, text) = ask(&k, &s.id, r#"{"protocol":"rdp","type":"rdp-html5"}"#);
    let e: serde_json::Value = serde_json::from_str(&text).unwrap();
    let m = e["error"].as_str().unwrap();
    assert!(m.contains("\"vnc\"") && m.contains("\"novnc\""), "{m}");
    assert_eq!(ask(&k, "nope", NOVNC).0, 404);

    k.wait_status(&s.id, ServerStatus::Active, BOOT);
    wait_until("the probe's text line", BOOT, || {
        console(&k, &s.id).contains("KILNVGA TEXT")
    });
    let want = screenshot(&k, &s.id);
    assert_eq!((want.width, want.height), (720, 400));
    assert!(lit(&want, 0, 0, 0) > 300, "SeaBIOS's banner");

    // The bare object works too; the TCP API itself still wants its bearer.
    let (status, body) = ask(&k, &s.id, r#"{"protocol":"vnc","type":"novnc"}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(tcp_get(&format!("/v1/servers/{}", s.id)).0, 401);

    // The page and noVNC's files, outside the bearer token.
    let (t, _) = token(&k, &s.id);
    let (status, ctype, page) = tcp_get(&format!("/console/vnc.html?server={}&token={t}", s.id));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&page));
    assert!(ctype.starts_with("text/html"), "{ctype}");
    assert!(String::from_utf8_lossy(&page).contains("core/rfb.js"));
    let (status, ctype, _) = tcp_get("/console/novnc/core/rfb.js");
    assert_eq!((status, ctype.as_str()), (200, "text/javascript"));
    for bad in [
        "/console/novnc/../Cargo.toml",
        "/console/novnc/%2e%2e/package.json",
        "/console/novnc/package.jsonx",
        "/console/novnc/core/nope.js",
    ] {
        assert_eq!(tcp_get(bad).0, 404, "{bad}");
    }
    assert_eq!(
        tcp_get(&format!("/console/vnc.html?server={}", s.id)).0,
        401
    );
    assert_eq!(
        tcp_get(&format!("/console/vnc.html?server=x&token={t}")).0,
        403
    );

    // A viewer through kilnd's websocket sees what the screenshot shows.
    let before = viewers(&k, &s.id);
    let bridge = dir.path().join("bridge.sock");
    ws_bridge(&bridge, &s.id, &t);
    let mut v = Viewer::connect(&bridge, &[ENC_RAW, ENC_ZLIB]).expect("RFB through kilnd");
    v.update(false).unwrap();
    assert_eq!((v.width, v.height), (720, 400));
    assert!(v.rgb == want.rgb, "the viewer's picture is the screenshot");
    wait_until("the VMM's viewer", Duration::from_secs(10), || {
        viewers(&k, &s.id) == before + 1
    });
    drop(v);

    // Refused before any byte reaches the VMM: the same token again,
    // garbage, none, another server's, an expired one.
    assert_eq!(ws_status(&s.id, &t), 401, "a used token");
    assert_eq!(ws_status(&s.id, &"ab".repeat(32)), 401, "an unknown token");
    assert_eq!(ws_status(&s.id, "garbage"), 401);
    assert_eq!(ws_status(&s.id, ""), 401);
    let (other, _) = token(&k, &s.id);
    assert_eq!(ws_status(&plain.id, &other), 403, "another server's id");
    assert_eq!(ws_status(&s.id, &other), 401, "used up by the wrong try");
    let (late, _) = token(&k, &s.id);
    std::thread::sleep(Duration::from_secs(TTL + 1));
    assert_eq!(ws_status(&s.id, &late), 401, "expired");
    assert_eq!(
        viewers(&k, &s.id),
        before + 1,
        "no refused socket reached the VMM"
    );

    // Headless chromium opens the page; its picture is the server's screen.
    let (_, url) = token(&k, &s.id);
    let shot = chromium(dir.path(), &url);
    let (x0, y0) = canvas(&shot);
    assert_eq!(x0, 40, "the canvas (720 wide), centred in 800");
    assert!(
        y0 + 400 <= shot.height,
        "the whole canvas shows: {y0} in {}x{}",
        shot.width,
        shot.height
    );
    let mut off = 0;
    for y in 0..400 {
        for x in 0..720 {
            let (a, b) = (shot.pixel(x0 + x, y0 + y), want.pixel(x, y));
            if a.iter().zip(b).any(|(p, q)| p.abs_diff(q) > 8) {
                off += 1;
            }
        }
    }
    assert_eq!(off, 0, "pixels unlike kiln-vmm's screenshot");
    assert!(
        lit(&shot, x0, y0, 0) > 300,
        "SeaBIOS's banner in the browser"
    );
    assert_eq!(
        viewers(&k, &s.id),
        before + 2,
        "the browser was the VMM's viewer"
    );

    // The CLI prints a fresh URL.
    let (ok, out, err) = k.cli(&["console", "screen", "--vnc"]);
    assert!(ok, "{err}");
    assert!(
        out.trim().starts_with(&format!(
            "http://{ADDR}/console/vnc.html?server={}&token=",
            s.id
        )),
        "{out}"
    );

    // Stopped: no console, and a token handed out before is refused.
    let (pending, _) = token(&k, &s.id);
    let r = k.req(
        "POST",
        &format!("/v1/servers/{}/action", s.id),
        Some(r#"{"action":"stop"}"#),
    );
    assert!(r.status < 300, "{}", r.text());
    k.wait_status(&s.id, ServerStatus::Shutoff, Duration::from_secs(60));
    let (status, body) = ask(&k, &s.id, NOVNC);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("not running"), "{body}");
    assert_eq!(ws_status(&s.id, &pending), 409);
}

/// Headless chromium's screenshot of `url` (800x480) once noVNC says it
/// is connected and has drawn, driven through the DevTools protocol
/// (`--screenshot` with `--virtual-time-budget` takes its picture before
/// the websocket has opened: virtual time does not wait for it).
fn chromium(dir: &Path, url: &str) -> Shot {
    let t0 = Instant::now();
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--force-color-profile=srgb",
            "--window-size=800,480",
            "--remote-debugging-port=9229",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium").display()
        ))
        .arg("about:blank")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromium (Debian's, from scripts/setup.sh)");
    let mut page = None;
    while page.is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no DevTools endpoint"
        );
        std::thread::sleep(Duration::from_millis(200));
        let Ok(body) = devtools_list() else { continue };
        let list: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        page = list.as_array().and_then(|l| {
            l.iter()
                .find(|p| p["type"] == "page")
                .and_then(|p| p["webSocketDebuggerUrl"].as_str().map(str::to_owned))
        });
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let png = rt.block_on(async {
        let page = page.unwrap();
        let mut ws = loop {
            match tokio_tungstenite::connect_async(&page).await {
                Ok((ws, _)) => break ws,
                Err(e) => assert!(t0.elapsed() < Duration::from_secs(60), "{page}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let mut id = 0;
        let size = serde_json::json!({ "width": 800, "height": 480, "deviceScaleFactor": 1, "mobile": false });
        cdp(&mut ws, &mut id, "Emulation.setDeviceMetricsOverride", size).await;
        cdp(&mut ws, &mut id, "Page.navigate", serde_json::json!({ "url": url })).await;
        let probe = "document.title + ' ' + (document.querySelector('canvas') || {width: 0}).width";
        loop {
            assert!(t0.elapsed() < Duration::from_secs(60), "noVNC never connected");
            let r = cdp(&mut ws, &mut id, "Runtime.evaluate", serde_json::json!({ "expression": probe })).await;
            if r["result"]["value"] == "Kiln console: connected 720" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The first update, drawn.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let r = cdp(&mut ws, &mut id, "Page.captureScreenshot", serde_json::json!({ "format": "png" })).await;
        use base64ct::Encoding;
        base64ct::Base64::decode_vec(r["data"].as_str().expect("a picture")).unwrap()
    });
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("chromium connected and drew in {:?}", t0.elapsed());
    decode_png(&png)
}

/// `GET /json/list` on chromium's DevTools port.
fn devtools_list() -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect("127.0.0.1:9229")?;
    write!(
        s,
        "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:9229\r\nConnection: close\r\n\r\n"
    )?;
    // It may keep the connection open: read until it pauses.
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
        if all.ends_with(b"]\n") || all.ends_with(b"]") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&all).into_owned();
    Ok(text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default())
}

type Cdp =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One DevTools call: its `result` (events in between are skipped).
async fn cdp(
    ws: &mut Cdp,
    id: &mut u64,
    method: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    use futures_util::{SinkExt, StreamExt};
    *id += 1;
    let msg = serde_json::json!({ "id": *id, "method": method, "params": params }).to_string();
    ws.send(tokio_tungstenite::tungstenite::Message::Text(msg.into()))
        .await
        .unwrap();
    loop {
        let m = ws.next().await.expect("DevTools answers").unwrap();
        let Ok(text) = m.to_text() else { continue };
        let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        if v["id"] == *id {
            assert!(v.get("error").is_none(), "{method}: {v}");
            return v["result"].clone();
        }
    }
}

/// The top-left corner of the first pixel unlike noVNC's background.
fn canvas(shot: &Shot) -> (usize, usize) {
    for y in 0..shot.height {
        for x in 0..shot.width {
            if shot.pixel(x, y) != [40, 40, 40] {
                return (x, y);
            }
        }
    }
    panic!("the page shows no screen")
}

/// Without a TCP listener there is no URL to give: a 409 naming the fix.
#[test]
fn no_tcp_listener_no_console() {
    let k = Kilnd::start(NO_VMM);
    let (status, body) = ask(&k, "any", NOVNC);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("[tcp] listen"), "{body}");
}
