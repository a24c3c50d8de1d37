//! The VNC server (`--vnc PATH`): RFB 3.8 on a unix socket, any number of
//! viewers, no authentication (the socket file's mode is the access
//! control, as QEMU's `-vnc unix:`). One thread, under its own seccomp
//! filter ([`crate::seccomp::ThreadKind::Vnc`]), never a vCPU's:
//!
//! - every [`TICK`] it accepts viewers, reads what they sent (`proto.rs`
//!   parses it; key events, keysyms or QEMU's extended key events with
//!   XT codes, go to the PS/2 keyboard through [`crate::keyboard`],
//!   pointer events to the PS/2 mouse and the tablet through
//!   [`crate::pointer`]), and looks for a change: the VGA's write
//!   counter (registers, the legacy window) and KVM's dirty log of the
//!   framebuffer slot. An unchanging screen costs one ioctl and one lock
//!   a tick, and no rendering;
//! - on a change it renders the picture once (`screen::capture`), finds
//!   the [`TILE`]-square tiles that differ from the last picture, and adds
//!   them to each viewer's dirty set;
//! - a viewer with an update request pending gets its dirty tiles (runs of
//!   tiles in a row as one rectangle), zlib-encoded if it asked for zlib,
//!   else raw; a new mode's size goes first as a DesktopSize rectangle.
//!
//! A viewer that sends garbage, asks for a colour-map pixel format or does
//! not take its updates within [`WRITE_TIMEOUT`] is dropped.

pub mod proto;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use proto::{ClientMsg, PixelFormat, ZlibStream};

use crate::device_manager::display::Display;
use crate::devices::display::render::Frame;
use crate::keyboard::{Keyboard, VncKeys};
use crate::pointer::{Pointer, VncPointer};

/// How often the server looks for viewers' messages and screen changes.
pub const TICK: Duration = Duration::from_millis(30);
/// Tiles compared between pictures.
pub const TILE: usize = 64;
/// How long a viewer may take to accept what is written to it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Unparsed bytes a viewer may have pending (a cut text is the largest).
const MAX_INPUT: usize = proto::MAX_CUT_TEXT + 64;

/// Start the server thread on `listener` (non-blocking) for `display`.
pub fn spawn(
    listener: UnixListener,
    display: Display,
    keyboard: Keyboard,
    pointer: Pointer,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new().name("vnc".into()).spawn(move || {
        if let Err(e) = crate::seccomp::apply(crate::seccomp::ThreadKind::Vnc) {
            log::error!("vnc: {}; no VNC server", e.report());
            return;
        }
        Server {
            listener,
            display,
            keyboard,
            pointer,
            clients: Vec::new(),
            frame: None,
            generation: 0,
        }
        .run()
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Version,
    Security,
    Init,
    Normal,
}

struct Client {
    stream: UnixStream,
    phase: Phase,
    minor: u8,
    input: Vec<u8>,
    pf: PixelFormat,
    zlib: Option<ZlibStream>,
    desktop_size: bool,
    /// An update request is pending (and whether it is incremental).
    request: Option<bool>,
    full: bool,
    dirty: Vec<bool>,
    /// The size the viewer knows.
    size: (usize, usize),
    dead: bool,
    /// The viewer hung up: dead once its last messages are carried out.
    closed: bool,
    keyboard: Keyboard,
    keys: VncKeys,
    pointer: Pointer,
    pointer_state: VncPointer,
}

struct Server {
    listener: UnixListener,
    display: Display,
    keyboard: Keyboard,
    pointer: Pointer,
    clients: Vec<Client>,
    frame: Option<Frame>,
    generation: u64,
}

fn tiles(frame: &Frame) -> (usize, usize) {
    (frame.width.div_ceil(TILE), frame.height.div_ceil(TILE))
}

/// The tiles where `new` differs from `old` (all, if the sizes differ).
pub fn changed_tiles(old: Option<&Frame>, new: &Frame) -> Vec<bool> {
    let (tw, th) = tiles(new);
    let Some(old) = old.filter(|o| (o.width, o.height) == (new.width, new.height)) else {
        return vec![true; tw * th];
    };
    let mut out = vec![false; tw * th];
    for y in 0..new.height {
        let row = y * new.width * 3;
        for tx in 0..tw {
            let t = (y / TILE) * tw + tx;
            if out[t] {
                continue;
            }
            let a = row + tx * TILE * 3;
            let b = row + ((tx + 1) * TILE).min(new.width) * 3;
            out[t] = old.rgb[a..b] != new.rgb[a..b];
        }
    }
    out
}

impl Server {
    fn run(mut self) {
        loop {
            self.accept();
            for c in &mut self.clients {
                c.read_input();
            }
            // Nobody watching: nothing to look at (a viewer's ServerInit
            // comes after a fresh look).
            if !self.clients.is_empty() || self.frame.is_none() {
                self.refresh();
            }
            let frame = self.frame.as_ref().expect("refreshed");
            for c in &mut self.clients {
                c.process(frame);
                c.dead |= c.closed;
                if !c.dead && c.phase == Phase::Normal {
                    c.send_update(frame);
                }
            }
            self.clients.retain(|c| !c.dead);
            thread::sleep(TICK);
        }
    }

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if let Err(e) = stream.set_nonblocking(true) {
                log::warn!("vnc: viewer socket: {e}");
                continue;
            }
            let mut c = Client {
                stream,
                phase: Phase::Version,
                minor: 8,
                input: Vec::new(),
                pf: PixelFormat::SERVER,
                zlib: None,
                desktop_size: false,
                request: None,
                full: true,
                dirty: Vec::new(),
                size: (0, 0),
                dead: false,
                closed: false,
                keyboard: self.keyboard.clone(),
                keys: VncKeys::default(),
                pointer: self.pointer.clone(),
                pointer_state: VncPointer::default(),
            };
            c.send(proto::VERSION);
            log::info!("vnc: viewer connected ({} now)", self.clients.len() + 1);
            self.clients.push(c);
        }
    }

    /// Render again if the guest changed something since the last look.
    fn refresh(&mut self) {
        let generation = self
            .display
            .vga
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .generation();
        let written = self.display.framebuffer_written();
        if self.frame.is_some() && generation == self.generation && !written {
            return;
        }
        let t = Instant::now();
        let frame = crate::screen::capture(&self.display.vga);
        let changed = changed_tiles(self.frame.as_ref(), &frame);
        if changed.iter().any(|&c| c) {
            log::debug!(
                "vnc: {} of {} tiles changed ({} µs)",
                changed.iter().filter(|&&c| c).count(),
                changed.len(),
                t.elapsed().as_micros()
            );
        }
        for c in &mut self.clients {
            if c.dirty.len() != changed.len() {
                c.dirty = vec![true; changed.len()];
            }
            for (d, n) in c.dirty.iter_mut().zip(&changed) {
                *d |= *n;
            }
        }
        self.frame = Some(frame);
        self.generation = generation;
    }
}

impl Client {
    /// Write all of `data`, waiting at most [`WRITE_TIMEOUT`].
    fn send(&mut self, mut data: &[u8]) {
        // A viewer that hung up gets nothing (its last messages are still
        // carried out).
        if self.closed {
            return;
        }
        let deadline = Instant::now() + WRITE_TIMEOUT;
        while !data.is_empty() && !self.dead {
            match self.stream.write(data) {
                Ok(0) => self.dead = true,
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(1));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::info!("vnc: dropping a viewer: {e}");
                    self.dead = true;
                }
            }
        }
    }

    fn read_input(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                // What it sent before it hung up is still carried out
                // (a `vncdo key a` sends its key and closes at once).
                Ok(0) => {
                    log::info!("vnc: viewer disconnected");
                    self.closed = true;
                    return;
                }
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    if self.input.len() > MAX_INPUT {
                        self.dead = true;
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
    }

    /// Carry out what the viewer sent.
    fn process(&mut self, frame: &Frame) {
        while !self.dead {
            let used = match self.phase {
                Phase::Version => self.version(),
                Phase::Security => self.security(),
                Phase::Init => self.init(frame),
                Phase::Normal => self.message(),
            };
            match used {
                Some(n) => {
                    self.input.drain(..n);
                }
                None => return,
            }
        }
    }

    fn version(&mut self) -> Option<usize> {
        let v = self.input.get(..12)?;
        self.minor = match v {
            b"RFB 003.007\n" => 7,
            b"RFB 003.008\n" => 8,
            v if v.starts_with(b"RFB 003.") => 3,
            _ => {
                self.dead = true;
                return None;
            }
        };
        if self.minor == 3 {
            self.send(&u32::from(proto::SECURITY_NONE).to_be_bytes());
            self.phase = Phase::Init;
        } else {
            self.send(&[1, proto::SECURITY_NONE]);
            self.phase = Phase::Security;
        }
        Some(12)
    }

    fn security(&mut self) -> Option<usize> {
        let &t = self.input.first()?;
        if t != proto::SECURITY_NONE {
            if self.minor == 8 {
                let reason = b"only security type None (1) is offered";
                let mut m = 1u32.to_be_bytes().to_vec();
                m.extend_from_slice(&(reason.len() as u32).to_be_bytes());
                m.extend_from_slice(reason);
                self.send(&m);
            }
            self.dead = true;
            return None;
        }
        if self.minor == 8 {
            self.send(&0u32.to_be_bytes());
        }
        self.phase = Phase::Init;
        Some(1)
    }

    fn init(&mut self, frame: &Frame) -> Option<usize> {
        self.input.first()?;
        self.size = (frame.width, frame.height);
        let msg = proto::server_init(frame.width as u16, frame.height as u16, "kiln-vmm");
        self.send(&msg);
        self.phase = Phase::Normal;
        self.full = true;
        Some(1)
    }

    fn message(&mut self) -> Option<usize> {
        let (msg, used) = match proto::parse_client(&self.input) {
            Ok(m) => m?,
            Err(e) => {
                log::info!("vnc: dropping a viewer: {e:?}");
                self.dead = true;
                return None;
            }
        };
        match msg {
            ClientMsg::SetPixelFormat(Some(pf)) => {
                self.pf = pf;
                self.full = true;
            }
            ClientMsg::SetPixelFormat(None) => {
                log::info!("vnc: dropping a viewer that wants a colour-map pixel format");
                self.dead = true;
            }
            ClientMsg::SetEncodings(encs) => {
                self.zlib = encs.contains(&proto::ENC_ZLIB).then(ZlibStream::default);
                self.desktop_size = encs.contains(&proto::ENC_DESKTOP_SIZE);
                if encs.contains(&proto::ENC_QEMU_EXT_KEY) {
                    // As QEMU: at once, one pseudo-rectangle.
                    let mut m = Vec::with_capacity(16);
                    proto::update_header(&mut m, 1);
                    let (w, h) = (self.size.0 as u16, self.size.1 as u16);
                    proto::rect_header(&mut m, 0, 0, w, h, proto::ENC_QEMU_EXT_KEY);
                    self.send(&m);
                }
            }
            ClientMsg::UpdateRequest { incremental, .. } => {
                self.request = Some(incremental);
                if !incremental {
                    self.full = true;
                }
            }
            ClientMsg::Key { down, keysym } => self.keys.keysym(&self.keyboard, keysym, down),
            ClientMsg::ExtKey { down, keysym, code } => {
                self.keys.xt(&self.keyboard, keysym, code, down)
            }
            ClientMsg::Pointer { buttons, x, y } => {
                self.pointer_state
                    .event(&self.pointer, x, y, buttons, self.size)
            }
            ClientMsg::CutText => {}
        }
        Some(used)
    }

    /// Answer a pending request with what changed (nothing: keep waiting).
    fn send_update(&mut self, frame: &Frame) {
        if self.request.is_none() {
            return;
        }
        let resized = self.size != (frame.width, frame.height);
        if resized && self.desktop_size {
            self.size = (frame.width, frame.height);
            self.full = true;
        }
        let (w, h) = self.size;
        let mut rects = Vec::new();
        // A viewer that cannot resize keeps its size: it gets what fits
        // (the size change made every tile dirty once).
        if self.full || self.dirty.len() != tiles(frame).0 * tiles(frame).1 {
            rects.push((0, 0, w, h));
        } else {
            let (tw, th) = tiles(frame);
            for ty in 0..th {
                let mut tx = 0;
                while tx < tw {
                    if !self.dirty[ty * tw + tx] {
                        tx += 1;
                        continue;
                    }
                    let start = tx;
                    while tx < tw && self.dirty[ty * tw + tx] {
                        tx += 1;
                    }
                    let (x, y) = (start * TILE, ty * TILE);
                    if x < w && y < h {
                        rects.push((x, y, (tx * TILE).min(w) - x, (y + TILE).min(h) - y));
                    }
                }
            }
        }
        if rects.is_empty() {
            return;
        }
        let t = Instant::now();
        let mut out = Vec::new();
        let count = rects.len() + usize::from(resized && self.desktop_size);
        proto::update_header(&mut out, count as u16);
        if resized && self.desktop_size {
            proto::rect_header(&mut out, 0, 0, w as u16, h as u16, proto::ENC_DESKTOP_SIZE);
        }
        let mut raw = Vec::new();
        for (x, y, rw, rh) in rects {
            raw.clear();
            for py in y..y + rh {
                for px in x..x + rw {
                    self.pf.put(frame.pixel(px, py), &mut raw);
                }
            }
            let enc = if self.zlib.is_some() {
                proto::ENC_ZLIB
            } else {
                proto::ENC_RAW
            };
            proto::rect_header(&mut out, x as u16, y as u16, rw as u16, rh as u16, enc);
            match &mut self.zlib {
                Some(z) => z.encode(&raw, &mut out),
                None => out.extend_from_slice(&raw),
            }
        }
        self.send(&out);
        log::debug!(
            "vnc: update of {count} rectangles, {} bytes ({}) in {} µs",
            out.len(),
            if self.zlib.is_some() { "zlib" } else { "raw" },
            t.elapsed().as_micros()
        );
        self.request = None;
        self.full = false;
        self.dirty.iter_mut().for_each(|d| *d = false);
    }
}

#[cfg(test)]
mod tests;
