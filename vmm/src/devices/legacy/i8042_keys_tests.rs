//! The i8042's keyboard typing: scan code sets, translation, the
//! interface and scanning switches, buffer overflow, the command
//! sequences SeaBIOS and Linux send.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::*;
use crate::devices::bus::BusDevice;
use crate::devices::{CountingInterrupt, RecordedRequests};

fn device() -> (I8042Device, Arc<CountingInterrupt>) {
    let irq = Arc::new(CountingInterrupt::default());
    let dev = I8042Device::new(Arc::new(RecordedRequests::default())).with_interrupt(irq.clone());
    (dev, irq)
}

fn inb(dev: &mut I8042Device, off: u64) -> u8 {
    let mut b = [0u8];
    dev.read(off, &mut b);
    b[0]
}

/// Everything in the output buffer, read as a driver does (OBF first).
fn drain(dev: &mut I8042Device) -> Vec<u8> {
    let mut out = Vec::new();
    while inb(dev, COMMAND_OFFSET) & SR_OBF != 0 {
        out.push(inb(dev, DATA_OFFSET));
        assert!(out.len() < 1000);
    }
    out
}

fn kbd(dev: &mut I8042Device, bytes: &[u8]) -> Vec<u8> {
    for &b in bytes {
        dev.write(DATA_OFFSET, &[b]);
    }
    drain(dev)
}

fn ctr(dev: &mut I8042Device, value: u8) {
    dev.write(COMMAND_OFFSET, &[CMD_WRITE_CTR]);
    dev.write(DATA_OFFSET, &[value]);
}

#[test]
fn seabios_init_then_translated_keys() {
    let (mut dev, irq) = device();
    // SeaBIOS's ps2port: self test, keyboard test, reset, disable, set
    // the command byte (translate, keyboard interrupt), enable.
    dev.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
    assert_eq!(drain(&mut dev), [0x55]);
    dev.write(COMMAND_OFFSET, &[CMD_KBD_TEST]);
    assert_eq!(drain(&mut dev), [0x00]);
    assert_eq!(kbd(&mut dev, &[0xff]), [KBD_ACK, KBD_BAT_OK]);
    assert_eq!(kbd(&mut dev, &[0xf5]), [KBD_ACK]);
    ctr(
        &mut dev,
        CTR_KBD_INT | CTR_SYS | CTR_AUX_DISABLE | CTR_XLATE,
    );
    // While scanning is off, keys are dropped.
    dev.key_event(0x1e, true);
    assert!(drain(&mut dev).is_empty());
    assert_eq!(kbd(&mut dev, &[0xf4]), [KBD_ACK]);
    let before = irq.0.load(Ordering::SeqCst);
    // Shift-a, Up: set 2 made, set 1 delivered.
    for (key, down) in [(0x2a, true), (0x1e, true), (0x1e, false), (0x2a, false)] {
        dev.key_event(key, down);
    }
    dev.key_event(0xc8, true);
    dev.key_event(0xc8, false);
    assert_eq!(
        drain(&mut dev),
        [0x2a, 0x1e, 0x9e, 0xaa, 0xe0, 0x48, 0xe0, 0xc8]
    );
    // One interrupt per byte.
    assert_eq!(irq.0.load(Ordering::SeqCst) - before, 8);
}

#[test]
fn linux_untranslated_set2_and_set1() {
    let (mut dev, _) = device();
    // atkbd with i8042.direct: translation off, set 2 asked for.
    ctr(&mut dev, CTR_KBD_INT | CTR_SYS | CTR_AUX_DISABLE);
    assert_eq!(kbd(&mut dev, &[0xf2]), [KBD_ACK, 0xab, 0x83]);
    assert_eq!(kbd(&mut dev, &[0xf0, 0x02]), [KBD_ACK, KBD_ACK]);
    assert_eq!(kbd(&mut dev, &[0xf0, 0x00]), [KBD_ACK, KBD_ACK, 2]);
    assert_eq!(kbd(&mut dev, &[0xed, 0x00]), [KBD_ACK, KBD_ACK]);
    assert_eq!(kbd(&mut dev, &[0xf3, 0x00]), [KBD_ACK, KBD_ACK]);
    assert_eq!(kbd(&mut dev, &[0xee]), [KBD_ECHO]);
    assert_eq!(kbd(&mut dev, &[0xf4]), [KBD_ACK]);
    dev.key_event(0x1e, true);
    dev.key_event(0x1e, false);
    dev.key_event(0xd3, false);
    assert_eq!(drain(&mut dev), [0x1c, 0xf0, 0x1c, 0xe0, 0xf0, 0x71]);
    // Pause and Print Screen.
    dev.key_event(ps2_keys::KEY_PAUSE, true);
    dev.key_event(ps2_keys::KEY_PAUSE, false);
    assert_eq!(
        drain(&mut dev),
        [0xe1, 0x14, 0x77, 0xe1, 0xf0, 0x14, 0xf0, 0x77]
    );
    // Set 1 asked for: sent as it is.
    assert_eq!(kbd(&mut dev, &[0xf0, 0x01]), [KBD_ACK, KBD_ACK]);
    dev.key_event(ps2_keys::KEY_PRINT, true);
    dev.key_event(ps2_keys::KEY_PRINT, false);
    assert_eq!(
        drain(&mut dev),
        [0xe0, 0x2a, 0xe0, 0x37, 0xe0, 0xb7, 0xe0, 0xaa]
    );
    // A bad set is refused; reset goes back to set 2.
    assert_eq!(kbd(&mut dev, &[0xf0, 0x07]), [KBD_ACK, KBD_RESEND]);
    assert_eq!(kbd(&mut dev, &[0xf6]), [KBD_ACK]);
    assert_eq!(kbd(&mut dev, &[0xf0, 0x00]), [KBD_ACK, KBD_ACK, 2]);
}

#[test]
fn disabled_interface_holds_keys_and_no_irq_without_int_bit() {
    let (mut dev, irq) = device();
    dev.write(COMMAND_OFFSET, &[CMD_KBD_DISABLE]);
    dev.key_event(0x10, true);
    assert!(drain(&mut dev).is_empty());
    let before = irq.0.load(Ordering::SeqCst);
    ctr(&mut dev, CTR_SYS | CTR_XLATE);
    // The command byte write re-enabled nothing; enable the interface.
    dev.write(COMMAND_OFFSET, &[CMD_KBD_ENABLE]);
    assert_eq!(drain(&mut dev), [0x10]);
    assert_eq!(irq.0.load(Ordering::SeqCst), before);
}

#[test]
fn key_buffer_overflow_drops_whole_keys() {
    let (mut dev, _) = device();
    for _ in 0..1000 {
        dev.key_event(0xc8, true);
    }
    let got = drain(&mut dev);
    // Whole E0 48 pairs only, bounded.
    assert!(got.len() <= KEY_QUEUE_MAX + OUTPUT_QUEUE_MAX);
    assert_eq!(got.len() % 2, 0);
    assert!(got.chunks(2).all(|c| c == [0xe0, 0x48]));
    // Unknown key numbers send nothing.
    dev.key_event(0x7f, true);
    dev.key_event(u16::MAX, false);
    assert!(drain(&mut dev).is_empty());
}

#[test]
fn hostile_port_writes_do_not_panic() {
    let (mut dev, _) = device();
    // A cheap deterministic byte stream over every offset and value.
    let mut x: u32 = 0x1234_5678;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let off = u64::from(x % 6);
        let val = (x >> 8) as u8;
        // Keep the reset pulse out: it is only a request, but noisy.
        if off == COMMAND_OFFSET && val >= 0xf0 {
            continue;
        }
        if x & 0x100_0000 != 0 {
            dev.write(off, &[val]);
        } else {
            inb(&mut dev, off);
        }
        if x & 0xf00_0000 == 0 {
            dev.key_event((x >> 4) as u16 & 0xff, x & 1 == 0);
        }
    }
    assert!(dev.output.len() <= OUTPUT_QUEUE_MAX);
    assert!(dev.keys.len() <= KEY_QUEUE_MAX);
}
