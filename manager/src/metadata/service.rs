//! The metadata service's rules, below HTTP: which server a request
//! comes from, and its answer.
//!
//! A request names its server only by where it comes from, never by
//! anything it says (no header is read): the network of the bridge it
//! arrived on, and its source address, which must be a NIC's fixed
//! address on that network, and its source MAC, which must be that
//! NIC's. The MAC is the kernel's neighbour entry for the source address
//! on the bridge: the connection's SYN-ACK went out only after the
//! kernel resolved it (the anti-spoofing rules keep a port's frames to
//! its own MAC and address). Anything else is unknown and every answer
//! to it is an empty 404.
//!
//! The server's facts are read from the store, and kept only as long as
//! nothing at all was written to the store since ([`Store::changes`]):
//! a server deleted, or anything of it changed, is seen at the next
//! request. (Measured: reading them at each request, eight queries,
//! held the service near 6,000 requests per second with a p99 above
//! 2 ms on these machines; `benches/src/bin/metadata_bench.rs`.)

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use super::{tree, Answer, Facts};
use crate::net::neigh;
use crate::store::{Store, StoreError, MAX_PASSWORD};

/// Who a connection comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The server with a NIC of that address and MAC on that network.
    Server(String),
    Unknown,
}

/// The metadata service of every network: answers from the store.
pub struct Metadata {
    store: Arc<Store>,
    cache: Arc<Mutex<Cache>>,
}

/// Facts by server id, each with the store's change count it was read at.
type Cache = HashMap<String, (u64, Arc<Facts>)>;

/// The most servers whose facts are kept.
const CACHED: usize = 4096;

impl Metadata {
    pub fn new(store: Arc<Store>) -> Arc<Metadata> {
        Arc::new(Metadata {
            store,
            cache: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Names the server a connection from `peer` on the bridge with
    /// index `bridge` of network `network_id` comes from.
    pub async fn identify(&self, network_id: &str, bridge: u32, peer: IpAddr) -> Identity {
        let ip: Ipv4Addr = match peer {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(ip) => ip,
                None => return Identity::Unknown,
            },
        };
        let (net, addr) = (network_id.to_owned(), ip.to_string());
        let nic = self.store.call(move |s| s.nic_at(&net, &addr)).await;
        let (server, mac) = match nic {
            Ok(Some(found)) => found,
            Ok(None) => {
                tracing::debug!(%ip, network_id, "metadata request from an unknown address");
                return Identity::Unknown;
            }
            Err(e) => {
                tracing::warn!(error = %e, "metadata: cannot look up the source");
                return Identity::Unknown;
            }
        };
        match neigh::mac_of(bridge, ip).await {
            Ok(Some(seen)) if seen.eq_ignore_ascii_case(&mac) => Identity::Server(server),
            Ok(seen) => {
                tracing::warn!(%ip, ?seen, port_mac = mac, network_id,
                    "metadata request whose source MAC is not its address's port");
                Identity::Unknown
            }
            Err(e) => {
                tracing::warn!(error = %e, "metadata: cannot read the neighbour table");
                Identity::Unknown
            }
        }
    }

    /// The facts of `who` (a fresh random seed each time), from the cache
    /// while the store is unchanged.
    async fn facts(&self, who: &Identity) -> Option<Facts> {
        let Identity::Server(id) = who else {
            return None;
        };
        let (cache, key) = (self.cache.clone(), id.clone());
        let found = self
            .store
            .call(move |s| {
                // The count is read before the rows: a write in between
                // makes the next request read again.
                let at = s.changes();
                let c = cache.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((n, f)) = c.get(&key) {
                    if *n == at {
                        return Ok(f.clone());
                    }
                }
                drop(c);
                let f = Arc::new(Facts::load(s, &key)?);
                let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
                if c.len() >= CACHED {
                    c.clear();
                }
                c.insert(key, (at, f.clone()));
                Ok(f)
            })
            .await;
        match found {
            Ok(f) => Some(Facts {
                random_seed: Some(super::random_seed()),
                ..(*f).clone()
            }),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => {
                tracing::warn!(server = id, error = %e, "metadata: cannot read the server");
                None
            }
        }
    }

    /// `GET path` from `who`.
    pub async fn get(&self, who: &Identity, path: &str) -> Answer {
        match self.facts(who).await {
            Some(f) => tree::get(&f, path),
            None => Answer::status(404),
        }
    }

    /// `POST path` from `who` with `body` (None: longer than
    /// [`MAX_PASSWORD`]). Only a version's `password` takes a post: it is
    /// kept once (409 while one is kept, as Nova), at most 256 bytes of
    /// text (400).
    pub async fn post(&self, who: &Identity, path: &str, body: Option<&[u8]>) -> Answer {
        let Some(f) = self.facts(who).await else {
            return Answer::status(404);
        };
        let Some(tokens) = tree::tokens(path) else {
            return Answer::status(404);
        };
        if !tree::is_password(&f, &tokens) {
            return Answer::status(if tree::get(&f, path).status == 200 {
                405
            } else {
                404
            });
        }
        if f.password.is_some() {
            return Answer {
                status: 409,
                ..Answer::text("a password is set already; it is cleared through the API\n")
            };
        }
        let text = match body.map(std::str::from_utf8) {
            Some(Ok(t)) => t.to_owned(),
            Some(Err(_)) => return bad("the password is not UTF-8 text\n"),
            None => {
                return bad(&format!(
                    "the password is longer than {MAX_PASSWORD} bytes\n"
                ))
            }
        };
        let id = f.id.clone();
        match self
            .store
            .call(move |s| s.set_server_password(&id, &text))
            .await
        {
            Ok(()) => Answer::text(""),
            Err(StoreError::Conflict(_)) => Answer::status(409),
            Err(StoreError::NotFound { .. }) => Answer::status(404),
            Err(e) => {
                tracing::warn!(server = f.id, error = %e, "metadata: cannot keep the password");
                Answer::status(500)
            }
        }
    }
}

fn bad(why: &str) -> Answer {
    Answer {
        status: 400,
        ..Answer::text(why)
    }
}
