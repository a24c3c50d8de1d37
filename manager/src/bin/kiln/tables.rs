//! The tables `kiln` prints for people.

use kiln_api::compute::{Flavor, GuestInfo, Image, ImageKind, Network, Nic, Server};

pub fn flavors(l: &[Flavor]) {
    table(
        &["ID", "NAME", "VCPUS", "RAM_MB", "DISK_GB", "PROPERTIES"],
        l.iter()
            .map(|f| {
                vec![
                    f.id.clone(),
                    f.name.clone(),
                    f.vcpus.to_string(),
                    f.ram_mb.to_string(),
                    f.disk_gb.to_string(),
                    // As `openstack flavor show` prints them.
                    f.extra_specs
                        .iter()
                        .map(|(k, v)| format!("{k}='{v}'"))
                        .collect::<Vec<_>>()
                        .join(", "),
                ]
            })
            .collect(),
    );
}

pub fn images(l: &[Image]) {
    table(
        &["ID", "NAME", "TYPE", "STATUS", "DETAIL"],
        l.iter()
            .map(|i| {
                let (t, d) = match &i.kind {
                    ImageKind::Kernel { kernel, .. } => ("kernel", kernel.clone()),
                    ImageKind::Disk {
                        format,
                        size_bytes,
                        sha256,
                        firmware,
                        os_type,
                        ..
                    } => (
                        "disk",
                        format!(
                            "{format:?} {size_bytes} B sha256:{} firmware:{} os:{}",
                            &sha256[..12.min(sha256.len())],
                            firmware.as_str(),
                            os_type.as_str()
                        ),
                    ),
                };
                let status = format!("{:?}", i.status).to_lowercase();
                let d = if i.virtio_model.is_modern() {
                    d
                } else {
                    format!("{d} virtio:{}", i.virtio_model.as_str())
                };
                vec![i.id.clone(), i.name.clone(), t.to_string(), status, d]
            })
            .collect(),
    );
}

pub fn servers(l: &[Server]) {
    table(
        &[
            "ID", "NAME", "STATUS", "TASK", "VCPUS", "RAM_MB", "PID", "NETWORKS",
        ],
        l.iter()
            .map(|s| {
                vec![
                    s.id.clone(),
                    s.name.clone(),
                    s.status.as_str().to_string(),
                    s.task_state.map_or("-", |t| t.as_str()).to_owned(),
                    s.vcpus.to_string(),
                    s.ram_mb.to_string(),
                    s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    server_networks(s),
                ]
            })
            .collect(),
    );
}

/// `lan=10.77.0.10; wan=10.78.0.2`, as `openstack server list`: a NIC
/// without an address shows its network alone.
fn server_networks(s: &Server) -> String {
    s.nics
        .iter()
        .map(|n| match &n.ip {
            Some(ip) => format!("{}={ip}", n.network),
            None => n.network.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn networks(l: &[Network]) {
    table(
        &[
            "ID", "NAME", "BRIDGE", "MTU", "MANAGED", "CIDR", "GATEWAY", "MODE", "SERVERS",
        ],
        l.iter()
            .map(|n| {
                vec![
                    n.id.clone(),
                    n.name.clone(),
                    n.bridge.clone(),
                    n.mtu.to_string(),
                    if n.managed { "yes" } else { "no" }.to_string(),
                    n.cidr.clone().unwrap_or_else(|| "-".into()),
                    n.gateway.clone().unwrap_or_else(|| "-".into()),
                    n.mode.as_str().to_string(),
                    n.servers.len().to_string(),
                ]
            })
            .collect(),
    );
}

pub fn nics(l: &[Nic]) {
    table(
        &["NIC", "NETWORK", "IP", "MAC", "TAP", "LINK"],
        l.iter()
            .map(|n| {
                vec![
                    n.index.to_string(),
                    n.network.clone(),
                    n.ip.clone().unwrap_or_else(|| "-".into()),
                    n.mac.clone(),
                    n.tap.clone(),
                    n.link.as_str().to_string(),
                ]
            })
            .collect(),
    );
}

/// `kiln server guest`: the OS and hostname, then one row per address.
pub fn guest(g: &GuestInfo) {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let os = g.os.pretty_name.clone().or_else(|| g.os.name.clone());
    println!("os: {}", or_dash(&os));
    println!("kernel: {}", or_dash(&g.os.kernel_release));
    println!("hostname: {}", or_dash(&g.hostname));
    let mut rows = Vec::new();
    for i in &g.interfaces {
        let mac = or_dash(&i.mac);
        if i.addresses.is_empty() {
            rows.push(vec![i.name.clone(), mac.clone(), "-".into()]);
        }
        for a in &i.addresses {
            rows.push(vec![
                i.name.clone(),
                mac.clone(),
                format!("{}/{}", a.ip, a.prefix),
            ]);
        }
    }
    table(&["INTERFACE", "MAC", "ADDRESS"], rows);
}

pub fn table(head: &[&str], rows: Vec<Vec<String>>) {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(head.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}
