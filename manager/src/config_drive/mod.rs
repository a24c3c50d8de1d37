//! Config drives (Nova's `config_drive`): a read-only ISO 9660 image
//! labelled `config-2`, with Joliet and Rock Ridge, carrying the server's
//! `openstack/...` and `ec2/...` files, attached as its second virtio-blk
//! disk (`supervisor/vm_config.rs`).
//!
//! [`build_for`] makes it at every start of the server (create, start,
//! reboot: every new VMM, never a re-adopted one) in the server's
//! directory as [`FILE`], from the store, so it always says what the store
//! says; it goes with the server's directory at delete.
//!
//! [`build`] writes the files into a scratch tree beside the image and
//! runs Debian's `genisoimage` with Nova's own arguments (`-ldots
//! -allow-lowercase -allow-multidot -l -J -r -V config-2`), then renames
//! the image into place, so a VMM never sees half an image. Why a tool and
//! not a crate: genisoimage is what Nova runs, so the image is what
//! cloud-init and cloudbase-init have read for a decade; the Rust ISO
//! writers (`hadris-iso` is a release candidate) are young, and Rock
//! Ridge plus Joliet is the part that differs between them. It costs a
//! process spawn (about 6 ms for a config drive here).

#[cfg(test)]
mod tests;

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use kiln_api::compute::Server;
use thiserror::Error;

use crate::metadata::{drive_files, Facts};
use crate::store::{Store, StoreError};

/// The image in the server's directory (Nova's libvirt driver's name).
pub const FILE: &str = "disk.config";
/// Its volume id, which cloud-init and cloudbase-init look for.
pub const LABEL: &str = "config-2";
/// A server's answer-file ISO in its directory (`answer_file: true`).
pub const ANSWER_FILE: &str = "answer.iso";
/// The tool that writes it.
const TOOL: &str = "genisoimage";

#[derive(Debug, Error)]
pub enum ConfigDriveError {
    #[error("config drive file name {0:?} is not a plain relative path")]
    BadPath(String),
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "config drives need {TOOL} on the host (Debian package genisoimage), and it is not on PATH"
    )]
    NoTool,
    #[error("{TOOL} failed ({status}): {stderr}")]
    Tool { status: String, stderr: String },
    #[error("cannot read the server's config drive facts")]
    Store(#[source] StoreError),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ConfigDriveError {
    let path = path.display().to_string();
    move |source| ConfigDriveError::Io { what, path, source }
}

/// Where `genisoimage` is on `PATH`, if it is.
fn tool() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(TOOL))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Whether this host can build config drives (checked at create, so a
/// server that asks for one is refused rather than built to fail).
pub fn check_host() -> Result<(), ConfigDriveError> {
    tool().map(drop).ok_or(ConfigDriveError::NoTool)
}

/// Gathers `server`'s facts from the store, renders its files (the same
/// the metadata service serves, [`crate::metadata::drive_files`]) and
/// builds `dir/disk.config`. Blocking.
pub fn build_for(store: &Store, server: &Server, dir: &Path) -> Result<PathBuf, ConfigDriveError> {
    let facts = Facts::load(store, &server.id).map_err(ConfigDriveError::Store)?;
    let files = drive_files(&facts);
    let out = dir.join(FILE);
    build(&files, &out)?;
    Ok(out)
}

/// Builds the config drive image `out` holding `files` (path relative to
/// the drive's root, content), replacing any earlier one whole.
pub fn build(files: &[(String, Vec<u8>)], out: &Path) -> Result<(), ConfigDriveError> {
    build_iso(files, LABEL, out)
}

/// Builds an ISO 9660 image `out` with volume id `label` holding `files`,
/// as [`build`] does (also the answer-file ISO, `servers/media.rs`).
pub fn build_iso(
    files: &[(String, Vec<u8>)],
    label: &str,
    out: &Path,
) -> Result<(), ConfigDriveError> {
    for (p, _) in files {
        let plain = !p.is_empty()
            && !p.contains('\0')
            && Path::new(p)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(ConfigDriveError::BadPath(p.clone()));
        }
    }
    let tool = tool().ok_or(ConfigDriveError::NoTool)?;
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("iso");
    let tree = out.with_file_name(format!(".{name}.tree"));
    let partial = out.with_file_name(format!(".{name}.partial"));
    let _ = std::fs::remove_dir_all(&tree);
    let result = (|| {
        for (p, content) in files {
            let path = tree.join(p);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io("make", parent))?;
            }
            std::fs::write(&path, content).map_err(io("write", &path))?;
        }
        std::fs::create_dir_all(&tree).map_err(io("make", &tree))?;
        let publisher = format!("Kiln kilnd {}", env!("CARGO_PKG_VERSION"));
        let o = Command::new(&tool)
            .arg("-o")
            .arg(&partial)
            .args(["-ldots", "-allow-lowercase", "-allow-multidot", "-l"])
            .args(["-publisher", &publisher, "-quiet", "-J", "-r", "-V", label])
            .arg(&tree)
            .output()
            .map_err(io("run", &tool))?;
        if !o.status.success() {
            return Err(ConfigDriveError::Tool {
                status: o.status.to_string(),
                stderr: String::from_utf8_lossy(&o.stderr).trim().to_owned(),
            });
        }
        std::fs::rename(&partial, out).map_err(io("rename into place", out))
    })();
    let _ = std::fs::remove_dir_all(&tree);
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Builds a server's answer-file ISO at `out`: `user_data` (base64, as
/// stored) decoded into `autounattend.xml` at its root, where Windows
/// setup looks for it on removable media; volume id `UNATTEND`. Rebuilt
/// at every start, as the config drive. Blocking.
pub fn build_answer_file(user_data: &str, out: &Path) -> Result<(), ConfigDriveError> {
    let bytes = crate::util::decode_user_data(user_data).unwrap_or_default();
    build_iso(&[("autounattend.xml".to_owned(), bytes)], "UNATTEND", out)
}
