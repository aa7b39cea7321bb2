//! Bearer-token auth with three roles. Off while no token is configured; on
//! as soon as one is. Tokens are compared in constant time and never logged.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::AuthConfig;

/// What a caller may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Lookups and registry browsing.
    Read,
    /// Edge pulls (`GET /edge/bundle`: every record of the selected
    /// services), and everything `read` may do.
    Edge,
    /// Push and materialize.
    Write,
    /// Apply and transform uploads.
    Admin,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Edge => "edge",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// The configured tokens, by role.
#[derive(Clone, Default)]
pub struct Tokens {
    tokens: Vec<(Vec<u8>, Role)>,
}

impl Tokens {
    pub fn new(config: &AuthConfig) -> Self {
        let mut tokens = Vec::new();
        for (list, role) in [
            (&config.read_tokens, Role::Read),
            (&config.edge_tokens, Role::Edge),
            (&config.write_tokens, Role::Write),
            (&config.admin_tokens, Role::Admin),
        ] {
            for token in list {
                tokens.push((token.expose().trim().as_bytes().to_vec(), role));
            }
        }
        Tokens { tokens }
    }

    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The highest role the presented token grants. Every configured token
    /// is compared, in constant time, so timing reveals neither which token
    /// matched nor how much of one did.
    fn role_of(&self, presented: &[u8]) -> Option<Role> {
        let mut granted = None;
        for (token, role) in &self.tokens {
            if bool::from(token.as_slice().ct_eq(presented)) {
                granted = granted.max(Some(*role));
            }
        }
        granted
    }
}

/// Middleware state: the tokens and the role a route group needs.
#[derive(Clone)]
pub struct Requirement {
    pub tokens: std::sync::Arc<Tokens>,
    pub role: Role,
}

/// Rejects requests without a token granting `requirement.role`: 401 with
/// no or an unknown token, 403 with a token of a lesser role.
pub async fn require(
    State(requirement): State<Requirement>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !requirement.tokens.enabled() {
        return Ok(next.run(request).await);
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(unauthorized(
            "missing bearer token (Authorization: Bearer <token>)",
        ));
    };
    match requirement.tokens.role_of(presented.as_bytes()) {
        None => Err(unauthorized("invalid token")),
        Some(role) if role < requirement.role => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "this token has the {} role; this endpoint needs {}",
                role.name(),
                requirement.role.name()
            ),
        )),
        Some(_) => Ok(next.run(request).await),
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
}
