//! A stock cloud-init configures a real Debian guest from what kilnd
//! serves, with no change to the image: the Debian image that
//! `images/debian/build.sh` makes (cloud-init as Debian ships it) boots
//! under QEMU's software emulation (TCG: this machine's nested KVM cannot
//! run a guest kernel, see testbed.md), playing the server kilnd made:
//!
//! - **config drive**: the server's `disk.config`, built by kilnd, as the
//!   guest's second virtio disk and no network. cloud-init picks its
//!   ConfigDrive datasource and takes the hostname, the key pair and the
//!   user data from it.
//! - **metadata service and DHCP**: no drive; a NIC with the port's MAC on
//!   a tap named as kilnd names the port's tap, on the network's bridge in
//!   kilnd's namespace, and the SMBIOS product name kilnd gives its guests
//!   ("OpenStack Nova"). cloud-init gets its address by DHCP, picks its
//!   OpenStack datasource, reads http://169.254.169.254 and takes the same
//!   things from there; then the test logs in over SSH with the key pair.
//!
//! Slow (ignored; `scripts/test-slow.sh` runs them): each boot takes
//! minutes under TCG, and the image is built first if missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64ct::Encoding;
use common::firmware::{firmware_config, import_disk_fw};
use common::vm::start_kilnd_in;
use common::Kilnd;
use kiln_api::compute::{Server, ServerStatus};
use kiln_tests::netns::NetNs;
use kiln_tests::{cache_dir, guest_file, repo_root, tail_lines, ScratchDir};

/// How long one TCG boot may take to cloud-init's final message.
const BOOT_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// The Debian image, built (as `scripts/build-debian-image.sh` would) if
/// it is not in the cache yet.
fn debian_image() -> PathBuf {
    let image = cache_dir().join("images").join("debian-12.qcow2");
    if !image.exists() {
        let out = Command::new(repo_root().join("scripts/build-debian-image.sh"))
            .arg("--output")
            .arg(&image)
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/build-debian-image.sh");
        assert!(out.status.success(), "building the Debian image: {out:?}");
    }
    image
}

/// A kilnd in `ns` with the firmware, the Debian image as `debian`, a
/// flavor that fits it, and key pair `ci` made by `ssh-keygen`: the kilnd,
/// the private key's path and the public line.
fn setup(ns: &NetNs) -> (Kilnd, PathBuf, String) {
    let k = start_kilnd_in(Some(ns.name()), &firmware_config());
    let r = k.req(
        "POST",
        "/v1/flavors",
        Some(r#"{"name":"ci.vm","vcpus":1,"ram_mb":1024,"disk_gb":4}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    import_disk_fw(&k, "debian", &debian_image(), "qcow2", Some("bios"));
    let key = k.dir.path().join("ci_key");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ci@kiln-test", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let public = public.trim().to_owned();
    let body = serde_json::json!({"name": "ci", "public_key": public});
    let r = k.req("POST", "/v1/keypairs", Some(&body.to_string()));
    assert_eq!(r.status, 201, "{}", r.text());
    (k, key, public)
}

/// User data that shows on the serial console that it ran, under which
/// hostname, and which keys the default user got.
fn user_data() -> String {
    let ud = "#cloud-config\nruncmd:\n  - [sh, -c, 'echo \"KILN-USERDATA-RAN $(hostname) keys: $(cut -d\" \" -f3 /home/*/.ssh/authorized_keys | tr \"\\n\" \" \")\" > /dev/ttyS0']\n";
    base64ct::Base64::encode_string(ud.as_bytes())
}

/// Creates server `name` with `extra` fields, lets kilnd start it (which
/// builds its config drive and proves it boots as far as this machine
/// lets it), then stops it, so that QEMU can play the guest on its disk
/// image, its drive and its port.
fn server(k: &Kilnd, name: &str, extra: serde_json::Value) -> Server {
    let mut body = serde_json::json!({
        "name": name, "flavor": "ci.vm", "image": "debian", "key_name": "ci",
        "user_data": user_data(),
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let s = k.create_server(&body.to_string());
    let s = k.wait_status(&s.id, ServerStatus::Active, Duration::from_secs(120));
    let r = k.req(
        "POST",
        &format!("/v1/servers/{}/action", s.id),
        Some(r#"{"action":"stop"}"#),
    );
    assert!(r.status < 300, "{}", r.text());
    k.wait_status(&s.id, ServerStatus::Shutoff, Duration::from_secs(120))
}

/// Boots the Debian image under TCG (in `ns` when given) with `args`, on
/// a throw-away snapshot, until the serial log has cloud-init's final
/// message and a login prompt; `while_booting` runs once QEMU is up,
/// `when_up` once the guest is (with its serial log), before QEMU ends.
/// Returns the serial log and the time taken.
fn boot(
    tag: &str,
    ns: Option<&NetNs>,
    args: &[String],
    while_booting: impl FnOnce(),
    when_up: impl FnOnce(&str),
) -> (String, Duration) {
    let dir = ScratchDir::new(tag).unwrap();
    let log = dir.path().join("serial.log");
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns.name(), "qemu-system-x86_64"]);
            c
        }
        None => Command::new("qemu-system-x86_64"),
    };
    cmd.args(["-accel", "tcg", "-M", "pc", "-m", "1024", "-smp", "2"])
        .args(["-display", "none", "-nodefaults", "-monitor", "none"])
        .args(["-no-reboot", "-serial"])
        .arg(format!("file:{}", log.display()))
        .arg("-bios")
        .arg(guest_file("bios.bin"))
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=qcow2,snapshot=on",
            debian_image().display()
        ))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .expect("qemu-system-x86_64: run scripts/setup.sh");
    while_booting();
    let serial = || String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
    let outcome = loop {
        let text = serial();
        if text.contains("login:") && text.contains("Cloud-init v.") && text.contains("finished at")
        {
            break Ok(text);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break Err(format!("QEMU exited ({status}) before the login prompt"));
        }
        if start.elapsed() > BOOT_TIMEOUT {
            break Err(format!("no login prompt within {BOOT_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let took = start.elapsed();
    if let Ok(text) = &outcome {
        // A panic here leaves QEMU to the guard below.
        let guard = KillOnDrop(&mut child);
        when_up(text);
        drop(guard);
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    match outcome {
        Ok(text) => (text, took),
        Err(why) => panic!(
            "{tag}: {why}; QEMU stderr: {}\nserial log tail:\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail_lines(&serial(), 60)
        ),
    }
}

/// Kills QEMU if a check panics while it runs.
struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.kill();
        }
    }
}

/// What cloud-init must have done with what kilnd gave: the hostname is
/// the server's, the user data ran, the key pair is the default user's.
fn assert_configured(tag: &str, serial: &str, s: &Server, datasource: &str) {
    let want = [
        format!("datasource {datasource}"),
        format!("{} login:", s.name),
        format!("KILN-USERDATA-RAN {} keys: ci@kiln-test", s.name),
    ];
    for w in &want {
        assert!(
            serial.contains(w.as_str()),
            "{tag}: no {w:?} on the serial console:\n{}",
            tail_lines(serial, 60)
        );
    }
}

#[test]
#[ignore = "slow: boots a Debian image under QEMU TCG (minutes); run with scripts/test-slow.sh"]
fn cloud_init_reads_kilnds_config_drive() {
    let ns = NetNs::new("kcicd");
    let (k, _key, _public) = setup(&ns);
    let s = server(&k, "cinit-cd", serde_json::json!({"config_drive": true}));
    let drive = k.state_path(&format!("servers/{}/disk.config", s.id));
    assert!(drive.exists(), "no config drive at {}", drive.display());
    let (serial, took) = boot(
        "cicd",
        None,
        &[
            "-nic".into(),
            "none".into(),
            "-drive".into(),
            format!("file={},if=virtio,format=raw,readonly=on", drive.display()),
        ],
        || {},
        |_| {},
    );
    eprintln!(
        "config drive: configured after {:.0} s under TCG",
        took.as_secs_f64()
    );
    assert_configured("config drive", &serial, &s, "DataSourceConfigDrive");
}

#[test]
#[ignore = "slow: boots a Debian image under QEMU TCG (minutes); run with scripts/test-slow.sh"]
fn cloud_init_reads_kilnds_metadata_service_and_dhcp() {
    let ns = NetNs::new("kcimd");
    let (k, key, _public) = setup(&ns);
    let r = k.req(
        "POST",
        "/v1/networks",
        Some(r#"{"name":"cilan","cidr":"10.88.0.0/24","mode":"nat"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let s = server(
        &k,
        "cinit-md",
        serde_json::json!({"networks": [{"network": "cilan"}]}),
    );
    let nic = s.nics[0].clone();
    let ip = nic.ip.clone().expect("the port has an address");
    let tap = nic.tap.clone();
    let smbios = format!(
        "type=1,manufacturer=OpenStack Foundation,product=OpenStack Nova,serial={},uuid={}",
        s.id, s.id
    );
    let (serial, took) = boot(
        "cimd",
        Some(&ns),
        &[
            "-smbios".into(),
            smbios,
            "-netdev".into(),
            format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            "-device".into(),
            format!("virtio-net-pci,netdev=n0,mac={}", nic.mac),
        ],
        || {
            // QEMU made the tap; put it on the bridge, as kilnd would.
            let t0 = Instant::now();
            while ns.link(&tap).is_none() && t0.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(100));
            }
            ns.ip(&["link", "set", &tap, "master", "cilan", "up"]);
        },
        // Logged in with the key pair while the guest runs.
        |_| key_login(&ns, &key, &ip, "cinit-md"),
    );
    eprintln!(
        "metadata service: configured after {:.0} s under TCG",
        took.as_secs_f64()
    );
    assert_configured("metadata", &serial, &s, "DataSourceOpenStack");
    assert!(
        serial.contains(&ip),
        "cloud-init's network table does not show {ip}:\n{}",
        tail_lines(&serial, 60)
    );
}

/// Logs in to `ip` from kilnd's namespace as Debian's default user with
/// the key pair's private half and checks the hostname it reports.
fn key_login(ns: &NetNs, key: &Path, ip: &str, hostname: &str) {
    let out = ns.exec(&[
        "ssh",
        "-i",
        &key.display().to_string(),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=30",
        &format!("debian@{ip}"),
        "hostname",
    ]);
    assert_eq!(out.trim(), hostname, "ssh said: {out}");
}
