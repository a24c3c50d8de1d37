//! Host networking for virtio-net: tap devices ([`tap`]), handed to the
//! virtio-net device as its [`TapQueue`](crate::devices::virtio::net::TapQueue)s.

pub mod tap;

pub use crate::devices::virtio::net::mac::{MacAddr, MacParseError};
