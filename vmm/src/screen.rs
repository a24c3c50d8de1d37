//! Screenshots: the display's picture drawn from a snapshot of its
//! registers and its video memory, on the control thread (never a vCPU
//! thread: a vCPU only waits for the register snapshot, a few hundred
//! bytes copied under the device's lock), and encoded as PNG.

use std::time::Instant;

use kiln_api::control::ScreenInfo;

use crate::devices::display::render::{self, Frame, Mode};
use crate::devices::display::Vga;

/// The current picture of `vga`.
pub fn capture(vga: &std::sync::Mutex<Vga>) -> Frame {
    let (regs, vbe, vram) = {
        let vga = vga.lock().unwrap_or_else(|e| e.into_inner());
        let (regs, vbe) = vga.snapshot();
        (regs, vbe, vga.vram().clone())
    };
    let t = Instant::now();
    let frame = render::render(&regs, &vbe, &vram);
    log::debug!(
        "screen: rendered {}x{} in {} µs",
        frame.width,
        frame.height,
        t.elapsed().as_micros()
    );
    frame
}

/// What `vga` shows: its mode, and text mode's characters.
pub fn info(vga: &std::sync::Mutex<Vga>) -> ScreenInfo {
    let (regs, vbe, vram) = {
        let vga = vga.lock().unwrap_or_else(|e| e.into_inner());
        let (regs, vbe) = vga.snapshot();
        (regs, vbe, vga.vram().clone())
    };
    let (mode, width, height, bpp) = match render::mode(&regs, &vbe) {
        Mode::Blank => ("blank", 640, 480, None),
        Mode::Text {
            cols,
            rows,
            cell_width,
            cell_height,
        } => ("text", cols * cell_width, rows * cell_height, None),
        Mode::Vga { width, height, .. } => ("graphics", width, height, None),
        Mode::Vbe { width, height, bpp } => ("vbe", width, height, Some(bpp)),
    };
    ScreenInfo {
        mode: mode.to_string(),
        width: width.min(render::MAX_WIDTH) as u32,
        height: height.min(render::MAX_HEIGHT) as u32,
        bpp,
        text: render::text_rows(&regs, &vbe, &vram),
    }
}

/// Writes `png` to `path` through `PATH.tmp` and a rename, so that a
/// reader sees the whole picture or none (the last screenshot of a VM that
/// ends on a fault, from the main thread, whose filter allows `openat` and
/// `rename`).
pub fn keep(path: &str, png: &[u8]) -> std::io::Result<()> {
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, png)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// `frame` as a PNG (8-bit RGB, default compression).
pub fn png(frame: &Frame) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::with_capacity(frame.rgb.len() / 8 + 1024);
    let mut enc = png::Encoder::new(&mut out, frame.width as u32, frame.height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    let mut w = enc.write_header()?;
    w.write_image_data(&frame.rgb)?;
    w.finish()?;
    Ok(out)
}
