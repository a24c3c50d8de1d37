//! Key pairs and admin passwords end to end, on a real kilnd: keys made by
//! OpenSSH's `ssh-keygen` import with its fingerprint, a generated pair's
//! private key is OpenSSH's and answered once, bad input is a 4xx that
//! records nothing, and a server keeps its key and password.

mod common;

use std::path::Path;
use std::process::Command;

use common::api::*;
use common::Kilnd;
use kiln_api::compute::{Keypair, KeypairList, Server};
use kiln_manager::store::Store;

/// `ssh-keygen -t ARGS` into `dir/name`: (public key line, fingerprint).
fn ssh_keygen(dir: &Path, name: &str, args: &[&str]) -> (String, String) {
    let path = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-C", "me@host", "-f"])
        .arg(&path)
        .args(args)
        .status()
        .expect("run ssh-keygen");
    assert!(st.success());
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (
        public.trim().to_owned(),
        fingerprint(&path.with_extension("pub")),
    )
}

/// `ssh-keygen -l`'s fingerprint of a key file.
fn fingerprint(path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().nth(1).unwrap().to_owned()
}

fn keypairs(k: &Kilnd) -> Vec<String> {
    let l: KeypairList = k.req("GET", "/v1/keypairs", None).json().unwrap();
    l.keypairs.into_iter().map(|k| k.name).collect()
}

fn post_key(k: &Kilnd, body: serde_json::Value) -> kiln_api::client::Response {
    k.req("POST", "/v1/keypairs", Some(&body.to_string()))
}

#[test]
fn import_generate_show_delete() {
    let k = Kilnd::start(NO_VMM);
    let dir = k.dir.path();
    let kinds: [(&str, &[&str]); 5] = [
        ("ed", &["-t", "ed25519"]),
        ("rsa", &["-t", "rsa", "-b", "3072"]),
        ("p256", &["-t", "ecdsa", "-b", "256"]),
        ("p384", &["-t", "ecdsa", "-b", "384"]),
        ("p521", &["-t", "ecdsa", "-b", "521"]),
    ];
    for (name, args) in kinds {
        let (public, fp) = ssh_keygen(dir, name, args);
        // A trailing newline, as a `.pub` file has, is fine.
        let r = post_key(
            &k,
            serde_json::json!({"name": name, "public_key": public + "\n"}),
        );
        assert_eq!(r.status, 201, "{name}: {}", r.text());
        let key: Keypair = r.json().unwrap();
        assert_eq!(key.fingerprint, fp, "{name}");
        assert_eq!(
            key.public_key.trim(),
            std::fs::read_to_string(dir.join(format!("{name}.pub")))
                .unwrap()
                .trim()
        );
        assert_eq!(key.private_key, None);
        let body = k.json("GET", &format!("/v1/keypairs/{name}"), None);
        assert_eq!(body["type"], "ssh");
        assert!(body.get("private_key").is_none());
    }

    // Generated: an OpenSSH private key whose public half ssh-keygen
    // derives to the one kilnd keeps; answered once.
    let r = post_key(&k, serde_json::json!({"name": "gen"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let gen: Keypair = r.json().unwrap();
    assert!(
        gen.public_key.starts_with("ssh-ed25519 "),
        "{}",
        gen.public_key
    );
    let private = gen.private_key.clone().unwrap();
    assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    let priv_path = dir.join("gen");
    std::fs::write(&priv_path, &private).unwrap();
    std::fs::set_permissions(
        &priv_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-yf")
        .arg(&priv_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let derived = String::from_utf8(out.stdout).unwrap();
    let b64 = |l: &str| l.split_whitespace().nth(1).unwrap().to_owned();
    assert_eq!(b64(&derived), b64(&gen.public_key));
    std::fs::write(dir.join("gen.pub"), &gen.public_key).unwrap();
    assert_eq!(fingerprint(&dir.join("gen.pub")), gen.fingerprint);
    let shown: Keypair = k.req("GET", "/v1/keypairs/gen", None).json().unwrap();
    assert_eq!(shown.private_key, None);
    assert_eq!(shown.fingerprint, gen.fingerprint);

    assert_eq!(keypairs(&k), ["ed", "gen", "p256", "p384", "p521", "rsa"]);
    assert_eq!(k.req("DELETE", "/v1/keypairs/gen", None).status, 204);
    assert_eq!(k.req("DELETE", "/v1/keypairs/gen", None).status, 404);
    assert_eq!(k.req("GET", "/v1/keypairs/gen", None).status, 404);
    assert_eq!(keypairs(&k), ["ed", "p256", "p384", "p521", "rsa"]);
}

#[test]
fn bad_keys_are_4xx_and_record_nothing() {
    let k = Kilnd::start(NO_VMM);
    let dir = k.dir.path();
    let (public, _) = ssh_keygen(dir, "ed", &["-t", "ed25519"]);
    let (dsa, _) = ssh_keygen(dir, "other", &["-t", "ecdsa", "-b", "256"]);
    let b64 = public.split_whitespace().nth(1).unwrap();
    let cases: Vec<(serde_json::Value, u16, &str)> = vec![
        (
            serde_json::json!({"name": "a", "public_key": "ssh-ed25519"}),
            400,
            "public_key",
        ),
        (
            serde_json::json!({"name": "a", "public_key": "hello world"}),
            400,
            "public_key",
        ),
        (
            serde_json::json!({"name": "a", "public_key": format!("ssh-ed25519 {}", &b64[..20])}),
            400,
            "public_key",
        ),
        (
            serde_json::json!({"name": "a", "public_key": format!("ssh-rsa {b64}")}),
            400,
            "public_key",
        ),
        (
            serde_json::json!({"name": "a", "public_key": format!("{public}\n{dsa}")}),
            400,
            "one OpenSSH",
        ),
        (
            serde_json::json!({"name": "a", "public_key": std::fs::read_to_string(dir.join("ed")).unwrap()}),
            400,
            "public_key",
        ),
        (
            serde_json::json!({"name": "a", "public_key": "x".repeat(20_000)}),
            400,
            "longer than",
        ),
        (
            serde_json::json!({"name": "", "public_key": public}),
            400,
            "name",
        ),
        (serde_json::json!({"name": "a/b"}), 400, "key pair"),
        (
            serde_json::json!({"name": "a", "type": "x509"}),
            400,
            "unknown variant",
        ),
        (
            serde_json::json!({"name": "a", "color": "red"}),
            400,
            "unknown field",
        ),
    ];
    for (body, status, text) in cases {
        let r = post_key(&k, body.clone());
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert!(r.text().contains(text), "{body}: {}", r.text());
    }
    assert!(keypairs(&k).is_empty());

    // A duplicate name: 409, the first key unchanged.
    let first: Keypair = post_key(&k, serde_json::json!({"name": "a", "public_key": public}))
        .json()
        .unwrap();
    let r = post_key(&k, serde_json::json!({"name": "a", "public_key": dsa}));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("already exists"), "{}", r.text());
    let r = post_key(&k, serde_json::json!({"name": "a"}));
    assert_eq!(r.status, 409, "{}", r.text());
    let now: Keypair = k.req("GET", "/v1/keypairs/a", None).json().unwrap();
    assert_eq!(now, first);
}

#[test]
fn servers_keep_their_key_and_admin_pass() {
    let k = Kilnd::start(NO_VMM);
    let dir = k.dir.path();
    kernel_image(&k, "kern");
    let (public, fp) = ssh_keygen(dir, "ed", &["-t", "ed25519"]);
    assert_eq!(
        post_key(
            &k,
            serde_json::json!({"name": "mykey", "public_key": public})
        )
        .status,
        201
    );
    let server =
        |extra: &str| format!(r#"{{"name":"s","flavor":"k1.probe","image":"kern"{extra}}}"#);

    // Refused, nothing made: an unknown key, a long password, user data
    // over 64 KiB (once decoded: the API takes base64, as Nova's).
    use base64ct::Encoding;
    let long_ud = format!(
        r#","user_data":"{}""#,
        base64ct::Base64::encode_string(&[b'u'; 65536])
    );
    let long_pass = format!(r#","admin_pass":"{}""#, "p".repeat(256));
    for (extra, text) in [
        (r#","key_name":"nokey""#, "unknown key_name"),
        (long_pass.as_str(), "admin_pass is longer than 255 bytes"),
        (long_ud.as_str(), "user_data is longer than 65535 bytes"),
    ] {
        let r = k.req("POST", "/v1/servers", Some(&server(extra)));
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains(text), "{}", r.text());
    }
    let none = k.json("GET", "/v1/servers", None);
    assert_eq!(none["servers"].as_array().unwrap().len(), 0, "{none}");

    // 64 KiB of user data less one byte is taken, with the key and password.
    let ok = format!(
        r#","key_name":"mykey","admin_pass":"s3cret","user_data":"{}""#,
        base64ct::Base64::encode_string(&[b'u'; 65535])
    );
    let s: Server = k.create_server(&server(&ok));
    assert_eq!(s.key_name.as_deref(), Some("mykey"));
    assert_eq!(s.admin_pass.as_deref(), Some("s3cret"));
    let shown = k.json("GET", &format!("/v1/servers/{}", s.id), None);
    assert_eq!(shown["key_name"], "mykey");
    assert!(shown.get("admin_pass").is_none(), "{shown}");
    let listed = k.json("GET", "/v1/servers", None);
    assert!(!listed.to_string().contains("s3cret"));

    // The key pair's delete leaves the server its copy.
    assert_eq!(k.req("DELETE", "/v1/keypairs/mykey", None).status, 204);
    let store = Store::open(&k.state_path("kiln.db")).unwrap();
    let (key, pass) = store.server_credentials(&s.id).unwrap();
    let key = key.unwrap();
    assert_eq!(
        (key.name.as_str(), key.fingerprint.as_str()),
        ("mykey", fp.as_str())
    );
    assert_eq!(key.public_key, public);
    assert_eq!(key.private_key, None);
    assert_eq!(pass.as_deref(), Some("s3cret"));
}

#[test]
fn cli_keypairs_and_server_create() {
    let k = Kilnd::start(NO_VMM);
    let dir = k.dir.path();
    kernel_image(&k, "kern");
    let (public, fp) = ssh_keygen(dir, "ed", &["-t", "ed25519"]);
    let pub_file = dir.join("ed.pub").display().to_string();
    let (ok, out, err) = k.cli(&["keypair", "create", "imp", "--public-key-file", &pub_file]);
    assert!(ok, "{err}");
    assert!(out.contains(&fp), "{out}");

    let priv_file = dir.join("gen_key");
    let (ok, out, err) = k.cli(&[
        "keypair",
        "create",
        "gen",
        "--private-key-file",
        &priv_file.display().to_string(),
    ]);
    assert!(ok, "{err}");
    assert!(!out.contains("PRIVATE KEY"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&priv_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let derived = Command::new("ssh-keygen")
        .arg("-yf")
        .arg(&priv_file)
        .output()
        .unwrap();
    assert!(derived.status.success(), "{derived:?}");

    let (ok, out, err) = k.cli(&["keypair", "list"]);
    assert!(ok, "{err}");
    assert!(out.contains("imp") && out.contains("gen"), "{out}");
    let (ok, out, _) = k.cli(&["keypair", "show", "imp"]);
    assert!(ok && out.contains(&public), "{out}");

    let (ok, out, err) = k.cli(&[
        "--json",
        "server",
        "create",
        "s1",
        "--flavor",
        "k1.probe",
        "--image",
        "kern",
        "--key-name",
        "imp",
        "--admin-pass",
        "pw",
    ]);
    assert!(ok, "{err}");
    let s: Server = serde_json::from_str(&out).unwrap();
    assert_eq!(s.key_name.as_deref(), Some("imp"));
    let (ok, _, err) = k.cli(&[
        "server",
        "create",
        "s2",
        "--flavor",
        "k1.probe",
        "--image",
        "kern",
        "--key-name",
        "nope",
    ]);
    assert!(!ok && err.contains("unknown key_name"), "{err}");

    let (ok, _, err) = k.cli(&["keypair", "delete", "gen"]);
    assert!(ok, "{err}");
    let (ok, _, err) = k.cli(&["keypair", "show", "gen"]);
    assert!(!ok && err.contains("not found"), "{err}");
}
