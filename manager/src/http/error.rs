//! The one map from kilnd's errors to HTTP: each domain error to a status
//! and a JSON [`ErrorBody`]. A 500 carries the whole chain of causes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_api::compute::ErrorBody;

use crate::flavors::FlavorError;
use crate::image_files::ImportError;
use crate::images::ImageError;
use crate::keypairs::KeypairError;
use crate::networks::NetworkError;
use crate::servers::remote_console::Refused;
use crate::servers::ServerError;
use crate::store::StoreError;
use crate::supervisor::actions::ActionError;
use crate::supervisor::nic_link::NicError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A 500 saying what went wrong inside kilnd, with every cause.
    pub(crate) fn internal(e: &(dyn std::error::Error + 'static)) -> ApiError {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            StoreError::NoCapacity(r) => ApiError::new(StatusCode::CONFLICT, r.to_string()),
            StoreError::Sqlite(ref s) => {
                tracing::error!(error = %s, "store error");
                ApiError::internal(&e)
            }
        }
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> ApiError {
        match e {
            ActionError::Store(s) => s.into(),
            ActionError::Busy(_)
            | ActionError::Deleting(_)
            | ActionError::NotAllowed { .. }
            | ActionError::StillRunning(_)
            | ActionError::NoNvram(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        }
    }
}

impl From<NicError> for ApiError {
    fn from(e: NicError) -> ApiError {
        match e {
            NicError::Store(s) => s.into(),
            NicError::NoSuchNic { .. } => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            NicError::Busy(_) | NicError::Deleting(_) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            NicError::Vmm { .. } => ApiError::internal(&e),
        }
    }
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> ApiError {
        match e {
            ImportError::Invalid(m) => ApiError::bad(m),
            ImportError::Copy(_) => ApiError::internal(&e),
        }
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> ApiError {
        match e {
            ImageError::Invalid(m) => ApiError::bad(m),
            ImageError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            ImageError::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            }
            ImageError::Import(e) => e.into(),
            ImageError::Internal(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m),
            ImageError::Store(s) => s.into(),
        }
    }
}

impl From<FlavorError> for ApiError {
    fn from(e: FlavorError) -> ApiError {
        match e {
            FlavorError::Invalid(m) => ApiError::bad(m),
            FlavorError::Store(s) => s.into(),
        }
    }
}

impl From<NetworkError> for ApiError {
    fn from(e: NetworkError) -> ApiError {
        match e {
            NetworkError::Invalid(m) => ApiError::bad(m),
            NetworkError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            NetworkError::Link { .. } | NetworkError::Firewall(_) => ApiError::internal(&e),
            NetworkError::Store(s) => s.into(),
        }
    }
}

impl From<ServerError> for ApiError {
    fn from(e: ServerError) -> ApiError {
        match e {
            ServerError::Invalid(m) => ApiError::bad(m),
            ServerError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            ServerError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
            ServerError::Network(e) => e.into(),
            ServerError::Store(s) => s.into(),
            ServerError::Action(a) => a.into(),
            ServerError::Internal(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m),
            ServerError::GuestTimeout(m) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, m),
            ServerError::GuestBad(m) => ApiError::new(StatusCode::BAD_GATEWAY, m),
        }
    }
}

impl From<KeypairError> for ApiError {
    fn from(e: KeypairError) -> ApiError {
        match e {
            KeypairError::Invalid(m) => ApiError::bad(m),
            KeypairError::Generate(_) => ApiError::internal(&e),
            KeypairError::Store(s) => s.into(),
        }
    }
}

impl From<Refused> for ApiError {
    fn from(e: Refused) -> ApiError {
        match e {
            Refused::Token(m) => ApiError::new(StatusCode::UNAUTHORIZED, m),
            Refused::OtherServer => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
            Refused::Server(s) => s.into(),
        }
    }
}
