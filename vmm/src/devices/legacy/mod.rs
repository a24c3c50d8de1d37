//! Legacy PC devices on I/O ports.

pub mod debug_port;
pub mod i8042;
pub mod pm;
pub mod reset;
pub mod rtc;
pub mod serial;
