//! Flavor QoS: the Nova flavor extra specs (`quota:*`) that kiln honours,
//! checked when a flavor is created and turned into kiln-vmm's token
//! buckets ([`RateLimitConfig`]) for every disk and NIC of a server of that
//! flavor (`supervisor/vm_config.rs`), plus one key of kiln's own,
//! `kiln:disk_poll_us` (below).
//!
//! kiln-vmm has, per device, one bucket for bytes and one for operations,
//! each with a size and a refill time (the time to refill an empty bucket),
//! so its rate is size / refill time and its size is how much may go at
//! once after a quiet spell. Nova's libvirt driver hands these keys to
//! QEMU's `iotune` (disks) and to `tc` through libvirt's `<bandwidth>`
//! (NICs); what maps onto a pair of buckets, and how:
//!
//! | key | unit | kiln-vmm |
//! |---|---|---|
//! | `quota:disk_total_bytes_sec` | bytes/s | each disk's bytes bucket: rate R, size max(R × 1 s, 4 MiB) |
//! | `quota:disk_total_iops_sec` | requests/s | each disk's ops bucket: rate N, size N (1 s) |
//! | `quota:vif_outbound_average` | KiB/s | each NIC's transmit (guest → network) bytes bucket: rate A × 1024, size max(A × 1024 × 1 s, 128 KiB) |
//! | `quota:vif_inbound_average` | KiB/s | the same for receive (network → guest) |
//! | `quota:vif_{in,out}bound_burst` | KiB | that direction's bucket size (at least 128 KiB; needs the average) |
//!
//! The refill time is the size over the rate, rounded up to a whole
//! millisecond, and the size then recomputed from the rate, so the rate is
//! the one asked for and the size differs from the one asked for by less
//! than a millisecond of traffic. The floors keep ordinary traffic smooth:
//! kiln-vmm charges a request or frame larger than the bucket in full (it
//! waits for a full bucket, passes, and leaves the bucket in debt for the
//! excess), so the rate holds for any size, but in bigger, rarer steps.
//! 4 MiB is the most a Linux guest sends as one disk request by default
//! (`max_sectors_kb`), 128 KiB above the largest frame (64 KiB with
//! offloads). A value of 0 means no
//! limit, as in libvirt.
//!
//! Refused, each with the reason (400 at flavor create): the separate
//! read/write disk limits (one bucket serves both), the `_max` and
//! `_max_length` peak limits and `quota:vif_*_peak` (kiln-vmm cannot cap a
//! rate above the average during a burst), `quota:disk_size_iops_sec`
//! (every request is one operation), `quota:vif_inbound_floor` (no
//! guaranteed minimum), any other `quota:` key (CPU and memory tuning),
//! and any key kiln does not know.
//!
//! `kiln:disk_poll_us` (µs, 0 to [`MAX_DISK_POLL_US`], default 0 = off) is
//! kiln's own key, in kiln's namespace because Nova has no such key (the
//! nearest is QEMU's iothread `poll-max-ns`, which Nova does not expose):
//! it sets the root disk's `DiskConfig::poll_us`, kiln-vmm's adaptive
//! polling, where the disk's worker spins on the ring for up to that long
//! after serving work before it sleeps. That saves the wake-up per request
//! of small synchronous I/O (queue depth 1) at the cost of a host CPU busy
//! for up to that long after each burst. Any other `kiln:` key is refused
//! as unknown.

use std::collections::BTreeMap;

use kiln_api::vm::{RateLimitConfig, TokenBucketConfig};
use thiserror::Error;

/// Smallest bytes bucket of a disk: the largest request a Linux guest sends
/// by default.
pub const DISK_BYTES_FLOOR: u64 = 4 << 20;
/// Smallest bytes bucket of a NIC: above the largest frame (64 KiB with
/// TSO, plus headers).
pub const NET_BYTES_FLOOR: u64 = 128 << 10;
/// How long an average's bucket lasts when no burst is given.
const WINDOW_MS: u64 = 1000;
/// Largest accepted values (far above any device; they keep the
/// arithmetic in range).
const MAX_BYTES_SEC: u64 = 1 << 50;
const MAX_IOPS: u64 = 1 << 40;
const MAX_KIB: u64 = 1 << 40;
/// Largest `kiln:disk_poll_us`: kiln-vmm's own limit on `poll_us`
/// (`--disk poll_us=`), a millisecond of a host CPU.
pub const MAX_DISK_POLL_US: u32 = 1000;
/// Nova's limit on an extra spec's key and value.
const MAX_LEN: usize = 255;

/// An extra spec kiln refuses, and why.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("extra spec {key:?}: {why}")]
pub struct SpecError {
    pub key: String,
    pub why: String,
}

/// The limits a flavor's extra specs give each device of a server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Qos {
    /// Every disk (`DiskConfig::rate_limit`).
    pub disk: Option<RateLimitConfig>,
    /// Every NIC's transmit, guest to network (`NetConfig::rate_limit`):
    /// Nova's `vif_outbound`.
    pub net_tx: Option<RateLimitConfig>,
    /// Every NIC's receive, network to guest (`NetConfig::rx_rate_limit`):
    /// Nova's `vif_inbound`.
    pub net_rx: Option<RateLimitConfig>,
    /// The root disk's adaptive polling window in µs
    /// (`DiskConfig::poll_us`; 0: off), from `kiln:disk_poll_us`.
    pub disk_poll_us: u32,
}

/// What a key is, once recognised.
enum Key {
    DiskBytes,
    DiskIops,
    VifAverage(Dir),
    VifBurst(Dir),
    DiskPoll,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    In,
    Out,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::In => "inbound",
            Dir::Out => "outbound",
        }
    }
}

/// The keys kiln honours, for messages.
const HONOURED: &str = "quota:disk_total_bytes_sec, quota:disk_total_iops_sec, \
     quota:vif_inbound_average, quota:vif_inbound_burst, \
     quota:vif_outbound_average, quota:vif_outbound_burst, kiln:disk_poll_us";

impl Qos {
    /// Checks every extra spec and maps the `quota:*` ones kiln honours
    /// and `kiln:disk_poll_us`.
    pub fn from_specs(specs: &BTreeMap<String, String>) -> Result<Qos, SpecError> {
        let mut disk_bytes = 0;
        let mut disk_iops = 0;
        let mut disk_poll_us = 0;
        // (average KiB/s, burst KiB) per direction.
        let mut vif: [(u64, Option<u64>); 2] = [(0, None), (0, None)];
        for (k, v) in specs {
            let err = |why: String| SpecError {
                key: shorten(k),
                why,
            };
            if k.len() > MAX_LEN {
                return Err(err(format!("a key is at most {MAX_LEN} bytes")));
            }
            let key = classify(k).map_err(err)?;
            let max = match key {
                Key::DiskBytes => MAX_BYTES_SEC,
                Key::DiskIops => MAX_IOPS,
                Key::VifAverage(_) | Key::VifBurst(_) => MAX_KIB,
                Key::DiskPoll => u64::from(MAX_DISK_POLL_US),
            };
            let zero = match key {
                Key::DiskPoll => "0: off",
                _ => "0: no limit",
            };
            let n = number(v, max, zero).map_err(err)?;
            match key {
                Key::DiskBytes => disk_bytes = n,
                Key::DiskIops => disk_iops = n,
                Key::VifAverage(d) => vif[d as usize].0 = n,
                Key::VifBurst(d) => vif[d as usize].1 = Some(n),
                // In range: at most MAX_DISK_POLL_US.
                Key::DiskPoll => disk_poll_us = u32::try_from(n).unwrap_or(MAX_DISK_POLL_US),
            }
        }
        let disk = limit(
            (disk_bytes > 0).then(|| bucket(disk_bytes, window(disk_bytes).max(DISK_BYTES_FLOOR))),
            (disk_iops > 0).then(|| bucket(disk_iops, window(disk_iops))),
        );
        let mut net = [None, None];
        for d in [Dir::In, Dir::Out] {
            let (avg, burst) = vif[d as usize];
            let burst_key = format!("quota:vif_{}_burst", d.name());
            let avg_key = format!("quota:vif_{}_average", d.name());
            let burst = match burst {
                Some(b) if b > 0 && avg == 0 => {
                    return Err(SpecError {
                        key: burst_key,
                        why: format!("a burst needs a non-zero {avg_key:?}, as in libvirt"),
                    })
                }
                Some(b) if b > 0 && b * 1024 < NET_BYTES_FLOOR => {
                    return Err(SpecError {
                        key: burst_key,
                        why: format!(
                            "{b} KiB is below {} KiB: a frame can be 64 KiB, and a frame larger \
                             than the bucket waits for a full bucket and then leaves it in debt",
                            NET_BYTES_FLOOR / 1024
                        ),
                    })
                }
                Some(b) if b > 0 => Some(b * 1024),
                _ => None,
            };
            if avg > 0 {
                let rate = avg * 1024;
                let size = burst.unwrap_or_else(|| window(rate).max(NET_BYTES_FLOOR));
                net[d as usize] = limit(Some(bucket(rate, size)), None);
            }
        }
        let [net_rx, net_tx] = net;
        Ok(Qos {
            disk,
            net_tx,
            net_rx,
            disk_poll_us,
        })
    }
}

/// Sorts a key into what kiln honours, or says why it is refused.
fn classify(k: &str) -> Result<Key, String> {
    let key = match k {
        "quota:disk_total_bytes_sec" => Key::DiskBytes,
        "quota:disk_total_iops_sec" => Key::DiskIops,
        "quota:vif_inbound_average" => Key::VifAverage(Dir::In),
        "quota:vif_outbound_average" => Key::VifAverage(Dir::Out),
        "quota:vif_inbound_burst" => Key::VifBurst(Dir::In),
        "quota:vif_outbound_burst" => Key::VifBurst(Dir::Out),
        "kiln:disk_poll_us" => Key::DiskPoll,
        _ => return Err(refusal(k)),
    };
    Ok(key)
}

/// Why a key kiln does not honour is refused.
fn refusal(k: &str) -> String {
    if k.starts_with("kiln:") {
        return "not a kiln: key kiln knows (the only one is kiln:disk_poll_us)".into();
    }
    let Some(q) = k.strip_prefix("quota:") else {
        return format!("not an extra spec kiln knows (it honours {HONOURED})");
    };
    if q.starts_with("disk_") && (q.ends_with("_max") || q.ends_with("_max_length")) {
        return "kiln-vmm cannot cap a peak rate above the average; the average's bucket \
                already lets a burst of one second (at least 4 MiB) through"
            .into();
    }
    for (rw, total) in [
        ("disk_read_bytes_sec", "quota:disk_total_bytes_sec"),
        ("disk_write_bytes_sec", "quota:disk_total_bytes_sec"),
        ("disk_read_iops_sec", "quota:disk_total_iops_sec"),
        ("disk_write_iops_sec", "quota:disk_total_iops_sec"),
    ] {
        if q == rw {
            return format!(
                "kiln-vmm limits a disk's reads and writes with one bucket, so it cannot \
                 limit one of them alone; use {total:?}"
            );
        }
    }
    match q {
        "disk_size_iops_sec" => {
            "kiln-vmm counts every request as one operation, whatever its size".into()
        }
        "vif_inbound_peak" | "vif_outbound_peak" => {
            "kiln-vmm cannot cap a peak rate above the average; the burst key sets how much \
             may go at once"
                .into()
        }
        "vif_inbound_floor" => "kiln-vmm cannot guarantee a minimum rate".into(),
        _ => format!("not a limit kiln can enforce (it honours {HONOURED})"),
    }
}

/// A whole number from 0 to `max`, in decimal digits only; `zero` says
/// what 0 means, for the message.
fn number(v: &str, max: u64, zero: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{:?} is not a whole number from 0 to {max} ({zero})",
            shorten(v)
        )
    };
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match v.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(bad()),
    }
}

/// What `rate` tokens a second add up to in [`WINDOW_MS`].
fn window(rate: u64) -> u64 {
    u64::try_from(u128::from(rate) * u128::from(WINDOW_MS) / 1000).unwrap_or(u64::MAX)
}

/// A bucket of `rate` tokens a second holding about `size` tokens: the
/// refill time is `size / rate` rounded up to a millisecond, and the size
/// what `rate` refills in that time, so the rate is exact.
fn bucket(rate: u64, size: u64) -> TokenBucketConfig {
    let (rate128, size128) = (u128::from(rate), u128::from(size));
    let refill_ms = (size128 * 1000).div_ceil(rate128).max(1);
    let size = (rate128 * refill_ms / 1000).max(1);
    TokenBucketConfig {
        size: u64::try_from(size).unwrap_or(u64::MAX),
        one_time_burst: 0,
        refill_time_ms: u64::try_from(refill_ms).unwrap_or(u64::MAX),
    }
}

fn limit(
    bandwidth: Option<TokenBucketConfig>,
    ops: Option<TokenBucketConfig>,
) -> Option<RateLimitConfig> {
    (bandwidth.is_some() || ops.is_some()).then_some(RateLimitConfig { bandwidth, ops })
}

/// A key or value as quoted in a message: at most 64 characters.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn tb(size: u64, refill_time_ms: u64) -> TokenBucketConfig {
        TokenBucketConfig {
            size,
            one_time_burst: 0,
            refill_time_ms,
        }
    }

    fn err(kv: &[(&str, &str)]) -> SpecError {
        Qos::from_specs(&specs(kv)).unwrap_err()
    }

    #[test]
    fn no_specs_no_limits() {
        assert_eq!(Qos::from_specs(&BTreeMap::new()).unwrap(), Qos::default());
        // 0 is no limit, as in libvirt.
        let q = Qos::from_specs(&specs(&[
            ("quota:disk_total_bytes_sec", "0"),
            ("quota:disk_total_iops_sec", "0"),
            ("quota:vif_inbound_average", "0"),
            ("quota:vif_outbound_burst", "0"),
        ]))
        .unwrap();
        assert_eq!(q, Qos::default());
    }

    #[test]
    fn disk_limits_map_onto_one_second_buckets() {
        let q = Qos::from_specs(&specs(&[
            ("quota:disk_total_bytes_sec", "10485760"),
            ("quota:disk_total_iops_sec", "200"),
        ]))
        .unwrap();
        let d = q.disk.unwrap();
        assert_eq!(d.bandwidth, Some(tb(10 << 20, 1000)));
        assert_eq!(d.ops, Some(tb(200, 1000)));
        assert!(q.net_tx.is_none() && q.net_rx.is_none());
        // Below 4 MiB/s the bucket keeps 4 MiB and refills more slowly:
        // the rate stays 1 MiB/s.
        let q = Qos::from_specs(&specs(&[("quota:disk_total_bytes_sec", "1048576")])).unwrap();
        let d = q.disk.unwrap();
        assert_eq!(d.bandwidth, Some(tb(4 << 20, 4000)));
        assert!(d.ops.is_none());
        // An odd rate: refill rounded up to a millisecond, size from it.
        let b = bucket(3, DISK_BYTES_FLOOR);
        assert_eq!(b.refill_time_ms, 1_398_101_334);
        assert_eq!(b.size, 4_194_304);
        // Largest values stay in range.
        let q = Qos::from_specs(&specs(&[
            ("quota:disk_total_bytes_sec", &MAX_BYTES_SEC.to_string()),
            ("quota:disk_total_iops_sec", &MAX_IOPS.to_string()),
        ]))
        .unwrap();
        let d = q.disk.unwrap();
        assert_eq!(d.bandwidth, Some(tb(MAX_BYTES_SEC, 1000)));
        assert_eq!(d.ops, Some(tb(MAX_IOPS, 1000)));
    }

    #[test]
    fn vif_limits_are_kib_and_keep_their_direction() {
        let q = Qos::from_specs(&specs(&[
            ("quota:vif_outbound_average", "1024"),
            ("quota:vif_inbound_average", "64"),
            ("quota:vif_inbound_burst", "256"),
        ]))
        .unwrap();
        // Outbound is what the guest sends: kiln-vmm's transmit.
        assert_eq!(q.net_tx.unwrap().bandwidth, Some(tb(1 << 20, 1000)));
        // 64 KiB/s with a 256 KiB bucket: 4 s to refill.
        let rx = q.net_rx.unwrap();
        assert_eq!(rx.bandwidth, Some(tb(256 << 10, 4000)));
        assert!(rx.ops.is_none());
        assert!(q.disk.is_none());
        // A small average keeps the 128 KiB floor.
        let q = Qos::from_specs(&specs(&[("quota:vif_outbound_average", "8")])).unwrap();
        assert_eq!(q.net_tx.unwrap().bandwidth, Some(tb(128 << 10, 16_000)));
        assert!(q.net_rx.is_none());
        // A burst under a millisecond of the average: one millisecond.
        let q = Qos::from_specs(&specs(&[
            ("quota:vif_inbound_average", "1048576000"),
            ("quota:vif_inbound_burst", "128"),
        ]))
        .unwrap();
        assert_eq!(q.net_rx.unwrap().bandwidth, Some(tb(1_073_741_824, 1)));
    }

    #[test]
    fn disk_poll_us_sets_the_polling_window_alone() {
        for (v, us) in [("0", 0), ("1", 1), ("50", 50), ("1000", 1000)] {
            let q = Qos::from_specs(&specs(&[("kiln:disk_poll_us", v)])).unwrap();
            assert_eq!(q.disk_poll_us, us, "{v}");
            // It limits nothing.
            assert!(q.disk.is_none() && q.net_tx.is_none() && q.net_rx.is_none());
        }
        // Next to the quota keys, each keeps its own.
        let q = Qos::from_specs(&specs(&[
            ("kiln:disk_poll_us", "200"),
            ("quota:disk_total_iops_sec", "500"),
        ]))
        .unwrap();
        assert_eq!(q.disk_poll_us, 200);
        assert_eq!(q.disk.unwrap().ops, Some(tb(500, 1000)));
        assert_eq!(Qos::default().disk_poll_us, 0, "off without the key");
        for v in ["1001", "4294967296", "-1", "1.5", "", " 50", "50us", "0x10"] {
            let e = err(&[("kiln:disk_poll_us", v)]);
            assert_eq!(e.key, "kiln:disk_poll_us", "{v}");
            assert!(
                e.to_string()
                    .contains("whole number from 0 to 1000 (0: off)"),
                "{v}: {e}"
            );
        }
        // Other kiln: keys are unknown, not ignored.
        for k in [
            "kiln:net_poll_us",
            "kiln:disk_poll",
            "kiln:",
            "KILN:disk_poll_us",
        ] {
            let e = err(&[(k, "10")]);
            assert_eq!(e.key, k);
            assert!(e.why.contains("kiln:disk_poll_us"), "{k}: {e}");
        }
    }

    #[test]
    fn every_refusal_names_the_key_and_why() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "quota:disk_read_bytes_sec",
                "1",
                "quota:disk_total_bytes_sec",
            ),
            (
                "quota:disk_write_iops_sec",
                "1",
                "quota:disk_total_iops_sec",
            ),
            ("quota:disk_total_bytes_sec_max", "1", "peak rate"),
            ("quota:disk_read_iops_sec_max_length", "1", "peak rate"),
            ("quota:disk_size_iops_sec", "4096", "one operation"),
            ("quota:vif_inbound_peak", "1", "peak rate"),
            ("quota:vif_inbound_floor", "1", "minimum"),
            ("quota:cpu_shares", "1024", "not a limit kiln can enforce"),
            ("hw:cpu_policy", "dedicated", "not an extra spec kiln knows"),
            ("quota:disk_total_bytes_sec", "-1", "whole number"),
            ("quota:disk_total_bytes_sec", "1.5", "whole number"),
            ("quota:disk_total_bytes_sec", "", "whole number"),
            ("quota:disk_total_bytes_sec", " 1", "whole number"),
            (
                "quota:disk_total_bytes_sec",
                "1125899906842625",
                "0 to 1125899906842624",
            ),
            (
                "quota:disk_total_iops_sec",
                "99999999999999999999",
                "whole number",
            ),
            (
                "quota:vif_outbound_average",
                "1099511627777",
                "whole number",
            ),
        ];
        for (k, v, why) in cases {
            let e = err(&[(k, v)]);
            assert_eq!(&e.key, k);
            let msg = e.to_string();
            assert!(msg.contains(k) && msg.contains(why), "{k}={v}: {msg}");
        }
        let e = err(&[("quota:vif_outbound_burst", "1024")]);
        assert_eq!(e.key, "quota:vif_outbound_burst");
        assert!(e.why.contains("quota:vif_outbound_average"), "{e}");
        let e = err(&[
            ("quota:vif_inbound_average", "100"),
            ("quota:vif_inbound_burst", "64"),
        ]);
        assert!(e.why.contains("below 128 KiB"), "{e}");
        // Long keys and values are quoted shortened.
        let long = "k".repeat(300);
        let e = err(&[(&long, "1")]);
        assert!(e.to_string().len() < 200 && e.why.contains("255"), "{e}");
        let e = err(&[("quota:disk_total_iops_sec", &"x".repeat(1000))]);
        assert!(e.to_string().len() < 300, "{e}");
    }
}
