//! The renderers on a known server: golden JSON, the listings, the EC2
//! printing, the config drive's files.

use std::collections::BTreeMap;

use serde_json::json;

use super::tree::{self, Answer};
use super::*;

fn facts() -> Facts {
    Facts {
        id: "1a2b3c4d-0000-4000-8000-000000000001".into(),
        name: "Web_1.prod".into(),
        hostname: hostname("Web_1.prod", "x"),
        availability_zone: AVAILABILITY_ZONE.into(),
        launch_index: 0,
        project_id: String::new(),
        flavor: "m1.small".into(),
        image_id: "5e6f7a8b-0000-4000-8000-000000000002".into(),
        key: Some(Key {
            name: "k".into(),
            kind: "ssh".into(),
            public_key: "ssh-ed25519 AAAA me".into(),
        }),
        admin_pass: Some("pw".into()),
        user_data: Some(vec![0xff, 0x00, b'x']),
        meta: BTreeMap::from([("role".into(), "web".into())]),
        nics: vec![
            NicFacts {
                mac: "02:00:00:00:00:01".into(),
                link: "kt1a2b3c4d0".into(),
                network_id: "net-a".into(),
                mtu: 1500,
                ip: Some("10.77.0.10".parse().unwrap()),
                prefix: 24,
                gateway: Some("10.77.0.1".parse().unwrap()),
                dns: vec!["10.77.0.53".parse().unwrap()],
                dhcp: false,
            },
            NicFacts {
                mac: "02:00:00:00:00:02".into(),
                link: "kt1a2b3c4d1".into(),
                network_id: "net-b".into(),
                mtu: 9000,
                ip: Some("10.78.0.5".parse().unwrap()),
                prefix: 28,
                gateway: Some("10.78.0.1".parse().unwrap()),
                dns: vec!["10.77.0.53".parse().unwrap()],
                dhcp: true,
            },
            NicFacts {
                mac: "02:00:00:00:00:03".into(),
                link: "kt1a2b3c4d2".into(),
                network_id: "net-l2".into(),
                mtu: 1500,
                ..NicFacts::default()
            },
        ],
        password: None,
        random_seed: None,
    }
}

fn body(a: Answer) -> String {
    assert_eq!(a.status, 200, "{a:?}");
    String::from_utf8(a.body).unwrap()
}

fn json_at(f: &Facts, path: &str) -> serde_json::Value {
    serde_json::from_str(&body(tree::get(f, path))).unwrap()
}

#[test]
fn meta_data_json_golden() {
    let f = facts();
    assert_eq!(
        json_at(&f, "/openstack/latest/meta_data.json"),
        json!({
            "uuid": "1a2b3c4d-0000-4000-8000-000000000001",
            "meta": {"role": "web"},
            "admin_pass": "pw",
            "public_keys": {"k": "ssh-ed25519 AAAA me"},
            "keys": [{"name": "k", "type": "ssh", "data": "ssh-ed25519 AAAA me"}],
            "hostname": "web-1-prod.novalocal",
            "name": "Web_1.prod",
            "launch_index": 0,
            "availability_zone": "nova",
            "project_id": "",
            "devices": [],
            "dedicated_cpus": [],
        })
    );
    // The first version has none of the later keys.
    let first = json_at(&f, "/openstack/2012-08-10/meta_data.json");
    for later in ["project_id", "devices", "dedicated_cpus", "random_seed"] {
        assert!(first.get(later).is_none(), "{later} in {first}");
    }
    let seeded = Facts {
        random_seed: Some(vec![1; 512]),
        ..f
    };
    let md = json_at(&seeded, "/openstack/2013-04-04/meta_data.json");
    assert_eq!(md["random_seed"].as_str().unwrap().len(), 684);
}

#[test]
fn network_data_json_golden() {
    assert_eq!(
        json_at(&facts(), "/openstack/2015-10-15/network_data.json"),
        json!({
            "links": [
                {"id": "kt1a2b3c4d0", "vif_id": "1a2b3c4d-0000-4000-8000-000000000001-0",
                 "type": "bridge", "mtu": 1500, "ethernet_mac_address": "02:00:00:00:00:01"},
                {"id": "kt1a2b3c4d1", "vif_id": "1a2b3c4d-0000-4000-8000-000000000001-1",
                 "type": "bridge", "mtu": 9000, "ethernet_mac_address": "02:00:00:00:00:02"},
                {"id": "kt1a2b3c4d2", "vif_id": "1a2b3c4d-0000-4000-8000-000000000001-2",
                 "type": "bridge", "mtu": 1500, "ethernet_mac_address": "02:00:00:00:00:03"},
            ],
            "networks": [
                {"id": "network0", "type": "ipv4", "link": "kt1a2b3c4d0",
                 "ip_address": "10.77.0.10", "netmask": "255.255.255.0",
                 "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.77.0.1"}],
                 "network_id": "net-a",
                 "services": [{"type": "dns", "address": "10.77.0.53"}]},
                {"id": "network1", "type": "ipv4_dhcp", "link": "kt1a2b3c4d1",
                 "network_id": "net-b"},
            ],
            "services": [{"type": "dns", "address": "10.77.0.53"}],
        })
    );
}

#[test]
fn listings_versions_and_files() {
    let f = facts();
    assert_eq!(
        body(tree::get(&f, "/openstack")),
        "2012-08-10\n2013-04-04\n2013-10-17\n2015-10-15\n2016-06-30\n2016-10-06\n\
         2017-02-22\n2018-08-27\n2020-10-14\nlatest"
    );
    assert_eq!(
        body(tree::get(&f, "/openstack/2012-08-10/")),
        "meta_data.json\nuser_data"
    );
    assert_eq!(
        body(tree::get(&f, "/openstack/latest")),
        "meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json\nvendor_data2.json"
    );
    let none = Facts {
        user_data: None,
        ..facts()
    };
    assert_eq!(tree::get(&none, "/openstack/latest/user_data").status, 404);
    assert_eq!(tree::get(&none, "/latest/user-data").status, 404);
    assert_eq!(
        tree::get(&f, "/openstack/latest/user_data").body,
        [0xff, 0, b'x']
    );
    assert_eq!(
        tree::get(&f, "/openstack/2012-08-10/network_data.json").status,
        404
    );
    assert_eq!(
        tree::get(&f, "/openstack/2099-01-01/meta_data.json").status,
        404
    );
    assert_eq!(tree::get(&f, "/openstack/latest/../latest").status, 404);
    assert_eq!(
        body(tree::get(&f, "/openstack/latest/vendor_data2.json")),
        "{}"
    );
    assert_eq!(body(tree::get(&f, "/openstack/latest/password")), "");
    let posted = Facts {
        password: Some("enc".into()),
        ..facts()
    };
    assert_eq!(
        body(tree::get(&posted, "/openstack/latest/password")),
        "enc"
    );
    assert!(tree::is_password(
        &f,
        &["openstack", "2013-04-04", "password"]
    ));
    assert!(!tree::is_password(
        &f,
        &["openstack", "2012-08-10", "password"]
    ));
}

#[test]
fn ec2_tree_as_nova_prints_it() {
    let f = facts();
    let get = |p: &str| body(tree::get(&f, p));
    assert!(get("/").starts_with("1.0\n2007-01-19\n"));
    assert!(get("/").ends_with("2009-04-04\nlatest"));
    assert_eq!(get("/latest"), "meta-data/\nuser-data");
    assert_eq!(
        get("/latest/meta-data/"),
        "ami-id\nami-launch-index\nami-manifest-path\nblock-device-mapping/\nhostname\n\
         instance-action\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\n\
         placement/\npublic-hostname\npublic-ipv4\npublic-keys/\nreservation-id\nsecurity-groups"
    );
    assert_eq!(get("/2009-04-04/meta-data/instance-id"), "i-1a2b3c4d");
    assert_eq!(get("/latest/meta-data/ami-id"), "ami-5e6f7a8b");
    assert_eq!(get("/latest/meta-data/instance-type"), "m1.small");
    assert_eq!(get("/latest/meta-data/local-ipv4"), "10.77.0.10");
    assert_eq!(get("/latest/meta-data/placement/availability-zone"), "nova");
    assert_eq!(get("/latest/meta-data/public-keys/"), "0=k");
    assert_eq!(get("/latest/meta-data/public-keys/0/"), "openssh-key");
    assert_eq!(
        get("/latest/meta-data/public-keys/0/openssh-key"),
        "ssh-ed25519 AAAA me"
    );
    assert_eq!(
        get("/latest/meta-data/block-device-mapping/root"),
        "/dev/vda"
    );
    assert_eq!(tree::get(&f, "/latest/user-data").body, [0xff, 0, b'x']);
    // 1.0 has no later keys.
    assert!(tree::get(&f, "/1.0/meta-data/instance-type").status == 404);
    assert!(tree::get(&f, "/latest/meta-data/nothing").status == 404);
    assert!(tree::get(&f, "/2010-01-01/meta-data/").status == 404);
}

#[test]
fn drive_files_at_novas_paths() {
    let f = facts();
    let files = drive_files(&f);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "ec2/2009-04-04/meta-data.json",
        "ec2/2009-04-04/user-data",
        "ec2/latest/meta-data.json",
        "openstack/2012-08-10/meta_data.json",
        "openstack/2012-08-10/user_data",
        "openstack/2013-10-17/vendor_data.json",
        "openstack/2015-10-15/network_data.json",
        "openstack/2016-10-06/vendor_data2.json",
        "openstack/latest/meta_data.json",
        "openstack/latest/network_data.json",
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    for absent in [
        "openstack/2012-08-10/network_data.json",
        "openstack/2015-10-15/vendor_data2.json",
        "openstack/latest/password",
        "ec2/1.0/meta-data.json",
    ] {
        assert!(!names.contains(&absent), "{absent} in {names:?}");
    }
    let file = |n: &str| &files.iter().find(|(p, _)| p == n).unwrap().1;
    assert_eq!(file("openstack/latest/user_data"), &[0xff, 0, b'x']);
    let ec2: serde_json::Value = serde_json::from_slice(file("ec2/latest/meta-data.json")).unwrap();
    assert_eq!(
        ec2["public-keys"],
        json!({"0": {"openssh-key": "ssh-ed25519 AAAA me"}})
    );
    let md: serde_json::Value =
        serde_json::from_slice(file("openstack/latest/meta_data.json")).unwrap();
    assert_eq!(md["admin_pass"], "pw");
}

#[test]
fn hostnames_as_nova_sanitizes_them() {
    assert_eq!(hostname("Web 1_x.y", "id"), "web-1-x-y.novalocal");
    assert_eq!(hostname("--a$b--", "id"), "ab.novalocal");
    assert_eq!(hostname("é", "id"), "server-id.novalocal");
    assert_eq!(
        hostname(&"a".repeat(70), "id").len(),
        63 + ".novalocal".len()
    );
}

/// `Facts::load` on a real store: what the config drive renders.
#[test]
fn facts_load_from_the_store() {
    use crate::store::{NetworkSpec, NewNic, Store};
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("db")).unwrap();
    let spec = NetworkSpec {
        subnet: Some(crate::ipam::SubnetSpec {
            cidr: crate::ipam::Subnet::parse("10.77.0.0/24").unwrap(),
            gateway: "10.77.0.1".parse().unwrap(),
            dns: vec!["10.77.0.53".parse().unwrap()],
        }),
        dhcp: true,
        mode: Default::default(),
    };
    let net = s
        .create_network("lan", "br-lan", 1400, true, &spec)
        .unwrap();
    let mut new = crate::store::test_servers::new_server(&s, "My Server");
    new.user_data = Some("/wA=".into()); // 0xff 0x00
    new.admin_pass = Some("pw".into());
    new.nics = vec![NewNic {
        network_id: net.id.clone(),
        mac: None,
        link: Default::default(),
        ip: None,
    }];
    let placement = crate::store::test_servers::placement(8);
    let server = s.create_server(&placement, new).unwrap();
    let f = Facts::load(&s, &server.id).unwrap();
    assert_eq!(f.id, server.id);
    assert_eq!(f.hostname, "my-server.novalocal");
    assert_eq!(f.flavor, "k1.probe");
    assert_eq!(f.user_data.as_deref(), Some(&[0xff, 0][..]));
    assert_eq!(f.admin_pass.as_deref(), Some("pw"));
    assert_eq!(f.meta["k"], "v");
    assert_eq!(f.random_seed.as_ref().map(Vec::len), Some(512));
    let nic = &f.nics[0];
    assert_eq!(nic.mac, server.nics[0].mac);
    assert_eq!(nic.ip, Some("10.77.0.2".parse().unwrap()));
    assert_eq!((nic.prefix, nic.mtu, nic.dhcp), (24, 1400, true));
    assert_eq!(nic.gateway, Some("10.77.0.1".parse().unwrap()));
    assert!(!drive_files(&f).is_empty());
    s.mark_deleted(&server.id).unwrap();
    assert!(Facts::load(&s, &server.id).is_err());
}
