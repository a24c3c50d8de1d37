//! Key names to key numbers ([`super::ps2_keys`]): QEMU's `sendkey` names
//! (`ret`, `ctrl`, `f1`, `a`, ...), X11 keysyms as VNC viewers send them
//! (US layout), and the characters of typed text.

/// Left Shift's key number.
pub const SHIFT: u16 = 0x2a;

/// `sendkey` names and their key numbers.
const NAMES: &[(&str, u16)] = &[
    ("esc", 0x01),
    ("minus", 0x0c),
    ("equal", 0x0d),
    ("backspace", 0x0e),
    ("tab", 0x0f),
    ("bracket_left", 0x1a),
    ("bracket_right", 0x1b),
    ("ret", 0x1c),
    ("ctrl", 0x1d),
    ("semicolon", 0x27),
    ("apostrophe", 0x28),
    ("grave_accent", 0x29),
    ("shift", 0x2a),
    ("backslash", 0x2b),
    ("comma", 0x33),
    ("dot", 0x34),
    ("slash", 0x35),
    ("shift_r", 0x36),
    ("asterisk", 0x37),
    ("kp_multiply", 0x37),
    ("alt", 0x38),
    ("spc", 0x39),
    ("caps_lock", 0x3a),
    ("num_lock", 0x45),
    ("scroll_lock", 0x46),
    ("kp_7", 0x47),
    ("kp_8", 0x48),
    ("kp_9", 0x49),
    ("kp_subtract", 0x4a),
    ("kp_4", 0x4b),
    ("kp_5", 0x4c),
    ("kp_6", 0x4d),
    ("kp_add", 0x4e),
    ("kp_1", 0x4f),
    ("kp_2", 0x50),
    ("kp_3", 0x51),
    ("kp_0", 0x52),
    ("kp_decimal", 0x53),
    ("sysrq", 0x54),
    ("less", 0x56),
    ("f11", 0x57),
    ("f12", 0x58),
    ("kp_enter", 0x9c),
    ("ctrl_r", 0x9d),
    ("kp_divide", 0xb5),
    ("print", 0xb7),
    ("alt_r", 0xb8),
    ("altgr", 0xb8),
    ("pause", 0xc6),
    ("home", 0xc7),
    ("up", 0xc8),
    ("pgup", 0xc9),
    ("left", 0xcb),
    ("right", 0xcd),
    ("end", 0xcf),
    ("down", 0xd0),
    ("pgdn", 0xd1),
    ("insert", 0xd2),
    ("delete", 0xd3),
    ("meta_l", 0xdb),
    ("meta_r", 0xdc),
    ("menu", 0xdd),
];

/// The keys of the US layout's printable characters, unshifted then
/// shifted, in rows (digits, top, home and bottom row letters).
const ROWS: &[(u16, &str, &str)] = &[
    (0x02, "1234567890-=", "!@#$%^&*()_+"),
    (0x10, "qwertyuiop[]", "QWERTYUIOP{}"),
    (0x1e, "asdfghjkl;'`", "ASDFGHJKL:\"~"),
    (0x2b, "\\zxcvbnm,./", "|ZXCVBNM<>?"),
];

/// The key of `c` on a US keyboard and whether it needs Shift.
pub fn char_key(c: char) -> Option<(u16, bool)> {
    match c {
        '\n' | '\r' => return Some((0x1c, false)),
        '\t' => return Some((0x0f, false)),
        ' ' => return Some((0x39, false)),
        '\x08' => return Some((0x0e, false)),
        '\x1b' => return Some((0x01, false)),
        _ => {}
    }
    for &(first, plain, shifted) in ROWS {
        if let Some(i) = plain.chars().position(|p| p == c) {
            return Some((first + i as u16, false));
        }
        if let Some(i) = shifted.chars().position(|p| p == c) {
            return Some((first + i as u16, true));
        }
    }
    None
}

/// The key number of one `sendkey` name: a name above, a letter, a digit,
/// `f1`..`f12`, or a raw number in hex (`0x1c`).
pub fn name_key(name: &str) -> Option<u16> {
    let lower = name.to_ascii_lowercase();
    if let Some(&(_, k)) = NAMES.iter().find(|(n, _)| *n == lower) {
        return Some(k);
    }
    let mut chars = lower.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        if c.is_ascii_alphanumeric() {
            return char_key(c).map(|(k, _)| k);
        }
    }
    if let Some(n) = lower.strip_prefix('f').and_then(|n| n.parse::<u16>().ok()) {
        return match n {
            1..=10 => Some(0x3a + n),
            11 | 12 => Some(0x4c + n),
            _ => None,
        };
    }
    if let Some(hex) = lower.strip_prefix("0x") {
        return u16::from_str_radix(hex, 16)
            .ok()
            .filter(|&k| super::ps2_keys::is_key(k));
    }
    None
}

/// A combination like `ctrl-alt-delete`: its keys in pressing order, or
/// the name that is not a key.
pub fn combo(spec: &str) -> Result<Vec<u16>, String> {
    spec.split('-')
        .map(|part| name_key(part).ok_or_else(|| part.to_string()))
        .collect()
}

/// X11 keysyms of special keys (and the keypad) to key numbers.
const KEYSYMS: &[(u32, u16)] = &[
    (0xff08, 0x0e), // BackSpace
    (0xff09, 0x0f), // Tab
    (0xfe20, 0x0f), // ISO_Left_Tab
    (0xff0d, 0x1c), // Return
    (0xff13, 0xc6), // Pause
    (0xff14, 0x46), // Scroll_Lock
    (0xff15, 0x54), // Sys_Req
    (0xff1b, 0x01), // Escape
    (0xff50, 0xc7), // Home
    (0xff51, 0xcb), // Left
    (0xff52, 0xc8), // Up
    (0xff53, 0xcd), // Right
    (0xff54, 0xd0), // Down
    (0xff55, 0xc9), // Prior
    (0xff56, 0xd1), // Next
    (0xff57, 0xcf), // End
    (0xff61, 0xb7), // Print
    (0xff63, 0xd2), // Insert
    (0xff67, 0xdd), // Menu
    (0xff7f, 0x45), // Num_Lock
    (0xff8d, 0x9c), // KP_Enter
    (0xff95, 0x47), // KP_Home
    (0xff96, 0x4b), // KP_Left
    (0xff97, 0x48), // KP_Up
    (0xff98, 0x4d), // KP_Right
    (0xff99, 0x50), // KP_Down
    (0xff9a, 0x49), // KP_Prior
    (0xff9b, 0x51), // KP_Next
    (0xff9c, 0x4f), // KP_End
    (0xff9d, 0x4c), // KP_Begin
    (0xff9e, 0x52), // KP_Insert
    (0xff9f, 0x53), // KP_Delete
    (0xffaa, 0x37), // KP_Multiply
    (0xffab, 0x4e), // KP_Add
    (0xffad, 0x4a), // KP_Subtract
    (0xffae, 0x53), // KP_Decimal
    (0xffaf, 0xb5), // KP_Divide
    (0xffe1, 0x2a), // Shift_L
    (0xffe2, 0x36), // Shift_R
    (0xffe3, 0x1d), // Control_L
    (0xffe4, 0x9d), // Control_R
    (0xffe5, 0x3a), // Caps_Lock
    (0xffe7, 0xdb), // Meta_L
    (0xffe8, 0xdc), // Meta_R
    (0xffe9, 0x38), // Alt_L
    (0xffea, 0xb8), // Alt_R
    (0xfe03, 0xb8), // ISO_Level3_Shift (AltGr)
    (0xffeb, 0xdb), // Super_L
    (0xffec, 0xdc), // Super_R
    (0xffff, 0xd3), // Delete
];

/// The key of an X11 keysym and whether the character needs Shift (for
/// viewers that send `A` without a Shift press of their own).
pub fn keysym_key(keysym: u32) -> Option<(u16, bool)> {
    if let Some(&(_, k)) = KEYSYMS.iter().find(|(s, _)| *s == keysym) {
        return Some((k, false));
    }
    match keysym {
        // Function keys F1..F12.
        0xffbe..=0xffc9 => name_key(&format!("f{}", keysym - 0xffbe + 1)).map(|k| (k, false)),
        // Keypad digits.
        0xffb0..=0xffb9 => name_key(&format!("kp_{}", keysym - 0xffb0)).map(|k| (k, false)),
        // Latin-1 printable characters are their own keysyms.
        0x20..=0x7e => char_key(char::from(keysym as u8)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_combos() {
        assert_eq!(name_key("ret"), Some(0x1c));
        assert_eq!(name_key("A"), Some(0x1e));
        assert_eq!(name_key("1"), Some(0x02));
        assert_eq!(name_key("f1"), Some(0x3b));
        assert_eq!(name_key("f10"), Some(0x44));
        assert_eq!(name_key("f12"), Some(0x58));
        assert_eq!(name_key("f13"), None);
        assert_eq!(name_key("0x1c"), Some(0x1c));
        assert_eq!(name_key("0x80"), None);
        assert_eq!(combo("ctrl-alt-delete"), Ok(vec![0x1d, 0x38, 0xd3]));
        assert_eq!(combo("ctrl-bogus"), Err("bogus".to_string()));
        assert_eq!(combo(""), Err(String::new()));
        for (name, key) in NAMES {
            assert!(super::super::ps2_keys::is_key(*key), "{name}");
        }
    }

    #[test]
    fn characters_and_keysyms() {
        assert_eq!(char_key('h'), Some((0x23, false)));
        assert_eq!(char_key('H'), Some((0x23, true)));
        assert_eq!(char_key('!'), Some((0x02, true)));
        assert_eq!(char_key('/'), Some((0x35, false)));
        assert_eq!(char_key('é'), None);
        assert_eq!(keysym_key(0xff0d), Some((0x1c, false)));
        assert_eq!(keysym_key(0xff52), Some((0xc8, false)));
        assert_eq!(keysym_key(u32::from(b'a')), Some((0x1e, false)));
        assert_eq!(keysym_key(0xffbe), Some((0x3b, false)));
        assert_eq!(keysym_key(0xffb5), Some((0x4c, false)));
        assert_eq!(keysym_key(0x1234), None);
        for c in (0x20u8..0x7f).map(char::from) {
            assert!(char_key(c).is_some(), "{c:?}");
        }
    }
}
