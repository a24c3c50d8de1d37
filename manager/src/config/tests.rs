use super::*;

#[test]
fn defaults_parse_and_match_nova() {
    let c = Config::default_config();
    assert_eq!(c.placement.cpu_allocation_ratio, 4.0);
    assert_eq!(c.placement.ram_allocation_ratio, 1.0);
    assert_eq!(c.placement.disk_allocation_ratio, 1.0);
    assert_eq!(c.placement.reserved_host_memory_mb, 512);
    assert_eq!(c.socket, PathBuf::from("/run/kiln/kiln.sock"));
    assert_eq!(c.socket_mode, 0o660);
    assert_eq!(c.placement.total_vcpus, None);
    assert_eq!(
        c.firmware.bios,
        PathBuf::from("/usr/share/seabios/bios.bin")
    );
    assert_eq!(
        c.firmware.uefi_code,
        PathBuf::from("/usr/share/OVMF/OVMF_CODE.fd")
    );
    assert_eq!(
        c.firmware.uefi_vars_template,
        PathBuf::from("/usr/share/OVMF/OVMF_VARS.fd")
    );
    assert_eq!(c.smbios.manufacturer, "OpenStack Foundation");
    assert_eq!(c.smbios.product, "OpenStack Nova");
}

#[test]
fn smbios_strings_are_checked() {
    let c = Config::parse("[smbios]\nproduct = \"Other Cloud\"\n").unwrap();
    assert_eq!(c.smbios.product, "Other Cloud");
    assert_eq!(c.smbios.manufacturer, "OpenStack Foundation");
    let long = format!("[smbios]\nproduct = \"{}\"\n", "x".repeat(65));
    assert!(Config::parse(&long).is_err());
    assert!(Config::parse("[smbios]\nfamily = \"a\\u0000b\"\n").is_err());
}

#[test]
fn partial_file_overrides_only_its_keys() {
    let c = Config::parse("[placement]\ncpu_allocation_ratio = 2.0\ntotal_vcpus = 3\n").unwrap();
    assert_eq!(c.placement.cpu_allocation_ratio, 2.0);
    assert_eq!(c.placement.total_vcpus, Some(3));
    assert_eq!(c.placement.ram_allocation_ratio, 1.0);
    assert_eq!(c.vmm.stop_timeout_s, 30);
}

#[test]
fn bad_files_are_refused() {
    assert!(Config::parse("nonsense = 1\n").is_err());
    assert!(Config::parse("[placement]\ncpu_allocation_ratio = -1.0\n").is_err());
    assert!(Config::parse("[placement]\nram_allocation_ratio = \"x\"\n").is_err());
    assert!(Config::parse("socket_mode = 0o7777\n").is_err());
    assert!(Config::parse("[vmm\n").is_err());
    assert!(Config::parse("[disks]\nbackend = \"zfs\"\n").is_err());
    assert!(Config::parse("[disks]\nvolume_group = \"a/b\"\n").is_err());
    let c = Config::parse("[disks]\nbackend = \"lvm\"\nvolume_group = \"vg0\"\n").unwrap();
    assert_eq!(c.disks.backend, DiskBackendKind::Lvm);
    assert_eq!(c.disks.thin_pool, "kiln-pool");
    assert_eq!(
        Config::default_config().disks.backend,
        DiskBackendKind::Qcow2
    );
    assert!(Config::parse("[firmware]\nbios = \"bios.bin\"\n").is_err());
    assert!(Config::parse("[firmware]\nseabios = \"/b\"\n").is_err());
    let c = Config::parse("[firmware]\nuefi_code = \"/x/CODE.fd\"\n").unwrap();
    assert_eq!(c.firmware.uefi_code, PathBuf::from("/x/CODE.fd"));
    assert_eq!(
        c.firmware.bios,
        PathBuf::from("/usr/share/seabios/bios.bin")
    );
    assert!(Config::parse("[tcp]\nlisten = \"127.0.0.1:1\"\n").is_err());
    assert!(Config::default_config().images.import_dirs.is_empty());
    assert!(Config::parse("[images]\nimport_dirs = [\"rel\"]\n").is_err());
    assert!(Config::parse("[images]\nimport_dirs = [\"/a/../etc\"]\n").is_err());
    let c = Config::parse("[images]\nimport_dirs = [\"/srv/img\"]\n").unwrap();
    assert_eq!(c.images.import_dirs, vec![PathBuf::from("/srv/img")]);
    assert!(Config::parse("[tcp]\nlisten = \"nonsense\"\ntoken_file = \"/t\"\n").is_err());
    let c = Config::parse("[tcp]\nlisten = \"127.0.0.1:1\"\ntoken_file = \"/t\"\n").unwrap();
    assert_eq!(c.tcp.listen.unwrap().port(), 1);
    assert_eq!(Config::default_config().console.token_ttl, 600);
    for bad in [
        "token_ttl = 0",
        "novnc_dir = \"rel\"",
        "base_url = \"ftp://x\"",
        "x = 1",
    ] {
        assert!(
            Config::parse(&format!("[console]\n{bad}\n")).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn the_default_network_is_on_and_its_cidr_checked() {
    let c = Config::default_config();
    assert!(c.networks.default);
    assert_eq!(c.networks.default_cidr, "192.168.150.0/24");
    let c = Config::parse(
        "[networks]
default = false
",
    )
    .unwrap();
    assert!(!c.networks.default);
    for bad in ["10.0.0.1/24", "10.0.0.0", "10.0.0.0/31"] {
        let e = Config::parse(&format!(
            "[networks]
default_cidr = {bad:?}
"
        ));
        let e = e.unwrap_err().to_string();
        assert!(e.contains("networks.default_cidr"), "{bad}: {e}");
    }
}

#[test]
fn dhcp_settings_are_checked() {
    let c = Config::default_config();
    assert_eq!((c.dhcp.lease_secs, c.dhcp.domain), (86400, None));
    let c = Config::parse("[dhcp]\nlease_secs = 600\ndomain = \"lab.example\"\n").unwrap();
    assert_eq!(c.dhcp.lease_secs, 600);
    assert_eq!(c.dhcp.domain.as_deref(), Some("lab.example"));
    for bad in [
        "lease_secs = 119",
        "lease_secs = -1",
        "domain = \"a..b\"",
        "domain = \"-a.b\"",
        "domain = \"a b\"",
        "expiry = 1",
    ] {
        assert!(Config::parse(&format!("[dhcp]\n{bad}\n")).is_err(), "{bad}");
    }
}
