//! The firewall of kilnd's networks: which nftables rules a set of
//! networks and ports needs ([`derive`], pure), and [`sync`], which
//! derives them from the store and applies them as one transaction
//! ([`crate::net::nft`]). kilnd owns one table name, `kiln_` + the first
//! 8 hex digits of its instance id, in two families:
//!
//! - `inet` (networks where the host is the gateway, `nat` and
//!   `isolated`): a `nat` network's subnet is masqueraded out of any
//!   interface but its own bridge, forwarded out and answered back
//!   (established, related); an `isolated` network forwards nothing
//!   either way; no two of these networks forward to each other; and a
//!   guest reaches the host itself only for DHCP (udp 67, when the
//!   network serves it), metadata (tcp 80 to 169.254.169.254) and replies
//!   to what the host opened. kilnd serves no DNS, so udp/tcp 53 is
//!   dropped too.
//! - `bridge` (every port): a frame entering from a tap must carry the
//!   port's MAC; on a network with a subnet, its IPv4 source must be the
//!   port's address (0.0.0.0 only for a DHCP request, udp 68 to 67), ARP
//!   must name the port's MAC and address (0.0.0.0 allowed: RFC 5227's
//!   probe), DHCP server replies (udp sport 67) are dropped, and anything
//!   but IPv4 and ARP is dropped: IPv6 too, since Kiln hands out no IPv6
//!   address there is no source to check it against, and a guest could
//!   otherwise spoof link-local sources or send router advertisements to
//!   its neighbours; VLAN-tagged frames would carry unchecked addresses.
//!   On an L2-only network kilnd knows only the MAC: MAC check only.
//!
//! A `bridged` network's bridge may be the host's uplink: the `inet`
//! table never names it, so the host's own traffic there is untouched;
//! its ports get the `bridge` checks. A `nat` network's traffic to a
//! bridged network's subnet leaves through that bridge masqueraded, as it
//! would to any host on the uplink.
//!
//! Rules match taps by name (`iifname`), so a server's rules are in place
//! before its tap exists. [`sync`] runs at network create and delete,
//! server create and delete, and kilnd's start; the table goes when no
//! network needs a rule.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use kiln_api::compute::{Network, NetworkMode, ServerStatus};
use thiserror::Error;

use super::METADATA_IP;
use crate::ipam::Subnet;
use crate::net::nft::{
    self, Chain, Family, Field, Hook, Match, NftError, Rule, Table, Val, Verdict,
};
use crate::store::{Store, StoreError};

#[derive(Debug, Error)]
pub enum FirewallError {
    #[error("cannot apply the firewall: {0}")]
    Nft(#[from] NftError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One NIC as the firewall sees it: its tap, MAC and fixed address on
/// network `network` (an id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub network: String,
    pub tap: String,
    pub mac: String,
    pub ip: Option<Ipv4Addr>,
}

/// The table name of kilnd instance `instance`.
pub fn table_name(instance: &str) -> String {
    format!("kiln_{}", &instance[..instance.len().min(8)])
}

/// The tables `nets` (active ones) and their `ports` need; empty when none
/// needs a rule.
pub fn derive(nets: &[Network], ports: &[Port]) -> Vec<Table> {
    let mut out = Vec::new();
    if let Some(t) = inet(nets) {
        out.push(t);
    }
    if let Some(t) = bridge(nets, ports) {
        out.push(t);
    }
    out
}

/// The networks where the host is the gateway, with their subnets.
fn routed(nets: &[Network]) -> Vec<(&Network, Subnet)> {
    nets.iter()
        .filter(|n| n.mode != NetworkMode::Bridged)
        .filter_map(|n| Some((n, Subnet::parse(n.cidr.as_deref()?).ok()?)))
        .collect()
}

fn rule(matches: Vec<Match>, verdict: Verdict) -> Rule {
    Rule { matches, verdict }
}

fn name(s: &str) -> Val {
    Val::Name(s.to_owned())
}

fn word(s: impl ToString) -> Val {
    Val::Word(s.to_string())
}

fn established() -> Match {
    Match::is(
        Field::CtState,
        Val::Set(vec![word("established"), word("related")]),
    )
}

fn hook(kind: &'static str, hook: &'static str, prio: i32) -> Option<Hook> {
    Some(Hook { kind, hook, prio })
}

fn inet(nets: &[Network]) -> Option<Table> {
    let routed = routed(nets);
    if routed.is_empty() {
        return None;
    }
    let (mut fwd, mut input, mut post) = (Vec::new(), Vec::new(), Vec::new());
    for (n, sub) in &routed {
        let br = || Match::is(Field::Iifname, name(&n.bridge));
        let to_br = || Match::is(Field::Oifname, name(&n.bridge));
        // Within the network (bridged frames seen here with br_netfilter).
        fwd.push(rule(vec![br(), to_br()], Verdict::Accept));
        if n.mode == NetworkMode::Nat {
            let others: Vec<Val> = routed
                .iter()
                .filter(|(o, _)| o.id != n.id)
                .map(|(o, _)| name(&o.bridge))
                .collect();
            if !others.is_empty() {
                let to = Match::is(Field::Oifname, Val::Set(others));
                fwd.push(rule(vec![br(), to], Verdict::Drop));
            }
            let src = Match::is(Field::IpSaddr, Val::Prefix(sub.addr(), sub.prefix()));
            fwd.push(rule(vec![br(), src.clone()], Verdict::Accept));
            fwd.push(rule(vec![to_br(), established()], Verdict::Accept));
            let out = Match::not(Field::Oifname, name(&n.bridge));
            post.push(rule(vec![src, out], Verdict::Masquerade));
        }
        fwd.push(rule(vec![br()], Verdict::Drop));
        fwd.push(rule(vec![to_br()], Verdict::Drop));

        input.push(rule(vec![br(), established()], Verdict::Accept));
        if n.dhcp {
            let dhcp = Match::is(Field::UdpDport, Val::Num(67));
            input.push(rule(vec![br(), dhcp], Verdict::Accept));
        }
        let md = Match::is(Field::IpDaddr, word(METADATA_IP));
        let http = Match::is(Field::TcpDport, Val::Num(80));
        input.push(rule(vec![br(), md, http], Verdict::Accept));
        input.push(rule(vec![br()], Verdict::Drop));
    }
    let mut chains = vec![
        Chain {
            name: "forward".into(),
            hook: hook("filter", "forward", 0),
            rules: fwd,
        },
        Chain {
            name: "input".into(),
            hook: hook("filter", "input", 0),
            rules: input,
        },
    ];
    if !post.is_empty() {
        chains.push(Chain {
            name: "postrouting".into(),
            hook: hook("nat", "postrouting", 100),
            rules: post,
        });
    }
    Some(Table {
        family: Family::Inet,
        chains,
    })
}

/// The chain of one port's checks.
fn port_chain(p: &Port, subnet: bool) -> Chain {
    let mut rules = vec![rule(
        vec![Match::not(Field::EtherSaddr, word(&p.mac))],
        Verdict::Drop,
    )];
    if let (true, Some(ip)) = (subnet, p.ip) {
        let (arp, ipv4) = (
            || Match::is(Field::EtherType, word("arp")),
            || Match::is(Field::EtherType, word("ip")),
        );
        let v = |f, v| Match::is(f, v);
        rules.extend([
            rule(
                vec![arp(), Match::not(Field::ArpSha, word(&p.mac))],
                Verdict::Drop,
            ),
            rule(
                vec![
                    arp(),
                    Match::not(
                        Field::ArpSpa,
                        Val::Set(vec![word(Ipv4Addr::UNSPECIFIED), word(ip)]),
                    ),
                ],
                Verdict::Drop,
            ),
            rule(vec![arp()], Verdict::Accept),
            rule(
                vec![ipv4(), v(Field::UdpSport, Val::Num(67))],
                Verdict::Drop,
            ),
            rule(
                vec![
                    ipv4(),
                    v(Field::IpSaddr, word(Ipv4Addr::UNSPECIFIED)),
                    v(Field::UdpSport, Val::Num(68)),
                    v(Field::UdpDport, Val::Num(67)),
                ],
                Verdict::Accept,
            ),
            rule(
                vec![ipv4(), Match::not(Field::IpSaddr, word(ip))],
                Verdict::Drop,
            ),
            rule(vec![ipv4()], Verdict::Accept),
            rule(vec![], Verdict::Drop),
        ]);
    }
    Chain {
        name: format!("port_{}", p.tap),
        hook: None,
        rules,
    }
}

fn bridge(nets: &[Network], ports: &[Port]) -> Option<Table> {
    let by_id: HashMap<&str, &Network> = nets.iter().map(|n| (n.id.as_str(), n)).collect();
    let mut jumps = Vec::new();
    let mut chains = Vec::new();
    for p in ports {
        let Some(n) = by_id.get(p.network.as_str()) else {
            continue;
        };
        let c = port_chain(p, n.cidr.is_some());
        jumps.push(rule(
            vec![Match::is(Field::Iifname, name(&p.tap))],
            Verdict::Jump(c.name.clone()),
        ));
        chains.push(c);
    }
    if jumps.is_empty() {
        return None;
    }
    chains.insert(
        0,
        Chain {
            name: "prerouting".into(),
            hook: hook("filter", "prerouting", -200),
            rules: jumps,
        },
    );
    Some(Table {
        family: Family::Bridge,
        chains,
    })
}

/// One sync at a time: each reads the store and applies what it read, so
/// the last to apply has read the newest state. It holds what was last
/// applied (table name and tables): a sync that would change nothing (a
/// server create on an L2-only network, say) runs no `nft`. The first
/// sync of a kilnd always applies.
static SYNC: tokio::sync::Mutex<Option<(String, Vec<Table>)>> = tokio::sync::Mutex::const_new(None);

/// Makes kilnd's tables what the store says (active networks, NICs of
/// servers not deleted), in one transaction; turns on IPv4 forwarding
/// when a `nat` network exists.
pub async fn sync(store: &Arc<Store>) -> Result<(), FirewallError> {
    let mut last = SYNC.lock().await;
    let (instance, nets, servers) = store
        .call(|s| {
            Ok::<_, StoreError>((
                s.instance_id()?,
                s.list_networks()?,
                s.list_servers(None, None)?,
            ))
        })
        .await?;
    let ports: Vec<Port> = servers
        .iter()
        .filter(|s| s.status != ServerStatus::Deleted)
        .flat_map(|s| &s.nics)
        .map(|n| Port {
            network: n.network_id.clone(),
            tap: n.tap.clone(),
            mac: n.mac.clone(),
            ip: n.ip.as_deref().and_then(|i| i.parse().ok()),
        })
        .collect();
    let tables = derive(&nets, &ports);
    if routed(&nets)
        .iter()
        .any(|(n, _)| n.mode == NetworkMode::Nat)
    {
        nft::enable_ip_forward()?;
    }
    let name = table_name(&instance);
    if last.as_ref() == Some(&(name.clone(), tables.clone())) {
        return Ok(());
    }
    // Unknown until it succeeds: a failed apply is tried again next time.
    *last = None;
    nft::apply(&name, &tables).await?;
    *last = Some((name, tables));
    Ok(())
}

/// [`sync`] where a failure must not fail the caller (server create and
/// delete, start-up): logged, and put right by the next sync.
pub async fn sync_or_warn(store: &Arc<Store>) {
    if let Err(e) = sync(store).await {
        tracing::warn!(error = %e, "firewall not updated");
    }
}

#[cfg(test)]
mod tests;
