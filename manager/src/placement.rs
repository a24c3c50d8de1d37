//! Placement with overcommit: how much of the host servers may claim.
//!
//! Per resource, `capacity = (total - reserved) x allocation_ratio` (rounded
//! down). A server holds `vcpus`, `ram_mb` and `disk_gb` of its flavor from
//! create until delete. [`Placement::check`] is the pure test; the store
//! calls it inside the same `BEGIN IMMEDIATE` transaction that inserts the
//! server row, so concurrent creates cannot overcommit.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use kiln_api::compute::{HostInfo, ResourceUsage};

use crate::config::PlacementConfig;

/// An amount of each resource.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub vcpus: u64,
    pub ram_mb: u64,
    pub disk_gb: u64,
}

/// A create that does not fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub resource: &'static str,
    pub requested: u64,
    pub free: u64,
    pub capacity: u64,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not enough {}: requested {}, free {} (capacity {})",
            self.resource, self.requested, self.free, self.capacity
        )
    }
}

#[derive(Clone, Debug)]
pub struct Placement {
    pub total: Resources,
    pub reserved: Resources,
    pub ratio: [f64; 3],
}

impl Placement {
    /// Totals from the config where set, else measured on this host.
    pub fn from_config(cfg: &PlacementConfig, state_dir: &Path) -> Placement {
        let total = Resources {
            vcpus: cfg.total_vcpus.unwrap_or_else(host_vcpus),
            ram_mb: cfg.total_ram_mb.unwrap_or_else(host_ram_mb),
            disk_gb: cfg.total_disk_gb.unwrap_or_else(|| host_disk_gb(state_dir)),
        };
        Placement {
            total,
            reserved: Resources {
                vcpus: cfg.reserved_host_cpus,
                ram_mb: cfg.reserved_host_memory_mb,
                disk_gb: cfg.reserved_host_disk_gb,
            },
            ratio: [
                cfg.cpu_allocation_ratio,
                cfg.ram_allocation_ratio,
                cfg.disk_allocation_ratio,
            ],
        }
    }

    pub fn capacity(&self) -> Resources {
        let cap = |t: u64, r: u64, ratio: f64| (t.saturating_sub(r) as f64 * ratio).floor() as u64;
        Resources {
            vcpus: cap(self.total.vcpus, self.reserved.vcpus, self.ratio[0]),
            ram_mb: cap(self.total.ram_mb, self.reserved.ram_mb, self.ratio[1]),
            disk_gb: cap(self.total.disk_gb, self.reserved.disk_gb, self.ratio[2]),
        }
    }

    /// Whether `request` fits next to what is `used`.
    pub fn check(&self, used: Resources, request: Resources) -> Result<(), Refusal> {
        let cap = self.capacity();
        for (resource, c, u, r) in [
            ("vcpus", cap.vcpus, used.vcpus, request.vcpus),
            ("ram_mb", cap.ram_mb, used.ram_mb, request.ram_mb),
            ("disk_gb", cap.disk_gb, used.disk_gb, request.disk_gb),
        ] {
            let free = c.saturating_sub(u);
            if r > free {
                return Err(Refusal {
                    resource,
                    requested: r,
                    free,
                    capacity: c,
                });
            }
        }
        Ok(())
    }

    /// The `GET /v1/host` report.
    pub fn report(&self, used: Resources, servers: u64) -> HostInfo {
        let cap = self.capacity();
        let one = |t, r, ratio, c: u64, u: u64| ResourceUsage {
            total: t,
            reserved: r,
            allocation_ratio: ratio,
            capacity: c,
            used: u,
            free: c.saturating_sub(u),
        };
        HostInfo {
            vcpus: one(
                self.total.vcpus,
                self.reserved.vcpus,
                self.ratio[0],
                cap.vcpus,
                used.vcpus,
            ),
            ram_mb: one(
                self.total.ram_mb,
                self.reserved.ram_mb,
                self.ratio[1],
                cap.ram_mb,
                used.ram_mb,
            ),
            disk_gb: one(
                self.total.disk_gb,
                self.reserved.disk_gb,
                self.ratio[2],
                cap.disk_gb,
                used.disk_gb,
            ),
            servers,
        }
    }
}

fn host_vcpus() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
}

/// MemTotal of /proc/meminfo in MiB.
fn host_ram_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_memtotal_kib(&s))
        .map(|kib| kib / 1024)
        .unwrap_or(0)
}

fn parse_memtotal_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Size of the file system holding `dir`, in GiB.
fn host_disk_gb(dir: &Path) -> u64 {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs is plain data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    (st.f_blocks as u64).saturating_mul(st.f_frsize as u64) >> 30
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Placement {
        Placement {
            total: Resources {
                vcpus: 2,
                ram_mb: 4096,
                disk_gb: 100,
            },
            reserved: Resources {
                vcpus: 0,
                ram_mb: 512,
                disk_gb: 0,
            },
            ratio: [4.0, 1.0, 1.0],
        }
    }

    #[test]
    fn capacity_is_total_minus_reserved_times_ratio() {
        let c = small().capacity();
        assert_eq!(
            c,
            Resources {
                vcpus: 8,
                ram_mb: 3584,
                disk_gb: 100
            }
        );
        let mut p = small();
        p.ratio = [1.5, 0.5, 2.0];
        p.total.vcpus = 3;
        assert_eq!(
            p.capacity(),
            Resources {
                vcpus: 4,
                ram_mb: 1792,
                disk_gb: 200
            }
        );
        p.reserved.ram_mb = 10_000;
        assert_eq!(p.capacity().ram_mb, 0);
    }

    #[test]
    fn check_names_the_resource_and_amounts() {
        let p = small();
        let used = Resources {
            vcpus: 7,
            ram_mb: 1000,
            disk_gb: 10,
        };
        assert!(p
            .check(
                used,
                Resources {
                    vcpus: 1,
                    ram_mb: 2584,
                    disk_gb: 90
                }
            )
            .is_ok());
        let r = p
            .check(
                used,
                Resources {
                    vcpus: 2,
                    ram_mb: 1,
                    disk_gb: 1,
                },
            )
            .unwrap_err();
        assert_eq!((r.resource, r.requested, r.free), ("vcpus", 2, 1));
        let r = p
            .check(
                used,
                Resources {
                    vcpus: 1,
                    ram_mb: 2585,
                    disk_gb: 1,
                },
            )
            .unwrap_err();
        assert_eq!((r.resource, r.requested, r.free), ("ram_mb", 2585, 2584));
        assert_eq!(
            r.to_string(),
            "not enough ram_mb: requested 2585, free 2584 (capacity 3584)"
        );
        let r = p
            .check(
                used,
                Resources {
                    vcpus: 1,
                    ram_mb: 1,
                    disk_gb: 91,
                },
            )
            .unwrap_err();
        assert_eq!(r.resource, "disk_gb");
    }

    #[test]
    fn host_measurements_are_plausible() {
        assert!(host_vcpus() >= 1);
        assert!(host_ram_mb() > 64);
        assert!(host_disk_gb(Path::new("/")) >= 1);
        assert_eq!(
            parse_memtotal_kib("MemTotal:   2048 kB\nMemFree: 1 kB\n"),
            Some(2048)
        );
        assert_eq!(parse_memtotal_kib("garbage"), None);
    }
}
