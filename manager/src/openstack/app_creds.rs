//! Keystone's application credentials: a user makes one (a name, an
//! optional expiry, a subset of their roles) and gets its secret once;
//! scripts then authenticate with the `application_credential` method
//! (id and secret, or name, user and secret) and get a token scoped to
//! the credential's project with its roles, living no longer than it.
//! Secrets are stored as salted PBKDF2-HMAC-SHA256 only; deleting a
//! credential revokes every token issued through it
//! (`crate::store::Store::delete_app_cred`).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::identity::{AuthError, Identity, DOMAIN_ID, DOMAIN_NAME, USER};
use crate::store::{AppCredRow, Store, StoreError, TokenRow};

/// The roles the admin user has on its project, which a credential may
/// carry a subset of.
pub const ROLES: [&str; 3] = ["admin", "member", "reader"];

/// A role's id (stable: derived from its name).
pub fn role_id(name: &str) -> String {
    super::derived_id(&format!("role:{name}")).replace('-', "")
}

/// `{"id", "name"}` of each role in `names`.
pub fn roles_view(names: &[String]) -> Value {
    names
        .iter()
        .map(|n| json!({"id": role_id(n), "name": n, "domain_id": null}))
        .collect()
}

/// PBKDF2 rounds. Kiln's generated secrets carry 384 random bits, for
/// which any round count is enough; this slows guessing a weak secret a
/// user chose.
const ROUNDS: u32 = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum AppCredError {
    /// 404: no such user or credential.
    #[error("{0}")]
    NotFound(String),
    /// 400: a body Keystone would refuse.
    #[error("{0}")]
    Invalid(String),
    /// 403: a restricted credential's token making or deleting one.
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `POST /v3/users/{user_id}/application_credentials`' body.
#[derive(Debug, Deserialize)]
pub struct CreateBody {
    pub application_credential: NewCred,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCred {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub roles: Option<Vec<RoleRef>>,
    #[serde(default)]
    pub unrestricted: Option<bool>,
    #[serde(default)]
    pub access_rules: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
pub struct RoleRef {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// The `application_credential` auth method's member.
#[derive(Debug, Deserialize)]
pub struct AppCredMethod {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub user: Option<Value>,
    pub secret: String,
}

/// 404 unless `user_id` is the one user.
pub fn check_user(idn: &Identity, user_id: &str) -> Result<(), AppCredError> {
    if user_id == idn.user_id {
        Ok(())
    } else {
        Err(AppCredError::NotFound(format!(
            "Could not find user: {user_id}."
        )))
    }
}

/// A token issued through a restricted credential may not make or
/// delete credentials (Keystone's rule: it could outlive its own).
pub async fn check_caller(store: &Arc<Store>, caller: &TokenRow) -> Result<(), AppCredError> {
    let Some(id) = caller.app_cred_id.clone() else {
        return Ok(());
    };
    let cred = store.call(move |s| s.get_app_cred(&id)).await?;
    match cred {
        Some(c) if c.unrestricted => Ok(()),
        _ => Err(AppCredError::Forbidden(
            "a token from a restricted application credential cannot manage application credentials".into(),
        )),
    }
}

/// Makes a credential of the one user; the secret (given or generated)
/// is returned once and stored only hashed.
pub async fn create(
    idn: &Identity,
    store: &Arc<Store>,
    body: NewCred,
) -> Result<(AppCredRow, String), AppCredError> {
    let bad = |m: String| Err(AppCredError::Invalid(m));
    if body.name.trim().is_empty() || body.name.len() > 255 {
        return bad("application_credential.name must be 1 to 255 characters".into());
    }
    if body.access_rules.as_ref().is_some_and(|r| !r.is_empty()) {
        return bad("access_rules are not supported by Kiln: a credential has its roles".into());
    }
    let now = crate::util::now_secs();
    let expires_at = match body.expires_at.as_deref() {
        None => None,
        Some(t) => {
            let at = parse_time(t).ok_or_else(|| {
                AppCredError::Invalid(format!(
                    "expires_at {t:?} is not an ISO 8601 time (2027-01-31T12:00:00Z)"
                ))
            })?;
            if at <= now {
                return bad(format!("expires_at {t:?} is in the past"));
            }
            Some(at)
        }
    };
    let roles = match body.roles.as_deref() {
        None | Some([]) => ROLES.iter().map(|r| r.to_string()).collect(),
        Some(refs) => refs.iter().map(role_name).collect::<Result<Vec<_>, _>>()?,
    };
    let secret = match body.secret {
        Some(s) if s.is_empty() => return bad("secret must not be empty".into()),
        Some(s) => s,
        None => new_secret(),
    };
    let s2 = secret.clone();
    let secret_hash = tokio::task::spawn_blocking(move || hash_secret(&s2))
        .await
        .expect("hashing does not panic");
    let row = AppCredRow {
        id: uuid::Uuid::new_v4().simple().to_string(),
        instance: idn.instance.clone(),
        user_id: idn.user_id.clone(),
        project_id: idn.project_id.clone(),
        name: body.name,
        description: body.description,
        secret_hash,
        roles,
        unrestricted: body.unrestricted.unwrap_or(false),
        expires_at,
        created_at: now,
    };
    let r = row.clone();
    store.call(move |s| s.insert_app_cred(&r)).await?;
    Ok((row, secret))
}

fn role_name(r: &RoleRef) -> Result<String, AppCredError> {
    let found = ROLES.iter().find(|n| match (&r.id, &r.name) {
        (Some(id), _) => *id == role_id(n),
        (None, Some(name)) => name == *n,
        (None, None) => false,
    });
    found.map(|n| n.to_string()).ok_or_else(|| {
        AppCredError::Invalid(format!(
            "role {} is not one of the user's roles ({})",
            r.id.as_deref()
                .or(r.name.as_deref())
                .unwrap_or("(no id or name)"),
            ROLES.join(", ")
        ))
    })
}

/// The credential an `application_credential` auth (`m`, the body's
/// member) names, if its secret is right and it has not expired (401
/// otherwise, the same for every reason); its token has the
/// credential's project, so a `scope` too is refused.
pub async fn authenticate(
    idn: &Identity,
    store: &Arc<Store>,
    m: Option<&AppCredMethod>,
    scoped: bool,
) -> Result<AppCredRow, AuthError> {
    let m = m.ok_or_else(|| {
        AuthError::Invalid(
            "method application_credential needs auth.identity.application_credential".into(),
        )
    })?;
    if scoped {
        return Err(AuthError::Unauthorized(
            "an application credential's token has its project: no scope".into(),
        ));
    }
    let found = match (&m.id, &m.name) {
        (Some(id), _) => {
            let id = id.clone();
            store.call(move |s| s.get_app_cred(&id)).await?
        }
        (None, Some(name)) => {
            let user = m.user.as_ref().ok_or_else(|| {
                AuthError::Invalid("application_credential by name needs its user".into())
            })?;
            let by_id = user.get("id").and_then(Value::as_str) == Some(idn.user_id.as_str());
            let by_name = user.get("name").and_then(Value::as_str) == Some(USER)
                && user.get("domain").is_none_or(|d| {
                    d.get("id").and_then(Value::as_str) == Some(DOMAIN_ID)
                        || d.get("name").and_then(Value::as_str) == Some(DOMAIN_NAME)
                });
            if !(by_id || by_name) {
                return Err(unauthorized());
            }
            let (inst, user, name) = (idn.instance.clone(), idn.user_id.clone(), name.clone());
            let list = store
                .call(move |s| s.list_app_creds(&inst, &user, Some(&name)))
                .await?;
            list.into_iter().next()
        }
        (None, None) => {
            return Err(AuthError::Invalid(
                "application_credential needs an id, or a name and its user".into(),
            ))
        }
    };
    let Some(c) = found.filter(|c| c.instance == idn.instance) else {
        return Err(unauthorized());
    };
    let (secret, hash) = (m.secret.clone(), c.secret_hash.clone());
    let ok = tokio::task::spawn_blocking(move || verify_secret(&secret, &hash))
        .await
        .expect("hashing does not panic");
    let live = c.expires_at.is_none_or(|e| e > crate::util::now_secs());
    if ok && live {
        Ok(c)
    } else {
        Err(unauthorized())
    }
}

fn unauthorized() -> AuthError {
    AuthError::Unauthorized("The request you have made requires authentication.".into())
}

/// A credential as Keystone shows it (`secret` only in the create's
/// answer).
pub fn view(c: &AppCredRow, base: &str, secret: Option<&str>) -> Value {
    let mut v = json!({
        "id": c.id, "name": c.name, "description": c.description,
        "user_id": c.user_id, "project_id": c.project_id,
        "roles": roles_view(&c.roles), "unrestricted": c.unrestricted,
        "access_rules": [],
        "expires_at": c.expires_at.map(|e| crate::util::rfc3339(e).replace('Z', ".000000")),
        "links": {"self": format!("{base}/identity/v3/users/{}/application_credentials/{}",
                                  c.user_id, c.id)},
    });
    if let Some(s) = secret {
        v["secret"] = json!(s);
    }
    v
}

/// An ISO 8601 time (`2027-01-31T12:00:00`, with fractions and a `Z` or
/// an offset, or none: UTC) as unix seconds.
pub fn parse_time(t: &str) -> Option<u64> {
    use time::format_description::well_known::{Iso8601, Rfc3339};
    let at = time::OffsetDateTime::parse(t, &Rfc3339)
        .or_else(|_| time::OffsetDateTime::parse(t, &Iso8601::DEFAULT))
        .or_else(|_| time::PrimitiveDateTime::parse(t, &Iso8601::DEFAULT).map(|p| p.assume_utc()))
        .ok()?;
    u64::try_from(at.unix_timestamp()).ok()
}

/// 48 random bytes, URL-safe base64 (64 characters).
fn new_secret() -> String {
    use base64ct::Encoding;
    let mut b = [0u8; 48];
    getrandom::getrandom(&mut b).expect("the kernel's random source");
    base64ct::Base64UrlUnpadded::encode_string(&b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn derive(secret: &str, salt: &[u8], rounds: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(secret.as_bytes(), salt, rounds, &mut out);
    out
}

/// `pbkdf2-sha256$ROUNDS$SALT$HASH` (hex) of `secret`, with a random
/// salt.
pub fn hash_secret(secret: &str) -> String {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).expect("the kernel's random source");
    let h = derive(secret, &salt, ROUNDS);
    format!("pbkdf2-sha256${ROUNDS}${}${}", hex(&salt), hex(&h))
}

/// Whether `secret` is the one `stored` hashes (in constant time).
pub fn verify_secret(secret: &str, stored: &str) -> bool {
    use subtle::ConstantTimeEq;
    let mut parts = stored.split('$');
    let (Some("pbkdf2-sha256"), Some(rounds), Some(salt), Some(want), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let Ok(rounds) = rounds.parse::<u32>() else {
        return false;
    };
    let salt: Option<Vec<u8>> = (0..salt.len())
        .step_by(2)
        .map(|i| {
            salt.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let Some(salt) = salt else { return false };
    let got = hex(&derive(secret, &salt, rounds));
    got.as_bytes().ct_eq(want.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hash_and_verify() {
        let h = hash_secret("s3cret");
        assert!(h.starts_with("pbkdf2-sha256$20000$"), "{h}");
        assert!(!h.contains("s3cret"));
        assert!(verify_secret("s3cret", &h));
        assert!(!verify_secret("s3creT", &h));
        assert_ne!(hash_secret("s3cret"), h, "salted");
        assert!(!verify_secret("s3cret", "garbage"));
        assert!(!verify_secret("s3cret", "pbkdf2-sha256$1$zz$00"));
        assert_eq!(new_secret().len(), 64);
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-02T00:00:00"), Some(86400));
        assert_eq!(parse_time("1970-01-02T00:00:00Z"), Some(86400));
        assert_eq!(parse_time("1970-01-02T00:00:00.500000Z"), Some(86400));
        assert_eq!(parse_time("1970-01-02T01:00:00+01:00"), Some(86400));
        assert_eq!(parse_time("tomorrow"), None);
    }

    #[test]
    fn roles_by_id_or_name() {
        let r = |id: Option<&str>, name: Option<&str>| {
            role_name(&RoleRef {
                id: id.map(str::to_owned),
                name: name.map(str::to_owned),
            })
        };
        assert_eq!(r(None, Some("reader")).unwrap(), "reader");
        assert_eq!(r(Some(&role_id("member")), None).unwrap(), "member");
        assert!(r(None, Some("god"))
            .unwrap_err()
            .to_string()
            .contains("god"));
        assert!(r(None, None).is_err());
    }
}
