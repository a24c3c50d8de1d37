//! Keystone application credentials against the real `openstack` CLI:
//! `application credential create/list/show/delete` with the admin's
//! password, then other osc calls authenticating with
//! `--os-auth-type v3applicationcredential` (by id, and by name and
//! user), and by curl: the token carries the credential's roles and
//! expiry, a restricted credential's token cannot make another, a wrong
//! secret is a 401, bad creates are 4xx that make nothing, and deleting
//! the credential revokes the tokens it gave.

mod common;

use std::process::Command;

use common::api::NO_VMM;
use common::osc::{body_json, curl, tcp_config, venv_bin, Cli};
use common::Kilnd;
use kiln_tests::netns::NetNs;
use serde_json::{json, Value};

const URL: &str = "http://127.0.0.1:18782";

/// `openstack ARGS -f json` authenticated by an application credential
/// (`auth` the `--os-application-credential-*` flags), no clouds.yaml.
fn with_cred(ns: &str, auth: &[&str], args: &[&str]) -> (bool, String, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(venv_bin("openstack"))
        .args([
            "--os-auth-type",
            "v3applicationcredential",
            "--os-auth-url",
            &format!("{URL}/identity/v3"),
            "--os-identity-api-version",
            "3",
            "--os-interface",
            "public",
        ])
        .args(auth)
        .args(args)
        .args(["-f", "json"])
        .env_remove("OS_CLOUD")
        .env("OS_CLIENT_CONFIG_FILE", "/nonexistent/clouds.yaml")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// POST /identity/v3/auth/tokens with `body`: (status, answer).
fn auth(ns: &str, body: &Value) -> (u16, String) {
    curl(
        ns,
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
            &format!("{URL}/identity/v3/auth/tokens"),
        ],
    )
}

fn cred_auth(id: &str, secret: &str) -> Value {
    json!({"auth": {"identity": {"methods": ["application_credential"],
        "application_credential": {"id": id, "secret": secret}}}})
}

#[test]
fn application_credentials() {
    let ns = NetNs::with_peer("osac");
    let n = ns.name();
    let pre = tempfile::tempdir().unwrap();
    let k = Kilnd::start_in(
        Some(n),
        &format!(
            "{}{NO_VMM}[openstack]\nadmin_password = \"secret-pw-c\"\n",
            tcp_config(pre.path(), "127.0.0.1:18782")
        ),
    );
    let cli = Cli::new(&k, n);
    let me = cli.json(&["token", "issue"]);

    // Made with the password: the secret shown once, all the user's roles.
    let ci = cli.json(&[
        "application",
        "credential",
        "create",
        "--description",
        "for CI",
        "ci",
    ]);
    let ci_id = ci["ID"].as_str().unwrap().to_owned();
    let ci_secret = ci["Secret"].as_str().unwrap().to_owned();
    assert_eq!(ci_secret.len(), 64, "{ci}");
    assert_eq!(ci["Project ID"], me["project_id"], "{ci}");
    for r in ["admin", "member", "reader"] {
        assert!(ci["Roles"].to_string().contains(r), "{ci}");
    }
    assert_eq!(ci["Unrestricted"], false, "{ci}");
    // A reader-only one with a chosen secret, unrestricted, expiring.
    let expiry = utc_in(3600);
    let ro = cli.json(&[
        "application",
        "credential",
        "create",
        "--role",
        "reader",
        "--secret",
        "chosen-secret-1",
        "--unrestricted",
        "--expiration",
        &expiry,
        "ro",
    ]);
    assert_eq!(ro["Roles"].as_array().unwrap().len(), 1, "{ro}");
    assert_eq!(ro["Roles"][0]["name"], "reader", "{ro}");
    assert!(
        ro["Expires At"].as_str().unwrap().starts_with(&expiry),
        "{ro}"
    );
    let ro_id = ro["ID"].as_str().unwrap().to_owned();

    let list = cli.json(&["application", "credential", "list"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ci", "ro"], "{list}");
    assert!(
        !list.to_string().contains(&ci_secret),
        "secrets are shown once"
    );
    let shown = cli.json(&["application", "credential", "show", "ci"]);
    assert_eq!(
        (shown["ID"].as_str(), shown["Description"].as_str()),
        (Some(ci_id.as_str()), Some("for CI"))
    );
    // Stored hashed: the secret is nowhere in the database.
    for f in ["kiln.db", "kiln.db-wal"] {
        let db = std::fs::read(k.state_path(f)).unwrap_or_default();
        assert!(
            !db.windows(ci_secret.len())
                .any(|w| w == ci_secret.as_bytes()),
            "{f}"
        );
    }

    // Bad creates: 4xx, nothing made.
    for (args, says) in [
        (vec!["--role", "superuser", "x1"], "superuser"),
        (vec!["ci"], "already exists"),
        (vec!["--expiration", "2001-01-01T00:00:00", "x2"], "past"),
    ] {
        let mut a = vec!["application", "credential", "create"];
        a.extend(args);
        let (ok, _, err) = cli.try_run(&a);
        assert!(!ok && err.contains(says), "{a:?}: {err}");
    }
    assert_eq!(
        cli.json(&["application", "credential", "list"])
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // osc on the credential, by id and by name + user.
    let by_id = [
        "--os-application-credential-id",
        &ci_id,
        "--os-application-credential-secret",
        &ci_secret,
    ];
    let (ok, out, err) = with_cred(n, &by_id, &["token", "issue"]);
    assert!(ok, "{out}{err}");
    let t: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&t["project_id"], &t["user_id"]),
        (&me["project_id"], &me["user_id"]),
        "{t}"
    );
    let (ok, out, err) = with_cred(n, &by_id, &["server", "list"]);
    assert!(ok && out.trim() == "[]", "{out}{err}");
    let by_name = [
        "--os-application-credential-name",
        "ro",
        "--os-application-credential-secret",
        "chosen-secret-1",
        "--os-username",
        "admin",
        "--os-user-domain-name",
        "Default",
    ];
    let (ok, out, err) = with_cred(n, &by_name, &["flavor", "list"]);
    assert!(ok && out.contains("k1.probe"), "{out}{err}");
    // A restricted credential's token cannot make another; an unrestricted one can.
    let (ok, _, err) = with_cred(n, &by_id, &["application", "credential", "create", "x3"]);
    assert!(!ok && err.contains("restricted"), "{err}");
    let (ok, out, err) = with_cred(n, &by_name, &["application", "credential", "create", "x4"]);
    assert!(ok, "{out}{err}");
    cli.run(&["application", "credential", "delete", "x4"]);
    // A wrong secret.
    let wrong = [
        "--os-application-credential-id",
        &ci_id,
        "--os-application-credential-secret",
        "nope",
    ];
    let (ok, _, err) = with_cred(n, &wrong, &["token", "issue"]);
    assert!(!ok && err.contains("401"), "{err}");

    // The token: the credential's roles and id, no longer than it lives, no scope.
    let (code, body) = auth(n, &cred_auth(&ro_id, "chosen-secret-1"));
    assert_eq!(code, 201, "{body}");
    let tok = body_json(&body)["token"].clone();
    assert_eq!(tok["roles"].as_array().unwrap().len(), 1, "{tok}");
    assert_eq!(tok["roles"][0]["name"], "reader");
    assert_eq!(tok["application_credential"]["id"], ro_id.as_str());
    assert_eq!(tok["methods"], json!(["application_credential"]));
    assert!(
        tok["expires_at"].as_str().unwrap()[..26] <= ro["Expires At"].as_str().unwrap()[..26],
        "{tok} {ro}"
    );
    let mut scoped = cred_auth(&ro_id, "chosen-secret-1");
    scoped["auth"]["scope"] = json!({"project": {"name": "admin", "domain": {"id": "default"}}});
    assert_eq!(auth(n, &scoped).0, 401);
    assert_eq!(auth(n, &cred_auth(&ro_id, "chosen-secret-2")).0, 401);

    // Deleting the credential revokes its tokens, and it grants no more.
    let (code, body) = auth(n, &cred_auth(&ci_id, &ci_secret));
    assert_eq!(code, 201, "{body}");
    let h = format!("X-Auth-Token: {}", common::osc::subject_token(&body));
    let servers = format!("{URL}/compute/v2.1/servers");
    assert_eq!(curl(n, &["-H", &h, &servers]).0, 200);
    cli.run(&["application", "credential", "delete", "ci"]);
    assert_eq!(curl(n, &["-H", &h, &servers]).0, 401);
    assert_eq!(auth(n, &cred_auth(&ci_id, &ci_secret)).0, 401);
    let (ok, _, _) = with_cred(n, &by_id, &["token", "issue"]);
    assert!(!ok);
    let list = cli.json(&["application", "credential", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    // An expired credential grants nothing, and its token ends with it.
    let short = cli.json(&[
        "application",
        "credential",
        "create",
        "--expiration",
        &utc_in(3),
        "short",
    ]);
    let short = cred_auth(
        short["ID"].as_str().unwrap(),
        short["Secret"].as_str().unwrap(),
    );
    let (code, body) = auth(n, &short);
    assert_eq!(code, 201, "{body}");
    let h = format!("X-Auth-Token: {}", common::osc::subject_token(&body));
    assert_eq!(curl(n, &["-H", &h, &servers]).0, 200);
    std::thread::sleep(std::time::Duration::from_secs(4));
    let (code, body) = auth(n, &short);
    assert_eq!(code, 401, "{body}");
    assert_eq!(curl(n, &["-H", &h, &servers]).0, 401);
    // Another user's path is a 404.
    let (_, body) = auth(n, &cred_auth(&ro_id, "chosen-secret-1"));
    let h = format!("X-Auth-Token: {}", common::osc::subject_token(&body));
    let (code, body) = curl(
        n,
        &[
            "-H",
            &h,
            &format!("{URL}/identity/v3/users/someone/application_credentials"),
        ],
    );
    assert_eq!(code, 404, "{body}");
}

/// `now + secs` as osc's `--expiration` takes it (`%Y-%m-%dT%H:%M:%S`,
/// UTC).
fn utc_in(secs: u64) -> String {
    let out = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("+{secs} seconds"),
            "+%Y-%m-%dT%H:%M:%S",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
