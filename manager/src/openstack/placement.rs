//! Placement's read-only view of this host: one resource provider (the
//! host, named by its hostname, its uuid the hypervisor id Nova shows)
//! with VCPU, MEMORY_MB and DISK_GB inventories from kilnd's placement
//! (`crate::placement`: the same totals, reserved amounts and allocation
//! ratios as `GET /v1/host`), and one consumer per server holding its
//! flavor's amounts. Placement's microversions (`OpenStack-API-Version:
//! placement 1.Y`) are negotiated here too. kilnd's inventory is fixed at
//! start and Placement's writes are not served, so every generation is 1.

use std::fmt;

use kiln_api::compute::Server;
use serde_json::{json, Map, Value};

use crate::placement::{Placement, Resources};

/// A Placement microversion `1.Y`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32);

pub const MIN: Version = Version(0);
/// Placement's own maximum today (consumer types, 1.38; any-traits,
/// 1.39): osc-placement negotiates up to 1.29 from it.
pub const MAX: Version = Version(39);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1.{}", self.0)
    }
}

/// Why a requested version is refused: 400 when malformed, 406 when out
/// of range (with the range in the error, as Placement answers it).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("invalid version string {0:?} in OpenStack-API-Version: use placement 1.Y")]
    Malformed(String),
    #[error("Unacceptable version header: {0}; this Placement serves {MIN} to {MAX}")]
    Unsupported(String),
}

/// The version a request asks for in `OpenStack-API-Version` (the part
/// naming `placement`; none: 1.0, `latest`: the maximum).
pub fn negotiate(header: Option<&str>) -> Result<Version, VersionError> {
    let asked = header.into_iter().flat_map(|h| h.split(',')).find_map(|p| {
        let mut w = p.split_whitespace();
        match (w.next(), w.next()) {
            (Some(s), Some(v)) if s.eq_ignore_ascii_case("placement") => Some(v.to_owned()),
            _ => None,
        }
    });
    let Some(v) = asked else { return Ok(MIN) };
    if v.eq_ignore_ascii_case("latest") {
        return Ok(MAX);
    }
    let (major, minor) = v
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .filter(|_| v.bytes().all(|c| c.is_ascii_digit() || c == b'.'))
        .ok_or_else(|| VersionError::Malformed(v.clone()))?;
    if major != 1 || minor > MAX.0 {
        return Err(VersionError::Unsupported(v));
    }
    Ok(Version(minor))
}

/// The one generation of the provider and of every consumer.
const GENERATION: u64 = 1;

/// The provider and its consumers as one request sees them.
pub struct View<'a> {
    pub mv: Version,
    /// This host's provider uuid (Nova's hypervisor id).
    pub uuid: &'a str,
    /// Its name: the host name, as Nova names compute node providers.
    pub name: &'a str,
    pub project_id: &'a str,
    pub user_id: &'a str,
}

/// The root document (`GET /placement/`).
pub fn versions() -> Value {
    json!({"versions": [{"id": "v1.0", "min_version": MIN.to_string(),
        "max_version": MAX.to_string(), "status": "CURRENT",
        "links": [{"rel": "self", "href": ""}]}]})
}

/// The resource classes kilnd's placement counts, with each amount of
/// `r`.
fn classes(r: Resources) -> [(&'static str, u64); 3] {
    [
        ("VCPU", r.vcpus),
        ("MEMORY_MB", r.ram_mb),
        ("DISK_GB", r.disk_gb),
    ]
}

/// The amounts `r` as `{"VCPU": n, ...}`, leaving out zeros (a
/// Placement allocation names only what it takes).
pub fn amounts(r: Resources, keep_zero: bool) -> Value {
    let m: Map<String, Value> = classes(r)
        .into_iter()
        .filter(|(_, n)| keep_zero || *n > 0)
        .map(|(k, n)| (k.to_owned(), json!(n)))
        .collect();
    Value::Object(m)
}

/// What a server holds.
pub fn held(s: &Server) -> Resources {
    Resources {
        vcpus: u64::from(s.vcpus),
        ram_mb: s.ram_mb,
        disk_gb: s.disk_gb,
    }
}

impl View<'_> {
    fn prefix(&self) -> String {
        format!("/placement/resource_providers/{}", self.uuid)
    }

    /// `GET /resource_providers/{uuid}` and the list's entries, with the
    /// links and fields of the request's microversion.
    pub fn provider(&self) -> Value {
        let p = self.prefix();
        let mut links = vec![
            json!({"rel": "self", "href": p}),
            json!({"rel": "inventories", "href": format!("{p}/inventories")}),
            json!({"rel": "usages", "href": format!("{p}/usages")}),
        ];
        for (since, rel) in [(1, "aggregates"), (6, "traits"), (11, "allocations")] {
            if self.mv.0 >= since {
                links.push(json!({"rel": rel, "href": format!("{p}/{rel}")}));
            }
        }
        let mut v = json!({"uuid": self.uuid, "name": self.name,
                           "generation": GENERATION, "links": links});
        if self.mv.0 >= 14 {
            v["parent_provider_uuid"] = Value::Null;
            v["root_provider_uuid"] = json!(self.uuid);
        }
        v
    }

    /// `GET .../inventories`: each class's total, reserved and ratio as
    /// kilnd's placement has them; a server may take up to the total.
    pub fn inventories(&self, p: &Placement) -> Value {
        let ratios = p.ratio;
        let inv: Map<String, Value> = classes(p.total)
            .into_iter()
            .zip(classes(p.reserved))
            .zip(ratios)
            .map(|(((class, total), (_, reserved)), ratio)| {
                (
                    class.to_owned(),
                    json!({"total": total, "reserved": reserved, "min_unit": 1,
                           "max_unit": total.max(1), "step_size": 1,
                           "allocation_ratio": ratio}),
                )
            })
            .collect();
        json!({"resource_provider_generation": GENERATION, "inventories": inv})
    }

    /// `GET .../inventories/{class}`, `None` for a class kilnd does not
    /// count.
    pub fn inventory(&self, p: &Placement, class: &str) -> Option<Value> {
        let mut all = self.inventories(p);
        let mut one = all["inventories"].get_mut(class)?.take();
        one["resource_provider_generation"] = json!(GENERATION);
        Some(one)
    }

    /// `GET .../usages`: what the servers hold (every class, zeros too).
    pub fn usages(&self, used: Resources) -> Value {
        json!({"resource_provider_generation": GENERATION, "usages": amounts(used, true)})
    }

    /// `GET .../allocations`: every server's holding on this provider.
    pub fn provider_allocations(&self, servers: &[Server]) -> Value {
        let allocs: Map<String, Value> = servers
            .iter()
            .map(|s| (s.id.clone(), json!({"resources": amounts(held(s), false)})))
            .collect();
        json!({"resource_provider_generation": GENERATION, "allocations": allocs})
    }

    /// `GET /allocations/{consumer}`: the server's holding (`None`: an
    /// unknown consumer, which holds nothing: `{"allocations": {}}`).
    pub fn consumer_allocations(&self, server: Option<&Server>) -> Value {
        let Some(s) = server else {
            return json!({"allocations": {}});
        };
        let mut v = json!({"allocations": {self.uuid: {
            "generation": GENERATION, "resources": amounts(held(s), false)}}});
        if self.mv.0 >= 12 {
            v["project_id"] = json!(self.project_id);
            v["user_id"] = json!(self.user_id);
        }
        if self.mv.0 >= 28 {
            v["consumer_generation"] = json!(GENERATION);
        }
        if self.mv.0 >= 38 {
            v["consumer_type"] = json!("INSTANCE");
        }
        v
    }

    /// `GET /usages?project_id=` (1.9): the servers' sum when the project
    /// is this one's (every server is), else nothing; from 1.38 by
    /// consumer type (`INSTANCE`) with the consumer count.
    pub fn project_usages(
        &self,
        project_id: &str,
        user_id: Option<&str>,
        servers: &[Server],
    ) -> Value {
        let mine = project_id == self.project_id && user_id.is_none_or(|u| u == self.user_id);
        let held: &[Server] = if mine { servers } else { &[] };
        let sum = held.iter().fold(Resources::default(), |a, s| {
            let h = self::held(s);
            Resources {
                vcpus: a.vcpus + h.vcpus,
                ram_mb: a.ram_mb + h.ram_mb,
                disk_gb: a.disk_gb + h.disk_gb,
            }
        });
        if self.mv.0 < 38 {
            let v = if held.is_empty() {
                json!({})
            } else {
                amounts(sum, true)
            };
            return json!({"usages": v});
        }
        if held.is_empty() {
            return json!({"usages": {}});
        }
        let mut one = amounts(sum, true);
        one["consumer_count"] = json!(held.len());
        json!({"usages": {"INSTANCE": one}})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_negotiate() {
        assert_eq!(negotiate(None), Ok(MIN));
        assert_eq!(negotiate(Some("placement 1.29")), Ok(Version(29)));
        assert_eq!(negotiate(Some("compute 2.1, placement latest")), Ok(MAX));
        assert_eq!(negotiate(Some("compute 2.90")), Ok(MIN));
        for bad in [
            "placement 1",
            "placement x.y",
            "placement 1.+2",
            "placement 1.2.3",
        ] {
            assert!(
                matches!(negotiate(Some(bad)), Err(VersionError::Malformed(_))),
                "{bad}"
            );
        }
        for far in ["placement 1.40", "placement 2.0", "placement 0.9"] {
            assert!(
                matches!(negotiate(Some(far)), Err(VersionError::Unsupported(_))),
                "{far}"
            );
        }
    }
}
