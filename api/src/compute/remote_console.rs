//! The browser console in `kilnd`'s REST API, as Nova's
//! `os-remote-consoles`: `POST /v1/servers/{id}/remote-consoles` with a
//! [`RemoteConsoleCreate`] answers a [`RemoteConsoleBody`]. Re-exported by
//! [`super`].

use serde::{Deserialize, Serialize};

/// What a console is asked for: `{"protocol": "vnc", "type": "novnc"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConsoleRequest {
    pub protocol: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// The request body: Nova's `{"remote_console": {...}}`, or the bare object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RemoteConsoleCreate {
    pub remote_console: RemoteConsoleRequest,
}

impl<'de> Deserialize<'de> for RemoteConsoleCreate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(d)?;
        let inner = match v {
            serde_json::Value::Object(mut m) if m.contains_key("remote_console") => {
                if m.len() > 1 {
                    return Err(D::Error::custom(
                        "only `remote_console` may be at the top level",
                    ));
                }
                m.remove("remote_console").expect("checked")
            }
            other => other,
        };
        let remote_console = RemoteConsoleRequest::deserialize(inner).map_err(D::Error::custom)?;
        Ok(RemoteConsoleCreate { remote_console })
    }
}

/// A console: its URL carries a one-time token that expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteConsole {
    pub protocol: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
}

/// The answer: `{"remote_console": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteConsoleBody {
    pub remote_console: RemoteConsole,
}
