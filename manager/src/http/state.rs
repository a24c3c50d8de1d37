//! What every handler is given: kilnd's parts.

use std::sync::Arc;

use axum::extract::State;

use crate::config::Config;
use crate::placement::Placement;
use crate::store::Store;
use crate::supervisor::Supervisor;

pub struct AppState {
    pub store: Arc<Store>,
    pub sup: Arc<Supervisor>,
    pub placement: Placement,
    pub config: Arc<Config>,
    /// Every network's host side and services (DHCP, metadata).
    pub services: Arc<crate::networks::Services>,
    /// The OpenStack API's Keystone: users, tokens, catalog.
    pub identity: Arc<crate::openstack::identity::Identity>,
    /// The browser console's live one-time tokens.
    pub consoles: Arc<crate::servers::remote_console::Tokens>,
}

impl AppState {
    /// The parts a server create needs.
    pub(crate) fn kilnd(&self) -> crate::servers::Kilnd<'_> {
        crate::servers::Kilnd {
            store: &self.store,
            sup: &self.sup,
            placement: &self.placement,
            config: &self.config,
        }
    }
}

pub(crate) type St = State<Arc<AppState>>;
