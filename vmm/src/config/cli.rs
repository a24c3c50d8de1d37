//! Parsers for the virtio command-line flags, so that `main.rs` only
//! declares them:
//!
//! ```text
//! --disk path=FILE[,format=raw|qcow2][,backing=FILE,backing_format=raw|qcow2]...[,readonly=on][,direct=on][,serial=ID][,bw=BYTES_PER_S][,iops=N]
//! --net tap=NAME[,queues=N][,mac=MAC][,bw=BYTES_PER_S][,pps=N][,rx_bw=BYTES_PER_S][,rx_pps=N][,link=up|down]
//! --net fd=N[,mac=MAC][,...]
//! --net fds=N:N:...[,mac=MAC][,...]
//! --smbios manufacturer=S,product=S,version=S,serial=S,uuid=UUID,sku=S,family=S,asset_tag=S
//! ```
//! Rate limits become token buckets that refill in one second (no burst);
//! `bw`/`pps` limit what the guest sends, `rx_bw`/`rx_pps` what it
//! receives. `queues=N` (1 to 16) opens the tap N times with
//! IFF_MULTI_QUEUE, one queue pair each; `fds=` takes the queues of one
//! multi-queue tap the caller opened, one fd per pair.
//! The disk format defaults to raw and is never guessed from the file.
//! `backing=` names the image's backing file, each further `backing=` the
//! backing file of the one before it, each followed by its
//! `backing_format=`: a backing file is opened only when named, and each
//! header in the chain must name the next file and its format.

use kiln_api::control::LinkState;
use kiln_api::vm::{
    BackingConfig, DiskBus, DiskConfig, DiskFormat, NetConfig, RateLimitConfig, SmbiosConfig,
    TokenBucketConfig,
};

use crate::devices::virtio::net::MAX_QUEUE_PAIRS;
use crate::net::MacAddr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    #[error("{flag}: expected key=value, got {item:?}")]
    NotKeyValue { flag: &'static str, item: String },
    #[error("{flag}: unknown key {key:?}")]
    UnknownKey { flag: &'static str, key: String },
    #[error("{flag}: {key} is given twice")]
    Duplicate { flag: &'static str, key: String },
    #[error("{flag}: bad value {value:?} for {key}")]
    BadValue {
        flag: &'static str,
        key: String,
        value: String,
    },
    #[error("{0}: {1} is required")]
    Missing(&'static str, &'static str),
    #[error("--net: give exactly one of tap=, fd= and fds=")]
    NetBackend,
}

fn pairs<'a>(
    flag: &'static str,
    s: &'a str,
    known: &[&str],
) -> Result<Vec<(&'a str, &'a str)>, CliError> {
    pairs_repeating(flag, s, known, &[])
}

/// [`pairs`], where the keys in `repeat` may come more than once.
fn pairs_repeating<'a>(
    flag: &'static str,
    s: &'a str,
    known: &[&str],
    repeat: &[&str],
) -> Result<Vec<(&'a str, &'a str)>, CliError> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for item in s.split(',') {
        let (k, v) = item.split_once('=').ok_or_else(|| CliError::NotKeyValue {
            flag,
            item: item.to_string(),
        })?;
        if !known.contains(&k) {
            return Err(CliError::UnknownKey {
                flag,
                key: k.to_string(),
            });
        }
        if !repeat.contains(&k) && out.iter().any(|(ok, _)| *ok == k) {
            return Err(CliError::Duplicate {
                flag,
                key: k.to_string(),
            });
        }
        out.push((k, v));
    }
    Ok(out)
}

fn bad(flag: &'static str, key: &str, value: &str) -> CliError {
    CliError::BadValue {
        flag,
        key: key.to_string(),
        value: value.to_string(),
    }
}

fn on_off(flag: &'static str, key: &str, v: &str) -> Result<bool, CliError> {
    match v {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(bad(flag, key, v)),
    }
}

fn per_second(flag: &'static str, key: &str, v: &str) -> Result<TokenBucketConfig, CliError> {
    let n: u64 = v.parse().map_err(|_| bad(flag, key, v))?;
    if n == 0 {
        return Err(bad(flag, key, v));
    }
    Ok(TokenBucketConfig {
        size: n,
        one_time_burst: 0,
        refill_time_ms: 1000,
    })
}

fn limit(bw: Option<TokenBucketConfig>, ops: Option<TokenBucketConfig>) -> Option<RateLimitConfig> {
    (bw.is_some() || ops.is_some()).then_some(RateLimitConfig { bandwidth: bw, ops })
}

/// The longest `--disk poll_us=` window: a millisecond of a host CPU
/// spinning per idle period is already a lot.
pub const MAX_POLL_US: u32 = 1000;

fn disk_format(k: &str, v: &str) -> Result<DiskFormat, CliError> {
    match v {
        "raw" => Ok(DiskFormat::Raw),
        "qcow2" => Ok(DiskFormat::Qcow2),
        _ => Err(bad("--disk", k, v)),
    }
}

/// Parse one `--disk` value.
pub fn parse_disk(s: &str) -> Result<DiskConfig, CliError> {
    const F: &str = "--disk";
    let mut d = DiskConfig::default();
    let (mut bw, mut ops) = (None, None);
    let mut path = None;
    // The chain in order: each `backing=` starts an entry, the
    // `backing_format=` after it completes it.
    let mut chain: Vec<(String, Option<DiskFormat>)> = Vec::new();
    for (k, v) in pairs_repeating(
        F,
        s,
        &[
            "path",
            "format",
            "backing",
            "backing_format",
            "readonly",
            "direct",
            "serial",
            "bw",
            "iops",
            "transitional",
            "poll_us",
            "bus",
        ],
        &["backing", "backing_format"],
    )? {
        match k {
            "path" if !v.is_empty() => path = Some(v.to_string()),
            "format" => d.format = disk_format(k, v)?,
            "backing" if !v.is_empty() => {
                if chain.last().is_some_and(|(_, f)| f.is_none()) {
                    return Err(CliError::Missing(
                        F,
                        "backing_format= (after each backing=)",
                    ));
                }
                chain.push((v.to_string(), None));
            }
            "backing_format" => match chain.last_mut() {
                Some((_, f @ None)) => *f = Some(disk_format(k, v)?),
                _ => {
                    return Err(CliError::Missing(
                        F,
                        "backing= (before each backing_format=)",
                    ))
                }
            },
            "readonly" => d.readonly = on_off(F, k, v)?,
            "direct" => d.direct = on_off(F, k, v)?,
            "serial" if v.len() <= 20 && v.is_ascii() => d.serial = Some(v.to_string()),
            "bw" => bw = Some(per_second(F, k, v)?),
            "iops" => ops = Some(per_second(F, k, v)?),
            "transitional" => d.transitional = on_off(F, k, v)?,
            "bus" => {
                d.bus = match v {
                    "virtio" => DiskBus::Virtio,
                    "sata" => DiskBus::Sata,
                    _ => return Err(bad(F, k, v)),
                }
            }
            "poll_us" => {
                d.poll_us = v
                    .parse::<u32>()
                    .ok()
                    .filter(|&us| us <= MAX_POLL_US)
                    .ok_or_else(|| bad(F, k, v))?
            }
            _ => return Err(bad(F, k, v)),
        }
    }
    d.path = path.ok_or(CliError::Missing(F, "path="))?;
    for (path, format) in chain {
        let format = format.ok_or(CliError::Missing(
            F,
            "backing_format= (after each backing=)",
        ))?;
        d.backing.push(BackingConfig { path, format });
    }
    d.rate_limit = limit(bw, ops);
    Ok(d)
}

/// Parse one `--net` value.
pub fn parse_net(s: &str) -> Result<NetConfig, CliError> {
    const F: &str = "--net";
    let mut n = NetConfig::default();
    let (mut bw, mut ops, mut rx_bw, mut rx_ops) = (None, None, None, None);
    let fd = |k: &str, v: &str| {
        v.parse::<i32>()
            .ok()
            .filter(|&fd| fd >= 0)
            .ok_or_else(|| bad(F, k, v))
    };
    for (k, v) in pairs(
        F,
        s,
        &[
            "tap",
            "fd",
            "fds",
            "queues",
            "mac",
            "bw",
            "pps",
            "rx_bw",
            "rx_pps",
            "transitional",
            "link",
        ],
    )? {
        match k {
            "tap" if !v.is_empty() && v.len() < 16 => n.tap = Some(v.to_string()),
            "fd" => n.fd = Some(fd(k, v)?),
            "fds" => {
                let fds = v
                    .split(':')
                    .map(|f| fd(k, f))
                    .collect::<Result<Vec<_>, _>>()?;
                if fds.len() > MAX_QUEUE_PAIRS {
                    return Err(bad(F, k, v));
                }
                n.fds = Some(fds);
            }
            "queues" => {
                n.queues = Some(
                    v.parse::<u16>()
                        .ok()
                        .filter(|&q| q >= 1 && usize::from(q) <= MAX_QUEUE_PAIRS)
                        .ok_or_else(|| bad(F, k, v))?,
                )
            }
            "mac" => {
                v.parse::<MacAddr>().map_err(|_| bad(F, k, v))?;
                n.mac = Some(v.to_string());
            }
            "bw" => bw = Some(per_second(F, k, v)?),
            "pps" => ops = Some(per_second(F, k, v)?),
            "transitional" => n.transitional = on_off(F, k, v)?,
            "rx_bw" => rx_bw = Some(per_second(F, k, v)?),
            "rx_pps" => rx_ops = Some(per_second(F, k, v)?),
            "link" => {
                n.link = match v {
                    "up" => LinkState::Up,
                    "down" => LinkState::Down,
                    _ => return Err(bad(F, k, v)),
                }
            }
            _ => return Err(bad(F, k, v)),
        }
    }
    let backends = [n.tap.is_some(), n.fd.is_some(), n.fds.is_some()];
    if backends.iter().filter(|b| **b).count() != 1 {
        return Err(CliError::NetBackend);
    }
    match (n.queues, &n.fds) {
        (Some(q), Some(fds)) if usize::from(q) != fds.len() => {
            return Err(bad(F, "queues", &q.to_string()))
        }
        (Some(q), None) if n.fd.is_some() && q != 1 => {
            return Err(bad(F, "queues", &q.to_string()))
        }
        _ => {}
    }
    n.rate_limit = limit(bw, ops);
    n.rx_rate_limit = limit(rx_bw, rx_ops);
    Ok(n)
}

/// The options of `--rng` (`--rng` alone, or `--rng transitional=on`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RngOptions {
    pub transitional: bool,
}

/// Parse the value of `--rng` (empty: the defaults).
pub fn parse_rng(s: &str) -> Result<RngOptions, CliError> {
    const F: &str = "--rng";
    let mut o = RngOptions::default();
    if s.is_empty() {
        return Ok(o);
    }
    for (k, v) in pairs(F, s, &["transitional"])? {
        match k {
            "transitional" => o.transitional = on_off(F, k, v)?,
            _ => return Err(bad(F, k, v)),
        }
    }
    Ok(o)
}

/// Parse the value of `--tpm`: `socket=PATH`, swtpm's control socket.
pub fn parse_tpm(s: &str) -> Result<kiln_api::vm::TpmConfig, CliError> {
    const F: &str = "--tpm";
    let mut socket = None;
    for (k, v) in pairs(F, s, &["socket"])? {
        match k {
            "socket" if !v.is_empty() => socket = Some(v.to_string()),
            _ => return Err(bad(F, k, v)),
        }
    }
    let socket = socket.ok_or_else(|| bad(F, "socket", ""))?;
    Ok(kiln_api::vm::TpmConfig { socket })
}

/// Parse the value of `--smbios` (each key optional; values cannot hold
/// a comma). Lengths and the UUID are checked by `config::validate`.
pub fn parse_smbios(s: &str) -> Result<SmbiosConfig, CliError> {
    const F: &str = "--smbios";
    const KEYS: [&str; 8] = [
        "manufacturer",
        "product",
        "version",
        "serial",
        "uuid",
        "sku",
        "family",
        "asset_tag",
    ];
    let mut c = SmbiosConfig::default();
    for (k, v) in pairs(F, s, &KEYS)? {
        let field = match k {
            "manufacturer" => &mut c.manufacturer,
            "product" => &mut c.product,
            "version" => &mut c.version,
            "serial" => &mut c.serial,
            "uuid" => &mut c.uuid,
            "sku" => &mut c.sku,
            "family" => &mut c.family,
            "asset_tag" => &mut c.asset_tag,
            _ => return Err(bad(F, k, v)),
        };
        *field = Some(v.to_owned());
    }
    Ok(c)
}

/// `--display vga`.
pub fn parse_display(s: &str) -> Result<kiln_api::vm::DisplayDevice, String> {
    match s {
        "vga" | "std" => Ok(kiln_api::vm::DisplayDevice::Vga),
        _ => Err(format!("unknown display {s:?}: use vga")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_flags() {
        let d = parse_disk("path=/img/a.qcow2,format=qcow2,readonly=on,direct=on,serial=disk-1")
            .unwrap();
        assert_eq!(d.path, "/img/a.qcow2");
        assert_eq!(d.format, DiskFormat::Qcow2);
        assert!(d.readonly && d.direct);
        assert_eq!(d.serial.as_deref(), Some("disk-1"));
        assert!(d.rate_limit.is_none());
        assert_eq!(d.poll_us, 0, "polling is off by default");
        assert_eq!(parse_disk("path=a,poll_us=50").unwrap().poll_us, 50);
        let d = parse_disk("path=top,format=qcow2,backing=/s/base.raw,backing_format=raw").unwrap();
        assert_eq!(
            d.backing,
            vec![BackingConfig {
                path: "/s/base.raw".into(),
                format: DiskFormat::Raw
            }]
        );
        let d = parse_disk(
            "path=top,format=qcow2,backing=/s/mid.qcow2,backing_format=qcow2,backing=/s/base.raw,backing_format=raw",
        )
        .unwrap();
        let chain: Vec<_> = d
            .backing
            .iter()
            .map(|b| (b.path.as_str(), b.format))
            .collect();
        assert_eq!(
            chain,
            [
                ("/s/mid.qcow2", DiskFormat::Qcow2),
                ("/s/base.raw", DiskFormat::Raw)
            ]
        );
        assert!(parse_disk("path=top,backing=/s/base.raw").is_err());
        assert!(parse_disk("path=top,backing=a,backing=b,backing_format=raw").is_err());
        assert!(parse_disk("path=top,backing=a,backing_format=raw,backing_format=raw").is_err());
        assert!(parse_disk("path=top,backing_format=raw").is_err());
        assert!(parse_disk("path=top,backing=b,backing_format=vmdk").is_err());
        assert_eq!(parse_disk("path=a,poll_us=1000").unwrap().poll_us, 1000);
        for v in ["1001", "-1", "x", ""] {
            assert!(parse_disk(&format!("path=a,poll_us={v}")).is_err(), "{v}");
        }
        let d = parse_disk("path=x.raw,bw=1048576,iops=100").unwrap();
        assert_eq!(d.format, DiskFormat::Raw);
        let rl = d.rate_limit.unwrap();
        assert_eq!(rl.bandwidth.unwrap().size, 1 << 20);
        assert_eq!(rl.ops.unwrap().refill_time_ms, 1000);
        for (bad, want) in [
            ("format=raw", "path= is required"),
            ("path=a,format=vmdk", "bad value"),
            ("path=a,readonly=yes", "bad value"),
            ("path=a,path=b", "twice"),
            ("path=a,cache=none", "unknown key"),
            ("path=a,serial=123456789012345678901", "bad value"),
            ("path=a,iops=0", "bad value"),
            ("path", "key=value"),
            ("path=", "bad value"),
        ] {
            let e = parse_disk(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn net_flags() {
        let n = parse_net("tap=kt0,mac=52:54:00:12:34:56").unwrap();
        assert_eq!(n.tap.as_deref(), Some("kt0"));
        assert_eq!(n.mac.as_deref(), Some("52:54:00:12:34:56"));
        let n = parse_net("fd=5,pps=1000").unwrap();
        assert_eq!(n.fd, Some(5));
        assert_eq!(n.rate_limit.unwrap().ops.unwrap().size, 1000);
        assert_eq!(
            parse_net("mac=52:54:00:12:34:56"),
            Err(CliError::NetBackend)
        );
        assert_eq!(parse_net("tap=a,fd=3"), Err(CliError::NetBackend));
        assert!(parse_net("tap=a,mac=52:54").is_err());
        assert!(parse_net("fd=-1").is_err());
        assert!(parse_net("tap=a-name-far-too-long").is_err());
        assert_eq!(parse_net("tap=a").unwrap().link, LinkState::Up);
        assert_eq!(parse_net("tap=a,link=down").unwrap().link, LinkState::Down);
        assert_eq!(parse_net("tap=a,link=up").unwrap().link, LinkState::Up);
        assert!(parse_net("tap=a,link=sideways").is_err());
    }

    #[test]
    fn transitional_flags() {
        assert!(!parse_disk("path=a").unwrap().transitional);
        assert!(parse_disk("path=a,transitional=on").unwrap().transitional);
        assert!(parse_net("tap=a,transitional=on").unwrap().transitional);
        assert!(!parse_net("tap=a,transitional=off").unwrap().transitional);
        assert!(parse_disk("path=a,transitional=maybe").is_err());
        assert_eq!(parse_rng("").unwrap(), RngOptions::default());
        assert!(parse_rng("transitional=on").unwrap().transitional);
        assert!(parse_rng("transitional=2").is_err());
        assert!(parse_rng("legacy=on").is_err());
    }

    #[test]
    fn net_multiqueue_and_rx_limits() {
        let n = parse_net("tap=kt0,queues=4,rx_bw=1000000,rx_pps=500,bw=10").unwrap();
        assert_eq!(n.queues, Some(4));
        let rx = n.rx_rate_limit.unwrap();
        assert_eq!(rx.bandwidth.unwrap().size, 1_000_000);
        assert_eq!(rx.ops.unwrap().size, 500);
        assert_eq!(n.rate_limit.unwrap().bandwidth.unwrap().size, 10);
        let n = parse_net("fds=3:4:5").unwrap();
        assert_eq!(n.fds, Some(vec![3, 4, 5]));
        assert!(n.rate_limit.is_none() && n.rx_rate_limit.is_none());
        assert!(parse_net("fds=3:4,queues=2").is_ok());
        for (bad, want) in [
            ("tap=a,queues=0", "bad value"),
            ("tap=a,queues=17", "bad value"),
            ("tap=a,queues=x", "bad value"),
            ("fds=3:4,queues=3", "bad value"),
            ("fd=3,queues=2", "bad value"),
            ("fds=3::4", "bad value"),
            ("fds=3:-1", "bad value"),
            ("fds=0:1:2:3:4:5:6:7:8:9:10:11:12:13:14:15:16", "bad value"),
            ("tap=a,fds=3", "exactly one"),
            ("fd=3,fds=4", "exactly one"),
            ("tap=a,rx_bw=0", "bad value"),
        ] {
            let e = parse_net(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
