//! The PS/2 mouse's state machine and packets, without a controller.

use super::*;

fn answers(m: &mut Ps2Mouse) -> Vec<u8> {
    std::iter::from_fn(|| m.next_byte()).collect()
}

fn cmd(m: &mut Ps2Mouse, bytes: &[u8]) -> Vec<u8> {
    for &b in bytes {
        m.write(b);
    }
    answers(m)
}

/// Reset, the IntelliMouse knock, enable: what Linux's psmouse does.
fn wheel_mouse() -> Ps2Mouse {
    let mut m = Ps2Mouse::default();
    assert_eq!(cmd(&mut m, &[0xff]), [ACK, BAT_OK, 0x00]);
    assert_eq!(cmd(&mut m, &[0xf2]), [ACK, 0x00]);
    assert_eq!(
        cmd(&mut m, &[0xf3, 200, 0xf3, 100, 0xf3, 80]),
        [ACK; 6].to_vec()
    );
    assert_eq!(cmd(&mut m, &[0xf2]), [ACK, ID_WHEEL]);
    assert_eq!(cmd(&mut m, &[0xf4]), [ACK]);
    m
}

#[test]
fn encoding_sign_and_overflow_bits() {
    let p = Packet {
        dx: 5,
        dy: -3,
        dz: 0,
        buttons: BUTTON_LEFT,
    };
    assert_eq!(encode(&p, false), [0x29, 5, 0xfd]);
    let p = Packet {
        dx: -300,
        dy: 400,
        dz: -1,
        buttons: BUTTON_RIGHT | BUTTON_MIDDLE,
    };
    // X: negative, overflowed (-256); Y: overflowed (255); wheel -1.
    assert_eq!(
        encode(&p, true),
        [0x08 | 0x06 | 0x10 | 0x40 | 0x80, 0x00, 0xff, 0x0f]
    );
    assert_eq!(encode(&Packet::default(), true), [0x08, 0, 0, 0]);
}

#[test]
fn reporting_only_when_enabled_in_stream_mode() {
    let mut m = Ps2Mouse::default();
    m.motion(10, 10, 0, 0);
    assert!(!m.has_byte());
    assert_eq!(cmd(&mut m, &[0xf4]), [ACK]);
    m.motion(10, -10, 0, BUTTON_LEFT);
    assert_eq!(answers(&mut m), [0x29, 10, 0xf6]);
    // Resend repeats the last packet.
    assert_eq!(cmd(&mut m, &[0xfe]), [0x29, 10, 0xf6]);
    assert_eq!(cmd(&mut m, &[0xf5]), [ACK]);
    m.motion(1, 1, 0, 0);
    assert!(!m.has_byte());
}

#[test]
fn wheel_packets_and_large_moves_split() {
    let mut m = wheel_mouse();
    m.motion(600, -20, 1, 0);
    let got = answers(&mut m);
    assert_eq!(got.len(), 12, "{got:02x?}");
    let packets: Vec<&[u8]> = got.chunks(4).collect();
    assert_eq!(packets[0], [0x28, 255, 0xec, 1]);
    assert_eq!(packets[1], [0x08, 255, 0, 0]);
    assert_eq!(packets[2], [0x08, 90, 0, 0]);
    // Motion with the same buttons merges; a click is its own packet.
    m.motion(3, 0, 0, 0);
    m.motion(4, 0, 0, 0);
    m.motion(0, 0, 0, BUTTON_LEFT);
    m.motion(0, 0, 0, 0);
    assert_eq!(
        answers(&mut m),
        [0x08, 7, 0, 0, 0x09, 0, 0, 0, 0x08, 0, 0, 0]
    );
    // Nothing changed: no packet.
    m.motion(0, 0, 0, 0);
    assert!(!m.has_byte());
}

#[test]
fn flood_is_bounded_and_keeps_the_last_buttons() {
    let mut m = wheel_mouse();
    for i in 0..10_000 {
        m.motion(1000, -1000, 5, (i % 2) as u8);
    }
    m.motion(0, 0, 0, BUTTON_RIGHT);
    let got = answers(&mut m);
    assert_eq!(got.len(), MAX_PACKETS * 4);
    // The last packet: saturated, overflow bits, the last buttons.
    let last = &got[got.len() - 4..];
    assert_eq!(last[0] & 0xc7, 0xc0 | BUTTON_RIGHT, "{last:02x?}");
}

#[test]
fn status_remote_mode_and_settings() {
    let mut m = Ps2Mouse::default();
    assert_eq!(cmd(&mut m, &[0xe9]), [ACK, 0x00, 2, 100]);
    assert_eq!(
        cmd(&mut m, &[0xe8, 3, 0xf3, 40, 0xe7, 0xf4]),
        [ACK, ACK, ACK, ACK, ACK, ACK]
    );
    assert_eq!(cmd(&mut m, &[0xe9]), [ACK, 0x30, 3, 40]);
    // Scaling 2:1 in stream mode.
    m.motion(4, 0, 0, 0);
    assert_eq!(answers(&mut m), [0x08, 6, 0]);
    // Bad parameters: resend, nothing changed.
    assert_eq!(cmd(&mut m, &[0xf3, 55]), [ACK, RESEND]);
    assert_eq!(cmd(&mut m, &[0xe8, 9]), [ACK, RESEND]);
    assert_eq!(cmd(&mut m, &[0xe6, 0xe9]), [ACK, ACK, 0x20, 3, 40]);
    // Remote mode: motion waits for read data.
    assert_eq!(cmd(&mut m, &[0xf0]), [ACK]);
    m.motion(300, 2, 0, BUTTON_MIDDLE);
    m.motion(1, 2, 0, BUTTON_MIDDLE);
    assert!(!m.has_byte());
    assert_eq!(cmd(&mut m, &[0xeb]), [ACK, 0x4c, 0xff, 4]);
    assert_eq!(cmd(&mut m, &[0xeb]), [ACK, 0x0c, 0, 0]);
    assert_eq!(cmd(&mut m, &[0xea]), [ACK]);
    // Set defaults turns reporting off.
    assert_eq!(cmd(&mut m, &[0xf6, 0xe9]), [ACK, ACK, 0x02, 2, 100]);
    // Wrap mode echoes until reset wrap mode.
    assert_eq!(
        cmd(&mut m, &[0xee, 0x12, 0xf4, 0xec]),
        [ACK, 0x12, 0xf4, ACK]
    );
    assert_eq!(cmd(&mut m, &[0x00]), [RESEND]);
    // Reset forgets the wheel.
    let mut m = wheel_mouse();
    assert_eq!(cmd(&mut m, &[0xff, 0xf2]), [ACK, BAT_OK, 0, ACK, 0]);
}

#[test]
fn answers_are_bounded() {
    let mut m = Ps2Mouse::default();
    for _ in 0..1000 {
        m.write(0xe9);
    }
    assert!(answers(&mut m).len() <= MAX_BYTES);
}
