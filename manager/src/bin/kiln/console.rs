//! `kiln console`: the terminal in raw mode, its bytes to the server's
//! console and the console's bytes to the terminal; Ctrl-] detaches. And
//! `kiln server screenshot`: the display's PNG to stdout.

use std::io::{Read, Write};
use std::path::Path;

/// Ctrl-]: detach.
const DETACH: u8 = 0x1d;

/// The terminal's settings, restored on drop.
struct RawTerminal(libc::termios);

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        // SAFETY: isatty on fd 0.
        if unsafe { libc::isatty(0) } != 1 {
            return None;
        }
        // SAFETY: termios is plain data; tcgetattr fills it.
        let mut old: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 and a valid out pointer.
        if unsafe { libc::tcgetattr(0, &mut old) } != 0 {
            return None;
        }
        let mut raw = old;
        // SAFETY: cfmakeraw edits the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: fd 0 and a valid termios.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &raw) };
        Some(RawTerminal(old))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: fd 0 and the termios saved by `enter`.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.0) };
    }
}

pub fn attach(socket: &Path, id: &str) -> Result<(), Box<dyn std::error::Error>> {
    let stream = kiln_api::client::attach_console(socket, id)?;
    let raw = RawTerminal::enter();
    if raw.is_some() {
        eprint!("[attached; Ctrl-] detaches]\r\n");
    }
    let mut to_vm = stream.try_clone()?;
    let interactive = raw.is_some();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        let mut stdin = std::io::stdin().lock();
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if interactive && buf[..n].contains(&DETACH) {
                let _ = to_vm.shutdown(std::net::Shutdown::Both);
                return;
            }
            if to_vm.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
    let mut from_vm = stream;
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 4096];
    loop {
        match from_vm.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.write_all(&buf[..n])?;
                out.flush()?;
            }
        }
    }
    drop(raw);
    Ok(())
}

/// `--display`: `vga` or `none`.
pub fn parse_display(s: &str) -> Result<kiln_api::compute::Display, String> {
    kiln_api::compute::Display::parse(s).ok_or_else(|| format!("{s:?}: vga or none"))
}

/// `GET path` (a PNG) written to stdout, which must not be a terminal.
pub fn screenshot(socket: &Path, path: &str) -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: isatty on fd 1.
    if unsafe { libc::isatty(1) } == 1 {
        return Err("the screenshot is a PNG: redirect stdout to a file (> s.png)".into());
    }
    let r = kiln_api::client::request(
        socket,
        "GET",
        path,
        None,
        std::time::Duration::from_secs(30),
    )?;
    r.ok()?;
    let mut out = std::io::stdout().lock();
    out.write_all(&r.body)?;
    out.flush()?;
    Ok(())
}

/// `POST`s `req` to `path` (a server's keys); waits as long as the typing
/// takes.
pub fn keys(
    socket: &Path,
    path: &str,
    req: &kiln_api::control::KeysRequest,
) -> Result<(), Box<dyn std::error::Error>> {
    req.check()?;
    let body = serde_json::to_vec(req)?;
    let t = req.duration() + std::time::Duration::from_secs(15);
    kiln_api::client::request(socket, "POST", path, Some(&body), t)?.ok()?;
    Ok(())
}
