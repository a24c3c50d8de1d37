//! The picture the display shows, drawn from its registers and video
//! memory as they are at one moment: VBE linear modes (8 bpp through the
//! DAC, 15, 16, 24 and 32 bpp), the VGA's 256-colour (chain-4), 16-colour
//! planar and 4-colour CGA graphics (with the CRTC's CGA row interleave),
//! and text mode with the font the guest loaded into plane 2, the
//! attribute palette, the 9th column and the cursor. Reads go through [`Vram`]'s bounds, and the picture is clipped
//! to [`MAX_WIDTH`] x [`MAX_HEIGHT`], so no register value makes the
//! renderer read outside video memory or allocate without bound.

use super::regs::*;
use super::vbe::{self, Vbe};
use super::vram::Vram;

pub const MAX_WIDTH: usize = 4096;
pub const MAX_HEIGHT: usize = 2160;

/// An RGB picture, 3 bytes a pixel, rows top down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Frame {
    fn new(width: usize, height: usize) -> Self {
        let (width, height) = (width.min(MAX_WIDTH), height.min(MAX_HEIGHT));
        Frame {
            width,
            height,
            rgb: vec![0; width * height * 3],
        }
    }

    fn put(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.width && y < self.height {
            let at = (y * self.width + x) * 3;
            self.rgb[at..at + 3].copy_from_slice(&c);
        }
    }

    /// The pixel at (x, y) (black outside).
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        if x >= self.width || y >= self.height {
            return [0; 3];
        }
        let at = (y * self.width + x) * 3;
        [self.rgb[at], self.rgb[at + 1], self.rgb[at + 2]]
    }
}

/// What the display shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Nothing (video off, or the registers describe no picture).
    Blank,
    Text {
        cols: usize,
        rows: usize,
        cell_width: usize,
        cell_height: usize,
    },
    /// VGA graphics: 16 colours planar, 4 colours CGA-style, or 256
    /// colours chain-4.
    Vga {
        width: usize,
        height: usize,
        kind: VgaKind,
    },
    Vbe {
        width: usize,
        height: usize,
        bpp: u16,
    },
}

/// How a VGA graphics mode packs its pixels (the graphics controller's
/// shift control).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VgaKind {
    /// A bit of each plane per pixel (modes 0Dh-12h).
    Planar16,
    /// Two bits a pixel, even and odd bytes interleaved (modes 4, 5).
    Cga4,
    /// A byte a pixel (mode 13h).
    Chain256,
}

/// The vertical display end + 1, in scan lines.
fn scan_lines(regs: &VgaRegs) -> usize {
    let cr = &regs.cr;
    (usize::from(cr[0x12]) | (usize::from(cr[7] & 0x02) << 7) | (usize::from(cr[7] & 0x40) << 3))
        + 1
}

fn start_addr(regs: &VgaRegs) -> usize {
    (usize::from(regs.cr[0x0c]) << 8) | usize::from(regs.cr[0x0d])
}

/// The mode the registers describe.
pub fn mode(regs: &VgaRegs, vbe: &Vbe) -> Mode {
    if vbe.enabled() {
        return Mode::Vbe {
            width: usize::from(vbe.regs[vbe::INDEX_XRES]),
            height: usize::from(vbe.regs[vbe::INDEX_YRES]),
            bpp: vbe.regs[vbe::INDEX_BPP],
        };
    }
    if !regs.video_enabled() {
        return Mode::Blank;
    }
    let cr = &regs.cr;
    let msl = usize::from(cr[9] & 0x1f) + 1;
    let double = if cr[9] & 0x80 != 0 { 2 } else { 1 };
    if regs.gr[GR_MISC] & 1 == 0 {
        let cols = usize::from(cr[1]) + 1;
        let rows = scan_lines(regs) / double / msl;
        let cell_width = if regs.sr[SR_CLOCKING] & 1 != 0 { 8 } else { 9 };
        if rows == 0 {
            return Mode::Blank;
        }
        return Mode::Text {
            cols,
            rows,
            cell_width,
            cell_height: msl,
        };
    }
    let chars = usize::from(cr[1]) + 1;
    let (kind, width, height) = match (regs.gr[GR_MODE] >> 5) & 3 {
        0 => (
            VgaKind::Planar16,
            chars * 8,
            scan_lines(regs) / double / msl,
        ),
        // CGA modes ignore the maximum scan line.
        1 => (VgaKind::Cga4, chars * 8, scan_lines(regs) / double),
        _ => (
            VgaKind::Chain256,
            chars * 4,
            scan_lines(regs) / double / msl,
        ),
    };
    Mode::Vga {
        width,
        height,
        kind,
    }
}

/// Draw the current picture.
pub fn render(regs: &VgaRegs, vbe: &Vbe, vram: &Vram) -> Frame {
    match mode(regs, vbe) {
        Mode::Blank => Frame::new(640, 480),
        Mode::Text {
            cols,
            rows,
            cell_width,
            cell_height,
        } => text(regs, vram, cols, rows, cell_width, cell_height),
        Mode::Vga {
            width,
            height,
            kind,
        } => match kind {
            VgaKind::Chain256 => vga256(regs, vram, width, height),
            VgaKind::Cga4 => cga4(regs, vram, width, height),
            VgaKind::Planar16 => planar16(regs, vram, width, height),
        },
        Mode::Vbe { width, height, bpp } => linear(regs, vbe, vram, width, height, bpp),
    }
}

/// Video memory offsets of font maps A and B (plane 2 of the maps that
/// character map select names).
fn font_bases(regs: &VgaRegs) -> [usize; 2] {
    let v = regs.sr[SR_CHAR_MAP];
    let b = usize::from(((v >> 4) & 1) | ((v << 1) & 6));
    let a = usize::from(((v >> 5) & 1) | ((v >> 1) & 6));
    [b * 8192 * 4 + 2, a * 8192 * 4 + 2]
}

fn text(regs: &VgaRegs, vram: &Vram, cols: usize, rows: usize, cw: usize, ch: usize) -> Frame {
    let mut f = Frame::new(cols * cw, rows * ch);
    let start = start_addr(regs) * 4;
    let line = usize::from(regs.cr[0x13]) * 8;
    let fonts = font_bases(regs);
    let blink = regs.ar[AR_MODE] & 0x08 != 0;
    let line_graphics = regs.ar[AR_MODE] & 0x04 != 0;
    let cursor = (regs.cr[0x0a] & 0x20 == 0).then(|| {
        let pos = (usize::from(regs.cr[0x0e]) << 8) | usize::from(regs.cr[0x0f]);
        (
            pos.wrapping_sub(start_addr(regs)),
            usize::from(regs.cr[0x0a] & 0x1f),
            usize::from(regs.cr[0x0b] & 0x1f),
        )
    });
    for row in 0..rows {
        for col in 0..cols {
            let cell = start + row * line + col * 4;
            let c = vram.read_u8(cell);
            let attr = vram.read_u8(cell + 1);
            let fg = regs.attr_rgb(attr & 0x0f, false);
            let bg = regs.attr_rgb(if blink { (attr >> 4) & 7 } else { attr >> 4 }, false);
            let glyph = fonts[usize::from((attr >> 3) & 1)] + usize::from(c) * 32 * 4;
            let (x0, y0) = (col * cw, row * ch);
            for y in 0..ch {
                let bits = vram.read_u8(glyph + y * 4);
                let on_cursor =
                    cursor.is_some_and(|(pos, s, e)| pos == row * cols + col && y >= s && y <= e);
                for x in 0..cw {
                    let on = match x {
                        0..=7 => bits & (0x80 >> x) != 0,
                        _ => line_graphics && (0xc0..=0xdf).contains(&c) && bits & 1 != 0,
                    };
                    f.put(x0 + x, y0 + y, if on || on_cursor { fg } else { bg });
                }
            }
        }
    }
    f
}

/// Where picture row `y` of a graphics mode starts in video memory (a
/// byte offset): the CRTC's mode control can interleave rows CGA-style
/// (odd rows in a second bank) and advance the address every other row.
fn row_offset(regs: &VgaRegs, y: usize) -> usize {
    let mode = regs.cr[0x17];
    let line = usize::from(regs.cr[0x13]) * 8;
    // The address advances after each row `k` with `k & mask == mask`.
    let mask = usize::from((mode & 3) ^ 3);
    let advances = (y / 4) * (0..4).filter(|k| k & mask == mask).count()
        + (0..y % 4).filter(|k| k & mask == mask).count();
    let mut addr = start_addr(regs) * 4 + advances * line;
    if mode & 1 == 0 {
        let shift = 14 + usize::from((mode >> 6) & 1);
        addr = (addr & !(1 << shift)) | ((y & 1) << shift);
    }
    if mode & 2 == 0 {
        addr = (addr & !0x8000) | ((y & 2) << 14);
    }
    addr
}

fn planar16(regs: &VgaRegs, vram: &Vram, width: usize, height: usize) -> Frame {
    let mut f = Frame::new(width, height);
    let enable = regs.ar[AR_PLANE_ENABLE] & 0x0f;
    for y in 0..f.height {
        let row = row_offset(regs, y) / 4;
        for x in 0..f.width {
            let planes = vram.read_u32(row + x / 8);
            let bit = 7 - (x % 8);
            let mut c = 0u8;
            for p in 0..4 {
                c |= (((planes >> (8 * p + bit)) & 1) as u8) << p;
            }
            f.put(x, y, regs.attr_rgb(c & enable, false));
        }
    }
    f
}

/// Four colours: each plane-address group holds 8 pixels, two bits each,
/// the first 4 in plane 0 (high bits from plane 2), the next in plane 1
/// (high bits from plane 3).
fn cga4(regs: &VgaRegs, vram: &Vram, width: usize, height: usize) -> Frame {
    let mut f = Frame::new(width, height);
    let enable = regs.ar[AR_PLANE_ENABLE] & 0x0f;
    for y in 0..f.height {
        let row = row_offset(regs, y) / 4;
        for x in 0..f.width {
            let planes = vram.read_u32(row + x / 8).to_le_bytes();
            let (lo, hi) = if x % 8 < 4 {
                (planes[0], planes[2])
            } else {
                (planes[1], planes[3])
            };
            let shift = 6 - 2 * (x % 4);
            let c = ((lo >> shift) & 3) | (((hi >> shift) & 3) << 2);
            f.put(x, y, regs.attr_rgb(c & enable, false));
        }
    }
    f
}

fn vga256(regs: &VgaRegs, vram: &Vram, width: usize, height: usize) -> Frame {
    let mut f = Frame::new(width, height);
    let start = start_addr(regs) * 4;
    let line = usize::from(regs.cr[0x13]) * 8;
    let mut buf = vec![0u8; f.width];
    for y in 0..f.height {
        vram.read_into(start + y * line, &mut buf);
        for (x, &c) in buf.iter().enumerate() {
            f.put(x, y, regs.dac_rgb(c, false));
        }
    }
    f
}

fn scale5(v: u16) -> u8 {
    let v = (v & 31) as u8;
    (v << 3) | (v >> 2)
}

fn scale6(v: u16) -> u8 {
    let v = (v & 63) as u8;
    (v << 2) | (v >> 4)
}

fn linear(regs: &VgaRegs, vbe: &Vbe, vram: &Vram, w: usize, h: usize, bpp: u16) -> Frame {
    let mut f = Frame::new(w, h);
    if bpp == 4 {
        return f;
    }
    let bytes = usize::from(bpp).div_ceil(8);
    let mut buf = vec![0u8; f.width * bytes];
    let dac8 = vbe.dac_8bit();
    for y in 0..f.height {
        vram.read_into(vbe.start + y * vbe.line_offset, &mut buf);
        let row = &mut f.rgb[y * f.width * 3..(y + 1) * f.width * 3];
        for (px, out) in buf.chunks_exact(bytes).zip(row.chunks_exact_mut(3)) {
            let c = match bpp {
                8 => regs.dac_rgb(px[0], dac8),
                15 => {
                    let v = u16::from_le_bytes([px[0], px[1]]);
                    [scale5(v >> 10), scale5(v >> 5), scale5(v)]
                }
                16 => {
                    let v = u16::from_le_bytes([px[0], px[1]]);
                    [scale5(v >> 11), scale6(v >> 5), scale5(v)]
                }
                _ => [px[2], px[1], px[0]],
            };
            out.copy_from_slice(&c);
        }
    }
    f
}

/// Text mode's characters, one string a row (code page 437's printable
/// ASCII; other characters as spaces, trailing spaces trimmed); None in
/// a graphics mode.
pub fn text_rows(regs: &VgaRegs, vbe: &Vbe, vram: &Vram) -> Option<Vec<String>> {
    let Mode::Text { cols, rows, .. } = mode(regs, vbe) else {
        return None;
    };
    let start = start_addr(regs) * 4;
    let line = usize::from(regs.cr[0x13]) * 8;
    Some(
        (0..rows)
            .map(|r| {
                let s: String = (0..cols)
                    .map(|c| match vram.read_u8(start + r * line + c * 4) {
                        b @ 0x20..=0x7e => char::from(b),
                        _ => ' ',
                    })
                    .collect();
                s.trim_end().to_string()
            })
            .collect(),
    )
}
