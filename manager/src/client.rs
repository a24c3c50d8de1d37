//! kilnd's HTTP client is kiln-api's ([`kiln_api::client`]), re-exported
//! here so `kiln_manager::client` keeps working.

pub use kiln_api::client::*;
