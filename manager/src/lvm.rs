//! The lvm2 driver behind the `lvm` disk backend (Nova's
//! `images_type=lvm`): a disk image is copied once into a thin LV
//! `kiln-image-ID` of a thin pool; each server's root disk is a thin
//! snapshot of it, `kiln-SERVER_ID-root`, grown to the flavor's size and
//! used as a raw block device.
//!
//! lvm2 has no stable library API (liblvm2app was removed in 2.03; lvmdbusd
//! is a D-Bus daemon over the same commands), so this runs the `lvm`
//! commands with [`std::process::Command`] and reads their JSON reports
//! (`--reportformat json --units b --nosuffix`) with serde. Every command
//! gets an argument vector, never a shell line.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use thiserror::Error;

/// The name prefix of every LV kilnd makes.
pub const PREFIX: &str = "kiln-";

#[derive(Debug, Error)]
pub enum LvmError {
    #[error("cannot run lvm {0}")]
    Spawn(String, #[source] std::io::Error),
    #[error("lvm {cmd} failed: {stderr}")]
    Failed { cmd: String, stderr: String },
    #[error("cannot parse the JSON report of lvm {0}")]
    Report(String, #[source] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot copy the image onto {0}")]
    Copy(String, #[source] std::io::Error),
    #[error("{0:?} is not an LVM name (A-Z a-z 0-9 + _ . -, not starting with '-', at most 127)")]
    BadName(String),
    #[error("cannot read /proc/misc")]
    ProcMisc(#[source] std::io::Error),
    #[error("no device-mapper in this kernel: /proc/misc has no device-mapper")]
    NoDeviceMapper,
}

/// Whether this kernel has device-mapper: `/proc/misc` lists it when the
/// driver is loaded (the `/dev/mapper/control` node alone proves nothing).
/// The error says why not.
pub fn device_mapper_available() -> Result<(), LvmError> {
    let misc = std::fs::read_to_string("/proc/misc").map_err(LvmError::ProcMisc)?;
    if misc
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("device-mapper"))
    {
        Ok(())
    } else {
        Err(LvmError::NoDeviceMapper)
    }
}

/// LVM's rule for VG and LV names: `[A-Za-z0-9+_.-]`, not starting with
/// `-`, not `.` or `..`, at most 127 bytes.
pub fn check_lvm_name(n: &str) -> Result<(), LvmError> {
    let ok = !n.is_empty()
        && n.len() <= 127
        && !n.starts_with('-')
        && n != "."
        && n != ".."
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(LvmError::BadName(n.to_owned()))
    }
}

/// The LV holding disk image `id`.
pub fn image_lv(image_id: &str) -> String {
    format!("{PREFIX}image-{image_id}")
}

/// The LV holding server `id`'s root disk.
pub fn root_lv(server_id: &str) -> String {
    format!("{PREFIX}{server_id}-root")
}

/// What a kiln LV name says it is.
#[derive(Debug, PartialEq, Eq)]
pub enum KilnLv<'a> {
    Image(&'a str),
    /// An image copy that did not finish (a crash mid-copy).
    PartialImage(&'a str),
    Root(&'a str),
}

pub fn parse_lv_name(name: &str) -> Option<KilnLv<'_>> {
    let rest = name.strip_prefix(PREFIX)?;
    if let Some(img) = rest.strip_prefix("image-") {
        return Some(match img.strip_suffix(".partial") {
            Some(i) => KilnLv::PartialImage(i),
            None => KilnLv::Image(img),
        });
    }
    rest.strip_suffix("-root").map(KilnLv::Root)
}

/// One row of `lvs`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Lv {
    pub lv_name: String,
    #[serde(deserialize_with = "bytes")]
    pub lv_size: u64,
    pub lv_attr: String,
    #[serde(default)]
    pub pool_lv: String,
    #[serde(default)]
    pub origin: String,
}

/// lvm2's JSON reports give numbers as strings ("" when not applicable).
fn bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(0);
    }
    s.parse().map_err(serde::de::Error::custom)
}

#[derive(Deserialize)]
struct Report<T> {
    report: Vec<T>,
}

#[derive(Deserialize)]
struct LvSection {
    lv: Vec<Lv>,
}

/// Parses the output of `lvs --reportformat json` (one report section).
pub fn parse_lvs(json: &str) -> Result<Vec<Lv>, serde_json::Error> {
    let r: Report<LvSection> = serde_json::from_str(json)?;
    Ok(r.report.into_iter().flat_map(|s| s.lv).collect())
}

const LV_FIELDS: &str = "lv_name,lv_size,lv_attr,pool_lv,origin";

/// A volume group and the thin pool kiln uses in it.
#[derive(Clone, Debug)]
pub struct Lvm {
    pub vg: String,
    pub pool: String,
    /// Serializes image copies: two servers booting on the same new image
    /// must not both make its LV.
    images: std::sync::Arc<std::sync::Mutex<()>>,
}

impl Lvm {
    pub fn new(vg: &str, pool: &str) -> Result<Lvm, LvmError> {
        check_lvm_name(vg)?;
        check_lvm_name(pool)?;
        Ok(Lvm {
            vg: vg.into(),
            pool: pool.into(),
            images: Default::default(),
        })
    }

    /// Runs `lvm ARGS`, answering its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String, LvmError> {
        let cmd = args.first().copied().unwrap_or_default().to_owned();
        let out = Command::new("lvm")
            .args(args)
            // lvm complains on stderr about fds it inherits.
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .output()
            .map_err(|e| LvmError::Spawn(cmd.clone(), e))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // The last lines say what went wrong; the first are warnings.
            let stderr: Vec<&str> = stderr.lines().map(str::trim).collect();
            let start = stderr.len().saturating_sub(3);
            return Err(LvmError::Failed {
                cmd,
                stderr: stderr[start..].join("; "),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Every LV of the volume group.
    pub fn lvs(&self) -> Result<Vec<Lv>, LvmError> {
        let out = self.run(&[
            "lvs",
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            LV_FIELDS,
            &self.vg,
        ])?;
        parse_lvs(&out).map_err(|e| LvmError::Report("lvs".into(), e))
    }

    /// The thin pool's row; an error if it is missing or not a thin pool.
    pub fn pool_lv(&self) -> Result<Lv, LvmError> {
        let lv = self
            .lvs()?
            .into_iter()
            .find(|l| l.lv_name == self.pool)
            .ok_or_else(|| {
                LvmError::Invalid(format!("no LV {} in volume group {}", self.pool, self.vg))
            })?;
        if !lv.lv_attr.starts_with('t') {
            return Err(LvmError::Invalid(format!(
                "{}/{} is not a thin pool (lv_attr {})",
                self.vg, self.pool, lv.lv_attr
            )));
        }
        Ok(lv)
    }

    /// The thin pool's data size in bytes: the disk capacity placement
    /// hands out.
    pub fn capacity_bytes(&self) -> Result<u64, LvmError> {
        Ok(self.pool_lv()?.lv_size)
    }

    /// The LVs kilnd made (named `kiln-...`).
    pub fn kiln_lvs(&self) -> Result<Vec<Lv>, LvmError> {
        Ok(self
            .lvs()?
            .into_iter()
            .filter(|l| parse_lv_name(&l.lv_name).is_some())
            .collect())
    }

    fn full(&self, lv: &str) -> String {
        format!("{}/{lv}", self.vg)
    }

    /// The block device of an active LV.
    pub fn dev_path(&self, lv: &str) -> PathBuf {
        Path::new("/dev").join(&self.vg).join(lv)
    }

    /// Removes an LV; one that is not there is fine.
    pub fn remove(&self, lv: &str) -> Result<(), LvmError> {
        if !self.lvs()?.iter().any(|l| l.lv_name == lv) {
            return Ok(());
        }
        self.run(&["lvremove", "-y", &self.full(lv)]).map(drop)
    }

    fn activate(&self, lv: &str, on: bool) -> Result<(), LvmError> {
        // -K: also LVs with the activation-skip flag (images and roots).
        let a = if on { "-ay" } else { "-an" };
        self.run(&["lvchange", a, "-K", &self.full(lv)]).map(drop)
    }

    /// Makes `kiln-image-ID` from a disk image file unless it is there:
    /// a thin LV of the image's virtual size, filled from the image through
    /// kiln-block (so qcow2 images become raw), under a `.partial` name
    /// renamed at the end, so a crash leaves only a `.partial` LV, which
    /// [`reconcile`](crate::disks::DiskBackend::reconcile) removes.
    pub fn ensure_image(
        &self,
        image_id: &str,
        read: &dyn Fn(u64, &mut [u8]) -> std::io::Result<()>,
        size: u64,
    ) -> Result<(), LvmError> {
        let _one_at_a_time = self.images.lock().unwrap_or_else(|e| e.into_inner());
        let name = image_lv(image_id);
        let lvs = self.lvs()?;
        if lvs.iter().any(|l| l.lv_name == name) {
            return Ok(());
        }
        let partial = format!("{name}.partial");
        if lvs.iter().any(|l| l.lv_name == partial) {
            self.run(&["lvremove", "-y", &self.full(&partial)])?;
        }
        self.create_thin(&partial, size)?;
        self.activate(&partial, true)?;
        let copied = copy_to_device(&self.dev_path(&partial), read, size);
        let _ = self.activate(&partial, false);
        copied?;
        self.run(&["lvrename", &self.vg, &partial, &name]).map(drop)
    }

    /// Makes (unless there) and activates server `id`'s root disk: a thin
    /// snapshot of its image's LV, grown to `size`; answers its device.
    pub fn ensure_root(
        &self,
        server_id: &str,
        image_id: &str,
        size: u64,
    ) -> Result<PathBuf, LvmError> {
        let name = root_lv(server_id);
        let lvs = self.lvs()?;
        let found = lvs.iter().find(|l| l.lv_name == name);
        if found.is_none() {
            // O(1): a thin snapshot shares every block with its origin.
            self.run(&[
                "lvcreate",
                "-s",
                "--setactivationskip",
                "y",
                "-n",
                &name,
                &self.full(&image_lv(image_id)),
            ])?;
        }
        if found.is_none_or(|l| l.lv_size < size) {
            let current = self
                .lvs()?
                .into_iter()
                .find(|l| l.lv_name == name)
                .map(|l| l.lv_size)
                .unwrap_or(0);
            if current < size {
                let size_arg = format!("{}b", size.div_ceil(512) * 512);
                self.run(&["lvextend", "-L", &size_arg, &self.full(&name)])?;
            }
        }
        self.activate(&name, true)?;
        Ok(self.dev_path(&name))
    }

    /// Creates thin LV `name` of `size` bytes (rounded up to sectors) in
    /// the pool, inactive and skipped by autoactivation.
    fn create_thin(&self, name: &str, size: u64) -> Result<(), LvmError> {
        let size_arg = format!("{}b", size.div_ceil(512) * 512);
        self.run(&[
            "lvcreate",
            "-an",
            "--setactivationskip",
            "y",
            "-V",
            &size_arg,
            "--thinpool",
            &self.pool,
            "-n",
            name,
            &self.vg,
        ])
        .map(drop)
    }

    /// Makes (unless there) and activates server `id`'s blank root disk (a
    /// server booting from an ISO): a thin LV of `size`, reading zeros.
    pub fn ensure_blank_root(&self, server_id: &str, size: u64) -> Result<PathBuf, LvmError> {
        let name = root_lv(server_id);
        if !self.lvs()?.iter().any(|l| l.lv_name == name) {
            self.create_thin(&name, size)?;
        }
        self.activate(&name, true)?;
        Ok(self.dev_path(&name))
    }
}

/// Writes the image onto the device in 1 MiB chunks, skipping zero chunks
/// (a thin LV reads zeros where nothing was written).
fn copy_to_device(
    dev: &Path,
    read: &dyn Fn(u64, &mut [u8]) -> std::io::Result<()>,
    size: u64,
) -> Result<(), LvmError> {
    use std::os::unix::fs::FileExt;
    let err = |e| LvmError::Copy(dev.display().to_string(), e);
    let out = std::fs::OpenOptions::new()
        .write(true)
        .open(dev)
        .map_err(err)?;
    // A pool made without zeroing (-Zn) leaves old data in the part of a
    // newly provisioned chunk a write does not cover: the last piece is
    // written with zeros up to the next MiB (within the device).
    let dev_size = std::io::Seek::seek(&mut &out, std::io::SeekFrom::End(0)).map_err(err)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        read(off, &mut buf[..n]).map_err(err)?;
        if buf[..n].iter().any(|&b| b != 0) {
            let padded = (dev_size.saturating_sub(off)).min(buf.len() as u64) as usize;
            let len = n.max(padded);
            buf[n..len].fill(0);
            out.write_all_at(&buf[..len], off).map_err(err)?;
        }
        off += n as u64;
    }
    out.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let id = "0b0e8f3c-5a7e-4d53-9a35-1b1f1c7f6a10";
        assert_eq!(parse_lv_name(&root_lv(id)), Some(KilnLv::Root(id)));
        assert_eq!(parse_lv_name(&image_lv(id)), Some(KilnLv::Image(id)));
        assert_eq!(
            parse_lv_name(&format!("{}.partial", image_lv(id))),
            Some(KilnLv::PartialImage(id))
        );
        assert_eq!(parse_lv_name("home"), None);
        assert_eq!(parse_lv_name("kiln-pool"), None);
        check_lvm_name(&root_lv(id)).unwrap();
        assert!(check_lvm_name("-x").is_err());
        assert!(check_lvm_name("a b").is_err());
        assert!(check_lvm_name("..").is_err());
        assert!(check_lvm_name(&"a".repeat(128)).is_err());
    }

    #[test]
    fn copy_writes_the_image_and_skips_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("dev");
        // Stands for the LV: pre-filled, so skipped chunks show.
        std::fs::write(&dev, vec![0xeeu8; 3 << 20]).unwrap();
        let mut src = vec![0u8; (2 << 20) + 100];
        src[5] = 1;
        src[(2 << 20) + 99] = 2;
        let read = |off: u64, buf: &mut [u8]| {
            let off = off as usize;
            buf.copy_from_slice(&src[off..off + buf.len()]);
            Ok(())
        };
        copy_to_device(&dev, &read, src.len() as u64).unwrap();
        let out = std::fs::read(&dev).unwrap();
        assert_eq!(&out[..1 << 20], &src[..1 << 20], "first chunk written");
        assert!(
            out[1 << 20..2 << 20].iter().all(|&b| b == 0xee),
            "zero chunk skipped"
        );
        assert_eq!(&out[2 << 20..(2 << 20) + 100], &src[2 << 20..]);
        // The last piece is padded with zeros to the MiB, within the device.
        assert!(out[(2 << 20) + 100..].iter().all(|&b| b == 0));
        assert_eq!(out.len(), 3 << 20);
        assert!(copy_to_device(&dir.path().join("none"), &read, 1).is_err());
    }

    #[test]
    fn report_parses_numbers_given_as_strings() {
        let json = r#"  {
      "report": [
          {
              "lv": [
                  {"lv_name":"pool", "lv_size":"536870912", "lv_attr":"twi---t---", "pool_lv":"", "origin":""},
                  {"lv_name":"kiln-x-root", "lv_size":"", "lv_attr":"Vwi---tz-k", "pool_lv":"pool", "origin":"kiln-image-y"}
              ]
          }
      ]
  }"#;
        let lvs = parse_lvs(json).unwrap();
        assert_eq!(lvs[0].lv_size, 536870912);
        assert_eq!(lvs[1].lv_size, 0);
        assert_eq!(lvs[1].origin, "kiln-image-y");
        assert!(
            parse_lvs(r#"{"report":[{"lv":[{"lv_name":"a","lv_size":"-1","lv_attr":""}]}]}"#)
                .is_err()
        );
    }
}
