//! What an image's file holds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::vm::DiskFormat;

/// A disk image's format (Glance's `disk_format`): a disk (`raw`,
/// `qcow2`) becomes a server's root disk through an overlay; an `iso`
/// (ISO 9660, e.g. an installer) is a read-only CD-ROM, and a server
/// booting from it gets a blank root disk of its flavor's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    #[default]
    Raw,
    Qcow2,
    Iso,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Iso => "iso",
        }
    }

    /// The format the disk engine reads the file in: an ISO is read as raw
    /// bytes (2048-byte sectors of a plain file).
    pub fn disk(self) -> DiskFormat {
        match self {
            ImageFormat::Qcow2 => DiskFormat::Qcow2,
            ImageFormat::Raw | ImageFormat::Iso => DiskFormat::Raw,
        }
    }

    pub fn is_iso(self) -> bool {
        self == ImageFormat::Iso
    }
}

impl From<DiskFormat> for ImageFormat {
    fn from(f: DiskFormat) -> ImageFormat {
        match f {
            DiskFormat::Raw => ImageFormat::Raw,
            DiskFormat::Qcow2 => ImageFormat::Qcow2,
        }
    }
}

/// A format name that is none of `raw`, `qcow2`, `iso`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownImageFormat(pub String);

impl fmt::Display for UnknownImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown image format {:?} (raw, qcow2 or iso)", self.0)
    }
}

impl std::error::Error for UnknownImageFormat {}

impl FromStr for ImageFormat {
    type Err = UnknownImageFormat;
    fn from_str(s: &str) -> Result<ImageFormat, UnknownImageFormat> {
        match s {
            "raw" => Ok(ImageFormat::Raw),
            "qcow2" => Ok(ImageFormat::Qcow2),
            "iso" => Ok(ImageFormat::Iso),
            other => Err(UnknownImageFormat(other.to_owned())),
        }
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in [ImageFormat::Raw, ImageFormat::Qcow2, ImageFormat::Iso] {
            assert_eq!(f.as_str().parse::<ImageFormat>().unwrap(), f);
            assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{f}\""));
        }
        assert!("vmdk".parse::<ImageFormat>().is_err());
        assert_eq!(ImageFormat::Iso.disk(), DiskFormat::Raw);
    }
}
