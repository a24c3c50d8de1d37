//! Typing on the guest's PS/2 keyboard: the control API's `keys` request
//! (names checked first, then each combo pressed, held and released) and
//! VNC key events (keysyms, or QEMU's extended key event's XT codes).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_api::control::KeysRequest;

use crate::devices::legacy::i8042::I8042Device;
use crate::devices::legacy::keynames::{self, SHIFT};

/// The guest's keyboard, shared with the vCPUs through the bus's lock.
#[derive(Clone)]
pub struct Keyboard(pub Arc<Mutex<I8042Device>>);

impl Keyboard {
    /// One key number down or up.
    pub fn key(&self, key: u16, down: bool) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .key_event(key, down);
    }

    /// Press the keys of `combo` in order, hold, release in reverse, wait.
    fn press(&self, combo: &[u16], hold: Duration) {
        for &k in combo {
            self.key(k, true);
        }
        std::thread::sleep(hold);
        for &k in combo.iter().rev() {
            self.key(k, false);
        }
        std::thread::sleep(hold);
    }

    /// Type `req`, every name checked before the first key goes down: the
    /// name that is not a key (or a character without one) is the error.
    pub fn type_request(&self, req: &KeysRequest) -> Result<(), String> {
        let mut combos = Vec::with_capacity(req.count());
        for spec in &req.keys {
            let combo = keynames::combo(spec).map_err(|bad| {
                format!("unknown key name {bad:?} in {spec:?} (QEMU sendkey names: ret, esc, spc, f1, ctrl, a, ...)")
            })?;
            combos.push(combo);
        }
        for c in req.text.as_deref().unwrap_or_default().chars() {
            let (key, shift) = keynames::char_key(c)
                .ok_or_else(|| format!("cannot type {c:?}: not on a US keyboard"))?;
            combos.push(if shift { vec![SHIFT, key] } else { vec![key] });
        }
        let hold = req.hold();
        for combo in &combos {
            self.press(combo, hold);
        }
        log::info!("typed {} keys", combos.len());
        Ok(())
    }
}

/// A VNC viewer's keyboard: its Shift state, so that a keysym needing
/// Shift from a viewer that did not press it gets one.
#[derive(Default)]
pub struct VncKeys {
    shift_down: u8,
    /// The key each keysym pressed, with the Shift added (released alike).
    down: Vec<(u32, u16, bool)>,
}

impl VncKeys {
    /// RFB `KeyEvent`.
    pub fn keysym(&mut self, kbd: &Keyboard, keysym: u32, down: bool) {
        if !down {
            if let Some(i) = self.down.iter().position(|d| d.0 == keysym) {
                let (_, key, added) = self.down.swap_remove(i);
                kbd.key(key, false);
                if added {
                    kbd.key(SHIFT, false);
                }
            }
            if matches!(keysym, 0xffe1 | 0xffe2) {
                self.shift_down = self.shift_down.saturating_sub(1);
            }
            return;
        }
        let Some((key, shift)) = keynames::keysym_key(keysym) else {
            log::debug!("vnc: no key for keysym {keysym:#x}");
            return;
        };
        if matches!(keysym, 0xffe1 | 0xffe2) {
            self.shift_down = self.shift_down.saturating_add(1);
        }
        let added = shift && self.shift_down == 0;
        if added {
            kbd.key(SHIFT, true);
        }
        kbd.key(key, true);
        if self.down.len() < 64 {
            self.down.push((keysym, key, added));
        }
    }

    /// QEMU's extended key event: the XT code (E0 keys with 0x80 set) is
    /// the key number; the keysym is only a fallback when it is 0.
    pub fn xt(&mut self, kbd: &Keyboard, keysym: u32, code: u32, down: bool) {
        if code == 0 {
            return self.keysym(kbd, keysym, down);
        }
        // Also the two-byte spelling, 0xE048 for Up.
        let code = match code {
            0xe000..=0xe07f => 0x80 | (code & 0x7f),
            c => c,
        };
        match u16::try_from(code) {
            Ok(key) if key <= 0xff => kbd.key(key, down),
            _ => log::debug!("vnc: extended key event with code {code:#x} ignored"),
        }
    }
}
