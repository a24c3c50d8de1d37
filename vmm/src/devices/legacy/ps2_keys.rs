//! PC keyboard scan codes: what a PS/2 keyboard sends for a key, in scan
//! code set 1 or 2, and the i8042's set 2 -> set 1 translation.
//!
//! A key is named by its *key number*, the XT (set 1) make code, with
//! 0x80 added for the keys whose code has an 0xE0 prefix (Up is E0 48, so
//! 0xC8): the numbering of QEMU's extended key event and of its `sendkey`.

/// Pause: its own sequence, no break code.
pub const KEY_PAUSE: u16 = 0xc6;
/// Print Screen (E0 37).
pub const KEY_PRINT: u16 = 0xb7;
/// The highest key number.
pub const KEY_MAX: u16 = 0xff;

/// Set 1 code -> set 2 code, for codes without the E0 prefix (0: none).
const SET2: [u8; 0x59] = [
    0x00, 0x76, 0x16, 0x1e, 0x26, 0x25, 0x2e, 0x36, // 00..07
    0x3d, 0x3e, 0x46, 0x45, 0x4e, 0x55, 0x66, 0x0d, // 08..0f
    0x15, 0x1d, 0x24, 0x2d, 0x2c, 0x35, 0x3c, 0x43, // 10..17
    0x44, 0x4d, 0x54, 0x5b, 0x5a, 0x14, 0x1c, 0x1b, // 18..1f
    0x23, 0x2b, 0x34, 0x33, 0x3b, 0x42, 0x4b, 0x4c, // 20..27
    0x52, 0x0e, 0x12, 0x5d, 0x1a, 0x22, 0x21, 0x2a, // 28..2f
    0x32, 0x31, 0x3a, 0x41, 0x49, 0x4a, 0x59, 0x7c, // 30..37
    0x11, 0x29, 0x58, 0x05, 0x06, 0x04, 0x0c, 0x03, // 38..3f
    0x0b, 0x83, 0x0a, 0x01, 0x09, 0x77, 0x7e, 0x6c, // 40..47
    0x75, 0x7d, 0x7b, 0x6b, 0x73, 0x74, 0x79, 0x69, // 48..4f
    0x72, 0x7a, 0x70, 0x71, 0x84, 0x00, 0x61, 0x78, // 50..57
    0x07, // 58
];

/// Set 1 -> set 2 for the E0-prefixed keys (the prefix stays).
const SET2_E0: [(u8, u8); 22] = [
    (0x1c, 0x5a), // keypad Enter
    (0x1d, 0x14), // right Ctrl
    (0x35, 0x4a), // keypad /
    (0x37, 0x7c), // Print Screen
    (0x38, 0x11), // right Alt
    (0x47, 0x6c), // Home
    (0x48, 0x75), // Up
    (0x49, 0x7d), // Page Up
    (0x4b, 0x6b), // Left
    (0x4d, 0x74), // Right
    (0x4f, 0x69), // End
    (0x50, 0x72), // Down
    (0x51, 0x7a), // Page Down
    (0x52, 0x70), // Insert
    (0x53, 0x71), // Delete
    (0x5b, 0x1f), // left Windows
    (0x5c, 0x27), // right Windows
    (0x5d, 0x2f), // Menu
    (0x5e, 0x37), // Power
    (0x5f, 0x3f), // Sleep
    (0x63, 0x5e), // Wake
    (0x46, 0x7e), // Ctrl-Break
];

/// The set 2 code of key number `key` (without prefix), if it has one.
fn set2_code(key: u16) -> Option<u8> {
    let code = (key & 0x7f) as u8;
    if key & 0x80 == 0 {
        SET2.get(usize::from(code)).copied().filter(|&c| c != 0)
    } else {
        SET2_E0
            .iter()
            .find(|(s1, _)| *s1 == code)
            .map(|&(_, s2)| s2)
    }
}

/// Whether `key` is a key a keyboard has.
pub fn is_key(key: u16) -> bool {
    key == KEY_PAUSE || set2_code(key).is_some()
}

/// The bytes the keyboard sends when `key` goes down or up in scan code
/// set `set` (3 is answered as 2). Empty for keys it does not have and
/// for Pause's release.
pub fn encode(key: u16, down: bool, set: u8) -> Vec<u8> {
    let set1 = set == 1;
    match (key, down, set1) {
        (KEY_PAUSE, false, _) => return Vec::new(),
        (KEY_PAUSE, true, true) => return vec![0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5],
        (KEY_PAUSE, true, false) => return vec![0xe1, 0x14, 0x77, 0xe1, 0xf0, 0x14, 0xf0, 0x77],
        // Print Screen also sends a fake left Shift.
        (KEY_PRINT, true, true) => return vec![0xe0, 0x2a, 0xe0, 0x37],
        (KEY_PRINT, false, true) => return vec![0xe0, 0xb7, 0xe0, 0xaa],
        (KEY_PRINT, true, false) => return vec![0xe0, 0x12, 0xe0, 0x7c],
        (KEY_PRINT, false, false) => return vec![0xe0, 0xf0, 0x7c, 0xe0, 0xf0, 0x12],
        _ => {}
    }
    let Some(code2) = set2_code(key) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(3);
    if key & 0x80 != 0 {
        out.push(0xe0);
    }
    if set1 {
        let code1 = (key & 0x7f) as u8;
        out.push(if down { code1 } else { code1 | 0x80 });
    } else {
        if !down {
            out.push(0xf0);
        }
        out.push(code2);
    }
    out
}

/// The i8042's translation of one set 2 byte to set 1 (what the AT's
/// controller did so that XT software kept working): prefixes pass, other
/// codes map back through the set tables, unknown ones pass unchanged.
pub fn translate(byte: u8) -> u8 {
    if matches!(byte, 0xe0 | 0xe1) {
        return byte;
    }
    if let Some(i) = SET2.iter().position(|&c| c == byte && c != 0) {
        return i as u8;
    }
    if let Some(&(s1, _)) = SET2_E0.iter().find(|(_, s2)| *s2 == byte) {
        return s1;
    }
    byte
}

/// The translator: set 2 bytes in, set 1 bytes out (an F0 break prefix
/// is swallowed and sets the high bit of the next code).
#[derive(Default)]
pub struct Translator {
    break_next: bool,
}

impl Translator {
    pub fn feed(&mut self, byte: u8) -> Option<u8> {
        if byte == 0xf0 {
            self.break_next = true;
            return None;
        }
        let out = translate(byte);
        if std::mem::take(&mut self.break_next) && !matches!(byte, 0xe0 | 0xe1) {
            Some(out | 0x80)
        } else {
            Some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translated(bytes: &[u8]) -> Vec<u8> {
        let mut t = Translator::default();
        bytes.iter().filter_map(|&b| t.feed(b)).collect()
    }

    #[test]
    fn set2_translates_back_to_set1_for_every_key() {
        for key in 0..=KEY_MAX {
            if !is_key(key) {
                continue;
            }
            for down in [true, false] {
                let s1 = encode(key, down, 1);
                let s2 = encode(key, down, 2);
                if key == KEY_PAUSE {
                    assert_eq!(translated(&s2), s1);
                    continue;
                }
                assert!(!s1.is_empty(), "{key:#x}");
                assert_eq!(translated(&s2), s1, "key {key:#x} down {down}");
            }
        }
    }

    #[test]
    fn known_codes() {
        // A: 1E / 1C; released: 9E / F0 1C.
        assert_eq!(encode(0x1e, true, 1), [0x1e]);
        assert_eq!(encode(0x1e, false, 2), [0xf0, 0x1c]);
        // Up: E0 48 / E0 75, released E0 C8 / E0 F0 75.
        assert_eq!(encode(0xc8, true, 1), [0xe0, 0x48]);
        assert_eq!(encode(0xc8, false, 1), [0xe0, 0xc8]);
        assert_eq!(encode(0xc8, false, 2), [0xe0, 0xf0, 0x75]);
        assert!(encode(KEY_PAUSE, false, 2).is_empty());
        assert!(encode(0x7f, true, 2).is_empty());
        assert!(!is_key(0x80));
    }
}
