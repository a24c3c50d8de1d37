//! `kilnd` put together: open the store, measure the host, re-adopt VMMs,
//! bind the unix socket (mode and group from the config) and serve until
//! SIGTERM or SIGINT. VMMs keep running when kilnd ends.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::UnixListener;

use crate::config::Config;
use crate::http::{self, AppState};
use crate::placement::Placement;
use crate::store::{Store, StoreError};
use crate::supervisor::Supervisor;

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("cannot make state directory {0}")]
    StateDir(String, #[source] std::io::Error),
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    #[error("socket {0}")]
    Socket(String, #[source] std::io::Error),
    #[error("another kilnd answers on {0}")]
    InUse(String),
    #[error("cannot read the TCP API token")]
    Token(#[source] std::io::Error),
    #[error("disk backend")]
    Disks(#[source] crate::disks::DiskError),
    #[error("the TCP API token file {0} is empty or shorter than 16 characters")]
    WeakToken(String),
}

fn read_token(path: Option<&Path>) -> Result<String, DaemonError> {
    let path = path.ok_or_else(|| DaemonError::WeakToken("(none)".into()))?;
    let text = std::fs::read_to_string(path).map_err(DaemonError::Token)?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.len() < 16 {
        return Err(DaemonError::WeakToken(path.display().to_string()));
    }
    Ok(token)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one and returns it: the
/// descriptors kilnd may hold (connections, VMM sockets, taps, files).
fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 1024;
    }
    if r.rlim_cur < r.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            r.rlim_cur = r.rlim_max;
        } else {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot raise RLIMIT_NOFILE");
        }
    }
    r.rlim_cur
}

/// Each listener's limits: `[http]`, with both listeners' connections
/// fitting in half of the descriptors (the rest for VMMs, taps, files).
fn listener_limits(config: &Config, nofile: u64) -> http::serve::Limits {
    let budget = (nofile / 4).min(usize::MAX as u64) as usize;
    let limits = http::serve::Limits::new(&config.http, budget);
    if limits.max_connections < config.http.max_connections {
        tracing::warn!(
            nofile,
            max_connections = limits.max_connections,
            "http.max_connections lowered to fit the descriptor limit"
        );
    }
    limits
}

pub async fn run(config: Config) -> Result<(), DaemonError> {
    let nofile = raise_nofile();
    let config = Arc::new(config);
    let state = &config.state_dir;
    std::fs::create_dir_all(state)
        .map_err(|e| DaemonError::StateDir(state.display().to_string(), e))?;
    let store = Arc::new(Store::open(&state.join("kiln.db"))?);
    let disks =
        crate::disks::DiskBackend::from_config(&config.disks).map_err(DaemonError::Disks)?;
    let mut placement = Placement::from_config(&config.placement, state);
    if config.placement.total_disk_gb.is_none() {
        // The lvm backend hands out its thin pool, not the state directory.
        if let Some(gb) = disks.capacity_gb().map_err(DaemonError::Disks)? {
            placement.total.disk_gb = gb;
        }
    }
    let sup = Supervisor::new(store.clone(), config.clone(), disks)
        .map_err(|e| DaemonError::StateDir(state.display().to_string(), e))?;
    // Always an allowed import directory (crate::image_files::import_path): root's only.
    let import = state.join("import");
    if let Err(e) = std::fs::create_dir_all(&import).and_then(|()| {
        std::fs::set_permissions(&import, std::os::unix::fs::PermissionsExt::from_mode(0o700))
    }) {
        tracing::warn!(dir = %import.display(), "cannot make the import directory: {e}");
    }
    // Images a stop cut short, and every stored image checked.
    crate::images::reconcile(&store, &config)?;
    let listener = bind(&config)?;
    crate::dhcp::configure(&config.dhcp);
    // Networks first: interrupted deletes finished, missing bridges made,
    // every network's services started.
    let services = crate::networks::Services::new(store.clone());
    services.set_metadata(crate::http::metadata::spawner(
        crate::metadata::Metadata::new(store.clone()),
    ));
    crate::networks::reconcile(&services).await;
    crate::networks::default_network::ensure(&services, &config.networks).await;
    sup.reconcile().await;
    let expirer = sup.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let s = expirer.clone();
            let _ = tokio::task::spawn_blocking(move || s.expire()).await;
        }
    });
    let reaper = sup.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = crate::util::now_secs();
            let expired = reaper.store.call(move |s| s.expired(now)).await;
            for id in expired.unwrap_or_default() {
                tracing::info!(server = id, "time to live ran out: deleting");
                let s = reaper.clone();
                let store = reaper.store.clone();
                tokio::spawn(async move {
                    // Its display's last picture, before its VMM ends.
                    crate::servers::screenshot::keep_last(&store, &s, &id).await;
                    crate::servers::delete(&s, &id).await
                });
            }
        }
    });
    let identity = crate::openstack::identity::Identity::load(&config, &store)
        .map_err(|e| DaemonError::StateDir(state.display().to_string(), e))?;
    let state = Arc::new(AppState {
        store,
        sup,
        placement,
        config: config.clone(),
        services,
        identity: Arc::new(identity),
        consoles: crate::servers::remote_console::Tokens::new(),
    });
    let app = http::router(state.clone());
    if let Some(addr) = config.tcp.listen {
        let token = read_token(config.tcp.token_file.as_deref())?;
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| DaemonError::Socket(addr.to_string(), e))?;
        tracing::info!(%addr, "kilnd serving on TCP (bearer token required)");
        http::spawn_tcp(
            tcp,
            app.clone(),
            token,
            state,
            listener_limits(&config, nofile),
        );
    }
    tracing::info!(socket = %config.socket.display(), "kilnd serving");
    tracing::info!(nofile, "descriptor limit");
    http::serve_unix(
        listener,
        app,
        listener_limits(&config, nofile),
        shutdown_signal(),
    )
    .await;
    let _ = std::fs::remove_file(&config.socket);
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down; VMMs keep running");
}

/// Binds the API socket, replacing a stale one, and sets its mode and
/// group.
fn bind(config: &Config) -> Result<UnixListener, DaemonError> {
    let path = &config.socket;
    let name = path.display().to_string();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DaemonError::Socket(name.clone(), e))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::InUse(name));
        }
        std::fs::remove_file(path).map_err(|e| DaemonError::Socket(name.clone(), e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| DaemonError::Socket(name.clone(), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.socket_mode))
        .map_err(|e| DaemonError::Socket(name.clone(), e))?;
    match group_id(&config.socket_group) {
        Some(gid) => chown_group(path, gid),
        None => tracing::warn!(
            group = config.socket_group,
            "socket group missing and not created"
        ),
    }
    Ok(listener)
}

/// Host-wide lock that serialises kilnds creating their socket group.
const GROUP_LOCK: &str = "/run/lock/kiln-groupadd.lock";

/// The gid of `group`, creating it (`groupadd --system`) if missing.
///
/// `groupadd` checks that the name is free before it locks `/etc/group`
/// and then writes the entry by name, so two `groupadd`s started at once
/// both succeed: the second replaces the first's entry with a new gid, and
/// the kilnd that ran the first has already chowned its socket to a gid
/// that no longer names the group. Every kilnd therefore looks up and
/// creates the group while holding one host-wide lock.
fn group_id(group: &str) -> Option<u32> {
    if let Some(g) = lookup_group(group) {
        return Some(g);
    }
    let _lock = GroupLock::take();
    if let Some(g) = lookup_group(group) {
        return Some(g);
    }
    let ok = std::process::Command::new("groupadd")
        .args(["--system", group])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        tracing::warn!(group, "groupadd failed");
    }
    lookup_group(group)
}

/// An exclusive `flock` on [`GROUP_LOCK`], released on drop (the fd
/// closes). Without the lock file (no `/run/lock`), creation goes ahead
/// unserialised, as before.
struct GroupLock {
    _file: Option<std::fs::File>,
}

impl GroupLock {
    fn take() -> GroupLock {
        let _ = std::fs::create_dir_all("/run/lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(GROUP_LOCK);
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open {GROUP_LOCK}");
                return GroupLock { _file: None };
            }
        };
        // SAFETY: flock on a valid fd we own; it blocks until granted.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot lock {GROUP_LOCK}");
        }
        GroupLock { _file: Some(file) }
    }
}

fn lookup_group(group: &str) -> Option<u32> {
    let c = CString::new(group).ok()?;
    // SAFETY: getgrnam reads a NUL-terminated name and returns a pointer
    // into static storage or null; we read one field at once. kilnd calls
    // it only here, before serving, so no other thread races on it.
    unsafe {
        let g = libc::getgrnam(c.as_ptr());
        if g.is_null() {
            None
        } else {
            Some((*g).gr_gid)
        }
    }
}

fn chown_group(path: &Path, gid: u32) {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: a NUL-terminated path; uid -1 leaves the owner unchanged.
    if unsafe { libc::chown(c.as_ptr(), u32::MAX, gid) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot set the socket's group");
    }
}
