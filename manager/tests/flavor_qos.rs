//! Flavor QoS end to end: a flavor with Nova `quota:*` extra specs, servers
//! of it with a root disk and a NIC (kilnd inside a network namespace the
//! test creates), and the token buckets each kiln-vmm runs with, read from
//! the VMM's own control socket (`GET /v1/vm` reports the config it runs).
//! The same flavor's `kiln:disk_poll_us` reaches the root disk's polling
//! window (`poll_us`). The `virtio_pci` probe then drives its disk and NIC
//! under those limits, with polling on.
//! The mapping's arithmetic is unit-tested in `src/qos.rs`; the expected
//! buckets here are worked out by hand from the rule in manager/README.md.

mod common;

use common::vm::*;
use kiln_api::compute::{Flavor, FlavorList, Server, ServerStatus};
use kiln_api::vm::{RateLimitConfig, TokenBucketConfig};
use kiln_tests::netns::{ip, NetNs};

fn tb(size: u64, refill_time_ms: u64) -> Option<TokenBucketConfig> {
    Some(TokenBucketConfig {
        size,
        one_time_burst: 0,
        refill_time_ms,
    })
}

const SPECS: &str = r#"{
    "quota:disk_total_bytes_sec": "10485760",
    "quota:disk_total_iops_sec": "500",
    "quota:vif_outbound_average": "1024",
    "quota:vif_inbound_average": "512",
    "quota:vif_inbound_burst": "2048",
    "kiln:disk_poll_us": "250"
}"#;

/// The root disk's polling window `SPECS` asks for.
const POLL_US: u32 = 250;

/// What `SPECS` must give each device.
fn expected() -> (RateLimitConfig, RateLimitConfig, RateLimitConfig) {
    (
        // Disk: 10 MiB/s in a bucket of one second; 500 requests/s likewise.
        RateLimitConfig {
            bandwidth: tb(10 << 20, 1000),
            ops: tb(500, 1000),
        },
        // Transmit (vif_outbound): 1024 KiB/s, one second's bucket.
        RateLimitConfig {
            bandwidth: tb(1 << 20, 1000),
            ops: None,
        },
        // Receive (vif_inbound): 512 KiB/s with a 2048 KiB burst: 4 s to
        // refill.
        RateLimitConfig {
            bandwidth: tb(2 << 20, 4000),
            ops: None,
        },
    )
}

fn create(k: &common::Kilnd, name: &str, flavor: &str, image: &str) -> Server {
    k.create_server(&format!(
        r#"{{"name":"{name}","flavor":"{flavor}","image":"{image}","disk_image":"base",
            "networks":[{{"network":"lan"}}]}}"#
    ))
}

/// Asserts the limits the running VMM of `id` has on its one disk and NIC,
/// and its disk's polling window (`poll_us`, µs; 0: off).
fn assert_vmm_limits(
    k: &common::Kilnd,
    id: &str,
    want: Option<&(RateLimitConfig, RateLimitConfig, RateLimitConfig)>,
    poll_us: u32,
) {
    let info = vm_info(k, id);
    let (disks, nets) = (&info.config.disks, &info.config.nets);
    assert_eq!((disks.len(), nets.len()), (1, 1), "{:?}", info.config);
    assert_eq!(disks[0].rate_limit.as_ref(), want.map(|w| &w.0));
    assert_eq!(nets[0].rate_limit.as_ref(), want.map(|w| &w.1));
    assert_eq!(nets[0].rx_rate_limit.as_ref(), want.map(|w| &w.2));
    assert_eq!(disks[0].poll_us, poll_us, "{:?}", disks[0]);
}

#[test]
fn flavor_limits_reach_every_disk_and_nic_of_its_servers() {
    let ns = NetNs::with_peer("kqos");
    let mut k = start_kilnd_in(Some(ns.name()), "");
    register(&k, "vnet", "virtio_pci", "");
    register(&k, "hold", "hello", "hold");
    let base = k.dir.path().join("base.qcow2");
    common::qemu_img_create(&base, "64M");
    k.import_disk("base", &base, "qcow2");
    let r = k.req(
        "POST",
        "/v1/networks",
        Some(r#"{"name":"lan","bridge":"kbrq"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    ip(ns.name(), &["link", "set", "veth0", "master", "kbrq", "up"]);

    // The flavor keeps its extra specs, shown by GET and the list.
    let r = k.req(
        "POST",
        "/v1/flavors",
        Some(&format!(
            r#"{{"name":"ci.qos","vcpus":1,"ram_mb":64,"disk_gb":1,"extra_specs":{SPECS}}}"#
        )),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let f: Flavor = r.json().unwrap();
    let specs: std::collections::BTreeMap<String, String> = serde_json::from_str(SPECS).unwrap();
    assert_eq!(f.extra_specs, specs);
    let got: Flavor = k.req("GET", "/v1/flavors/ci.qos", None).json().unwrap();
    assert_eq!(got, f);
    let l: FlavorList = k.req("GET", "/v1/flavors", None).json().unwrap();
    let probe = l.flavors.iter().find(|f| f.name == "k1.probe").unwrap();
    assert!(probe.extra_specs.is_empty());
    assert!(l.flavors.contains(&f));
    let want = expected();

    // A running server of that flavor: its VMM has the limits on its disk
    // and its NIC, and polls its disk; one of a flavor without specs has
    // no limits and no polling.
    let held = create(&k, "held", "ci.qos", "hold");
    let plain = create(&k, "plain", "k1.probe", "hold");
    for s in [&held, &plain] {
        k.wait_status(&s.id, ServerStatus::Active, T);
    }
    assert_vmm_limits(&k, &held.id, Some(&want), POLL_US);
    assert_vmm_limits(&k, &plain.id, None, 0);

    // The probe drives its disk (write, read back, flush, get-id) and its
    // NIC (ARP to the peer) under the limits and finishes.
    let talker = create(&k, "talker", "ci.qos", "vnet");
    wait_until("the probe's run", T, || {
        console(&k, &talker.id).contains("virtio: done")
    });
    let out = console(&k, &talker.id);
    assert!(!out.contains("FAIL"), "{out}");
    assert!(out.contains("virtio-blk: read back and verified"), "{out}");
    assert!(out.contains("virtio-net: ARP reply from 10.9.0.1"), "{out}");
    k.wait_status(&talker.id, ServerStatus::Shutoff, T);

    // The server keeps its flavor's limits after the flavor is deleted and
    // kilnd restarts (a copy is stored with it, as Nova does), across a
    // stop and start (a new VMM).
    assert_eq!(k.req("DELETE", "/v1/flavors/ci.qos", None).status, 204);
    k.stop();
    k.spawn();
    action(&k, &held.id, r#"{"action":"stop"}"#);
    k.wait_status(&held.id, ServerStatus::Shutoff, T);
    action(&k, &held.id, r#"{"action":"start"}"#);
    k.wait_status(&held.id, ServerStatus::Active, T);
    assert_vmm_limits(&k, &held.id, Some(&want), POLL_US);

    for s in [&held, &plain, &talker] {
        k.delete_server(&s.id);
    }
    assert_nothing_left(&k);
}

#[test]
fn cli_sets_and_shows_flavor_properties() {
    let k = common::Kilnd::start(common::api::NO_VMM);
    let (ok, out, err) = k.cli(&[
        "flavor",
        "create",
        "ci.cli",
        "--vcpus",
        "1",
        "--ram-mb",
        "64",
        "--disk-gb",
        "1",
        "--property",
        "quota:disk_total_iops_sec=50",
        "--property",
        "quota:vif_outbound_average=100",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("PROPERTIES"), "{out}");
    let (ok, out, err) = k.cli(&["flavor", "show", "ci.cli"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("quota:disk_total_iops_sec='50', quota:vif_outbound_average='100'"),
        "{out}"
    );
    let (ok, out, _) = k.cli(&["--json", "flavor", "show", "ci.cli"]);
    assert!(ok);
    let f: Flavor = serde_json::from_str(&out).unwrap();
    assert_eq!(f.extra_specs["quota:disk_total_iops_sec"], "50");
    // kilnd's refusal reaches the user, naming the key and what to use.
    let bad_property = |property: &str| {
        k.cli(&[
            "flavor",
            "create",
            "ci.bad",
            "--vcpus",
            "1",
            "--ram-mb",
            "64",
            "--property",
            property,
        ])
    };
    let (ok, _, err) = bad_property("quota:disk_read_iops_sec=5");
    assert!(!ok);
    assert!(
        err.contains("quota:disk_read_iops_sec") && err.contains("quota:disk_total_iops_sec"),
        "{err}"
    );
    let (ok, _, err) = bad_property("novalue");
    assert!(!ok && err.contains("KEY=VALUE"), "{err}");
    assert_eq!(k.req("GET", "/v1/flavors/ci.bad", None).status, 404);
}

/// The time from asking for a server of `flavor` running the `virtio_pci`
/// probe on a root disk to its console showing the last disk request
/// (GET_ID) done; the probe's run must pass.
fn probe_disk_run(k: &common::Kilnd, name: &str, flavor: &str) -> std::time::Duration {
    let t0 = std::time::Instant::now();
    let s = k.create_server(&format!(
        r#"{{"name":"{name}","flavor":"{flavor}","image":"vnet","disk_image":"base"}}"#
    ));
    wait_until("the probe's disk requests", T, || {
        console(k, &s.id).contains("virtio-blk: serial")
    });
    let took = t0.elapsed();
    wait_until("the probe's run", T, || {
        console(k, &s.id).contains("virtio: done")
    });
    let out = console(k, &s.id);
    assert!(!out.contains("FAIL"), "{out}");
    assert!(out.contains("virtio-blk: read back and verified"), "{out}");
    k.wait_status(&s.id, ServerStatus::Shutoff, T);
    k.delete_server(&s.id);
    took
}

/// The limit has an effect: at 2 requests/s (a bucket of two requests,
/// one back every 0.5 s) the probe's four disk requests (write, read,
/// flush, GET_ID) need two refills, so they cannot be done sooner than 1 s
/// after the server was asked for, however fast or slow the host. Only
/// that lower bound is asserted (load can only add time); the unlimited
/// run's time is printed for comparison. (Each wait stays well inside the
/// probe's polling bound for a request.)
#[test]
fn an_iops_limit_slows_the_guests_disk() {
    let k = start_kilnd("");
    register(&k, "vnet", "virtio_pci", "");
    let base = k.dir.path().join("base.qcow2");
    common::qemu_img_create(&base, "64M");
    k.import_disk("base", &base, "qcow2");
    let r = k.req(
        "POST",
        "/v1/flavors",
        Some(
            r#"{"name":"slow","vcpus":1,"ram_mb":64,"disk_gb":1,
                "extra_specs":{"quota:disk_total_iops_sec":"2"}}"#,
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let free = probe_disk_run(&k, "free", "k1.probe");
    let slow = probe_disk_run(&k, "slow", "slow");
    eprintln!("probe's disk requests done after {free:?} unlimited, {slow:?} at 2 requests/s");
    assert!(
        slow >= std::time::Duration::from_millis(950),
        "four requests at 2/s done after {slow:?}"
    );
    assert_nothing_left(&k);
}
