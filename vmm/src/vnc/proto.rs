//! The RFB 3.8 wire format (RFC 6143) as kiln-vmm's VNC server speaks it:
//! the handshake's messages, the client messages it parses (lengths
//! checked before anything is read), the pixel formats it converts to
//! (true colour, 8, 16 or 32 bits, any shifts and maxima) and the
//! rectangles it sends: raw, zlib (one deflate stream per client, as the
//! encoding requires) and the DesktopSize pseudo-rectangle.

use flate2::{Compress, Compression, FlushCompress};

pub const VERSION: &[u8; 12] = b"RFB 003.008\n";
pub const SECURITY_NONE: u8 = 1;

pub const ENC_RAW: i32 = 0;
pub const ENC_ZLIB: i32 = 6;
pub const ENC_DESKTOP_SIZE: i32 = -223;
/// QEMU's extended key event pseudo-encoding: a viewer that lists it gets
/// this rectangle back and may then send [`ClientMsg::ExtKey`].
pub const ENC_QEMU_EXT_KEY: i32 = -258;
/// QEMU's client message type, and its extended key event subtype.
pub const MSG_QEMU: u8 = 255;
pub const QEMU_EXT_KEY: u8 = 0;

/// The longest cut text a client may send (it is read and dropped).
pub const MAX_CUT_TEXT: usize = 1 << 20;

/// A client's pixel format (true colour only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelFormat {
    pub bpp: u8,
    pub depth: u8,
    pub big_endian: bool,
    pub red_max: u16,
    pub green_max: u16,
    pub blue_max: u16,
    pub red_shift: u8,
    pub green_shift: u8,
    pub blue_shift: u8,
}

impl PixelFormat {
    /// What the server offers: 32-bit little-endian 0x00RRGGBB.
    pub const SERVER: PixelFormat = PixelFormat {
        bpp: 32,
        depth: 24,
        big_endian: false,
        red_max: 255,
        green_max: 255,
        blue_max: 255,
        red_shift: 16,
        green_shift: 8,
        blue_shift: 0,
    };

    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = self.bpp;
        b[1] = self.depth;
        b[2] = u8::from(self.big_endian);
        b[3] = 1; // true colour
        b[4..6].copy_from_slice(&self.red_max.to_be_bytes());
        b[6..8].copy_from_slice(&self.green_max.to_be_bytes());
        b[8..10].copy_from_slice(&self.blue_max.to_be_bytes());
        b[10] = self.red_shift;
        b[11] = self.green_shift;
        b[12] = self.blue_shift;
        b
    }

    /// A format a client asked for; None if it is one the server does not
    /// convert to (colour maps, odd sizes, shifts past the pixel).
    pub fn parse(b: &[u8; 16]) -> Option<PixelFormat> {
        let pf = PixelFormat {
            bpp: b[0],
            depth: b[1],
            big_endian: b[2] != 0,
            red_max: u16::from_be_bytes([b[4], b[5]]),
            green_max: u16::from_be_bytes([b[6], b[7]]),
            blue_max: u16::from_be_bytes([b[8], b[9]]),
            red_shift: b[10],
            green_shift: b[11],
            blue_shift: b[12],
        };
        let fits = [pf.red_shift, pf.green_shift, pf.blue_shift]
            .iter()
            .all(|&s| u32::from(s) < u32::from(pf.bpp));
        (b[3] != 0 && matches!(pf.bpp, 8 | 16 | 32) && fits).then_some(pf)
    }

    pub fn bytes_per_pixel(self) -> usize {
        usize::from(self.bpp / 8)
    }

    /// Append the pixel of 8-bit `rgb` in this format.
    pub fn put(self, rgb: [u8; 3], out: &mut Vec<u8>) {
        let scale = |c: u8, max: u16| u32::from(c) * u32::from(max) / 255;
        let v = (scale(rgb[0], self.red_max) << self.red_shift)
            | (scale(rgb[1], self.green_max) << self.green_shift)
            | (scale(rgb[2], self.blue_max) << self.blue_shift);
        match (self.bpp, self.big_endian) {
            (8, _) => out.push(v as u8),
            (16, false) => out.extend_from_slice(&(v as u16).to_le_bytes()),
            (16, true) => out.extend_from_slice(&(v as u16).to_be_bytes()),
            (_, false) => out.extend_from_slice(&v.to_le_bytes()),
            (_, true) => out.extend_from_slice(&v.to_be_bytes()),
        }
    }
}

/// `ServerInit`: size, pixel format, name.
pub fn server_init(width: u16, height: u16, name: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(24 + name.len());
    m.extend_from_slice(&width.to_be_bytes());
    m.extend_from_slice(&height.to_be_bytes());
    m.extend_from_slice(&PixelFormat::SERVER.to_bytes());
    m.extend_from_slice(&(name.len() as u32).to_be_bytes());
    m.extend_from_slice(name.as_bytes());
    m
}

/// A message from a client, once the handshake is done.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientMsg {
    SetPixelFormat(Option<PixelFormat>),
    SetEncodings(Vec<i32>),
    UpdateRequest {
        incremental: bool,
        x: u16,
        y: u16,
        w: u16,
        h: u16,
    },
    Key {
        down: bool,
        keysym: u32,
    },
    /// QEMU's extended key event: `code` is the XT scan code (0x80 added
    /// for E0 keys), `keysym` what the viewer's layout made of it.
    ExtKey {
        down: bool,
        keysym: u32,
        code: u32,
    },
    Pointer {
        buttons: u8,
        x: u16,
        y: u16,
    },
    CutText,
}

/// Why a client is dropped.
#[derive(Debug, PartialEq, Eq)]
pub enum ProtoError {
    UnknownMessage(u8),
    CutTextTooLong(usize),
}

/// Parse one message from the front of `buf`: Ok(None) if more bytes are
/// needed, else the message and its length.
pub fn parse_client(buf: &[u8]) -> Result<Option<(ClientMsg, usize)>, ProtoError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let need = |n: usize| buf.len() >= n;
    let be16 = |at: usize| u16::from_be_bytes([buf[at], buf[at + 1]]);
    let be32 = |at: usize| u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    Ok(match kind {
        0 if need(20) => {
            let pf: [u8; 16] = buf[4..20].try_into().expect("16 bytes");
            Some((ClientMsg::SetPixelFormat(PixelFormat::parse(&pf)), 20))
        }
        2 if need(4) => {
            let n = usize::from(be16(2));
            if !need(4 + 4 * n) {
                return Ok(None);
            }
            let encs = (0..n).map(|i| be32(4 + 4 * i) as i32).collect();
            Some((ClientMsg::SetEncodings(encs), 4 + 4 * n))
        }
        3 if need(10) => Some((
            ClientMsg::UpdateRequest {
                incremental: buf[1] != 0,
                x: be16(2),
                y: be16(4),
                w: be16(6),
                h: be16(8),
            },
            10,
        )),
        4 if need(8) => Some((
            ClientMsg::Key {
                down: buf[1] != 0,
                keysym: be32(4),
            },
            8,
        )),
        5 if need(6) => Some((
            ClientMsg::Pointer {
                buttons: buf[1],
                x: be16(2),
                y: be16(4),
            },
            6,
        )),
        6 if need(8) => {
            let n = be32(4) as usize;
            if n > MAX_CUT_TEXT {
                return Err(ProtoError::CutTextTooLong(n));
            }
            if !need(8 + n) {
                return Ok(None);
            }
            Some((ClientMsg::CutText, 8 + n))
        }
        MSG_QEMU if need(2) && buf[1] != QEMU_EXT_KEY => {
            return Err(ProtoError::UnknownMessage(MSG_QEMU))
        }
        MSG_QEMU if need(12) => Some((
            ClientMsg::ExtKey {
                down: be16(2) != 0,
                keysym: be32(4),
                code: be32(8),
            },
            12,
        )),
        0 | 2..=6 | MSG_QEMU => None,
        k => return Err(ProtoError::UnknownMessage(k)),
    })
}

/// A rectangle header.
pub fn rect_header(out: &mut Vec<u8>, x: u16, y: u16, w: u16, h: u16, enc: i32) {
    for v in [x, y, w, h] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&enc.to_be_bytes());
}

/// `FramebufferUpdate` header for `rects` rectangles.
pub fn update_header(out: &mut Vec<u8>, rects: u16) {
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&rects.to_be_bytes());
}

/// A client's zlib encoder: one stream for the whole connection.
pub struct ZlibStream(Compress);

impl Default for ZlibStream {
    fn default() -> Self {
        ZlibStream(Compress::new(Compression::fast(), true))
    }
}

impl ZlibStream {
    /// Append `raw`'s zlib encoding (length, then the sync-flushed data).
    pub fn encode(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        let start = out.len();
        out.reserve(raw.len() / 2 + 64);
        let mut input = raw;
        loop {
            let before_in = self.0.total_in();
            if out.capacity() - out.len() < 64 {
                out.reserve(raw.len() / 4 + 1024);
            }
            let r = self.0.compress_vec(input, out, FlushCompress::Sync);
            let used = (self.0.total_in() - before_in) as usize;
            input = &input[used..];
            if r.is_err() {
                break;
            }
            // Done when all input is in and the flush left room to spare.
            if input.is_empty() && out.capacity() > out.len() {
                break;
            }
        }
        let len = (out.len() - start) as u32;
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
}
