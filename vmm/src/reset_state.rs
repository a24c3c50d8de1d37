//! What a VMM hands on to itself across an in-place reset (`PUT
//! /v1/vm/reset` re-executes `/proc/self/exe` with the same arguments):
//! each NIC's MAC and link, as JSON in the [`ENV`] environment variable, so
//! that a link set down stays down and a MAC chosen at random stays the
//! same, as a PC's NIC keeps both across a reboot.
//!
//! Only the VMM sets [`ENV`]; what it holds is still checked (a NIC count
//! that does not match the configuration, or bad JSON, is ignored with a
//! warning), never trusted to index anything.

use kiln_api::control::{LinkState, NetInfo};
use kiln_api::vm::VmConfig;

use crate::devices::virtio::net::NetLink;
use crate::net::MacAddr;

/// The environment variable that carries the NICs' state across a reset.
pub const ENV: &str = "KILN_VMM_RESET_NETS";

/// The state to hand on: [`ENV`]'s value.
pub fn encode(nets: &[NetInfo]) -> String {
    serde_json::to_string(nets).expect("NetInfo serializes")
}

/// The NICs' state a reset handed on, if it is there and fits `config`.
pub fn take(config: &VmConfig) -> Option<Vec<NetInfo>> {
    let text = std::env::var(ENV).ok()?;
    // Called from main before any thread starts.
    std::env::remove_var(ENV);
    decode(&text, config)
}

/// Parses [`ENV`]'s value and checks it against `config`.
pub fn decode(text: &str, config: &VmConfig) -> Option<Vec<NetInfo>> {
    let nets: Vec<NetInfo> = match serde_json::from_str(text) {
        Ok(n) => n,
        Err(e) => {
            log::warn!("{ENV} is not NIC state, ignored: {e}");
            return None;
        }
    };
    let fits = nets.len() == config.nets.len()
        && nets
            .iter()
            .enumerate()
            .all(|(i, n)| n.index == i && n.mac.parse::<MacAddr>().is_ok());
    if !fits {
        log::warn!("{ENV} does not match this VM's NICs, ignored");
        return None;
    }
    Some(nets)
}

/// Gives each NIC without a configured MAC the one it had.
pub fn keep_macs(config: &mut VmConfig, nets: &[NetInfo]) {
    for (n, saved) in config.nets.iter_mut().zip(nets) {
        if n.mac.is_none() {
            n.mac = Some(saved.mac.clone());
        }
    }
}

/// Gives each link the state it had: down stays down, and up stays up
/// also on a NIC configured down whose link was set up since. Before the
/// vCPUs start, so the guest's driver never sees another state.
pub fn keep_links(links: &[std::sync::Arc<NetLink>], nets: &[NetInfo]) {
    for (i, (link, saved)) in links.iter().zip(nets).enumerate() {
        let up = saved.link == LinkState::Up;
        if link.set_up(up) || !up {
            log::info!(
                "NIC {i}: link kept {} across the reset",
                saved.link.as_str()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::vm::NetConfig;

    fn config(macs: &[Option<&str>]) -> VmConfig {
        VmConfig {
            nets: macs
                .iter()
                .map(|m| NetConfig {
                    tap: Some("t".into()),
                    mac: m.map(str::to_string),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn info(index: usize, mac: &str, link: LinkState) -> NetInfo {
        NetInfo {
            index,
            mac: mac.into(),
            link,
        }
    }

    #[test]
    fn round_trips_and_keeps_random_macs_only() {
        let nets = vec![
            info(0, "52:54:00:00:00:01", LinkState::Down),
            info(1, "02:aa:bb:cc:dd:ee", LinkState::Up),
        ];
        let mut c = config(&[Some("52:54:00:00:00:01"), None]);
        let back = decode(&encode(&nets), &c).unwrap();
        assert_eq!(back, nets);
        keep_macs(&mut c, &back);
        assert_eq!(c.nets[0].mac.as_deref(), Some("52:54:00:00:00:01"));
        assert_eq!(c.nets[1].mac.as_deref(), Some("02:aa:bb:cc:dd:ee"));
    }

    #[test]
    fn refuses_state_that_does_not_fit() {
        let c = config(&[None]);
        let one = |i, mac| encode(&[info(i, mac, LinkState::Down)]);
        assert!(decode(&one(0, "02:00:00:00:00:01"), &c).is_some());
        for bad in [
            "not json".to_string(),
            "[]".to_string(),
            one(1, "02:00:00:00:00:01"),
            one(0, "zz"),
            encode(&[
                info(0, "02:00:00:00:00:01", LinkState::Up),
                info(1, "02:00:00:00:00:02", LinkState::Up),
            ]),
            r#"[{"index":0,"mac":"02:00:00:00:00:01","link":"sideways"}]"#.into(),
        ] {
            assert!(decode(&bad, &c).is_none(), "{bad}");
        }
    }
}
