//! The browser console's rules (Nova's `os-remote-consoles` with noVNC):
//! [`create`] checks the server and hands out a URL with a one-time
//! token; [`open`] checks and consumes a token when the console's
//! websocket opens and answers the server's VNC socket, which the HTTP
//! side then relays (as websockify does).
//!
//! Tokens: 256 random bits from the OS (`getrandom`), each for one server,
//! valid for `[console] token_ttl` seconds and for one websocket. They
//! live in kilnd's memory only (Nova keeps them in its database): a kilnd
//! restart forgets them, so URLs handed out before it are refused and the
//! user asks for a new one. A token is compared in constant time against
//! every live one; at most [`MAX_LIVE`] are live at once.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_api::compute::{Display, RemoteConsole, RemoteConsoleRequest, ServerStatus};
use subtle::ConstantTimeEq;
use thiserror::Error;

use super::ServerError;
use crate::config::Config;
use crate::store::Store;
use crate::supervisor::Supervisor;

/// The one protocol and type offered.
pub const PROTOCOL: &str = "vnc";
pub const TYPE: &str = "novnc";
/// Where the console lives on the TCP listener: its page and websocket.
pub const PAGE_PATH: &str = "/console/vnc.html";
pub const WEBSOCKET_PATH: &str = "/console/websockify";
/// Unused tokens kept at once: a bound on memory whatever callers do.
pub const MAX_LIVE: usize = 1024;

/// Why a console's websocket (or page) is refused.
#[derive(Debug, Error)]
pub enum Refused {
    /// No token, or one that is unknown, used or expired (a 401).
    #[error("{0}")]
    Token(String),
    /// A live token, but for another server (a 403); it is used up too.
    #[error("this console token is for another server")]
    OtherServer,
    /// The server cannot have a console now.
    #[error(transparent)]
    Server(#[from] ServerError),
}

struct Grant {
    token: [u8; 32],
    server: String,
    expires: Instant,
}

/// The live tokens, in kilnd's memory.
#[derive(Default)]
pub struct Tokens {
    grants: Mutex<Vec<Grant>>,
}

/// What [`Tokens::check`] finds.
enum Found {
    None,
    Other,
    Ok,
}

impl Tokens {
    pub fn new() -> Arc<Tokens> {
        Arc::new(Tokens::default())
    }

    /// A new token for `server`, valid for `ttl`.
    fn issue(&self, server: &str, ttl: Duration) -> Result<String, ServerError> {
        let mut token = [0u8; 32];
        getrandom::getrandom(&mut token)
            .map_err(|e| ServerError::Internal(format!("no random bytes for a token: {e}")))?;
        let now = Instant::now();
        let mut g = self.grants.lock().expect("tokens lock");
        g.retain(|x| x.expires > now);
        if g.len() >= MAX_LIVE {
            return Err(ServerError::Conflict(format!(
                "{MAX_LIVE} console tokens are unused: use or let some expire first"
            )));
        }
        g.push(Grant {
            token,
            server: server.to_string(),
            expires: now + ttl,
        });
        Ok(hex(&token))
    }

    /// Finds `token` among the live ones (each compared in constant time);
    /// `consume`: it is removed, whatever server it was for.
    fn check(&self, token: &str, server: &str, consume: bool) -> Found {
        let Some(given) = unhex(token) else {
            return Found::None;
        };
        let now = Instant::now();
        let mut g = self.grants.lock().expect("tokens lock");
        g.retain(|x| x.expires > now);
        let mut at = None;
        for (i, x) in g.iter().enumerate() {
            if bool::from(x.token.ct_eq(&given)) {
                at = Some(i);
            }
        }
        let Some(i) = at else {
            return Found::None;
        };
        let same = g[i].server == server;
        if consume {
            g.swap_remove(i);
        }
        if same {
            Found::Ok
        } else {
            Found::Other
        }
    }

    #[cfg(test)]
    fn live(&self) -> usize {
        self.grants.lock().unwrap().len()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A server that can show a console now: it exists, has a display and runs.
async fn check_server(store: &Arc<Store>, sup: &Supervisor, id: &str) -> Result<(), ServerError> {
    let i = id.to_string();
    let server = store.call(move |s| s.get_server(&i)).await?;
    if server.display == Display::None {
        return Err(ServerError::Conflict(format!(
            "server {id:?} has no display (display \"none\"): create it with display \"vga\""
        )));
    }
    if !matches!(server.status, ServerStatus::Active | ServerStatus::Paused) || sup.vm(id).is_none()
    {
        return Err(ServerError::Conflict(format!(
            "server {id:?} is {}, not running: it has no console",
            server.status.as_str()
        )));
    }
    Ok(())
}

/// A console for server `id`: its URL with a fresh token.
pub async fn create(
    store: &Arc<Store>,
    sup: &Supervisor,
    config: &Config,
    tokens: &Tokens,
    id: &str,
    req: RemoteConsoleRequest,
) -> Result<RemoteConsole, ServerError> {
    if req.protocol != PROTOCOL || req.kind != TYPE {
        return Err(ServerError::Invalid(format!(
            "unsupported console protocol {:?} with type {:?}: kilnd offers protocol \"{PROTOCOL}\" with type \"{TYPE}\"",
            req.protocol, req.kind
        )));
    }
    let Some(addr) = config.tcp.listen else {
        return Err(ServerError::Conflict(
            "the browser console is served on kilnd's TCP listener: set [tcp] listen (and token_file) in kilnd's config".into(),
        ));
    };
    let base = match &config.console.base_url {
        Some(b) => b.trim_end_matches('/').to_string(),
        None => format!("http://{addr}"),
    };
    check_server(store, sup, id).await?;
    let token = tokens.issue(id, Duration::from_secs(config.console.token_ttl))?;
    Ok(RemoteConsole {
        protocol: PROTOCOL.into(),
        kind: TYPE.into(),
        url: format!("{base}{PAGE_PATH}?server={id}&token={token}"),
    })
}

/// The console page may be shown: `token` is live and for `server` (not
/// consumed: the websocket does that).
pub fn check_page(tokens: &Tokens, server: &str, token: Option<&str>) -> Result<(), Refused> {
    match tokens.check(token.unwrap_or(""), server, false) {
        Found::Ok => Ok(()),
        Found::Other => Err(Refused::OtherServer),
        Found::None => Err(no_token(token)),
    }
}

/// The websocket opens: `token` is consumed and must be for `server`, which
/// must run with a display; answers its VNC socket.
pub async fn open(
    store: &Arc<Store>,
    sup: &Supervisor,
    tokens: &Tokens,
    server: &str,
    token: Option<&str>,
) -> Result<PathBuf, Refused> {
    match tokens.check(token.unwrap_or(""), server, true) {
        Found::Ok => {}
        Found::Other => return Err(Refused::OtherServer),
        Found::None => return Err(no_token(token)),
    }
    check_server(store, sup, server).await?;
    Ok(sup.vnc_socket(server))
}

fn no_token(token: Option<&str>) -> Refused {
    Refused::Token(match token {
        None => "a console token is required: ask POST /v1/servers/{id}/remote-consoles for a URL"
            .into(),
        Some(_) => {
            "this console token is unknown, used or expired: ask for a new console URL".into()
        }
    })
}

#[cfg(test)]
mod tests;
