//! nftables: a small typed vocabulary for the rules kilnd writes
//! ([`Table`], [`Chain`], [`Rule`], [`Match`]), applied with `nft -j -f -`
//! (Debian's `nftables` package) as one JSON batch, which the kernel runs
//! as one transaction; and the IPv4 forwarding switch.
//!
//! # Why `nft -j` and not a netlink crate
//!
//! `rustables` (0.9, the maintained pure-netlink crate, no libnftnl) was
//! tried first and could express these rules (sets, masquerade, the
//! bridge family), but: it does not build here, since its build script
//! runs `bindgen` over the nf_tables headers and panics without libclang
//! ("Unable to find libclang"; only libclang-cpp is on these machines);
//! and it is GPL-3.0-or-later, which kilnd (Apache-2.0) cannot link
//! without becoming GPL-3.0 as a whole. `nft -j` reads
//! the same JSON the kernel's own tool prints, so what kilnd writes and
//! what `nft -j list table` shows are one format; the batch it sends is
//! still a single netlink transaction. The JSON is built with serde_json
//! directly (the `nftables` crate's schema types would add a dependency
//! for the dozen expressions used here).
//!
//! [`apply`] replaces a whole table name in both families at once: `add`
//! then `delete` (so a missing table is no error) then the new contents,
//! in one batch: the old rules or the new, never a mix or none.

use std::fmt;
use std::net::Ipv4Addr;
use std::process::Stdio;

use serde_json::{json, Value};
use thiserror::Error;
use tokio::io::AsyncWriteExt;

#[derive(Debug, Error)]
pub enum NftError {
    #[error("cannot run nft (is Debian's nftables package installed?)")]
    Spawn(#[source] std::io::Error),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
    #[error("cannot enable IPv4 forwarding")]
    Forward(#[source] std::io::Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4 and IPv6 at the IP layer (forward, input, NAT).
    Inet,
    /// Frames on bridges, by bridge port.
    Bridge,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Bridge => "bridge",
        }
    }
}

/// A table's contents (its name is [`apply`]'s).
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub family: Family,
    pub chains: Vec<Chain>,
}

/// A chain: a base chain on a hook (policy accept: what kilnd does not
/// name passes to the host's other tables) or one reached by jumps.
#[derive(Clone, Debug, PartialEq)]
pub struct Chain {
    pub name: String,
    pub hook: Option<Hook>,
    pub rules: Vec<Rule>,
}

/// A base chain's type, hook and priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hook {
    /// `filter` or `nat`.
    pub kind: &'static str,
    pub hook: &'static str,
    pub prio: i32,
}

/// Matches, all of which must hold, then a verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Accept,
    /// Counted, so `nft list` shows what was dropped.
    Drop,
    Masquerade,
    Jump(String),
}

/// `left op right`.
#[derive(Clone, Debug, PartialEq)]
pub struct Match {
    pub field: Field,
    pub negate: bool,
    pub value: Val,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Iifname,
    Oifname,
    EtherSaddr,
    EtherType,
    IpSaddr,
    IpDaddr,
    UdpSport,
    UdpDport,
    TcpDport,
    CtState,
    ArpSha,
    ArpSpa,
}

impl Field {
    /// nft's name for it.
    fn text(self) -> &'static str {
        match self {
            Field::Iifname => "iifname",
            Field::Oifname => "oifname",
            Field::EtherSaddr => "ether saddr",
            Field::EtherType => "ether type",
            Field::IpSaddr => "ip saddr",
            Field::IpDaddr => "ip daddr",
            Field::UdpSport => "udp sport",
            Field::UdpDport => "udp dport",
            Field::TcpDport => "tcp dport",
            Field::CtState => "ct state",
            Field::ArpSha => "arp saddr ether",
            Field::ArpSpa => "arp saddr ip",
        }
    }

    fn json(self) -> Value {
        let meta = |k: &str| json!({ "meta": { "key": k } });
        let payload = |p: &str, f: &str| json!({ "payload": { "protocol": p, "field": f } });
        match self {
            Field::Iifname => meta("iifname"),
            Field::Oifname => meta("oifname"),
            Field::EtherSaddr => payload("ether", "saddr"),
            Field::EtherType => payload("ether", "type"),
            Field::IpSaddr => payload("ip", "saddr"),
            Field::IpDaddr => payload("ip", "daddr"),
            Field::UdpSport => payload("udp", "sport"),
            Field::UdpDport => payload("udp", "dport"),
            Field::TcpDport => payload("tcp", "dport"),
            Field::CtState => json!({ "ct": { "key": "state" } }),
            Field::ArpSha => payload("arp", "saddr ether"),
            Field::ArpSpa => payload("arp", "saddr ip"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    /// An interface name (quoted in nft's syntax).
    Name(String),
    /// A MAC, an address, an ether type, a ct state: a bare word.
    Word(String),
    Num(u16),
    Prefix(Ipv4Addr, u8),
    /// Any of these (an anonymous set; ct states as a flag list).
    Set(Vec<Val>),
}

impl Val {
    fn json(&self) -> Value {
        match self {
            Val::Name(s) | Val::Word(s) => json!(s),
            Val::Num(n) => json!(n),
            Val::Prefix(a, l) => json!({ "prefix": { "addr": a.to_string(), "len": l } }),
            Val::Set(v) => json!({ "set": v.iter().map(Val::json).collect::<Vec<_>>() }),
        }
    }
}

impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Name(s) => write!(f, "{s:?}"),
            Val::Word(s) => f.write_str(s),
            Val::Num(n) => write!(f, "{n}"),
            Val::Prefix(a, l) => write!(f, "{a}/{l}"),
            Val::Set(v) => {
                let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                write!(f, "{{ {} }}", items.join(", "))
            }
        }
    }
}

impl Match {
    pub fn is(field: Field, value: Val) -> Match {
        Match {
            field,
            negate: false,
            value,
        }
    }

    pub fn not(field: Field, value: Val) -> Match {
        Match {
            field,
            negate: true,
            value,
        }
    }

    fn json(&self) -> Value {
        // ct state takes a flag list: "in" is "any of these".
        let (op, right) = match (&self.field, &self.value, self.negate) {
            (Field::CtState, Val::Set(v), _) => (
                "in",
                Value::Array(v.iter().map(Val::json).collect::<Vec<_>>()),
            ),
            (_, v, false) => ("==", v.json()),
            (_, v, true) => ("!=", v.json()),
        };
        json!({ "match": { "op": op, "left": self.field.json(), "right": right } })
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.negate { "!= " } else { "" };
        match (&self.field, &self.value) {
            (Field::CtState, Val::Set(v)) => {
                let s: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                write!(f, "ct state {}", s.join(","))
            }
            (field, v) => write!(f, "{} {op}{v}", field.text()),
        }
    }
}

impl fmt::Display for Rule {
    /// nft's own syntax: `iifname "nat1" udp dport 67 accept`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            write!(f, "{m} ")?;
        }
        match &self.verdict {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("counter drop"),
            Verdict::Masquerade => f.write_str("masquerade"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
        }
    }
}

impl Rule {
    fn json(&self) -> Vec<Value> {
        let mut e: Vec<Value> = self.matches.iter().map(Match::json).collect();
        match &self.verdict {
            Verdict::Accept => e.push(json!({ "accept": null })),
            Verdict::Drop => {
                e.push(json!({ "counter": { "packets": 0, "bytes": 0 } }));
                e.push(json!({ "drop": null }));
            }
            Verdict::Masquerade => e.push(json!({ "masquerade": null })),
            Verdict::Jump(c) => e.push(json!({ "jump": { "target": c } })),
        }
        e
    }
}

/// The batch that makes table `name` hold exactly `tables` in each family
/// (a family `tables` leaves out has no table `name` after it).
pub fn batch(name: &str, tables: &[Table]) -> Value {
    let mut cmds = Vec::new();
    for family in [Family::Inet, Family::Bridge] {
        let f = family.as_str();
        let table = json!({ "table": { "family": f, "name": name } });
        cmds.push(json!({ "add": table }));
        cmds.push(json!({ "delete": table }));
        let Some(t) = tables.iter().find(|t| t.family == family) else {
            continue;
        };
        cmds.push(json!({ "add": table }));
        for c in &t.chains {
            let mut chain = json!({ "family": f, "table": name, "name": c.name });
            if let Some(h) = c.hook {
                chain["type"] = json!(h.kind);
                chain["hook"] = json!(h.hook);
                chain["prio"] = json!(h.prio);
                chain["policy"] = json!("accept");
            }
            cmds.push(json!({ "add": { "chain": chain } }));
        }
        for c in &t.chains {
            for r in &c.rules {
                cmds.push(json!({ "add": { "rule": {
                    "family": f, "table": name, "chain": c.name, "expr": r.json()
                } } }));
            }
        }
    }
    json!({ "nftables": cmds })
}

/// Makes table `name` hold exactly `tables`, in one transaction. Without
/// `nft` on the host, no tables is no error (nothing can be there).
pub async fn apply(name: &str, tables: &[Table]) -> Result<(), NftError> {
    let doc = batch(name, tables).to_string();
    let spawned = tokio::process::Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && tables.is_empty() => return Ok(()),
        r => r.map_err(NftError::Spawn)?,
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(doc.as_bytes())
            .await
            .map_err(NftError::Spawn)?;
    }
    let out = child.wait_with_output().await.map_err(NftError::Spawn)?;
    if !out.status.success() {
        return Err(NftError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}

/// Turns IPv4 forwarding on (`net.ipv4.ip_forward = 1`). It is a setting
/// of the whole network namespace (the host's, for a kilnd on the host),
/// not of one interface; as libvirt does, kilnd turns it on for its NAT
/// networks and never turns it off (others may rely on it).
pub fn enable_ip_forward() -> Result<(), NftError> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(PATH).is_ok_and(|s| s.trim() == "1") {
        return Ok(());
    }
    std::fs::write(PATH, "1").map_err(NftError::Forward)
}
