//! The RFB wire format and change detection without sockets: message
//! parsing (partial, complete, hostile), pixel formats, zlib rectangles
//! that inflate back to the raw pixels, and changed tiles.

use std::io::Read;

use super::proto::*;
use super::*;

#[test]
fn client_messages_parse_whole_or_wait_for_more() {
    let req = [3u8, 1, 0, 0, 0, 0, 4, 0, 3, 0];
    assert_eq!(parse_client(&req[..9]), Ok(None));
    assert_eq!(
        parse_client(&req),
        Ok(Some((
            ClientMsg::UpdateRequest {
                incremental: true,
                x: 0,
                y: 0,
                w: 1024,
                h: 768
            },
            10
        )))
    );
    let mut encs = vec![2u8, 0, 0, 3];
    for e in [ENC_ZLIB, ENC_RAW, ENC_DESKTOP_SIZE] {
        encs.extend_from_slice(&e.to_be_bytes());
    }
    assert_eq!(parse_client(&encs[..15]), Ok(None));
    assert_eq!(
        parse_client(&encs),
        Ok(Some((ClientMsg::SetEncodings(vec![6, 0, -223]), 16)))
    );
    let key = [4u8, 1, 0, 0, 0, 0, 0xff, 0x0d];
    assert_eq!(
        parse_client(&key),
        Ok(Some((
            ClientMsg::Key {
                down: true,
                keysym: 0xff0d
            },
            8
        )))
    );
    assert_eq!(parse_client(&[7]), Err(ProtoError::UnknownMessage(7)));
    // QEMU's extended key event: Up (E0 48 as 0xC8), pressed.
    let ext = [255, 0, 0, 1, 0, 0, 0xff, 0x52, 0, 0, 0, 0xc8];
    assert_eq!(parse_client(&ext[..11]), Ok(None));
    assert_eq!(
        parse_client(&ext),
        Ok(Some((
            ClientMsg::ExtKey {
                down: true,
                keysym: 0xff52,
                code: 0xc8
            },
            12
        )))
    );
    assert_eq!(
        parse_client(&[255, 1, 0]),
        Err(ProtoError::UnknownMessage(255))
    );
    assert_eq!(
        parse_client(&[6, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
        Err(ProtoError::CutTextTooLong(u32::MAX as usize))
    );
    assert_eq!(parse_client(&[6, 0, 0, 0, 0, 0, 0, 2, b'h']), Ok(None));
    // A colour-map format is refused, a true-colour one kept.
    let mut spf = vec![0u8, 0, 0, 0];
    let mut pf = PixelFormat::SERVER.to_bytes();
    spf.extend_from_slice(&pf);
    assert_eq!(
        parse_client(&spf),
        Ok(Some((
            ClientMsg::SetPixelFormat(Some(PixelFormat::SERVER)),
            20
        )))
    );
    pf[3] = 0;
    spf[4..20].copy_from_slice(&pf);
    assert_eq!(
        parse_client(&spf),
        Ok(Some((ClientMsg::SetPixelFormat(None), 20)))
    );
}

#[test]
fn pixels_convert_to_the_viewers_format() {
    let mut out = Vec::new();
    PixelFormat::SERVER.put([0x11, 0x22, 0x33], &mut out);
    assert_eq!(out, [0x33, 0x22, 0x11, 0]);
    // noVNC's format: red in the low byte.
    let novnc = PixelFormat {
        red_shift: 0,
        blue_shift: 16,
        ..PixelFormat::SERVER
    };
    out.clear();
    novnc.put([0x11, 0x22, 0x33], &mut out);
    assert_eq!(out, [0x11, 0x22, 0x33, 0]);
    let rgb565 = PixelFormat {
        bpp: 16,
        depth: 16,
        red_max: 31,
        green_max: 63,
        blue_max: 31,
        red_shift: 11,
        green_shift: 5,
        blue_shift: 0,
        ..PixelFormat::SERVER
    };
    out.clear();
    rgb565.put([0xff, 0, 0xff], &mut out);
    assert_eq!(out, 0xf81fu16.to_le_bytes());
}

#[test]
fn zlib_rectangles_inflate_to_the_raw_pixels_on_one_stream() {
    let mut z = ZlibStream::default();
    let mut inflate = flate2::Decompress::new(true);
    for round in 0..3u8 {
        let raw: Vec<u8> = (0..1024 * 64 * 4).map(|i| (i / 7) as u8 ^ round).collect();
        let mut out = Vec::new();
        z.encode(&raw, &mut out);
        let len = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(len, out.len() - 4);
        assert!(len < raw.len() / 4, "compresses: {len}");
        let mut back = Vec::with_capacity(raw.len() + 64);
        inflate
            .decompress_vec(&out[4..], &mut back, flate2::FlushDecompress::Sync)
            .unwrap();
        assert_eq!(back, raw, "round {round}");
    }
    // The same data through a plain zlib reader, as a viewer reads it.
    let mut z = ZlibStream::default();
    let mut out = Vec::new();
    z.encode(b"kiln", &mut out);
    let mut r = flate2::read::ZlibDecoder::new(&out[4..]);
    let mut s = [0u8; 4];
    r.read_exact(&mut s).unwrap();
    assert_eq!(&s, b"kiln");
}

fn frame(w: usize, h: usize) -> Frame {
    Frame {
        width: w,
        height: h,
        rgb: vec![0; w * h * 3],
    }
}

#[test]
fn only_the_tiles_that_changed_are_dirty() {
    let a = frame(200, 100);
    let mut b = a.clone();
    assert_eq!(changed_tiles(None, &a), vec![true; 8]);
    assert_eq!(changed_tiles(Some(&a), &b), vec![false; 8]);
    // A pixel in the last, partial tile of the second row.
    let at = (70 * 200 + 199) * 3;
    b.rgb[at] = 1;
    let mut want = vec![false; 8];
    want[7] = true;
    assert_eq!(changed_tiles(Some(&a), &b), want);
    assert_eq!(changed_tiles(Some(&frame(100, 100)), &b), vec![true; 8]);
}
