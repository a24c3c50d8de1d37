//! Fuzz the standard VGA's register file and memory window: the input is
//! a sequence of 8-byte operations (what: VGA port, VBE port, legacy
//! window or BAR 2, read or write; offset; width; value) on a VGA with
//! 1 MiB of video memory. Nothing may panic, and every few operations the
//! picture and text rows are drawn: within the size limits, one RGB
//! triple per pixel.
#![no_main]

use std::sync::{Arc, Mutex};

use kiln_vmm::devices::bus::BusDevice;
use kiln_vmm::devices::display::render;
use kiln_vmm::devices::display::{
    Vga, VbePorts, VgaPorts, VgaWindow, Vram, MMIO_BAR, MMIO_BAR_SIZE, VGA_PORT_LEN, WINDOW_LEN,
};
use kiln_vmm::devices::pci::PciDevice;
use libfuzzer_sys::fuzz_target;

fn draw(vga: &Mutex<Vga>) {
    let vga = vga.lock().unwrap();
    let (regs, vbe) = vga.snapshot();
    let f = render::render(&regs, &vbe, vga.vram());
    assert!(f.width <= render::MAX_WIDTH && f.height <= render::MAX_HEIGHT);
    assert_eq!(f.rgb.len(), f.width * f.height * 3);
    let _ = render::text_rows(&regs, &vbe, vga.vram());
}

fuzz_target!(|data: &[u8]| {
    let vram = Arc::new(Vram::new(1 << 20).unwrap());
    let vga = Arc::new(Mutex::new(Vga::new(vram, 0xc000_0000, 0xc100_0000).unwrap()));
    let mut ports = VgaPorts(vga.clone());
    let mut vbe = VbePorts(vga.clone());
    let mut window = VgaWindow(vga.clone());
    for (i, op) in data.chunks_exact(8).enumerate() {
        let off = u64::from(u16::from_le_bytes([op[1], op[2]]));
        let len = [1, 2, 4][usize::from(op[3]) % 3];
        let value = &op[4..4 + len];
        let mut buf = [0u8; 4];
        let write = op[0] & 1 == 0;
        match (op[0] >> 1) % 4 {
            0 if write => ports.write(off % VGA_PORT_LEN, value),
            0 => ports.read(off % VGA_PORT_LEN, &mut buf[..len]),
            1 if write => vbe.write(off % 2, value),
            1 => vbe.read(off % 2, &mut buf[..len]),
            2 => {
                let at = (off << 1 | u64::from(op[3] >> 7)) % WINDOW_LEN;
                if write {
                    window.write(at, value);
                } else {
                    window.read(at, &mut buf[..len]);
                }
            }
            _ => {
                let mut vga = vga.lock().unwrap();
                if write {
                    vga.bar_write(MMIO_BAR, off % MMIO_BAR_SIZE, value);
                } else {
                    vga.bar_read(MMIO_BAR, off % MMIO_BAR_SIZE, &mut buf[..len]);
                }
            }
        }
        if i % 64 == 63 {
            draw(&vga);
        }
    }
    draw(&vga);
});
