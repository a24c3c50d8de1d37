//! Keystone v3's subset: one user and one project (both `admin`, in
//! domain `default`), the `password`, `token` and `application_credential`
//! (`app_creds.rs`) auth methods, tokens
//! (random, stored by their SHA-256 with the kilnd that issued them,
//! expiring, revocable) and the service catalog.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest;

use super::app_creds::{self, AppCredMethod};
use crate::config::Config;
use crate::store::{AppCredRow, Store, StoreError, TokenRow};

pub const USER: &str = "admin";
pub const PROJECT: &str = "admin";
pub const DOMAIN_ID: &str = "default";
pub const DOMAIN_NAME: &str = "Default";
/// The file under the state dir that keeps the generated admin password.
pub const PASSWORD_FILE: &str = "openstack-admin-password";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// 401: no token, a bad one, a wrong password, an unknown user.
    #[error("{0}")]
    Unauthorized(String),
    /// 400: a body Keystone would refuse.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

const NEEDS_AUTH: &str = "The request you have made requires authentication.";

/// This kilnd's Keystone: who may log in, and how long tokens live.
pub struct Identity {
    password: String,
    pub ttl_s: u64,
    pub region: String,
    pub public_url: Option<String>,
    /// This kilnd's instance id: the tokens it issues are bound to it.
    pub instance: String,
    pub user_id: String,
    pub project_id: String,
    /// The host's name: Nova's host and hypervisor name.
    pub host: String,
}

/// `POST /v3/auth/tokens`'s body (the parts kilnd reads).
#[derive(Debug, Deserialize)]
pub struct AuthBody {
    pub auth: Auth,
}

#[derive(Debug, Deserialize)]
pub struct Auth {
    pub identity: AuthIdentity,
    #[serde(default)]
    pub scope: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct AuthIdentity {
    pub methods: Vec<String>,
    #[serde(default)]
    pub password: Option<PasswordMethod>,
    #[serde(default)]
    pub token: Option<TokenMethod>,
    #[serde(default)]
    pub application_credential: Option<AppCredMethod>,
}

#[derive(Debug, Deserialize)]
pub struct PasswordMethod {
    pub user: UserRef,
}

#[derive(Debug, Deserialize)]
pub struct UserRef {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub domain: Option<Value>,
    pub password: String,
}

#[derive(Debug, Deserialize)]
pub struct TokenMethod {
    pub id: String,
}

/// A token just issued: its text (the `X-Subject-Token`) and row.
pub struct Issued {
    pub token: String,
    pub row: TokenRow,
}

impl Identity {
    /// The identity of the kilnd with `config` and `store`: the admin
    /// password from the config, else from [`PASSWORD_FILE`] in the state
    /// dir, made (random, mode 0600) on first start.
    pub fn load(config: &Config, store: &Store) -> Result<Identity, std::io::Error> {
        let password = match &config.openstack.admin_password {
            Some(p) => p.clone(),
            None => password_file(&config.state_dir.join(PASSWORD_FILE))?,
        };
        let instance = store
            .instance_id()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Identity {
            password,
            ttl_s: config.openstack.token_ttl_s,
            region: config.openstack.region.clone(),
            public_url: config.openstack.public_url.clone(),
            user_id: super::derived_id(&format!("user:{USER}:{instance}")).replace('-', ""),
            project_id: super::derived_id(&format!("project:{PROJECT}:{instance}"))
                .replace('-', ""),
            instance,
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "kiln".into()),
        })
    }

    /// This kilnd's instance id as a UUID (its hypervisor's id).
    pub fn instance_uuid(&self) -> String {
        super::derived_id(&self.instance)
    }

    /// Checks the body's methods and scope and issues a token.
    pub async fn authenticate(
        &self,
        store: &Arc<Store>,
        body: AuthBody,
    ) -> Result<Issued, AuthError> {
        let id = body.auth.identity;
        if id.methods.is_empty() {
            return Err(AuthError::Invalid(
                "auth.identity.methods must name at least one method".into(),
            ));
        }
        let mut expires = crate::util::now_secs() + self.ttl_s;
        // The credential the token is issued through (its roles, and it
        // revokes the token when deleted).
        let mut cred: Option<String> = None;
        for m in &id.methods {
            match m.as_str() {
                "password" => {
                    let p = id.password.as_ref().ok_or_else(|| {
                        AuthError::Invalid("method password needs auth.identity.password".into())
                    })?;
                    self.check_password(&p.user)?;
                }
                "token" => {
                    let t = id.token.as_ref().ok_or_else(|| {
                        AuthError::Invalid("method token needs auth.identity.token.id".into())
                    })?;
                    let old = self.validate(store, &t.id).await?;
                    // A token made from a token lives no longer than it.
                    expires = expires.min(old.expires_at);
                    cred = cred.or(old.app_cred_id);
                }
                "application_credential" => {
                    let a = id.application_credential.as_ref();
                    let scoped = body.auth.scope.is_some();
                    let c = app_creds::authenticate(self, store, a, scoped).await?;
                    expires = expires.min(c.expires_at.unwrap_or(u64::MAX));
                    cred = Some(c.id);
                }
                other => {
                    return Err(AuthError::Unauthorized(format!(
                        "auth method {other:?} is not supported; use password, token or application_credential"
                    )))
                }
            }
        }
        self.check_scope(body.auth.scope.as_ref())?;
        let token = new_token();
        let now = crate::util::now_secs();
        let row = TokenRow {
            hash: hash(&token),
            instance: self.instance.clone(),
            user_id: self.user_id.clone(),
            project_id: self.project_id.clone(),
            methods: id.methods.join(","),
            audit_id: new_token()[..22].to_owned(),
            issued_at: now,
            expires_at: expires,
            revoked: false,
            app_cred_id: cred,
        };
        let r = row.clone();
        store.call(move |s| s.insert_token(&r)).await?;
        let purge = store.clone();
        // Expired rows go on every issue; none can be used anyway.
        let _ = purge.call(move |s| s.purge_tokens(now)).await;
        Ok(Issued { token, row })
    }

    fn check_password(&self, u: &UserRef) -> Result<(), AuthError> {
        let who_ok = match (&u.id, &u.name) {
            (Some(id), _) => *id == self.user_id,
            (None, Some(name)) => name == USER && domain_ok(u.domain.as_ref()),
            (None, None) => {
                return Err(AuthError::Invalid(
                    "auth.identity.password.user needs an id or a name".into(),
                ))
            }
        };
        // Compared whatever the user, in constant time.
        let pw_ok = constant_time_eq(u.password.as_bytes(), self.password.as_bytes());
        if who_ok && pw_ok {
            Ok(())
        } else {
            Err(AuthError::Unauthorized(NEEDS_AUTH.into()))
        }
    }

    /// Unscoped, or scoped to the one project (by id, or by name in
    /// domain `default`).
    fn check_scope(&self, scope: Option<&Value>) -> Result<(), AuthError> {
        let Some(scope) = scope else { return Ok(()) };
        let Some(p) = scope.get("project") else {
            return Err(AuthError::Unauthorized(
                "only project scope (project admin) is supported".into(),
            ));
        };
        let ok = match (
            p.get("id").and_then(Value::as_str),
            p.get("name").and_then(Value::as_str),
        ) {
            (Some(id), _) => id == self.project_id,
            (None, Some(name)) => name == PROJECT && domain_ok(p.get("domain")),
            (None, None) => {
                return Err(AuthError::Invalid(
                    "scope.project needs an id or a name".into(),
                ))
            }
        };
        if ok {
            Ok(())
        } else {
            Err(AuthError::Unauthorized(
                "no such project for this user; the only project is admin".into(),
            ))
        }
    }

    /// The token `text` if this kilnd issued it and it is neither revoked
    /// nor expired.
    pub async fn validate(&self, store: &Arc<Store>, text: &str) -> Result<TokenRow, AuthError> {
        let h = hash(text);
        let row = store.call(move |s| s.get_token(&h)).await?;
        match row {
            Some(r)
                if r.instance == self.instance
                    && !r.revoked
                    && r.expires_at > crate::util::now_secs() =>
            {
                Ok(r)
            }
            _ => Err(AuthError::Unauthorized(
                "The token is not valid: unknown, expired or revoked.".into(),
            )),
        }
    }

    /// Revokes the token `text` (it must be valid).
    pub async fn revoke(&self, store: &Arc<Store>, text: &str) -> Result<(), AuthError> {
        let row = self.validate(store, text).await?;
        store.call(move |s| s.revoke_token(&row.hash)).await?;
        Ok(())
    }

    /// The base URL of the catalog: the configured one, else `http://`
    /// and the request's `Host`.
    pub fn base_url(&self, host: Option<&str>) -> String {
        match &self.public_url {
            Some(u) => u.clone(),
            None => format!("http://{}", host.unwrap_or("localhost")),
        }
    }

    /// The body of a token answer (`{"token": {...}}`) with the catalog;
    /// `cred` is the application credential it was issued through (its
    /// roles, not all the user's).
    pub fn token_body(&self, row: &TokenRow, base: &str, cred: Option<&AppCredRow>) -> Value {
        let domain = json!({"id": DOMAIN_ID, "name": DOMAIN_NAME});
        let all: Vec<String> = app_creds::ROLES.iter().map(|r| r.to_string()).collect();
        let roles = app_creds::roles_view(cred.map_or(&all, |c| &c.roles));
        let mut body = json!({"token": {
            "methods": row.methods.split(',').collect::<Vec<_>>(),
            "user": {"id": row.user_id, "name": USER, "domain": domain,
                     "password_expires_at": null},
            "audit_ids": [row.audit_id],
            "issued_at": keystone_time(row.issued_at),
            "expires_at": keystone_time(row.expires_at),
            "project": {"id": row.project_id, "name": PROJECT, "domain": domain},
            "is_domain": false,
            "roles": roles,
            "catalog": self.catalog(base),
        }});
        if let Some(c) = cred {
            body["token"]["application_credential"] =
                json!({"id": c.id, "name": c.name, "restricted": !c.unrestricted});
        }
        body
    }

    /// The service catalog: compute, image, network, placement and identity, each
    /// endpoint on every interface.
    pub fn catalog(&self, base: &str) -> Value {
        let services = [
            ("identity", "keystone", format!("{base}/identity")),
            ("compute", "nova", format!("{base}/compute/v2.1")),
            ("image", "glance", format!("{base}/image")),
            ("network", "neutron", format!("{base}/network")),
            ("placement", "placement", format!("{base}/placement")),
        ];
        let list: Vec<Value> = services
            .iter()
            .map(|(kind, name, url)| {
                let endpoints: Vec<Value> = ["public", "internal", "admin"]
                    .iter()
                    .map(|i| {
                        json!({"id": super::derived_id(&format!("{kind}:{i}")).replace('-', ""),
                               "interface": i, "region": self.region,
                               "region_id": self.region, "url": url})
                    })
                    .collect();
                json!({"id": super::derived_id(kind).replace('-', ""), "type": kind,
                       "name": name, "endpoints": endpoints})
            })
            .collect();
        Value::Array(list)
    }
}

/// A `clouds.yaml` naming this kilnd as cloud `kiln`: its TCP listener
/// (or `openstack.public_url`) and the admin user's password (from the
/// config, or the file the first start made).
pub fn clouds_yaml(config: &Config) -> Result<String, String> {
    let url = match (&config.openstack.public_url, config.tcp.listen) {
        (Some(u), _) => u.clone(),
        (None, Some(mut a)) => {
            if a.ip().is_unspecified() {
                a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{a}")
        }
        (None, None) => {
            return Err(
                "set tcp.listen (or openstack.public_url): OpenStack clients speak TCP only".into(),
            )
        }
    };
    let password = match &config.openstack.admin_password {
        Some(p) => p.clone(),
        None => {
            let f = config.state_dir.join(PASSWORD_FILE);
            let t = std::fs::read_to_string(&f).map_err(|e| {
                format!(
                    "cannot read {} ({e}): start kilnd once, or set openstack.admin_password",
                    f.display()
                )
            })?;
            t.lines().next().unwrap_or("").trim().to_owned()
        }
    };
    let q = |s: &str| serde_json::to_string(s).expect("a string serializes");
    Ok(format!(
        "clouds:\n  kiln:\n    auth:\n      auth_url: {}\n      username: {USER}\n      \
         password: {}\n      project_name: {PROJECT}\n      user_domain_name: {DOMAIN_NAME}\n      \
         project_domain_name: {DOMAIN_NAME}\n    region_name: {}\n    interface: public\n    \
         identity_api_version: 3\n",
        q(&format!("{url}/identity/v3")),
        q(&password),
        q(&config.openstack.region),
    ))
}

fn domain_ok(d: Option<&Value>) -> bool {
    match d {
        None => true,
        Some(d) => {
            d.get("id").and_then(Value::as_str) == Some(DOMAIN_ID)
                || d.get("name").and_then(Value::as_str) == Some(DOMAIN_NAME)
        }
    }
}

/// Keystone's time format: microseconds and `Z`.
fn keystone_time(secs: u64) -> String {
    crate::util::rfc3339(secs).replace('Z', ".000000Z")
}

/// 32 random bytes as 64 hex digits.
fn new_token() -> String {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).expect("the kernel's random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hash(token: &str) -> String {
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..n {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// The password in `path`, made (24 random characters, mode 0600) if the
/// file is missing.
fn password_file(path: &Path) -> Result<String, std::io::Error> {
    match std::fs::read_to_string(path) {
        Ok(t) => {
            let p = t.lines().next().unwrap_or("").trim().to_owned();
            if p.len() < 8 {
                return Err(std::io::Error::other(format!(
                    "{} holds no password of 8 characters or more",
                    path.display()
                )));
            }
            Ok(p)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let p = new_token()[..24].to_owned();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            writeln!(f, "{p}")?;
            Ok(p)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_file_is_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(PASSWORD_FILE);
        let a = password_file(&p).unwrap();
        assert_eq!(a.len(), 24);
        assert_eq!(password_file(&p).unwrap(), a);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&p, "short\n").unwrap();
        assert!(password_file(&p).is_err());
    }

    fn identity(store: &Store) -> Identity {
        Identity {
            password: "secret-pw".into(),
            ttl_s: 3600,
            region: "RegionOne".into(),
            public_url: None,
            instance: store.instance_id().unwrap(),
            user_id: "u".into(),
            project_id: "p".into(),
            host: "h".into(),
        }
    }

    fn password_auth(pw: &str, project: &str) -> AuthBody {
        serde_json::from_value(serde_json::json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"name": "Default"}, "password": pw}}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}))
        .unwrap()
    }

    #[tokio::test]
    async fn tokens_expire_are_revoked_and_stay_with_their_kilnd() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("k.db")).unwrap());
        let id = identity(&store);
        let t = id
            .authenticate(&store, password_auth("secret-pw", "admin"))
            .await
            .unwrap();
        assert_eq!(id.validate(&store, &t.token).await.unwrap(), t.row);
        for (pw, project) in [("wrong", "admin"), ("secret-pw", "other")] {
            let e = id.authenticate(&store, password_auth(pw, project)).await;
            assert!(
                matches!(e, Err(AuthError::Unauthorized(_))),
                "{pw} {project}"
            );
        }
        // From a token: no longer than it.
        let body: AuthBody = serde_json::from_value(serde_json::json!({"auth": {"identity": {
            "methods": ["token"], "token": {"id": t.token}}}}))
        .unwrap();
        let t2 = id.authenticate(&store, body).await.unwrap();
        assert!(t2.row.expires_at <= t.row.expires_at);
        assert_eq!(t2.row.methods, "token");
        // Another kilnd (instance) does not take it.
        let mut other = identity(&store);
        other.instance = "another-kilnd".into();
        assert!(other.validate(&store, &t.token).await.is_err());
        // Expired.
        let mut old = t.row.clone();
        old.hash = hash("old-token");
        old.expires_at = crate::util::now_secs() - 1;
        store.insert_token(&old).unwrap();
        assert!(id.validate(&store, "old-token").await.is_err());
        // Revoked.
        id.revoke(&store, &t.token).await.unwrap();
        assert!(id.validate(&store, &t.token).await.is_err());
        assert!(id.revoke(&store, &t.token).await.is_err());
        assert!(id.validate(&store, &t2.token).await.is_ok());
    }

    #[test]
    fn compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
