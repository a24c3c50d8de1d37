//! A small RFB 3.8 viewer for the tests of kiln-vmm's VNC server: the
//! handshake (security None), SetEncodings, update requests, and the
//! rectangles the server sends (raw, zlib on one inflate stream,
//! DesktopSize), drawn into an RGB picture. Pixels are asked for in
//! noVNC's format (32 bits, red in the low byte), so the server's
//! conversion is exercised too.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub const ENC_RAW: i32 = 0;
pub const ENC_ZLIB: i32 = 6;
pub const ENC_DESKTOP_SIZE: i32 = -223;
pub const ENC_QEMU_EXT_KEY: i32 = -258;

/// One connected viewer and the picture it has.
pub struct Viewer {
    stream: UnixStream,
    inflate: flate2::Decompress,
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
    pub name: String,
    /// DesktopSize rectangles received.
    pub resizes: usize,
    /// Bytes of the last update, and per encoding seen in it.
    pub last_update_bytes: usize,
    pub last_encodings: Vec<i32>,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Viewer {
    /// Connect, shake hands and announce `encodings`.
    pub fn connect(sock: &Path, encodings: &[i32]) -> io::Result<Viewer> {
        let mut stream = UnixStream::connect(sock)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut version = [0u8; 12];
        stream.read_exact(&mut version)?;
        assert_eq!(&version, b"RFB 003.008\n");
        stream.write_all(b"RFB 003.008\n")?;
        let mut n = [0u8; 1];
        stream.read_exact(&mut n)?;
        let mut types = vec![0u8; usize::from(n[0])];
        stream.read_exact(&mut types)?;
        assert_eq!(types, [1], "security types");
        stream.write_all(&[1])?;
        let mut result = [0u8; 4];
        stream.read_exact(&mut result)?;
        assert_eq!(be32(&result), 0, "security result");
        stream.write_all(&[1])?; // shared
        let mut init = [0u8; 24];
        stream.read_exact(&mut init)?;
        let mut name = vec![0u8; be32(&init[20..]) as usize];
        stream.read_exact(&mut name)?;
        let (width, height) = (usize::from(be16(&init)), usize::from(be16(&init[2..])));
        // noVNC's pixel format: 32 bpp, depth 24, red shift 0, blue 16.
        let mut spf = vec![0u8, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 0, 8, 16];
        spf.extend_from_slice(&[0, 0, 0]);
        stream.write_all(&spf)?;
        let mut set = vec![2u8, 0];
        set.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
        for e in encodings {
            set.extend_from_slice(&e.to_be_bytes());
        }
        stream.write_all(&set)?;
        Ok(Viewer {
            stream,
            inflate: flate2::Decompress::new(true),
            width,
            height,
            rgb: vec![0; width * height * 3],
            name: String::from_utf8_lossy(&name).into_owned(),
            resizes: 0,
            last_update_bytes: 0,
            last_encodings: Vec::new(),
        })
    }

    /// Ask for an update of the whole screen and draw the one that comes.
    pub fn update(&mut self, incremental: bool) -> io::Result<()> {
        self.request(incremental)?;
        self.read_update()
    }

    /// Ask for an update of the whole screen.
    pub fn request(&mut self, incremental: bool) -> io::Result<()> {
        let mut req = vec![3u8, u8::from(incremental), 0, 0, 0, 0];
        req.extend_from_slice(&(self.width as u16).to_be_bytes());
        req.extend_from_slice(&(self.height as u16).to_be_bytes());
        self.stream.write_all(&req)
    }

    /// Read one update and draw it.
    pub fn read_update(&mut self) -> io::Result<()> {
        let mut head = [0u8; 4];
        self.stream.read_exact(&mut head)?;
        assert_eq!(head[0], 0, "FramebufferUpdate");
        let mut bytes = 4;
        self.last_encodings.clear();
        for _ in 0..be16(&head[2..]) {
            let mut r = [0u8; 12];
            self.stream.read_exact(&mut r)?;
            bytes += 12;
            let (x, y) = (usize::from(be16(&r)), usize::from(be16(&r[2..])));
            let (w, h) = (usize::from(be16(&r[4..])), usize::from(be16(&r[6..])));
            let enc = be32(&r[8..]) as i32;
            self.last_encodings.push(enc);
            let pixels = match enc {
                ENC_QEMU_EXT_KEY => continue,
                ENC_DESKTOP_SIZE => {
                    self.width = w;
                    self.height = h;
                    self.rgb = vec![0; w * h * 3];
                    self.resizes += 1;
                    continue;
                }
                ENC_RAW => {
                    let mut p = vec![0u8; w * h * 4];
                    self.stream.read_exact(&mut p)?;
                    bytes += p.len();
                    p
                }
                ENC_ZLIB => {
                    let mut len = [0u8; 4];
                    self.stream.read_exact(&mut len)?;
                    let mut z = vec![0u8; be32(&len) as usize];
                    self.stream.read_exact(&mut z)?;
                    bytes += 4 + z.len();
                    let mut p = Vec::with_capacity(w * h * 4 + 64);
                    self.inflate
                        .decompress_vec(&z, &mut p, flate2::FlushDecompress::Sync)
                        .map_err(io::Error::other)?;
                    assert_eq!(p.len(), w * h * 4, "inflated rectangle");
                    p
                }
                e => panic!("unexpected encoding {e}"),
            };
            for row in 0..h {
                for col in 0..w {
                    let (px, py) = (x + col, y + row);
                    if px < self.width && py < self.height {
                        let s = (row * w + col) * 4;
                        let d = (py * self.width + px) * 3;
                        self.rgb[d..d + 3].copy_from_slice(&pixels[s..s + 3]);
                    }
                }
            }
        }
        self.last_update_bytes = bytes;
        Ok(())
    }

    /// QEMU's extended key event: XT `code` (0x80 added for E0 keys).
    pub fn ext_key(&mut self, code: u32, down: bool) -> io::Result<()> {
        let mut m = vec![255, 0];
        m.extend_from_slice(&u16::from(down).to_be_bytes());
        m.extend_from_slice(&0u32.to_be_bytes());
        m.extend_from_slice(&code.to_be_bytes());
        self.stream.write_all(&m)
    }

    /// RFB PointerEvent: at (`x`, `y`) with button `mask` (bit 0 left,
    /// 1 middle, 2 right, 3 and 4 the wheel up and down).
    pub fn pointer(&mut self, x: u16, y: u16, mask: u8) -> io::Result<()> {
        let mut m = vec![5, mask];
        m.extend_from_slice(&x.to_be_bytes());
        m.extend_from_slice(&y.to_be_bytes());
        self.stream.write_all(&m)
    }

    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let at = (y * self.width + x) * 3;
        [self.rgb[at], self.rgb[at + 1], self.rgb[at + 2]]
    }
}
