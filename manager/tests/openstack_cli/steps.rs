//! The session's Neutron, flavor and console steps: networks and
//! subnets made through Neutron become Kiln networks served on the host,
//! ports are the servers' NICs, flavors and their properties are Kiln's,
//! and `console url show` hands out a URL whose token opens the server's
//! VNC through kilnd's websocket.

use serde_json::Value;

use super::common::osc::{curl, Cli};
use super::common::vm::T;
use super::common::Kilnd;
use kiln_api::compute::ServerStatus;
use kiln_tests::netns::NetNs;

/// The rows of a list whose `key` is `want`.
fn rows<'a>(list: &'a Value, key: &str, want: &str) -> Vec<&'a Value> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .filter(|r| r[key] == want)
        .collect()
}

/// Refused, with `why` in the CLI's message.
fn refused(cli: &Cli, args: &[&str], why: &str) {
    let (ok, out, err) = cli.try_run(args);
    assert!(!ok, "{args:?} passed: {out}");
    assert!(err.contains(why), "{args:?}: {err}");
}

/// `network create lan` and `subnet create lan-v4`: Kiln's network
/// `lan` (isolated, a bridge of its own) with its subnet, the gateway on
/// the bridge. Answers the network's id.
pub fn network(cli: &Cli, k: &Kilnd, ns: &NetNs) -> String {
    let net = cli.json(&["network", "create", "lan"]);
    assert_eq!(
        (&net["name"], &net["status"]),
        (&"lan".into(), &"ACTIVE".into()),
        "{net}"
    );
    let net_id = net["id"].as_str().unwrap().to_owned();
    let sub = cli.json(&[
        "subnet",
        "create",
        "--network",
        "lan",
        "--subnet-range",
        "10.61.0.0/24",
        "lan-v4",
    ]);
    assert_eq!(
        (
            &sub["cidr"],
            &sub["gateway_ip"],
            &sub["network_id"],
            &sub["name"]
        ),
        (
            &"10.61.0.0/24".into(),
            &"10.61.0.1".into(),
            &Value::from(net_id.as_str()),
            &"lan-v4".into()
        ),
        "{sub}"
    );
    let v1 = k.json("GET", "/v1/networks/lan", None);
    assert_eq!(
        (&v1["id"], &v1["cidr"], &v1["mode"]),
        (
            &Value::from(net_id.as_str()),
            &"10.61.0.0/24".into(),
            &"isolated".into()
        ),
        "{v1}"
    );
    let bridge = v1["bridge"].as_str().unwrap();
    let addrs = ns.ip(&["-4", "addr", "show", "dev", bridge]);
    assert!(
        addrs.contains("10.61.0.1/24"),
        "the gateway on {bridge}: {addrs}"
    );

    let list = cli.json(&["network", "list"]);
    let lan = rows(&list, "Name", "lan");
    assert_eq!(lan.len(), 1, "{list}");
    assert_eq!(
        lan[0]["Subnets"],
        Value::from(vec![sub["id"].clone()]),
        "{list}"
    );
    let show = cli.json(&["network", "show", "lan"]);
    assert_eq!(
        (&show["id"], &show["mtu"]),
        (&Value::from(net_id.as_str()), &1500.into()),
        "{show}"
    );
    // A second subnet is refused (openstack_neutron.rs checks the other
    // refusals).
    refused(
        cli,
        &[
            "subnet",
            "create",
            "--network",
            "lan",
            "--subnet-range",
            "10.62.0.0/24",
            "second",
        ],
        "already has subnet 10.61.0.0/24",
    );
    assert_eq!(
        k.json("GET", "/v1/networks/lan", None)["cidr"],
        "10.61.0.0/24"
    );
    net_id
}

/// The server's NIC as its one port; the `default` security group.
pub fn ports(cli: &Cli, k: &Kilnd, server: &str) {
    let nic = k.json("GET", &format!("/v1/servers/{server}/nics/0"), None);
    let ports = cli.json(&["port", "list", "--server", server]);
    let ports = ports.as_array().unwrap();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0]["MAC Address"], nic["mac"], "{ports:?}");
    assert_eq!(ports[0]["Status"], "ACTIVE", "{ports:?}");
    let ip = nic["ip"].as_str().unwrap();
    assert!(
        ports[0]["Fixed IP Addresses"].to_string().contains(ip),
        "{ports:?}"
    );
    let port = ports[0]["ID"].as_str().unwrap();
    // admin_state_up is the NIC's link.
    cli.run(&["port", "set", "--disable", port]);
    let link =
        |k: &Kilnd| k.json("GET", &format!("/v1/servers/{server}/nics/0"), None)["link"].clone();
    assert_eq!(link(k), "down");
    cli.run(&["port", "set", "--enable", port]);
    assert_eq!(link(k), "up");

    let groups = cli.json(&["security", "group", "list"]);
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["Name"], "default");
    assert!(
        groups[0]["Description"]
            .as_str()
            .unwrap()
            .contains("not editable"),
        "{groups:?}"
    );
    refused(cli, &["network", "delete", "lan"], "in use by");
}

/// `flavor create` and its properties (Kiln's extra specs), and flavor
/// lists paged one by one.
pub fn flavors(cli: &Cli, k: &Kilnd) {
    let f = cli.json(&[
        "flavor", "create", "--vcpus", "1", "--ram", "256", "--disk", "1", "fw.small",
    ]);
    assert_eq!(
        (&f["name"], &f["vcpus"], &f["ram"], &f["disk"]),
        (&"fw.small".into(), &1.into(), &256.into(), &1.into()),
        "{f}"
    );
    cli.run(&[
        "flavor",
        "set",
        "--property",
        "quota:disk_total_iops_sec=500",
        "fw.small",
    ]);
    let shown = cli.json(&["flavor", "show", "fw.small"]);
    assert_eq!(
        shown["properties"]["quota:disk_total_iops_sec"], "500",
        "{shown}"
    );
    let v1 = k.json("GET", "/v1/flavors/fw.small", None);
    assert_eq!(
        v1["extra_specs"]["quota:disk_total_iops_sec"], "500",
        "{v1}"
    );
    cli.run(&[
        "flavor",
        "unset",
        "--property",
        "quota:disk_total_iops_sec",
        "fw.small",
    ]);
    let v1 = k.json("GET", "/v1/flavors/fw.small", None);
    assert!(
        v1.get("extra_specs")
            .is_none_or(|e| e == &serde_json::json!({})),
        "{v1}"
    );
    // A page: `limit` after `marker`, in the list's order.
    let all = cli.json(&["flavor", "list"]);
    let all = all.as_array().unwrap();
    assert!(all.len() >= 4, "{all:?}");
    let first = all[0]["ID"].as_str().unwrap();
    let page = cli.json(&["flavor", "list", "--limit", "2", "--marker", first]);
    assert_eq!(page.as_array().unwrap()[..], all[1..3], "{page}");
}

/// A server with a screen, its console URL (remote-consoles, and the
/// older action), and the URL's token opening the VMM's RFB through
/// kilnd's websocket once.
pub fn console(cli: &Cli, k: &Kilnd, ns: &NetNs) {
    let disk = kiln_tests::disk::vga_probe_disk(k.dir.path());
    k.import_disk_with("vga", &disk, "raw", r#","firmware":"bios","display":"vga""#);
    let s = cli.json(&[
        "server", "create", "--flavor", "fw.small", "--image", "vga", "--nic", "none", "screen",
    ]);
    let id = s["id"].as_str().unwrap().to_owned();
    // Polled here: `--wait` polls every 5 s.
    k.wait_status(&id, ServerStatus::Active, T);
    let c = cli.json(&["console", "url", "show", "--novnc", "screen"]);
    assert_eq!(
        (&c["protocol"], &c["type"]),
        (&"vnc".into(), &"novnc".into()),
        "{c}"
    );
    let url = c["url"].as_str().unwrap().to_owned();
    let prefix = format!("http://127.0.0.1:18774/console/vnc.html?server={id}&token=");
    assert!(url.starts_with(&prefix), "{url}");
    let (code, page) = curl(ns.name(), &[&url]);
    assert_eq!(code, 200, "{page}");
    let ws = url
        .replace("http://", "ws://")
        .replace("/vnc.html", "/websockify");
    let banner = ns.run({
        let ws = ws.clone();
        move || rfb_banner(&ws)
    });
    assert_eq!(
        banner.as_deref(),
        Ok(&b"RFB 003.008\n"[..]),
        "through kilnd"
    );
    // Used up.
    assert_eq!(ns.run(move || rfb_banner(&ws)), Err(401));
    // Before 2.6: the os-getVNCConsole action.
    let old = cli.json(&[
        "--os-compute-api-version",
        "2.5",
        "console",
        "url",
        "show",
        "--novnc",
        "screen",
    ]);
    assert!(old["url"].as_str().unwrap().starts_with(&prefix), "{old}");
    assert_ne!(old["url"], c["url"]);
    cli.run(&["server", "delete", "screen"]);
    super::common::vm::wait_until("screen deleted", T, || {
        k.req("GET", &format!("/v1/servers/{id}"), None).status == 404
    });
}

/// The first message of the websocket at `url`, or the HTTP status that
/// refused it.
fn rfb_banner(url: &str) -> Result<Vec<u8>, u16> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::{Error, Message};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut ws, _) = match tokio_tungstenite::connect_async(url).await {
            Ok(c) => c,
            Err(Error::Http(r)) => return Err(r.status().as_u16()),
            Err(e) => panic!("websocket {url}: {e}"),
        };
        loop {
            let m = tokio::time::timeout(std::time::Duration::from_secs(20), ws.next())
                .await
                .expect("the VMM's RFB banner in 20 s")
                .expect("a message")
                .expect("a frame");
            if let Message::Binary(b) = m {
                return Ok(b.to_vec());
            }
        }
    })
}
