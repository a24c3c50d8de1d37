//! The VGA's register file, memory window and renderer against video
//! memory in process: text mode with a font loaded into plane 2, a VBE
//! mode set through the dispi ports, and hostile values (modes out of
//! range, offsets and banks past the memory, writes anywhere, a random
//! storm of accesses) that must neither panic nor reach outside.

use std::sync::{Arc, Mutex};

use super::render::{self, Mode};
use super::*;
use crate::devices::bus::BusDevice;

fn vga() -> Arc<Mutex<Vga>> {
    let vram = Arc::new(Vram::new(VRAM_SIZE).unwrap());
    Arc::new(Mutex::new(
        Vga::new(vram, 0xc000_0000, 0xc100_0000).unwrap(),
    ))
}

fn out(ports: &mut VgaPorts, port: u16, v: u8) {
    ports.write(u64::from(port - VGA_PORT_BASE), &[v]);
}

fn dispi(vbe: &mut VbePorts, index: u16, value: u16) {
    vbe.write(0, &index.to_le_bytes());
    vbe.write(1, &value.to_le_bytes());
}

fn dispi_read(vbe: &mut VbePorts, index: u16) -> u16 {
    vbe.write(0, &index.to_le_bytes());
    let mut v = [0u8; 2];
    vbe.read(1, &mut v);
    u16::from_le_bytes(v)
}

/// Mode 3 (80x25 text, 9x16 cells) as a VGA BIOS programs it.
fn mode3(p: &mut VgaPorts) {
    out(p, 0x3c2, 0x67);
    for (i, v) in [0x03, 0x00, 0x03, 0x00, 0x02].into_iter().enumerate() {
        out(p, 0x3c4, i as u8);
        out(p, 0x3c5, v);
    }
    let crtc = [
        0x5f, 0x4f, 0x50, 0x82, 0x55, 0x81, 0xbf, 0x1f, 0x00, 0x4f, 0x0d, 0x0e, 0x00, 0x00, 0x00,
        0x00, 0x9c, 0x8e, 0x8f, 0x28, 0x1f, 0x96, 0xb9, 0xa3, 0xff,
    ];
    for (i, v) in crtc.into_iter().enumerate() {
        out(p, 0x3d4, i as u8);
        out(p, 0x3d5, v);
    }
    for (i, v) in [0, 0, 0, 0, 0, 0x10, 0x0e, 0x0f, 0xff]
        .into_iter()
        .enumerate()
    {
        out(p, 0x3ce, i as u8);
        out(p, 0x3cf, v);
    }
    let mut r = [0u8; 1];
    p.read(0x1a, &mut r); // reset the flip-flop
    let ar = [
        0, 1, 2, 3, 4, 5, 0x14, 7, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f, 0x0c, 0, 0x0f,
        0x08, 0,
    ];
    for (i, v) in ar.into_iter().enumerate() {
        out(p, 0x3c0, i as u8);
        out(p, 0x3c0, v);
    }
    out(p, 0x3c0, 0x20); // video on
                         // DAC: 0 black, 1 blue, 7 light grey.
    out(p, 0x3c8, 0);
    for v in [0, 0, 0, 0, 0, 0x2a] {
        out(p, 0x3c9, v);
    }
    out(p, 0x3c8, 7);
    for v in [0x2a, 0x2a, 0x2a] {
        out(p, 0x3c9, v);
    }
}

/// A glyph with a recognisable shape: row r has bit (r % 8) set, and
/// row 0 all bits.
fn glyph() -> [u8; 16] {
    let mut g = [0u8; 16];
    for (r, b) in g.iter_mut().enumerate() {
        *b = if r == 0 { 0xff } else { 0x80 >> (r % 8) };
    }
    g
}

/// Load `glyph` for character `c` into plane 2 as a VGA BIOS does, then
/// go back to text addressing.
fn load_glyph(p: &mut VgaPorts, w: &mut VgaWindow, c: u8, glyph: &[u8; 16]) {
    for (reg, v) in [(2, 0x04), (4, 0x06)] {
        out(p, 0x3c4, reg);
        out(p, 0x3c5, v);
    }
    for (reg, v) in [(4, 0x02), (5, 0x00), (6, 0x04)] {
        out(p, 0x3ce, reg);
        out(p, 0x3cf, v);
    }
    for (row, &b) in glyph.iter().enumerate() {
        w.write(u64::from(c) * 32 + row as u64, &[b]);
    }
    for (reg, v) in [(2, 0x03), (4, 0x02)] {
        out(p, 0x3c4, reg);
        out(p, 0x3c5, v);
    }
    for (reg, v) in [(4, 0x00), (5, 0x10), (6, 0x0e)] {
        out(p, 0x3ce, reg);
        out(p, 0x3cf, v);
    }
}

fn frame(vga: &Mutex<Vga>) -> render::Frame {
    let vga = vga.lock().unwrap();
    let (regs, vbe) = vga.snapshot();
    render::render(&regs, &vbe, vga.vram())
}

#[test]
fn text_mode_draws_cells_with_the_loaded_font_and_palette() {
    let vga = vga();
    let (mut p, mut w) = (VgaPorts(vga.clone()), VgaWindow(vga.clone()));
    mode3(&mut p);
    load_glyph(&mut p, &mut w, b'A', &glyph());
    // 'A' in light grey on blue at row 1, column 2 (0xB8000 window).
    let cell = 0x1_8000 + 2 * (80 + 2);
    w.write(cell, &[b'A', 0x17]);
    let mut back = [0u8; 2];
    w.read(cell, &mut back);
    assert_eq!(back, [b'A', 0x17], "odd/even reads see the same cell");
    let f = frame(&vga);
    assert_eq!((f.width, f.height), (720, 400));
    let (grey, blue) = ([0xaa; 3], [0, 0, 0xaa]);
    let (x0, y0) = (2 * 9, 16);
    for (row, bits) in glyph().iter().enumerate() {
        for x in 0..8 {
            let want = if bits & (0x80 >> x) != 0 { grey } else { blue };
            assert_eq!(f.pixel(x0 + x, y0 + row), want, "glyph ({x}, {row})");
        }
        assert_eq!(f.pixel(x0 + 8, y0 + row), blue, "9th column of a letter");
    }
    // Cells left as zero: character 0 (blank font) on black.
    assert_eq!(f.pixel(0, 0), [0, 0, 0]);
    let vga_l = vga.lock().unwrap();
    let (regs, vbe) = vga_l.snapshot();
    let rows = render::text_rows(&regs, &vbe, vga_l.vram()).unwrap();
    assert_eq!(rows.len(), 25);
    assert_eq!(rows[1], "  A");
    assert!(matches!(
        render::mode(&regs, &vbe),
        Mode::Text {
            cols: 80,
            rows: 25,
            cell_width: 9,
            cell_height: 16
        }
    ));
    // The font went to plane 2 of each 4-byte plane group.
    assert_eq!(vga_l.vram().read_u8(usize::from(b'A') * 32 * 4 + 2), 0xff);
}

/// Program the VGA registers of a mode from its tables.
fn program(p: &mut VgaPorts, misc: u8, sr: &[u8], crtc: &[u8], gr: &[u8], ar: &[u8]) {
    out(p, 0x3c2, misc);
    for (i, &v) in sr.iter().enumerate() {
        out(p, 0x3c4, i as u8 + 1);
        out(p, 0x3c5, v);
    }
    out(p, 0x3d4, 0x11);
    out(p, 0x3d5, 0); // unprotect CR0-7
    for (i, &v) in crtc.iter().enumerate() {
        out(p, 0x3d4, i as u8);
        out(p, 0x3d5, v);
    }
    for (i, &v) in gr.iter().enumerate() {
        out(p, 0x3ce, i as u8);
        out(p, 0x3cf, v);
    }
    let mut r = [0u8; 1];
    p.read(0x1a, &mut r);
    for (i, &v) in ar.iter().enumerate() {
        out(p, 0x3c0, i as u8);
        out(p, 0x3c0, v);
    }
    out(p, 0x3c0, 0x20);
}

#[test]
fn cga_and_planar_graphics_modes_draw_their_pixels() {
    let vga = vga();
    let (mut p, mut w) = (VgaPorts(vga.clone()), VgaWindow(vga.clone()));
    // Mode 4: 320x200, 4 colours, odd rows in the bank at 0xBA000.
    program(
        &mut p,
        0x63,
        &[0x09, 0x03, 0x00, 0x02],
        &[
            0x2d, 0x27, 0x28, 0x90, 0x2b, 0x80, 0xbf, 0x1f, 0x00, 0xc1, 0, 0, 0, 0, 0, 0, 0x9c,
            0x8e, 0x8f, 0x14, 0x00, 0x96, 0xb9, 0xa2, 0xff,
        ],
        &[0, 0, 0, 0, 0, 0x30, 0x0f, 0x0f, 0xff],
        &[
            0x00, 0x13, 0x15, 0x17, 0x02, 0x04, 0x06, 0x07, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15,
            0x16, 0x17, 0x01, 0x00, 0x03, 0x00, 0x00,
        ],
    );
    w.write(0x1_8000, &[0b11_10_01_00, 0xff]);
    w.write(0x1_8000 + 0x2000, &[0b01_00_00_00]);
    let f = frame(&vga);
    assert_eq!((f.width, f.height), (320, 200));
    let (regs, _) = vga.lock().unwrap().snapshot();
    let c = |i| regs.attr_rgb(i, false);
    let row0: Vec<_> = (0..9).map(|x| f.pixel(x, 0)).collect();
    assert_eq!(row0, [c(3), c(2), c(1), c(0), c(3), c(3), c(3), c(3), c(0)]);
    assert_eq!(
        (f.pixel(0, 1), f.pixel(1, 1)),
        (c(1), c(0)),
        "row 1 from the odd bank"
    );
    assert_eq!(f.pixel(0, 2), c(0));

    // Mode 12h: 640x480, 16 colours planar; write mode 2 sets a pixel's
    // four planes from the written colour, under the bit mask.
    program(
        &mut p,
        0xe3,
        &[0x01, 0x0f, 0x00, 0x06],
        &[
            0x5f, 0x4f, 0x50, 0x82, 0x54, 0x80, 0x0b, 0x3e, 0x00, 0x40, 0, 0, 0, 0, 0, 0, 0xea,
            0x8c, 0xdf, 0x28, 0x00, 0xe7, 0x04, 0xe3, 0xff,
        ],
        &[0, 0, 0, 0, 0, 0x02, 0x05, 0x0f, 0x80],
        &[
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d,
            0x3e, 0x3f, 0x01, 0x00, 0x0f, 0x00, 0x00,
        ],
    );
    // Pixel (8, 1): byte 80 + 1; the read fills the latches first.
    let at = 80 + 1;
    let mut latch = [0u8; 1];
    w.read(at, &mut latch);
    w.write(at, &[0x0b]);
    let f = frame(&vga);
    assert_eq!((f.width, f.height), (640, 480));
    let (regs, _) = vga.lock().unwrap().snapshot();
    assert_eq!(f.pixel(8, 1), regs.attr_rgb(0x0b, false));
    assert_eq!(
        f.pixel(9, 1),
        regs.attr_rgb(0, false),
        "outside the bit mask"
    );
}

#[test]
fn vbe_modes_set_through_the_dispi_ports_show_the_framebuffer() {
    let vga = vga();
    let mut v = VbePorts(vga.clone());
    assert_eq!(dispi_read(&mut v, 0), vbe::ID5);
    assert_eq!(dispi_read(&mut v, 10), 256, "16 MiB in 64 KiB units");
    dispi(&mut v, 4, vbe::GETCAPS);
    assert_eq!(dispi_read(&mut v, 1), vbe::MAX_XRES);
    assert_eq!(dispi_read(&mut v, 3), vbe::MAX_BPP);
    dispi(&mut v, 4, 0);
    for (bpp, px, rgb) in [
        (32u16, vec![0x30, 0x20, 0x10, 0], [0x10, 0x20, 0x30]),
        (24, vec![0x33, 0x22, 0x11], [0x11, 0x22, 0x33]),
        (16, 0xf800u16.to_le_bytes().to_vec(), [0xff, 0, 0]),
        (15, 0x03e0u16.to_le_bytes().to_vec(), [0, 0xff, 0]),
    ] {
        dispi(&mut v, 4, 0);
        dispi(&mut v, 1, 800);
        dispi(&mut v, 2, 600);
        dispi(&mut v, 3, bpp);
        dispi(&mut v, 4, vbe::ENABLED | vbe::LFB_ENABLED);
        let bytes = px.len();
        let (x, y) = (799, 599);
        let vram = vga.lock().unwrap().vram().clone();
        for (i, b) in px.iter().enumerate() {
            vram.write_u8((y * 800 + x) * bytes + i, *b);
        }
        let f = frame(&vga);
        assert_eq!((f.width, f.height), (800, 600), "{bpp} bpp");
        assert_eq!(f.pixel(x, y), rgb, "{bpp} bpp");
        assert_eq!(f.pixel(0, 0), [0, 0, 0], "{bpp} bpp: cleared");
    }
    // 8 bpp goes through the DAC (8-bit with DAC_8BIT).
    dispi(&mut v, 4, 0);
    dispi(&mut v, 3, 8);
    dispi(&mut v, 4, vbe::ENABLED | vbe::LFB_ENABLED | vbe::DAC_8BIT);
    let mut p = VgaPorts(vga.clone());
    out(&mut p, 0x3c8, 9);
    for c in [0x12, 0x34, 0x56] {
        out(&mut p, 0x3c9, c);
    }
    vga.lock().unwrap().vram().write_u8(5, 9);
    assert_eq!(frame(&vga).pixel(5, 0), [0x12, 0x34, 0x56]);
    // The same registers through BAR 2 (QEMU's layout at 0x500).
    let mut vga_l = vga.lock().unwrap();
    let mut b = [0u8; 2];
    vga_l.bar_read(MMIO_BAR, 0x500 + 2, &mut b);
    assert_eq!(u16::from_le_bytes(b), 800);
    let mut q = [0u8; 4];
    vga_l.bar_read(MMIO_BAR, 0x604, &mut q);
    assert_eq!(u32::from_le_bytes(q), 0xbebe_bebe);
}

#[test]
fn hostile_modes_and_offsets_stay_inside_video_memory() {
    let vga = vga();
    let mut v = VbePorts(vga.clone());
    // Depth 7 becomes 8; a mode larger than the memory shrinks.
    for (x, y, bpp) in [
        (u16::MAX, u16::MAX, 7),
        (16000, 12000, 32),
        (0, 0, 0),
        (8, 1, 4),
    ] {
        dispi(&mut v, 4, 0);
        dispi(&mut v, 1, x);
        dispi(&mut v, 2, y);
        dispi(&mut v, 3, bpp);
        dispi(&mut v, 6, u16::MAX);
        dispi(&mut v, 7, u16::MAX);
        dispi(&mut v, 4, vbe::ENABLED | vbe::LFB_ENABLED | vbe::NOCLEARMEM);
        dispi(&mut v, 8, u16::MAX);
        dispi(&mut v, 9, u16::MAX);
        dispi(&mut v, 5, u16::MAX);
        let vga_l = vga.lock().unwrap();
        let (regs, vbe) = vga_l.snapshot();
        let (w, h, bpp) = (
            usize::from(vbe.regs[vbe::INDEX_XRES]),
            usize::from(vbe.regs[vbe::INDEX_YRES]),
            vbe.regs[vbe::INDEX_BPP],
        );
        assert!(matches!(bpp, 4 | 8 | 15 | 16 | 24 | 32), "{bpp}");
        assert!(
            vbe.start + vbe.line_offset * h <= VRAM_SIZE,
            "{w}x{h}x{bpp}"
        );
        assert!(vbe.bank_offset() < VRAM_SIZE);
        let f = render::render(&regs, &vbe, vga_l.vram());
        assert!(f.width <= render::MAX_WIDTH && f.height <= render::MAX_HEIGHT);
        assert_eq!(f.rgb.len(), f.width * f.height * 3);
    }
    // Banked window writes past the last bank are dropped, not wrapped
    // outside.
    let mut w = VgaWindow(vga.clone());
    for a in [0, 0xffff, 0x1_0000, 0x1_ffff, u64::MAX - 8] {
        w.write(a, &[0xaa; 8]);
        let mut b = [0u8; 8];
        w.read(a, &mut b);
    }
    assert_eq!(vga.lock().unwrap().vram().len(), VRAM_SIZE);
}

/// A small xorshift generator: the same storm every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn a_storm_of_random_register_and_memory_accesses_never_panics() {
    let vga = vga();
    let mut p = VgaPorts(vga.clone());
    let mut v = VbePorts(vga.clone());
    let mut w = VgaWindow(vga.clone());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..200_000u32 {
        let r = rng.next();
        let len = [1, 2, 4][(r >> 60) as usize % 3];
        let bytes = (r >> 8).to_le_bytes();
        let mut buf = [0u8; 4];
        match r % 8 {
            0 | 1 => p.write((r >> 32) % VGA_PORT_LEN, &bytes[..len]),
            2 => p.read((r >> 32) % VGA_PORT_LEN, &mut buf[..len]),
            3 => v.write((r >> 32) % 2, &bytes[..len]),
            4 => v.read((r >> 32) % 2, &mut buf[..len]),
            5 => w.write((r >> 32) % WINDOW_LEN, &bytes[..len]),
            6 => w.read((r >> 32) % WINDOW_LEN, &mut buf[..len]),
            _ => {
                let mut vga = vga.lock().unwrap();
                let off = (r >> 32) % MMIO_BAR_SIZE;
                if r & (1 << 20) != 0 {
                    vga.bar_write(MMIO_BAR, off, &bytes[..len]);
                } else {
                    vga.bar_read(MMIO_BAR, off, &mut buf[..len]);
                }
            }
        }
        if i % 20_000 == 0 {
            let f = frame(&vga);
            assert_eq!(f.rgb.len(), f.width * f.height * 3);
            let vga = vga.lock().unwrap();
            let (regs, vbe) = vga.snapshot();
            let _ = render::text_rows(&regs, &vbe, vga.vram());
        }
    }
}
