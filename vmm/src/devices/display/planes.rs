//! The legacy memory window at 0xA0000-0xBFFFF, as the graphics
//! controller maps it into video memory. Video memory holds the four
//! planes interleaved: plane address `a` of plane `p` is byte `4a + p`,
//! so a chain-4 (256-colour, and VBE banked) address is a plain byte
//! offset, text mode's odd/even addressing puts characters in plane 0 and
//! attributes in plane 1 of consecutive cells, and the font lives in
//! plane 2. Planar accesses go through the latches with the four write
//! modes, set/reset, rotate, logical operation and bit mask, and the two
//! read modes. Every address is bounded by [`Vram`].

use super::regs::*;
use super::vbe::Vbe;
use super::vram::Vram;

/// Each bit of a nibble widened to a byte (bit p → byte p all ones).
fn mask16(v: u8) -> u32 {
    (0..4).fold(0, |m, p| {
        if v & (1 << p) != 0 {
            m | (0xff << (8 * p))
        } else {
            m
        }
    })
}

/// The window offset `addr` (from 0xA0000) as the memory map select
/// decodes it: None if that part of the window is not mapped.
fn decode(regs: &VgaRegs, addr: u64) -> Option<usize> {
    let addr = usize::try_from(addr).ok()?;
    let (base, len) = match (regs.gr[GR_MISC] >> 2) & 3 {
        0 => (0, 0x20000),
        1 => (0, 0x10000),
        2 => (0x10000, 0x8000),
        _ => (0x18000, 0x8000),
    };
    let a = addr.checked_sub(base)?;
    (a < len).then_some(a)
}

fn chain4(regs: &VgaRegs) -> bool {
    regs.sr[SR_MEMORY_MODE] & 0x08 != 0
}

fn odd_even(regs: &VgaRegs) -> bool {
    regs.gr[GR_MODE] & 0x10 != 0
}

/// A byte read at window offset `addr`.
pub fn read(regs: &mut VgaRegs, vbe: &Vbe, vram: &Vram, addr: u64) -> u8 {
    let Some(a) = decode(regs, addr) else {
        return 0xff;
    };
    if chain4(regs) {
        return vram.read_u8(a + vbe.bank_offset());
    }
    if odd_even(regs) {
        let plane = usize::from(regs.gr[GR_READ_MAP] & 2) | (a & 1);
        return vram.read_u8(((a & !1) << 1) | plane);
    }
    regs.latch = vram.read_u32(a);
    if regs.gr[GR_MODE] & 0x08 == 0 {
        let plane = regs.gr[GR_READ_MAP] & 3;
        (regs.latch >> (8 * plane)) as u8
    } else {
        let mut r =
            (regs.latch ^ mask16(regs.gr[GR_COLOR_COMPARE])) & mask16(regs.gr[GR_COLOR_DONT_CARE]);
        r |= r >> 16;
        r |= r >> 8;
        !(r as u8)
    }
}

/// A byte write of `value` at window offset `addr`.
pub fn write(regs: &mut VgaRegs, vbe: &Vbe, vram: &Vram, addr: u64, value: u8) {
    let Some(a) = decode(regs, addr) else {
        return;
    };
    let map_mask = regs.sr[SR_MAP_MASK] & 0x0f;
    if chain4(regs) {
        if map_mask & (1 << (a & 3)) != 0 {
            vram.write_u8(a + vbe.bank_offset(), value);
        }
        return;
    }
    if odd_even(regs) {
        let plane = usize::from(regs.gr[GR_READ_MAP] & 2) | (a & 1);
        if map_mask & (1 << plane) != 0 {
            vram.write_u8(((a & !1) << 1) | plane, value);
        }
        return;
    }
    let latch = regs.latch;
    let gr = &regs.gr;
    let rotate = |v: u8| v.rotate_right(u32::from(gr[GR_ROTATE] & 7));
    let (mut val, bit_mask) = match gr[GR_MODE] & 3 {
        0 => {
            let v = u32::from(rotate(value)) * 0x0101_0101;
            let set = mask16(gr[GR_ENABLE_SET_RESET]);
            (
                (v & !set) | (mask16(gr[GR_SET_RESET]) & set),
                gr[GR_BIT_MASK],
            )
        }
        1 => {
            store(vram, a, latch, map_mask);
            return;
        }
        2 => (mask16(value & 0x0f), gr[GR_BIT_MASK]),
        _ => (mask16(gr[GR_SET_RESET]), gr[GR_BIT_MASK] & rotate(value)),
    };
    match (gr[GR_ROTATE] >> 3) & 3 {
        1 => val &= latch,
        2 => val |= latch,
        3 => val ^= latch,
        _ => {}
    }
    let bits = u32::from(bit_mask) * 0x0101_0101;
    val = (val & bits) | (latch & !bits);
    store(vram, a, val, map_mask);
}

/// Write the planes of `val` that `map_mask` enables at plane address `a`.
fn store(vram: &Vram, a: usize, val: u32, map_mask: u8) {
    let m = mask16(map_mask);
    let old = vram.read_u32(a);
    vram.write_u32(a, (old & !m) | (val & m));
}
