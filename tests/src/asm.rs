//! Flat binaries from GNU assembler source, for tests that boot code of
//! their own below the probes' level: boot sectors and tiny firmware
//! images (16/32-bit code, linked at a fixed address, no ELF wrapper).

use std::fs;
use std::path::Path;
use std::process::Command;

/// Assemble `source` (`as --32`) and link it flat at `text_addr`
/// (`ld -m elf_i386 --oformat binary`), with the object and the binary in
/// `dir`; returns the binary's bytes.
pub fn assemble_flat(source: &Path, text_addr: u32, dir: &Path) -> Vec<u8> {
    let stem = source
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("source file name");
    let o = dir.join(format!("{stem}.o"));
    let bin = dir.join(format!("{stem}.bin"));
    // `.include "x"` finds x beside the source (images/mbr/common.inc).
    let st = Command::new("as")
        .args(["--32", "-I"])
        .arg(source.parent().expect("source folder"))
        .arg("-o")
        .arg(&o)
        .arg(source)
        .status()
        .expect("GNU as (binutils)");
    assert!(st.success(), "as {}", source.display());
    let st = Command::new("ld")
        .args(["-m", "elf_i386", "-Ttext"])
        .arg(format!("{text_addr:#x}"))
        .args(["--oformat", "binary", "-o"])
        .arg(&bin)
        .arg(&o)
        .status()
        .expect("ld (binutils)");
    assert!(st.success(), "ld {}", o.display());
    fs::read(&bin).unwrap_or_else(|e| panic!("read {}: {e}", bin.display()))
}
