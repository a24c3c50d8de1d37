//! Image upload (`source: upload`, then `PUT /v1/images/{id}/file`) with a
//! real kilnd: raw and qcow2 images made by real `qemu-img`, sha256 checked
//! against the host's `sha256sum`, a server booted on the uploaded qcow2;
//! refused uploads (wrong format, too large, twice), a client that goes
//! away mid-upload and a kilnd killed mid-upload leave a definite state and
//! no file.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::vm::{register, start_kilnd, wait_until, T};
use common::{disk_of, qemu_img_create, qemu_img_info, run, sha256sum, Kilnd};
use kiln_api::client;
use kiln_api::compute::{Image, ImageKind, ImageStatus, ServerStatus};

const MAX: u64 = 8 << 20;

fn queued(k: &Kilnd, name: &str, format: &str) -> Image {
    let r = k.req(
        "POST",
        "/v1/images",
        Some(&format!(
            r#"{{"type":"disk","name":"{name}","format":"{format}","source":"upload"}}"#
        )),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let img: Image = r.json().unwrap();
    assert_eq!(img.status, ImageStatus::Queued);
    img
}

fn put(k: &Kilnd, id: &str, file: &Path) -> client::Response {
    client::upload(
        &k.socket,
        &format!("/v1/images/{id}/file"),
        file,
        Duration::from_secs(60),
        |_, _| {},
    )
    .unwrap()
}

/// Starts `PUT /v1/images/{id}/file` of `len` bytes and sends the first
/// `chunk` of them; the caller ends it.
fn start_put(k: &Kilnd, id: &str, len: usize, chunk: &[u8]) -> UnixStream {
    let mut s = UnixStream::connect(&k.socket).unwrap();
    write!(
        s,
        "PUT /v1/images/{id}/file HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n"
    )
    .unwrap();
    s.write_all(chunk).unwrap();
    s
}

/// Files in the image store.
fn store_files(k: &Kilnd) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(k.state_path("images"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn start() -> Kilnd {
    start_kilnd(&format!("[images]\nmax_upload_bytes = {MAX}\n"))
}

#[test]
fn upload_raw_and_qcow2_then_boot_on_it() {
    let k = start();
    // A raw image with data in it, and a qcow2 made from it by qemu-img.
    let raw = k.dir.path().join("disk.raw");
    let mut data = vec![0u8; 4 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2654435761) >> 13) as u8;
    }
    std::fs::write(&raw, &data).unwrap();
    let qcow = k.dir.path().join("disk.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow));

    for (name, file, format) in [("r", &raw, "raw"), ("q", &qcow, "qcow2")] {
        let img = queued(&k, name, format);
        let r = put(&k, &img.id, file);
        assert_eq!(r.status, 200, "{}", r.text());
        let img: Image = r.json().unwrap();
        assert_eq!(img.status, ImageStatus::Active);
        let (path, size_bytes, sha256) = disk_of(&img);
        assert_eq!(size_bytes, std::fs::metadata(file).unwrap().len());
        assert_eq!(sha256, sha256sum(file), "sha256 of {name}");
        assert_eq!(sha256sum(Path::new(path)), sha256sum(file));
        // Once only.
        let r = put(&k, &img.id, file);
        assert_eq!(r.status, 409, "{}", r.text());
        assert!(r.text().contains("is active"), "{}", r.text());
    }
    assert_eq!(store_files(&k).len(), 2, "{:?}", store_files(&k));

    // A server on the uploaded qcow2: its root overlay backs onto it.
    register(&k, "hold", "hello", "hold");
    let s = k.create_server(r#"{"name":"s","flavor":"k1.probe","image":"hold","disk_image":"q"}"#);
    k.wait_status(&s.id, ServerStatus::Active, T);
    let root = k.state_path(&format!("servers/{}/root.qcow2", s.id));
    let info = qemu_img_info(&root);
    let q = k.json("GET", "/v1/images/q", None);
    assert_eq!(info["backing-filename"].as_str(), q["path"].as_str());
    assert_eq!(info["backing-filename-format"], "qcow2");
    assert_eq!(info["virtual-size"].as_u64(), Some(1 << 30));
    k.delete_server(&s.id);
}

#[test]
fn refused_uploads_leave_no_file() {
    let mut k = start();
    // Garbage declared qcow2: error with a fault, no file.
    let junk = k.dir.path().join("junk");
    std::fs::write(&junk, vec![0x5au8; 100_000]).unwrap();
    let img = queued(&k, "junk", "qcow2");
    let r = put(&k, &img.id, &junk);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("not qcow2"), "{}", r.text());
    let img = k.image(&img.id);
    assert_eq!(img.status, ImageStatus::Error);
    assert!(img.fault.unwrap().contains("not qcow2"));
    assert_eq!(store_files(&k), Vec::<String>::new());
    assert_eq!(k.req("DELETE", "/v1/images/junk", None).status, 204);

    // Too large by Content-Length: 413 at once, still queued.
    let big = k.dir.path().join("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(MAX + 1)
        .unwrap();
    let img = queued(&k, "big", "raw");
    let r = put(&k, &img.id, &big);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("max_upload_bytes"), "{}", r.text());
    assert_eq!(k.image(&img.id).status, ImageStatus::Queued);
    // Too large while streaming (chunked, no length): 413, queued again.
    let mut s = UnixStream::connect(&k.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "PUT /v1/images/{}/file HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        img.id
    )
    .unwrap();
    let chunk = vec![1u8; 1 << 20];
    for _ in 0..(MAX >> 20) + 1 {
        if write!(s, "{:x}\r\n", chunk.len()).is_err()
            || s.write_all(&chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    wait_until("queued again", T, || {
        k.image(&img.id).status == ImageStatus::Queued
    });
    assert_eq!(store_files(&k), Vec::<String>::new());

    // A client that goes away mid-upload: queued again, no file.
    let s = start_put(&k, &img.id, 4 << 20, &chunk);
    wait_until("upload under way", T, || {
        k.image(&img.id).status == ImageStatus::Importing
    });
    drop(s);
    wait_until("queued after the client left", T, || {
        k.image(&img.id).status == ImageStatus::Queued
    });
    assert_eq!(store_files(&k), Vec::<String>::new());

    // kilnd killed mid-upload: after restart the image is in error with a
    // fault, and its partial file is gone.
    let s = start_put(&k, &img.id, 4 << 20, &chunk);
    wait_until("a partial file", T, || {
        store_files(&k).iter().any(|f| f.ends_with(".partial"))
    });
    k.kill9();
    drop(s);
    k.spawn();
    let img = k.image(&img.id);
    assert_eq!(img.status, ImageStatus::Error, "{img:?}");
    assert!(img.fault.unwrap().contains("interrupted"));
    assert_eq!(store_files(&k), Vec::<String>::new());
    // Uploading into an image in error is refused; deleting it works.
    let r = put(&k, &img.id, &junk);
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(
        k.req("DELETE", &format!("/v1/images/{}", img.id), None)
            .status,
        204
    );
    // Kernel images and unknown ids.
    register(&k, "hold", "hello", "hold");
    assert_eq!(put(&k, "hold", &junk).status, 409);
    assert_eq!(put(&k, "nonesuch", &junk).status, 404);
}

/// `kiln image create NAME --file PATH --format F --upload`: a progress bar,
/// the image active with the file's sha256; a refused upload leaves no
/// record.
#[test]
fn cli_uploads_with_a_progress_bar() {
    let k = start();
    // `kiln image create NAME --file FILE --format qcow2 --upload`.
    let upload = |name: &str, file: &Path| {
        k.cli(&[
            "image",
            "create",
            name,
            "--file",
            file.to_str().unwrap(),
            "--format",
            "qcow2",
            "--upload",
        ])
    };
    let f = k.dir.path().join("d.qcow2");
    qemu_img_create(&f, "16M");
    let (ok, out, err) = upload("up", &f);
    assert!(ok, "{err}");
    assert!(err.contains("100%"), "no progress bar: {err}");
    assert!(out.contains("up"), "{out}");
    let img = k.image("up");
    assert_eq!(img.status, ImageStatus::Active);
    assert_eq!(disk_of(&img).2, sha256sum(&f));
    // Declared raw? fine. Declared qcow2 but raw data: refused, no record.
    let raw = k.dir.path().join("r.raw");
    std::fs::write(&raw, vec![7u8; 70_000]).unwrap();
    let (ok, _, err) = upload("bad", &raw);
    assert!(!ok);
    assert!(err.contains("not qcow2"), "{err}");
    assert_eq!(k.req("GET", "/v1/images/bad", None).status, 404);
    assert_eq!(store_files(&k).len(), 1, "{:?}", store_files(&k));
}

/// `images.upload_idle_timeout_s`: a client that sends headers and a few
/// bytes and then nothing gets 408 after the timeout, the image is `queued`
/// again without a partial file; a slow client that keeps sending (gaps
/// shorter than the timeout, whole upload longer than it) is not cut off.
#[test]
fn stalled_upload_times_out() {
    let k = start_kilnd(&format!(
        "[images]\nmax_upload_bytes = {MAX}\nupload_idle_timeout_s = 2\n"
    ));
    let img = queued(&k, "stall", "raw");
    let mut s = UnixStream::connect(&k.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "PUT /v1/images/{}/file HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        img.id,
        1 << 20
    )
    .unwrap();
    s.write_all(&[9u8; 1000]).unwrap();
    // Importing, with its partial file (kilnd marks the image before it
    // creates the file, so wait for both).
    wait_until("upload under way", T, || {
        k.image(&img.id).status == ImageStatus::Importing
            && store_files(&k).iter().any(|f| f.ends_with(".partial"))
    });
    // Then nothing: the answer comes on its own.
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("upload_idle_timeout_s"), "{answer}");
    assert!(answer.contains("after 1000 bytes"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "answered only when the read timed out"
    );
    assert_eq!(k.image(&img.id).status, ImageStatus::Queued);
    assert_eq!(store_files(&k), Vec::<String>::new());
    drop(s);

    // A slow but steady client: 6 pieces 1 s apart (longer in all than the
    // 2 s idle timeout) uploads fine into the same, queued again, image.
    let mut s = UnixStream::connect(&k.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let piece = [3u8; 4096];
    write!(
        s,
        "PUT /v1/images/{}/file HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        img.id,
        6 * piece.len()
    )
    .unwrap();
    let started = Instant::now();
    for _ in 0..6 {
        s.write_all(&piece).unwrap();
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() > Duration::from_secs(2));
    let img = k.image(&img.id);
    assert_eq!(img.status, ImageStatus::Active, "{img:?}");
    let ImageKind::Disk { size_bytes, .. } = img.kind else {
        panic!()
    };
    assert_eq!(size_bytes, 6 * piece.len() as u64);
}
