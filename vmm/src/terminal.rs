//! Raw mode for an interactive stdin console, restored on exit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static RAW: AtomicBool = AtomicBool::new(false);
static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);

/// Whether stdin was put in raw mode (so Ctrl-A x is the way out).
pub fn is_raw() -> bool {
    RAW.load(Ordering::Relaxed)
}

/// Put stdin in raw mode if it is a terminal.
pub fn set_raw() {
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
        return;
    }
    // SAFETY: termios is plain data; tcgetattr fills it and we check the result.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid termios to fill for a valid descriptor.
    if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } != 0 {
        return;
    }
    *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
    let mut raw = t;
    // SAFETY: cfmakeraw only edits the struct it is given.
    unsafe { libc::cfmakeraw(&mut raw) };
    // Keep output post-processing so the VMM's own log lines stay readable.
    raw.c_oflag |= libc::OPOST;
    // SAFETY: `raw` is a valid termios for a valid descriptor.
    if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } == 0 {
        RAW.store(true, Ordering::Relaxed);
    }
}

/// Give the terminal back as we found it.
pub fn restore() {
    if let Some(t) = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take() {
        // SAFETY: `t` is the termios tcgetattr gave us for this descriptor.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
        RAW.store(false, Ordering::Relaxed);
    }
}
