//! The i8042 controller: commands, the keyboard's answers, bounds.

use super::*;
use crate::devices::bus::BusDevice;
use crate::devices::{CountingInterrupt, RecordedRequests};
use std::sync::atomic::Ordering;

fn device() -> (I8042Device, Arc<RecordedRequests>) {
    let req = Arc::new(RecordedRequests::default());
    (I8042Device::new(req.clone()), req)
}

fn inb(dev: &mut I8042Device, off: u64) -> u8 {
    let mut b = [0u8];
    dev.read(off, &mut b);
    b[0]
}

/// Like Linux's i8042_command: write the command, the parameter if any,
/// then read `answers` bytes, each after checking OBF.
fn command(dev: &mut I8042Device, cmd: u8, param: Option<u8>, answers: usize) -> Vec<u8> {
    dev.write(COMMAND_OFFSET, &[cmd]);
    if let Some(p) = param {
        dev.write(DATA_OFFSET, &[p]);
    }
    (0..answers)
        .map(|_| {
            assert_ne!(
                inb(dev, COMMAND_OFFSET) & SR_OBF,
                0,
                "no answer to {cmd:#x}"
            );
            inb(dev, DATA_OFFSET)
        })
        .collect()
}

#[test]
fn linux_probe_sequence() {
    let (mut dev, req) = device();
    // Flush: nothing to read, status is not all ones, keylock off.
    let st = inb(&mut dev, COMMAND_OFFSET);
    assert_eq!(st & SR_OBF, 0);
    assert_ne!(st & SR_KEYLOCK, 0);
    assert_eq!(command(&mut dev, CMD_SELF_TEST, None, 1), [0x55]);
    let ctr = command(&mut dev, CMD_READ_CTR, None, 1)[0];
    assert_eq!(ctr & CTR_XLATE, CTR_XLATE);
    let new = (ctr | CTR_KBD_DISABLE) & !CTR_KBD_INT;
    command(&mut dev, CMD_WRITE_CTR, Some(new), 0);
    assert_eq!(command(&mut dev, CMD_READ_CTR, None, 1), [new]);
    assert_eq!(command(&mut dev, CMD_KBD_TEST, None, 1), [0x00]);
    command(&mut dev, CMD_KBD_ENABLE, None, 0);
    assert_eq!(
        command(&mut dev, CMD_READ_CTR, None, 1)[0] & CTR_KBD_DISABLE,
        0
    );
    command(&mut dev, CMD_KBD_DISABLE, None, 0);
    assert_ne!(
        command(&mut dev, CMD_READ_CTR, None, 1)[0] & CTR_KBD_DISABLE,
        0
    );
    // AUX probe: the loop answers with the AUX flag, the test passes.
    dev.write(COMMAND_OFFSET, &[CMD_WRITE_AUX_OUTBUF]);
    dev.write(DATA_OFFSET, &[0x5a]);
    assert_eq!(
        inb(&mut dev, COMMAND_OFFSET) & (SR_OBF | SR_AUXDATA),
        SR_OBF | SR_AUXDATA
    );
    assert_eq!(inb(&mut dev, DATA_OFFSET), 0x5a);
    assert_eq!(command(&mut dev, CMD_AUX_TEST, None, 1), [AUX_TEST_OK]);
    assert_eq!(inb(&mut dev, COMMAND_OFFSET) & SR_OBF, 0);
    let out = command(&mut dev, CMD_READ_OUTPORT, None, 1)[0];
    assert_eq!(out & (OUTPORT_RESET | OUTPORT_A20), 0x03);
    assert!(req.0.lock().unwrap().is_empty());
}

#[test]
fn reset_pulse_requests_a_reset() {
    let (mut dev, req) = device();
    // What Linux's reboot=k does: wait for IBF clear, write 0xFE.
    assert_eq!(inb(&mut dev, COMMAND_OFFSET) & 0x02, 0);
    dev.write(COMMAND_OFFSET, &[0xfe]);
    assert_eq!(*req.0.lock().unwrap(), vec![VmRequest::Reset]);
    // Pulsing other lines (bit 0 set) does not reset.
    dev.write(COMMAND_OFFSET, &[0xff]);
    assert_eq!(req.0.lock().unwrap().len(), 1);
    // Clearing the reset bit of the output port does.
    command(&mut dev, CMD_WRITE_OUTPORT, Some(0x02), 0);
    assert_eq!(req.0.lock().unwrap().len(), 2);
}

#[test]
fn keyboard_answers_commands_with_interrupts() {
    let (dev, _) = device();
    let irq = Arc::new(CountingInterrupt::default());
    let mut dev = dev.with_interrupt(irq.clone());
    // Reset the keyboard: ACK, then BAT OK; an interrupt for each byte.
    dev.write(DATA_OFFSET, &[0xff]);
    assert_eq!(irq.0.load(Ordering::SeqCst), 1);
    assert_eq!(inb(&mut dev, DATA_OFFSET), KBD_ACK);
    assert_eq!(irq.0.load(Ordering::SeqCst), 2);
    assert_eq!(inb(&mut dev, DATA_OFFSET), KBD_BAT_OK);
    // Set LEDs takes a parameter: two ACKs.
    dev.write(DATA_OFFSET, &[0xed]);
    assert_eq!(inb(&mut dev, DATA_OFFSET), KBD_ACK);
    dev.write(DATA_OFFSET, &[0x07]);
    assert_eq!(inb(&mut dev, DATA_OFFSET), KBD_ACK);
    // Get scan code set.
    dev.write(DATA_OFFSET, &[0xf0]);
    dev.write(DATA_OFFSET, &[0x00]);
    assert_eq!(inb(&mut dev, DATA_OFFSET), KBD_ACK);
    assert_eq!(inb(&mut dev, DATA_OFFSET), KBD_ACK);
    assert_eq!(inb(&mut dev, DATA_OFFSET), 2);
    // With interrupts disabled in the CTR, none are raised.
    let before = irq.0.load(Ordering::SeqCst);
    dev.write(COMMAND_OFFSET, &[CMD_WRITE_CTR]);
    dev.write(DATA_OFFSET, &[CTR_SYS]);
    dev.write(DATA_OFFSET, &[0xf2]);
    assert_eq!(irq.0.load(Ordering::SeqCst), before);
    assert_eq!(inb(&mut dev, DATA_OFFSET), KBD_ACK);
}

#[test]
fn output_queue_is_bounded_and_odd_accesses_are_harmless() {
    let (mut dev, req) = device();
    for _ in 0..1000 {
        dev.write(DATA_OFFSET, &[KBD_ECHO]);
    }
    let mut n = 0;
    while inb(&mut dev, COMMAND_OFFSET) & SR_OBF != 0 {
        assert_eq!(inb(&mut dev, DATA_OFFSET), KBD_ECHO);
        n += 1;
        assert!(n <= OUTPUT_QUEUE_MAX);
    }
    assert_eq!(n, OUTPUT_QUEUE_MAX);
    // Port 0x61 never reports NMI sources.
    dev.write(PORT_B_OFFSET, &[0xff]);
    assert_eq!(inb(&mut dev, PORT_B_OFFSET), 0x0f);
    let mut buf = [0u8; 8];
    dev.read(2, &mut buf);
    assert_eq!(buf[..2], [0xff, 0xff]);
    dev.read(u64::MAX, &mut buf);
    dev.write(u64::MAX - 1, &[0xfe, 0xfe, 0xfe]);
    dev.write(3, &[0, 0, 0, 0]);
    assert!(req.0.lock().unwrap().is_empty());
}

/// Write `bytes` to the mouse (0xD4 each) and read what comes back,
/// checking every byte carries the AUX flag.
fn aux(dev: &mut I8042Device, bytes: &[u8]) -> Vec<u8> {
    for &b in bytes {
        command(dev, CMD_WRITE_AUX, Some(b), 0);
    }
    aux_bytes(dev)
}

fn aux_bytes(dev: &mut I8042Device) -> Vec<u8> {
    let mut out = Vec::new();
    while inb(dev, COMMAND_OFFSET) & SR_OBF != 0 {
        assert_ne!(inb(dev, COMMAND_OFFSET) & SR_AUXDATA, 0, "{out:02x?}");
        out.push(inb(dev, DATA_OFFSET));
    }
    out
}

#[test]
fn mouse_through_the_aux_port_with_irq_12() {
    let (dev, _) = device();
    let irq1 = Arc::new(CountingInterrupt::default());
    let irq12 = Arc::new(CountingInterrupt::default());
    let mut dev = dev
        .with_interrupt(irq1.clone())
        .with_aux_interrupt(irq12.clone());
    command(
        &mut dev,
        CMD_WRITE_CTR,
        Some(CTR_SYS | CTR_AUX_INT | CTR_XLATE),
        0,
    );
    command(&mut dev, CMD_AUX_ENABLE, None, 0);
    assert_eq!(aux(&mut dev, &[0xff]), [0xfa, 0xaa, 0x00]);
    assert_eq!(irq12.0.load(Ordering::SeqCst), 3);
    assert_eq!(
        aux(&mut dev, &[0xf3, 200, 0xf3, 100, 0xf3, 80, 0xf2]),
        [0xfa, 0xfa, 0xfa, 0xfa, 0xfa, 0xfa, 0xfa, 3]
    );
    assert_eq!(aux(&mut dev, &[0xf4]), [0xfa]);
    dev.mouse_event(5, -2, -1, 0x01);
    assert_eq!(aux_bytes(&mut dev), [0x29, 5, 0xfe, 0x0f]);
    // Keys and motion together take turns in the output buffer.
    dev.key_event(0x1e, true);
    dev.mouse_event(1, 0, 0, 0x01);
    let mut from = Vec::new();
    while inb(&mut dev, COMMAND_OFFSET) & SR_OBF != 0 {
        let is_aux = inb(&mut dev, COMMAND_OFFSET) & SR_AUXDATA != 0;
        from.push((is_aux, inb(&mut dev, DATA_OFFSET)));
    }
    assert_eq!(
        from,
        [(false, 0x1e), (true, 0x09), (true, 1), (true, 0), (true, 0)]
    );
    assert_eq!(irq1.0.load(Ordering::SeqCst), 0, "keyboard IRQ disabled");
    // AUX disabled: motion waits; enabled again, it comes.
    command(&mut dev, CMD_AUX_DISABLE, None, 0);
    dev.mouse_event(2, 0, 0, 0);
    assert_eq!(inb(&mut dev, COMMAND_OFFSET) & SR_OBF, 0);
    command(&mut dev, CMD_AUX_ENABLE, None, 0);
    assert_eq!(aux_bytes(&mut dev), [0x08, 2, 0, 0]);
}

#[test]
fn hostile_aux_sequences_do_not_panic() {
    let (mut dev, req) = device();
    let mut x: u32 = 12345;
    for _ in 0..20_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let b = (x >> 16) as u8;
        match x % 5 {
            0 => dev.write(
                COMMAND_OFFSET,
                &[[0xd4, 0xa7, 0xa8, 0xa9, 0x60][(b % 5) as usize]],
            ),
            1 | 2 => dev.write(DATA_OFFSET, &[b]),
            3 => dev.mouse_event(i32::from(b) * 1000 - 100_000, i32::MIN / 2, i32::from(b), b),
            _ => {
                inb(&mut dev, DATA_OFFSET);
            }
        }
        assert!(dev.output.len() <= OUTPUT_QUEUE_MAX);
    }
    req.0.lock().unwrap().retain(|r| *r != VmRequest::Reset);
    assert!(req.0.lock().unwrap().is_empty());
}
