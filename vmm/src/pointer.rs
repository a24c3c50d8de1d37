//! Pointing at the guest: a VNC viewer's pointer events become relative
//! motion and buttons on the PS/2 mouse (the i8042's AUX port: every
//! guest has a driver for it, Windows setup included) and absolute
//! positions on the virtio-input tablet, when the VM has one (the cursor
//! the guest draws then sits where the viewer's is, without the guest's
//! pointer acceleration in between).
//!
//! The tablet's axes run 0..=[`ABS_MAX`]: pixel `x` of a screen `width`
//! pixels wide is `x * 32767 / (width - 1)` ([`scale`]), so both edges
//! are reached, as QEMU's `usb-tablet` and virtio tablet scale.

use std::sync::{Arc, Mutex};

use crate::devices::legacy::i8042::I8042Device;
use crate::devices::legacy::ps2_mouse::{BUTTON_LEFT, BUTTON_MIDDLE, BUTTON_RIGHT};
use crate::devices::virtio::input::{self, Tablet, ABS_MAX};
use crate::keyboard::Keyboard;

// RFB PointerEvent button mask bits.
const VNC_LEFT: u8 = 1;
const VNC_MIDDLE: u8 = 2;
const VNC_RIGHT: u8 = 4;
const VNC_WHEEL_UP: u8 = 8;
const VNC_WHEEL_DOWN: u8 = 16;

/// The guest's pointing devices.
#[derive(Clone)]
pub struct Pointer {
    i8042: Arc<Mutex<I8042Device>>,
    tablet: Option<Tablet>,
}

/// Pixel `v` of an axis `len` pixels long on the tablet's 0..=ABS_MAX.
pub fn scale(v: u16, len: usize) -> u32 {
    let last = match len.checked_sub(1) {
        Some(l) if l > 0 => l as u64,
        _ => return 0,
    };
    let v = u64::from(v).min(last);
    (v * u64::from(ABS_MAX) / last) as u32
}

impl Pointer {
    /// The PS/2 mouse of `keyboard`'s i8042, and `tablet` if there is one.
    pub fn new(keyboard: &Keyboard, tablet: Option<Tablet>) -> Pointer {
        Pointer {
            i8042: keyboard.0.clone(),
            tablet,
        }
    }

    /// Whether there is a tablet.
    pub fn has_tablet(&self) -> bool {
        self.tablet.is_some()
    }

    fn mouse(&self, dx: i32, dy: i32, dz: i32, buttons: u8) {
        self.i8042
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mouse_event(dx, dy, dz, buttons);
    }
}

/// One viewer's pointer: where it was and what it held.
#[derive(Default)]
pub struct VncPointer {
    last: Option<(u16, u16)>,
    mask: u8,
}

impl VncPointer {
    /// RFB `PointerEvent` at (`x`, `y`) with button `mask`, on a screen of
    /// `size` (width, height) pixels. The mouse gets the motion since this
    /// viewer's last event (none for its first), y turned upwards; a
    /// press of button 4 or 5 is a wheel notch up or down.
    pub fn event(&mut self, p: &Pointer, x: u16, y: u16, mask: u8, size: (usize, usize)) {
        let pressed = mask & !self.mask;
        let wheel =
            i32::from(pressed & VNC_WHEEL_UP != 0) - i32::from(pressed & VNC_WHEEL_DOWN != 0);
        let mut buttons = 0;
        for (vnc, ps2) in [
            (VNC_LEFT, BUTTON_LEFT),
            (VNC_MIDDLE, BUTTON_MIDDLE),
            (VNC_RIGHT, BUTTON_RIGHT),
        ] {
            if mask & vnc != 0 {
                buttons |= ps2;
            }
        }
        let (dx, dy) = match self.last {
            Some((lx, ly)) => (i32::from(x) - i32::from(lx), i32::from(ly) - i32::from(y)),
            None => (0, 0),
        };
        self.last = Some((x, y));
        self.mask = mask;
        p.mouse(dx, dy, -wheel, buttons);
        if let Some(t) = &p.tablet {
            // The tablet's button bits are the PS/2 mouse's.
            debug_assert_eq!((input::LEFT, input::RIGHT, input::MIDDLE), (1, 2, 4));
            t.report(scale(x, size.0), scale(y, size.1), buttons, wheel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_reaches_both_edges() {
        assert_eq!(scale(0, 1024), 0);
        assert_eq!(scale(1023, 1024), ABS_MAX);
        assert_eq!(scale(5000, 1024), ABS_MAX);
        assert_eq!(scale(512, 1024), 512 * 32767 / 1023);
        assert_eq!(scale(0, 0), 0);
        assert_eq!(scale(7, 1), 0);
    }
}
