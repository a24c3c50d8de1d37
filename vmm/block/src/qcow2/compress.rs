//! Decompression of compressed clusters: raw deflate (zlib, QEMU's default)
//! and zstd. The output must fill exactly one cluster; anything else is an
//! error, never a panic.

use std::io::Read;

use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

use super::header::Compression;
use crate::error::{Error, Result};

/// Decompresses `input` (read from host offset `at`) into `out` (one cluster).
pub fn decompress_cluster(kind: Compression, input: &[u8], out: &mut [u8], at: u64) -> Result<()> {
    let err = |reason: String| Error::Decompress { offset: at, reason };
    match kind {
        Compression::Zlib => {
            let mut st = DecompressorOxide::new();
            let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
            let (status, _, written) = decompress(&mut st, input, out, 0, flags);
            match status {
                TINFLStatus::Done | TINFLStatus::HasMoreOutput if written == out.len() => Ok(()),
                TINFLStatus::Done => Err(err(format!("only {written} of {} bytes", out.len()))),
                s => Err(err(format!("deflate error {s:?}"))),
            }
        }
        Compression::Zstd => {
            let mut src = input;
            let mut dec = ruzstd::decoding::StreamingDecoder::new(&mut src)
                .map_err(|e| err(format!("zstd frame: {e}")))?;
            dec.read_exact(out).map_err(|e| err(format!("zstd: {e}")))
        }
    }
}
