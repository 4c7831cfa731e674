//! Bearer tokens from a registry's token service (the Docker Registry token authentication
//! that OCI registries use): a registry answers 401 with a `WWW-Authenticate: Bearer` challenge
//! naming its token service (the realm), which is asked for a token of the repository's pull
//! scope.
//!
//! The realm is the registry's to choose, and a Transform may name any registry the
//! `--module-sources` allowlist lets through. So the answer is read with a bound (a token
//! service cannot make the operator hold an endless answer), and of an answer only its token,
//! or the error a token service writes, is kept: what some other URL answers the operator is
//! never shown to the Transform's author.

use http_auth::ChallengeParser;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

/// The largest answer read from a token service.
pub const MAX_TOKEN_ANSWER_BYTES: usize = 64 << 10;

/// How much of a token service's error message is shown.
const MAX_MESSAGE_CHARS: usize = 256;

/// Where a registry says to ask for a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The token service's URL.
    pub realm: String,
    /// The `service` to name in the request, when the registry gives one.
    pub service: Option<String>,
}

impl Challenge {
    /// The Bearer challenge among a 401's `WWW-Authenticate` headers, if there is one.
    pub fn of(headers: &http::HeaderMap) -> Option<Challenge> {
        headers
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(ChallengeParser::new)
            .filter_map(Result::ok)
            .filter(|challenge| challenge.scheme.eq_ignore_ascii_case("Bearer"))
            .find_map(|challenge| {
                let param = |name: &str| {
                    challenge
                        .params
                        .iter()
                        .find(|(key, _)| key.eq_ignore_ascii_case(name))
                        .map(|(_, value)| value.to_unescaped())
                };
                Some(Challenge {
                    realm: param("realm")?,
                    service: param("service"),
                })
            })
    }
}

/// Why no token was had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token service could not be asked.
    #[error("cannot reach the registry's token service {realm}: {message}")]
    Unreachable {
        /// The token service.
        realm: String,
        /// What went wrong.
        message: String,
    },
    /// The token service answered with something other than a token.
    #[error("the registry's token service {realm} {message}")]
    Refused {
        /// The token service.
        realm: String,
        /// Its answer's status, when it was not 200.
        status: Option<u16>,
        /// What it answered, in words.
        message: String,
    },
    /// The registry names a token service over plain HTTP while the registry itself is
    /// spoken to over HTTPS: its credentials would cross the network in clear.
    #[error(
        "the registry names a token service over plain HTTP ({realm}); its credentials are not sent in clear"
    )]
    Insecure {
        /// The token service.
        realm: String,
    },
}

impl TokenError {
    /// Whether the token service, or the way to it, was unavailable (a passing failure
    /// of the registry: 5xx, 429, unreachable) rather than refusing.
    pub fn is_unavailable(&self) -> bool {
        match self {
            TokenError::Unreachable { .. } => true,
            TokenError::Refused { status, .. } => {
                status.is_some_and(|status| status >= 500 || status == 429)
            }
            TokenError::Insecure { .. } => false,
        }
    }
}

/// The two names a token service may give its token (`access_token` is OAuth 2's), and the
/// messages of its errors (Docker's distribution `errors`, or a `details` string).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Answer {
    token: Option<String>,
    access_token: Option<String>,
    errors: Vec<ErrorEntry>,
    details: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorEntry {
    message: String,
}

/// A token for pulling `repository`, from the token service of `challenge`, asked with
/// `auth`'s basic credentials when it has them. `http` must not follow redirects (the
/// realm is the registry's to choose; where it redirects to is nobody's). Credentials go
/// over plain HTTP only when the registry itself is spoken to that way (`insecure`).
pub async fn pull_token(
    http: &reqwest::Client,
    challenge: &Challenge,
    repository: &str,
    auth: &RegistryAuth,
    insecure: bool,
) -> Result<String, TokenError> {
    let realm = challenge.realm.clone();
    let unreachable = |message: String| TokenError::Unreachable {
        realm: realm.clone(),
        message,
    };
    let refused = |status: Option<u16>, message: String| TokenError::Refused {
        realm: realm.clone(),
        status,
        message,
    };
    let has_credentials = matches!(auth, RegistryAuth::Basic(..));
    if has_credentials && !insecure && !realm.to_ascii_lowercase().starts_with("https://") {
        return Err(TokenError::Insecure { realm });
    }
    let scope = format!("repository:{repository}:pull");
    let mut query = vec![("scope", scope.as_str())];
    if let Some(service) = &challenge.service {
        query.push(("service", service));
    }
    let request = http.get(&challenge.realm).query(&query);
    let request = match auth {
        RegistryAuth::Basic(user, password) => request.basic_auth(user, Some(password)),
        _ => request,
    };
    let mut response = request
        .send()
        .await
        .map_err(|e| unreachable(e.without_url().to_string()))?;
    let status = response.status();
    let code = (!status.is_success()).then_some(status.as_u16());
    let body = super::bounded::read_at_most(&mut response, MAX_TOKEN_ANSWER_BYTES)
        .await
        .map_err(|e| unreachable(e.without_url().to_string()))?
        .ok_or_else(|| {
            refused(
                code,
                format!("answered more than {MAX_TOKEN_ANSWER_BYTES} bytes"),
            )
        })?;
    let answer: Option<Answer> = serde_json::from_slice(&body).ok();
    if !status.is_success() {
        let said = answer
            .as_ref()
            .and_then(|answer| {
                answer
                    .errors
                    .iter()
                    .map(|e| e.message.as_str())
                    .find(|m| !m.is_empty())
                    .or(answer.details.as_deref())
            })
            .map(|message| format!(": {}", shorten(message)))
            .unwrap_or_default();
        return Err(refused(code, format!("answered {status}{said}")));
    }
    answer
        .and_then(|answer| answer.token.or(answer.access_token))
        .filter(|token| !token.is_empty())
        .ok_or_else(|| refused(None, "answered without a token".to_string()))
}

/// `message` cut to [`MAX_MESSAGE_CHARS`] characters.
fn shorten(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => format!("{}…", &message[..end]),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for value in values {
            headers.append(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_str(value).expect("a header value"),
            );
        }
        headers
    }

    #[test]
    fn the_bearer_challenge_is_found_among_the_others() {
        assert_eq!(
            Challenge::of(&headers(&[
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull""#
            ])),
            Some(Challenge {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
            })
        );
        assert_eq!(
            Challenge::of(&headers(&[
                r#"Basic realm="r", Bearer realm="https://ghcr.io/token""#
            ])),
            Some(Challenge {
                realm: "https://ghcr.io/token".into(),
                service: None,
            })
        );
        assert_eq!(
            Challenge::of(&headers(&[
                r#"Basic realm="registry""#,
                r#"Bearer realm="https://t/""#
            ])),
            Some(Challenge {
                realm: "https://t/".into(),
                service: None,
            })
        );
        assert_eq!(
            Challenge::of(&headers(&[r#"Basic realm="registry""#])),
            None
        );
        assert_eq!(
            Challenge::of(&headers(&[r#"Bearer service="no-realm""#])),
            None
        );
        assert_eq!(Challenge::of(&headers(&["Bearer \"unparsable"])), None);
        assert_eq!(Challenge::of(&http::HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn credentials_are_not_sent_to_a_plain_http_token_service_of_an_https_registry() {
        let challenge = Challenge {
            realm: "http://127.0.0.1:9/token".into(),
            service: None,
        };
        let basic = RegistryAuth::Basic("u".into(), "p".into());
        let refused = pull_token(&reqwest::Client::new(), &challenge, "m", &basic, false)
            .await
            .expect_err("refused before any request");
        assert!(matches!(refused, TokenError::Insecure { .. }), "{refused}");
        assert!(!refused.is_unavailable());
        // Anonymous, or a registry spoken to over HTTP anyway: asked (here, unreachable).
        for (auth, insecure) in [(RegistryAuth::Anonymous, false), (basic, true)] {
            let error = pull_token(&reqwest::Client::new(), &challenge, "m", &auth, insecure)
                .await
                .expect_err("nothing listens");
            assert!(matches!(error, TokenError::Unreachable { .. }), "{error}");
        }
    }

    #[test]
    fn long_messages_are_cut() {
        assert_eq!(shorten("short"), "short");
        let long = "é".repeat(MAX_MESSAGE_CHARS + 10);
        assert_eq!(shorten(&long).chars().count(), MAX_MESSAGE_CHARS + 1);
    }
}
