//! Fuzz the i8042 with its keyboard and PS/2 mouse: the input is a
//! sequence of 4-byte operations (what: command port, data port, read,
//! status read, host mouse motion, host key; then operands) on a
//! controller with both interrupts connected. Nothing may panic, the
//! status register never claims AUX data without output, and host input
//! never grows the controller beyond its bounds (reading drains it).
#![no_main]

use std::sync::Arc;

use kiln_vmm::devices::bus::BusDevice;
use kiln_vmm::devices::legacy::i8042::I8042Device;
use kiln_vmm::devices::{CountingInterrupt, RecordedRequests};
use libfuzzer_sys::fuzz_target;

fn inb(dev: &mut I8042Device, off: u64) -> u8 {
    let mut b = [0u8];
    dev.read(off, &mut b);
    b[0]
}

fuzz_target!(|data: &[u8]| {
    let mut dev = I8042Device::new(Arc::new(RecordedRequests::default()))
        .with_interrupt(Arc::new(CountingInterrupt::default()))
        .with_aux_interrupt(Arc::new(CountingInterrupt::default()));
    for op in data.chunks_exact(4) {
        let (a, b, c) = (op[1], op[2], op[3]);
        match op[0] % 6 {
            0 => dev.write(4, &[a]),
            1 => dev.write(0, &[a]),
            2 => {
                inb(&mut dev, 0);
            }
            3 => {
                let st = inb(&mut dev, 4);
                assert!(st & 0x20 == 0 || st & 0x01 != 0, "AUX flag without output");
            }
            4 => dev.mouse_event(
                i32::from(a as i8) * i32::from(c),
                i32::from(b as i8) * i32::from(c),
                i32::from(c as i8),
                a ^ b,
            ),
            _ => dev.key_event(u16::from(a), b & 1 == 0),
        }
    }
    // Whatever was queued drains in a bounded number of reads.
    let mut n = 0;
    while inb(&mut dev, 4) & 0x01 != 0 {
        inb(&mut dev, 0);
        n += 1;
        assert!(n < 1 << 16, "the output never drains");
    }
});
