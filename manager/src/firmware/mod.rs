//! Firmware boot of servers whose image is a disk image: which host file
//! each [`Firmware`] uses (`[firmware]` in the config), and each UEFI
//! server's own variable store (NVRAM).
//!
//! The NVRAM is `nvram.fd` in the server's directory: a copy of the
//! configured `uefi_vars_template`, made when the server is first booted
//! (at create) through `nvram.fd.partial` and a rename, so it appears whole
//! or not at all. Later boots (stop/start, reboot, a re-adopted VMM) find
//! it there and keep it: what the guest wrote into it (boot entries,
//! Secure Boot keys) survives. It goes with the server's directory on
//! delete, and reconcile removes the directory of a server that is gone.

use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_api::compute::Firmware;
use thiserror::Error;

use crate::config::FirmwareConfig;

pub mod varstore;

/// A firmware file kilnd cannot use, named with its config key.
#[derive(Debug, Error)]
pub enum FirmwareError {
    #[error("the firmware file {path} (kilnd config firmware.{key}) is not a regular file")]
    NotRegular { path: String, key: &'static str },
    #[error(
        "the firmware file {path} (kilnd config firmware.{key}) is missing on this host; \
         install Debian's {package} package or set firmware.{key}"
    )]
    Missing {
        path: String,
        key: &'static str,
        package: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the UEFI variable store {nvram} no longer has Secure Boot on ({why}); the server asks \
         for secure_boot, so kilnd does not boot it (without SMM a guest kernel can write the \
         store: see manager/README.md \"Secure Boot\"). To start over with the enrolled \
         template, POST {{\"action\": \"reset_nvram\"}} while it is SHUTOFF"
    )]
    SecureBootOff { nvram: String, why: String },
    #[error("cannot read the UEFI variable store {path}")]
    ReadStore {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the UEFI variable store {path} cannot be read as one: {source}")]
    VarStore {
        path: String,
        #[source]
        source: varstore::VarStoreError,
    },
    #[error("cannot make the UEFI variable store {nvram} from {template}")]
    Nvram {
        nvram: String,
        template: String,
        #[source]
        source: std::io::Error,
    },
}

/// The NVRAM file in a UEFI server's directory.
pub const NVRAM: &str = "nvram.fd";

/// Checks that `path` (config key `key`) is a regular file.
fn check_file(key: &'static str, path: &Path, package: &'static str) -> Result<(), FirmwareError> {
    let path_s = || path.display().to_string();
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(FirmwareError::NotRegular {
            path: path_s(),
            key,
        }),
        Err(source) => Err(FirmwareError::Missing {
            path: path_s(),
            key,
            package,
            source,
        }),
    }
}

/// What a server's firmware needs beyond its kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// SeaBIOS: the build that measures the boot into the TPM.
    pub tpm: bool,
    /// OVMF: Secure Boot on from the first boot.
    pub secure_boot: bool,
}

/// The firmware image for `fw`, checked to exist: for a server with a TPM
/// and SeaBIOS, the build that measures the boot (`bios_tpm`); for Secure
/// Boot, OVMF's 4 MiB build (`uefi_code_secboot`).
pub fn code(config: &FirmwareConfig, fw: Firmware, needs: Needs) -> Result<PathBuf, FirmwareError> {
    let (key, path, package) = match fw {
        Firmware::Bios if needs.tpm => ("bios_tpm", config.bios_tpm(), "seabios"),
        Firmware::Bios => ("bios", config.bios.clone(), "seabios"),
        Firmware::Uefi if needs.secure_boot => {
            ("uefi_code_secboot", config.uefi_code_secboot(), "ovmf")
        }
        Firmware::Uefi => ("uefi_code", config.uefi_code.clone(), "ovmf"),
    };
    check_file(key, &path, package)?;
    Ok(path)
}

/// The variable store template a UEFI server's NVRAM is copied from.
#[derive(Clone, Debug)]
pub struct VarsTemplate {
    /// Its config key, for errors.
    pub key: &'static str,
    pub path: PathBuf,
    /// The Secure Boot one: keys enrolled and Secure Boot on, which a
    /// store made from it must still have whenever it is booted.
    pub secure_boot: bool,
}

/// The template for a server with or without Secure Boot.
pub fn vars_template(config: &FirmwareConfig, secure_boot: bool) -> VarsTemplate {
    let (key, path) = if secure_boot {
        (
            "uefi_vars_secboot_template",
            config.uefi_vars_secboot_template(),
        )
    } else {
        ("uefi_vars_template", config.uefi_vars_template.clone())
    };
    VarsTemplate {
        key,
        path,
        secure_boot,
    }
}

/// The VGA BIOS for `display: vga` (`[firmware] vga_rom`, else
/// `vgabios-stdvga.bin` beside `bios`), checked to exist.
pub fn vga_rom(config: &FirmwareConfig) -> Result<PathBuf, FirmwareError> {
    let path = config.vga_rom.clone().unwrap_or_else(|| {
        config
            .bios
            .parent()
            .unwrap_or(Path::new("/"))
            .join("vgabios-stdvga.bin")
    });
    check_file("vga_rom", &path, "seabios")?;
    Ok(path)
}

/// Checks every host file a new server with `fw` needs: the firmware
/// image, and for UEFI the variable store template.
pub fn check_host_files(
    config: &FirmwareConfig,
    fw: Firmware,
    needs: Needs,
) -> Result<(), FirmwareError> {
    code(config, fw, needs)?;
    if fw == Firmware::Uefi {
        let t = vars_template(config, needs.secure_boot);
        check_file(t.key, &t.path, "ovmf")?;
    }
    Ok(())
}

/// Makes `nvram` a copy of `template` unless it exists already (then it
/// is kept as it is). Atomic: copied to `NAME.partial`, synced, renamed.
/// A store made from the Secure Boot template must still have Secure Boot
/// on ([`check_secure_boot`]) whenever it is about to be booted.
pub fn ensure_nvram(nvram: &Path, template: &VarsTemplate) -> Result<(), FirmwareError> {
    copy_nvram(nvram, (template.key, &template.path))?;
    if template.secure_boot {
        check_secure_boot(nvram)?;
    }
    Ok(())
}

/// Reads `nvram` and fails unless Secure Boot is on in it: a platform key
/// enrolled, `SecureBootEnable` not 0, not in custom mode.
pub fn check_secure_boot(nvram: &Path) -> Result<(), FirmwareError> {
    let path = nvram.display().to_string();
    let bytes = std::fs::read(nvram).map_err(|source| FirmwareError::ReadStore {
        path: path.clone(),
        source,
    })?;
    let sb = varstore::secure_boot(&bytes).map_err(|source| FirmwareError::VarStore {
        path: path.clone(),
        source,
    })?;
    if sb.on() {
        Ok(())
    } else {
        Err(FirmwareError::SecureBootOff {
            nvram: path,
            why: sb.why_off(),
        })
    }
}

/// The copy half of [`ensure_nvram`].
fn copy_nvram(nvram: &Path, (key, template): (&'static str, &Path)) -> Result<(), FirmwareError> {
    if nvram.exists() {
        return Ok(());
    }
    check_file(key, template, "ovmf")?;
    let mut partial = nvram.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let fail = |source: std::io::Error| FirmwareError::Nvram {
        nvram: nvram.display().to_string(),
        template: template.display().to_string(),
        source,
    };
    // Left by a crash in the middle of an earlier copy.
    let _ = std::fs::remove_file(&partial);
    let bytes = std::fs::read(template).map_err(fail)?;
    let r = (|| {
        let mut f = std::fs::File::create_new(&partial)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&partial, nvram)
    })();
    if let Err(e) = r {
        let _ = std::fs::remove_file(&partial);
        return Err(fail(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> FirmwareConfig {
        FirmwareConfig {
            bios: dir.join("bios.bin"),
            bios_tpm_path: None,
            vga_rom: None,
            uefi_code: dir.join("CODE.fd"),
            uefi_vars_template: dir.join("VARS.fd"),
            uefi_code_secboot_path: None,
            uefi_vars_secboot_path: None,
        }
    }

    #[test]
    fn missing_files_are_named_with_their_config_key() {
        let tpm = Needs {
            tpm: true,
            ..Needs::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let e = check_host_files(&c, Firmware::Bios, Needs::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("bios.bin") && e.contains("firmware.bios"), "{e}");
        assert!(e.contains("seabios"), "{e}");
        std::fs::write(&c.bios, b"bios").unwrap();
        std::fs::write(&c.uefi_code, b"code").unwrap();
        assert_eq!(code(&c, Firmware::Bios, Needs::default()).unwrap(), c.bios);
        let e = code(&c, Firmware::Bios, tpm).unwrap_err().to_string();
        assert!(e.contains("firmware.bios_tpm"), "{e}");
        // By default next to bios.bin.
        std::fs::write(dir.path().join("bios-256k.bin"), b"bios").unwrap();
        assert_eq!(
            code(&c, Firmware::Bios, tpm).unwrap(),
            dir.path().join("bios-256k.bin")
        );
        let e = check_host_files(&c, Firmware::Uefi, Needs::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("firmware.uefi_vars_template"), "{e}");
        std::fs::create_dir(&c.uefi_vars_template).unwrap();
        let e = check_host_files(&c, Firmware::Uefi, Needs::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        // Secure Boot: the 4 MiB OVMF and the enrolled template, by
        // default beside the plain ones.
        let sb = Needs {
            secure_boot: true,
            ..Needs::default()
        };
        let e = check_host_files(&c, Firmware::Uefi, sb)
            .unwrap_err()
            .to_string();
        assert!(e.contains("firmware.uefi_code_secboot"), "{e}");
        assert!(e.contains("OVMF_CODE_4M.fd"), "{e}");
        std::fs::write(dir.path().join("OVMF_CODE_4M.fd"), b"code").unwrap();
        let e = check_host_files(&c, Firmware::Uefi, sb)
            .unwrap_err()
            .to_string();
        assert!(e.contains("firmware.uefi_vars_secboot_template"), "{e}");
        assert!(e.contains("OVMF_VARS_4M.ms.fd"), "{e}");
    }

    #[test]
    fn nvram_is_copied_once_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("VARS.fd");
        std::fs::write(&template, [0x5a; 8192]).unwrap();
        let plain = VarsTemplate {
            key: "uefi_vars_template",
            path: template.clone(),
            secure_boot: false,
        };
        let nvram = dir.path().join(NVRAM);
        // A leftover partial copy from a crash is replaced.
        std::fs::write(dir.path().join("nvram.fd.partial"), b"junk").unwrap();
        ensure_nvram(&nvram, &plain).unwrap();
        assert_eq!(std::fs::read(&nvram).unwrap(), [0x5a; 8192]);
        assert!(!dir.path().join("nvram.fd.partial").exists());
        // What the guest wrote stays, even if the template changes or goes.
        std::fs::write(&nvram, [1; 8192]).unwrap();
        std::fs::remove_file(&template).unwrap();
        ensure_nvram(&nvram, &plain).unwrap();
        assert_eq!(std::fs::read(&nvram).unwrap(), [1; 8192]);
        // No template and no NVRAM: a clear error, nothing left behind.
        std::fs::remove_file(&nvram).unwrap();
        let e = ensure_nvram(&nvram, &plain).unwrap_err().to_string();
        assert!(e.contains("uefi_vars_template"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
