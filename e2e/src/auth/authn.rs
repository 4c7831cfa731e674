//! Authentication: bearer tokens, each naming a user, as a static token file configures
//! kube-apiserver (`--token-auth-file`). A request with `Authorization: Bearer <token>` is
//! that token's user, in `system:authenticated` besides its own groups (Kubernetes'
//! `AuthenticatedGroupAdder`); an unknown token gets `401 Unauthorized`. A request without
//! a bearer token is the admin ([`User::admin`]): where Kubernetes would see an anonymous
//! user, this server sees the all-powerful one, so that kubeconfigs without credentials
//! keep working.

use super::user::{AUTHENTICATED, UNAUTHENTICATED, User};
use crate::status::ApiError;
use axum::http::{HeaderMap, header};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The tokens the server accepts, shared by the request handlers and the test harness
/// (which adds tokens for the users it writes kubeconfigs for).
#[derive(Debug, Default)]
pub struct Tokens {
    users: Mutex<BTreeMap<String, User>>,
}

impl Tokens {
    /// The tokens of `users` (token → user).
    pub fn new(users: BTreeMap<String, User>) -> Self {
        Tokens {
            users: Mutex::new(users),
        }
    }

    /// A token that authenticates as `user`: one already accepted for exactly this user, or
    /// a new one.
    pub fn token_for(&self, user: &User) -> String {
        let mut users = self
            .users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((token, _)) = users.iter().find(|(_, known)| *known == user) {
            return token.clone();
        }
        let token = format!("pequod-e2e-{}", uuid::Uuid::new_v4().simple());
        users.insert(token.clone(), user.clone());
        token
    }

    /// Who sent a request: the user of its bearer token, or the admin when it has none.
    /// Fails with Kubernetes' `401 Unauthorized` for a token the server does not know.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<User, ApiError> {
        let Some(token) = bearer_token(headers) else {
            return Ok(User::admin());
        };
        let users = self
            .users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut user = users
            .get(token)
            .cloned()
            .ok_or_else(ApiError::unauthorized)?;
        if !user.in_group(AUTHENTICATED) && !user.in_group(UNAUTHENTICATED) {
            user.groups.push(AUTHENTICATED.to_owned());
        }
        Ok(user)
    }
}

/// The token of an `Authorization: Bearer <token>` header, as Kubernetes' bearer token
/// authenticator reads it: the scheme case-insensitive, the token up to the next space; an
/// empty token is no token.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let authorization = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let mut parts = authorization.split(' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("header value"),
        );
        headers
    }

    #[test]
    fn tokens_name_users() {
        let tokens = Tokens::default();
        let alice = User::new("alice", ["dev"]);
        let token = tokens.token_for(&alice);
        assert_eq!(tokens.token_for(&alice), token, "one token per user");
        let authenticated = tokens
            .authenticate(&bearer(&format!("bearer {token}")))
            .expect("known token");
        assert_eq!(authenticated.name, "alice");
        assert_eq!(authenticated.groups, ["dev", "system:authenticated"]);
        assert_eq!(
            tokens.authenticate(&bearer("Bearer nope")),
            Err(ApiError::unauthorized())
        );
        assert_eq!(tokens.authenticate(&HeaderMap::new()), Ok(User::admin()));
        assert_eq!(tokens.authenticate(&bearer("Bearer ")), Ok(User::admin()));
        assert_eq!(
            tokens.authenticate(&bearer("Basic YTpi")),
            Ok(User::admin())
        );
    }
}
