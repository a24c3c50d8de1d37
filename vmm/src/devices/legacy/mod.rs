//! Legacy PC devices on I/O ports.

pub mod debug_port;
pub mod debugcon;
pub mod fw_cfg;
pub mod i8042;
pub mod keynames;
pub mod pflash;
pub mod pm;
pub mod ps2_keys;
pub mod ps2_mouse;
pub mod reset;
pub mod rtc;
pub mod serial;
