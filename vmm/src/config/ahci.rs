//! The AHCI controller's part of a configuration: how many SATA disks and
//! CD-ROMs fit its ports, the options a SATA disk takes, and what makes a
//! CD-ROM image (ISO 9660), all checked before KVM is opened.

use std::os::unix::fs::FileTypeExt;

use kiln_api::vm::{DiskBus, VmConfig};

use super::ConfigError;

/// The ports of the AHCI controller (ICH9's six).
pub const AHCI_PORTS: usize = 6;

/// A CD-ROM image: a regular file or block device holding ISO 9660 (its
/// primary volume descriptor's "CD001" at byte 0x8001).
pub(super) fn check_iso(path: &str) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let ty = file.metadata().map_err(|e| e.to_string())?.file_type();
    if !(ty.is_file() || ty.is_block_device()) {
        return Err("not a file or block device".into());
    }
    let mut magic = [0u8; 5];
    match file.read_exact_at(&mut magic, 0x8001) {
        Ok(()) if &magic == b"CD001" => Ok(()),
        Ok(()) => Err("not an ISO 9660 image (no CD001 at byte 0x8001)".into()),
        Err(_) => Err("not an ISO 9660 image (shorter than its volume descriptor)".into()),
    }
}

/// SATA disks and CD-ROMs: as many as the AHCI controller has ports, and
/// no virtio-only option on a SATA disk.
pub(super) fn validate(cfg: &VmConfig) -> Result<(), ConfigError> {
    let bad = |m: String| Err(ConfigError::Invalid(m));
    let sata = cfg.disks.iter().filter(|d| d.bus == DiskBus::Sata).count();
    let ports = sata + cfg.cdroms.len();
    if ports > AHCI_PORTS {
        return bad(format!(
            "{sata} SATA disk(s) and {} CD-ROM(s) need {ports} ports: the AHCI controller has {AHCI_PORTS}",
            cfg.cdroms.len()
        ));
    }
    for (i, d) in cfg.disks.iter().enumerate() {
        if d.bus != DiskBus::Sata {
            continue;
        }
        let virtio_only = [
            ("transitional", d.transitional),
            ("bw/iops (rate_limit)", d.rate_limit.is_some()),
            ("poll_us", d.poll_us != 0),
        ];
        if let Some((name, _)) = virtio_only.iter().find(|(_, set)| *set) {
            return bad(format!(
                "disk {i}: {name} is for virtio disks, not bus=sata"
            ));
        }
    }
    for (i, c) in cfg.cdroms.iter().enumerate() {
        if c.path.is_empty() {
            return bad(format!("CD-ROM {i}: path is empty"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Args;
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Result<VmConfig, String> {
        let mut v = vec!["kiln-vmm", "--kernel", "k"];
        v.extend_from_slice(args);
        let a = Args::try_parse_from(v).map_err(|e| e.to_string())?;
        a.vm_config().map_err(|e| e.to_string())
    }

    #[test]
    fn sata_disks_and_cdroms_from_flags() {
        let c = config(&[
            "--disk",
            "path=a,bus=sata",
            "--disk",
            "path=b",
            "--cdrom",
            "x.iso",
        ])
        .unwrap();
        assert_eq!(c.disks[0].bus, DiskBus::Sata);
        assert_eq!(c.disks[1].bus, DiskBus::Virtio);
        assert_eq!(c.cdroms[0].path, "x.iso");
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""bus":"sata""#), "{json}");
        let back: VmConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        assert!(config(&["--disk", "path=a,bus=ide"]).is_err());
        let many = ["--cdrom", "x"].repeat(7);
        let e = config(&many).unwrap_err();
        assert!(e.contains("need 7 ports"), "{e}");
        let e = config(&["--disk", "path=a,bus=sata,poll_us=10"]).unwrap_err();
        assert!(e.contains("poll_us is for virtio disks"), "{e}");
        let e = config(&["--disk", "path=a,bus=sata,transitional=on"]).unwrap_err();
        assert!(e.contains("transitional"), "{e}");
    }

    #[test]
    fn a_cdrom_cannot_be_made_writable() {
        // A CD-ROM is opened read-only and has only a path: a config that
        // asks for a writable one is refused, naming the field.
        let good = config(&["--cdrom", "x.iso"]).unwrap();
        let mut v = serde_json::to_value(&good).unwrap();
        v["cdroms"][0]["readonly"] = serde_json::json!(false);
        let e = serde_json::from_value::<VmConfig>(v)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown field `readonly`") && e.contains("`path`"),
            "{e}"
        );
        let e = config(&["--cdrom", "x.iso,readonly=off"]);
        assert_eq!(
            e.unwrap().cdroms[0].path,
            "x.iso,readonly=off",
            "a path, never options"
        );
    }

    #[test]
    fn cdrom_images_must_be_iso_9660() {
        let dir = std::env::temp_dir().join(format!("kiln-iso-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let iso = dir.join("a.iso");
        let mut image = vec![0u8; 0x8800];
        std::fs::write(&iso, &image).unwrap();
        let e = check_iso(iso.to_str().unwrap()).unwrap_err();
        assert!(e.contains("no CD001"), "{e}");
        image[0x8001..0x8006].copy_from_slice(b"CD001");
        std::fs::write(&iso, &image).unwrap();
        check_iso(iso.to_str().unwrap()).unwrap();
        std::fs::write(&iso, b"short").unwrap();
        assert!(check_iso(iso.to_str().unwrap())
            .unwrap_err()
            .contains("shorter"));
        assert!(check_iso(dir.to_str().unwrap()).is_err(), "a directory");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
