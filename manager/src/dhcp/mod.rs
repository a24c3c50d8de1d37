//! kilnd's DHCPv4 server: one UDP socket per network that has a subnet
//! and `dhcp` on, bound to 0.0.0.0:67 on that network's bridge
//! (`net::udp`), served by a tokio task that `networks::Services` spawns
//! with the network's other services and aborts at its delete. It answers
//! only the MACs of NICs of that network's servers (not DELETED) that
//! have an address, each with its fixed address; an unknown MAC gets no
//! answer at all. Each request looks its MAC up in the store
//! (`Store::dhcp_port`), so a server is answered right after its create
//! transaction commits and a deleted one at once no more.
//!
//! # Why a server inside kilnd, not dnsmasq per network
//!
//! libvirt and Neutron run a dnsmasq per network with a hosts file they
//! render. kilnd's IPAM already owns the MAC-to-address table in SQLite,
//! so serving from it keeps one source of truth: nothing is rendered into
//! host files (and nothing goes stale between a create and a reload), no
//! extra process is supervised, restarted and cleaned up after a crash,
//! a new server is answered as soon as its row commits, and a kilnd
//! restart needs no lease state, since every address is fixed (a lease is
//! only a promise to answer the same again). What it costs: kilnd parses
//! hostile packets itself; it does so with `dhcproto` (the parser and
//! encoder of BlueCat's DHCP servers), drops anything it does not expect
//! and never panics on input (the fuzz-style unit tests). dnsmasq
//! (`dnsmasq-base`) is the peer in `benches/src/bin/dhcp_bench.rs`.
//!
//! [`reply`] decides each answer, [`options`] what a lease carries.

mod options;
mod reply;
#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use kiln_api::compute::Network;
use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

pub use options::{hostname, resolv_nameservers, NetParams};

use crate::config::DhcpConfig;
use crate::store::Store;

/// The DHCP server's port.
pub const SERVER_PORT: u16 = 67;

static SETTINGS: OnceLock<DhcpConfig> = OnceLock::new();

/// Sets the `[dhcp]` settings every network served from now on uses
/// (kilnd's start, before its networks are started; the first call wins).
/// Unset, the defaults apply.
pub fn configure(cfg: &DhcpConfig) {
    let _ = SETTINGS.set(cfg.clone());
}

fn settings() -> DhcpConfig {
    SETTINGS.get().cloned().unwrap_or_default()
}

/// Starts serving DHCP on `net`'s bridge (the host holds `metadata_ip` on
/// it): None when kilnd serves no DHCP there (no subnet, or `dhcp` off),
/// an error when the socket cannot be made. Must run on kilnd's runtime.
pub fn spawn(
    net: &Network,
    store: Arc<Store>,
    metadata_ip: Ipv4Addr,
) -> std::io::Result<Option<AbortHandle>> {
    let host_dns = std::fs::read_to_string("/etc/resolv.conf")
        .map(|t| resolv_nameservers(&t))
        .unwrap_or_default();
    let Some(params) = NetParams::of(net, metadata_ip, &settings(), &host_dns) else {
        return Ok(None);
    };
    let sock = crate::net::udp::bind_on_device(&params.bridge, SERVER_PORT)?;
    let sock = UdpSocket::from_std(sock)?;
    tracing::info!(
        network = params.network,
        bridge = params.bridge,
        server_id = %params.server_id,
        "serving DHCP"
    );
    Ok(Some(
        tokio::spawn(serve(sock, Arc::new(params), store)).abort_handle(),
    ))
}

/// The network's task: answers requests one at a time, forever (until
/// aborted). Nothing a client sends ends it.
async fn serve(sock: UdpSocket, p: Arc<NetParams>, store: Arc<Store>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(network = p.network, error = %e, "DHCP receive failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let req = match reply::parse(&buf[..n]) {
            Ok(r) => r,
            Err(why) => {
                tracing::debug!(network = p.network, %from, ?why, "DHCP datagram dropped");
                continue;
            }
        };
        let (net_id, mac) = (p.network_id.clone(), req.mac.clone());
        let port = match store.call(move |s| s.dhcp_port(&net_id, &mac)).await {
            Ok(Some(port)) => port,
            Ok(None) => {
                tracing::debug!(network = p.network, mac = req.mac, kind = ?req.kind, "DHCP: not a port of this network");
                continue;
            }
            Err(e) => {
                tracing::warn!(network = p.network, error = %e, "DHCP: store lookup failed");
                continue;
            }
        };
        match reply::answer(&p, &req, &port) {
            reply::Outcome::Silent(why) => {
                tracing::info!(network = p.network, mac = req.mac, server = port.server_name, kind = ?req.kind, why, "DHCP: no answer");
            }
            reply::Outcome::Reply(r) => {
                if let Err(e) = sock.send_to(&r.bytes(), r.to).await {
                    tracing::warn!(network = p.network, to = %r.to, error = %e, "DHCP send failed");
                } else {
                    tracing::debug!(network = p.network, mac = req.mac, ip = %port.ip, kind = ?req.kind, to = %r.to, "DHCP answered");
                }
            }
        }
    }
}
