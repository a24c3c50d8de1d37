//! Reading an OVMF variable store (`nvram.fd`) far enough to tell whether
//! Secure Boot is still on in it.
//!
//! Kiln's machine has no SMM (no Q35 chipset; this development machine's
//! KVM has no `KVM_CAP_X86_SMM` at all), so OVMF cannot keep a guest kernel
//! from writing its flash directly: a compromised guest could delete the
//! platform key and boot unsigned code next time. kilnd cannot prevent that
//! write, but it reads the store before every boot of a server that asks
//! for Secure Boot and refuses to boot one that has it off.
//!
//! The layout (edk2's `SystemNvDataFv`): a firmware volume header
//! (`_FVH` at byte 40, its length at byte 48), then a variable store header
//! (the authenticated-variable GUID, its size, format 0x5A, state 0xFE),
//! then variables, each 4-byte aligned: an authenticated header (start id
//! 0x55AA, state, attributes, monotonic count, time stamp, public key
//! index, name size, data size, vendor GUID: 60 bytes), the UTF-16 name
//! and the data. Every length is checked against the file: a store a guest
//! scribbled over is an error, never a panic.

use thiserror::Error;

/// `gEfiAuthenticatedVariableGuid` (aaf32c78-947b-439a-a180-2e144ec37792)
/// as stored (little-endian fields).
const AUTH_STORE_GUID: [u8; 16] = guid(
    0xaaf32c78,
    0x947b,
    0x439a,
    [0xa1, 0x80, 0x2e, 0x14, 0x4e, 0xc3, 0x77, 0x92],
);
/// `EFI_GLOBAL_VARIABLE` (PK, KEK).
const GLOBAL: [u8; 16] = guid(
    0x8be4df61,
    0x93ca,
    0x11d2,
    [0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c],
);
/// edk2's `gEfiSecureBootEnableDisableGuid` (SecureBootEnable).
const SB_ENABLE: [u8; 16] = guid(
    0xf0a30bc7,
    0xaf08,
    0x4556,
    [0x99, 0xc4, 0x00, 0x10, 0x09, 0xc9, 0x3a, 0x44],
);
/// edk2's `gEfiCustomModeEnableGuid` (CustomMode).
const CUSTOM_MODE: [u8; 16] = guid(
    0xc076ec0c,
    0x7028,
    0x4399,
    [0xa0, 0x72, 0x71, 0xee, 0x5c, 0x44, 0x8b, 0x9f],
);

const VAR_HEADER: usize = 60;
const START_ID: u16 = 0x55aa;
/// A variable's state once written whole, and once a newer copy is being
/// written (still the live one until that copy is whole).
const VAR_ADDED: u8 = 0x3f;
const VAR_ADDED_IN_TRANSITION: u8 = 0x3e;

const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let (a, b, c) = (a.to_le_bytes(), b.to_le_bytes(), c.to_le_bytes());
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum VarStoreError {
    #[error("not a firmware volume (no _FVH signature)")]
    NotVolume,
    #[error("no authenticated variable store after the volume header")]
    NotAuthenticatedStore,
    #[error("a variable at byte {0} runs past the end of the store")]
    Truncated(usize),
}

/// What the store says about Secure Boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecureBoot {
    /// A platform key is enrolled (user mode rather than setup mode).
    pub pk: bool,
    /// `SecureBootEnable` is not 0 (edk2 treats a missing one as on).
    pub enable: bool,
    /// `CustomMode` is 1: keys may change without authentication.
    pub custom_mode: bool,
}

impl SecureBoot {
    /// On and enforced: a PK, enabled, not in custom mode.
    pub fn on(&self) -> bool {
        self.pk && self.enable && !self.custom_mode
    }

    /// Why it is not on, for an error message.
    pub fn why_off(&self) -> String {
        let mut why = Vec::new();
        if !self.pk {
            why.push("no platform key (PK) enrolled");
        }
        if !self.enable {
            why.push("SecureBootEnable is 0");
        }
        if self.custom_mode {
            why.push("CustomMode is 1");
        }
        why.join(", ")
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// What the live copies of PK, SecureBootEnable and CustomMode in
/// `store` say (a later whole copy replaces an earlier one).
pub fn secure_boot(store: &[u8]) -> Result<SecureBoot, VarStoreError> {
    if store.get(40..44) != Some(b"_FVH") {
        return Err(VarStoreError::NotVolume);
    }
    let header = u16_at(store, 48).ok_or(VarStoreError::NotVolume)? as usize;
    if store.get(header..header + 16) != Some(&AUTH_STORE_GUID[..]) {
        return Err(VarStoreError::NotAuthenticatedStore);
    }
    let size = u32_at(store, header + 16).ok_or(VarStoreError::NotAuthenticatedStore)? as usize;
    let end = header.saturating_add(size).min(store.len());
    let mut sb = SecureBoot {
        enable: true,
        ..SecureBoot::default()
    };
    // Whether the value found so far came from a whole (0x3f) copy.
    let mut whole = [false; 3];
    let mut off = header + 28;
    while off + VAR_HEADER <= end && u16_at(store, off) == Some(START_ID) {
        let state = store[off + 2];
        let name_size = u32_at(store, off + 36).unwrap_or(0) as usize;
        let data_size = u32_at(store, off + 40).unwrap_or(0) as usize;
        let vendor = &store[off + 44..off + 60];
        let name_at = off + VAR_HEADER;
        let data_at = name_at
            .checked_add(name_size)
            .ok_or(VarStoreError::Truncated(off))?;
        let next = data_at
            .checked_add(data_size)
            .ok_or(VarStoreError::Truncated(off))?;
        if next > end {
            return Err(VarStoreError::Truncated(off));
        }
        if state == VAR_ADDED || state == VAR_ADDED_IN_TRANSITION {
            let name: Vec<u16> = store[name_at..data_at]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&c| c != 0)
                .collect();
            let name = String::from_utf16_lossy(&name);
            let data = &store[data_at..next];
            let slot = match (name.as_str(), vendor) {
                ("PK", v) if v == GLOBAL => Some(0),
                ("SecureBootEnable", v) if v == SB_ENABLE => Some(1),
                ("CustomMode", v) if v == CUSTOM_MODE => Some(2),
                _ => None,
            };
            // A copy in transition counts only until a whole one is seen.
            if let Some(i) = slot.filter(|&i| state == VAR_ADDED || !whole[i]) {
                whole[i] = state == VAR_ADDED;
                match i {
                    0 => sb.pk = !data.is_empty(),
                    1 => sb.enable = data.first().is_none_or(|&v| v != 0),
                    _ => sb.custom_mode = data.first() == Some(&1),
                }
            }
        }
        off = (next + 3) & !3;
    }
    Ok(sb)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store of `vars` (name, vendor, state, data) as edk2 lays it out.
    fn store(vars: &[(&str, [u8; 16], u8, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; 72];
        b[40..44].copy_from_slice(b"_FVH");
        b[48..50].copy_from_slice(&72u16.to_le_bytes());
        b.extend_from_slice(&AUTH_STORE_GUID);
        b.extend_from_slice(&4096u32.to_le_bytes());
        b.extend_from_slice(&[0x5a, 0xfe, 0, 0, 0, 0, 0, 0]);
        for (name, vendor, state, data) in vars {
            let name: Vec<u8> = name
                .encode_utf16()
                .chain([0])
                .flat_map(u16::to_le_bytes)
                .collect();
            b.extend_from_slice(&START_ID.to_le_bytes());
            b.extend_from_slice(&[*state, 0]);
            b.extend_from_slice(&[0u8; 32]); // attributes, count, time, key index
            b.extend_from_slice(&(name.len() as u32).to_le_bytes());
            b.extend_from_slice(&(data.len() as u32).to_le_bytes());
            b.extend_from_slice(vendor);
            b.extend_from_slice(&name);
            b.extend_from_slice(data);
            while !b.len().is_multiple_of(4) {
                b.push(0xff);
            }
        }
        b.resize(72 + 4096, 0xff);
        b
    }

    #[test]
    fn an_enrolled_store_is_on_and_a_blank_one_is_off() {
        let on = store(&[
            ("PK", GLOBAL, VAR_ADDED, &[1; 40]),
            ("SecureBootEnable", SB_ENABLE, VAR_ADDED, &[1]),
            ("CustomMode", CUSTOM_MODE, VAR_ADDED, &[0]),
        ]);
        assert!(secure_boot(&on).unwrap().on());
        let blank = store(&[]);
        let sb = secure_boot(&blank).unwrap();
        assert!(!sb.on());
        assert_eq!(sb.why_off(), "no platform key (PK) enrolled");
    }

    #[test]
    fn deleted_and_replaced_copies_follow_edk2s_states() {
        // PK deleted (0x3c), SecureBootEnable rewritten to 0.
        let off = store(&[
            ("PK", GLOBAL, 0x3c, &[1; 40]),
            ("SecureBootEnable", SB_ENABLE, 0x3c, &[1]),
            ("SecureBootEnable", SB_ENABLE, VAR_ADDED, &[0]),
        ]);
        let sb = secure_boot(&off).unwrap();
        assert_eq!(
            sb.why_off(),
            "no platform key (PK) enrolled, SecureBootEnable is 0"
        );
        // A PK of another vendor is not the PK; custom mode is off-ish.
        let other = store(&[
            ("PK", SB_ENABLE, VAR_ADDED, &[1; 40]),
            ("CustomMode", CUSTOM_MODE, VAR_ADDED, &[1]),
        ]);
        let sb = secure_boot(&other).unwrap();
        assert!(!sb.pk && sb.custom_mode);
        // An old copy in transition does not override the whole new one.
        let replaced = store(&[
            ("PK", GLOBAL, VAR_ADDED, &[1; 40]),
            ("SecureBootEnable", SB_ENABLE, VAR_ADDED, &[1]),
            ("SecureBootEnable", SB_ENABLE, VAR_ADDED_IN_TRANSITION, &[0]),
        ]);
        assert!(secure_boot(&replaced).unwrap().on());
    }

    #[test]
    fn hostile_stores_are_errors_not_panics() {
        assert_eq!(secure_boot(&[]), Err(VarStoreError::NotVolume));
        let mut b = store(&[("PK", GLOBAL, VAR_ADDED, &[1; 8])]);
        b[72..88].fill(0);
        assert_eq!(secure_boot(&b), Err(VarStoreError::NotAuthenticatedStore));
        let mut b = store(&[("PK", GLOBAL, VAR_ADDED, &[1; 8])]);
        // Data size far past the end.
        b[100 + 40..100 + 44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(secure_boot(&b), Err(VarStoreError::Truncated(100)));
        // Every byte of a real-looking store flipped in turn: no panic.
        let good = store(&[
            ("PK", GLOBAL, VAR_ADDED, &[1; 40]),
            ("SecureBootEnable", SB_ENABLE, VAR_ADDED, &[1]),
        ]);
        for i in 0..260 {
            let mut b = good.clone();
            b[i] ^= 0xff;
            let _ = secure_boot(&b);
        }
    }

    #[test]
    fn the_templates_setup_makes_are_read_as_debian_and_virt_fw_vars_made_them() {
        let guest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cache/guest");
        let read = |f: &str| {
            std::fs::read(guest.join(f))
                .unwrap_or_else(|e| panic!("{f} in cache/guest ({e}): run scripts/setup.sh"))
        };
        let enrolled = secure_boot(&read("OVMF_VARS_4M.ms2023.fd")).unwrap();
        assert!(enrolled.on(), "{enrolled:?}");
        let plain = secure_boot(&read("OVMF_VARS_4M.fd")).unwrap();
        assert!(!plain.on() && !plain.pk, "{plain:?}");
    }
}
