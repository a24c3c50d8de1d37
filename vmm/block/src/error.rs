//! Errors of the disk engine: one enum for the whole crate, so that callers
//! (virtio-blk, kilnd) match on a small set of kinds.

use std::io;
use std::path::PathBuf;

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong opening, creating or doing I/O on a disk.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on the image file failed.
    #[error("{op} failed")]
    Io {
        /// What was being done (e.g. "read L2 table").
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// Opening or creating a file failed.
    #[error("cannot open {path}")]
    Open {
        /// The path that was opened.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not a valid image of the stated format.
    #[error("malformed image: {0}")]
    Malformed(String),
    /// The image uses a feature this engine refuses or does not implement.
    #[error("unsupported image: {0}")]
    Unsupported(String),
    /// The format name is not one of `raw`, `qcow2`.
    #[error("unknown image format {0:?} (expected \"raw\" or \"qcow2\")")]
    UnknownFormat(String),
    /// A request lies (partly) outside the disk.
    #[error("request at offset {offset} of {len} bytes is beyond the disk size {size}")]
    OutOfRange {
        /// Start of the request.
        offset: u64,
        /// Length of the request.
        len: u64,
        /// Virtual size of the disk.
        size: u64,
    },
    /// A write-type request on a read-only disk.
    #[error("disk is read-only")]
    ReadOnly,
    /// A write-type request after the disk was closed for good (its owner
    /// is ending and has written everything back).
    #[error("disk is closed")]
    Closed,
    /// Bad argument to create/resize.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A backing file could not be opened or used.
    #[error("backing file {path}")]
    Backing {
        /// Resolved path of the backing file.
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },
    /// An image's header names a backing file other than the one the
    /// caller gave (or names one the caller did not give).
    #[error("backing chain refused: {0}")]
    Chain(String),
    /// A compressed cluster did not decompress to a full cluster.
    #[error("compressed cluster at host offset {offset:#x}: {reason}")]
    Decompress {
        /// Host offset of the compressed data.
        offset: u64,
        /// What the decoder reported.
        reason: String,
    },
    /// The image was found inconsistent during I/O; it is now refused for writes.
    #[error("image corrupt: {0}")]
    Corrupt(String),
}

impl Error {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { op, source }
    }
}

impl From<kiln_api::vm::UnknownDiskFormat> for Error {
    fn from(e: kiln_api::vm::UnknownDiskFormat) -> Error {
        Error::UnknownFormat(e.0)
    }
}
