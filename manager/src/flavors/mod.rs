//! Flavors: the rules a new flavor keeps (name, sizes, extra specs that
//! kiln honours) before the store records it.

use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_api::compute::{Flavor, FlavorCreate};
use thiserror::Error;

use crate::store::{Store, StoreError};
use crate::util::check_name;

#[derive(Debug, Error)]
pub enum FlavorError {
    /// The request breaks a rule (a 400).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks `req` and records the flavor.
pub async fn create(store: &Arc<Store>, req: FlavorCreate) -> Result<Flavor, FlavorError> {
    check(&req)?;
    Ok(store.call(move |s| s.create_flavor(&req)).await?)
}

fn check(req: &FlavorCreate) -> Result<(), FlavorError> {
    check_name("flavor", &req.name).map_err(|e| FlavorError::Invalid(e.to_string()))?;
    if !(1..=255).contains(&req.vcpus) {
        return Err(FlavorError::Invalid("vcpus must be 1 to 255".into()));
    }
    if !(1..=4 << 20).contains(&req.ram_mb) {
        return Err(FlavorError::Invalid("ram_mb must be 1 to 4194304".into()));
    }
    if req.disk_gb > 1 << 20 {
        return Err(FlavorError::Invalid(
            "disk_gb must be at most 1048576".into(),
        ));
    }
    // Nova's `quota:*` extra specs: refused unless kiln honours them.
    crate::qos::Qos::from_specs(&req.extra_specs)
        .map_err(|e| FlavorError::Invalid(e.to_string()))?;
    Ok(())
}

/// Sets the extra specs in `set` and removes those in `unset` of flavor
/// `key` (id or name), checked as a create's (a key kiln does not honour
/// or a bad value is [`FlavorError::Invalid`], and nothing changes);
/// removing a key the flavor lacks is a not-found. Servers keep the specs
/// they were made with.
pub async fn update_extra_specs(
    store: &Arc<Store>,
    key: String,
    set: BTreeMap<String, String>,
    unset: Vec<String>,
) -> Result<Flavor, FlavorError> {
    store
        .call(move |s| {
            let f = s.get_flavor(&key)?;
            let mut specs = f.extra_specs.clone();
            for k in &unset {
                if specs.remove(k).is_none() {
                    return Err(FlavorError::Store(StoreError::NotFound {
                        kind: "extra spec",
                        id: format!("{k} of flavor {}", f.name),
                    }));
                }
            }
            specs.extend(set);
            crate::qos::Qos::from_specs(&specs).map_err(|e| FlavorError::Invalid(e.to_string()))?;
            Ok(s.set_flavor_extra_specs(&f.id, &specs)?)
        })
        .await
}
