//! Impersonation: `Impersonate-User`, `Impersonate-Group` (repeatable), `Impersonate-Uid`
//! and `Impersonate-Extra-<key>` headers make a request act as another user, provided the
//! requester may `impersonate` each thing asked, as Kubernetes' impersonation filter
//! decides (`k8s.io/apiserver/pkg/endpoints/filters/impersonation.go`): `users` by name,
//! `serviceaccounts` by namespace and name (for `system:serviceaccount:<ns>:<name>` users),
//! `groups`, `uids` and `userextras/<key>` (the last two in `authentication.k8s.io`).

use super::attributes::Attributes;
use super::authorizer::{Authorizer, forbidden};
use super::user::{
    ANONYMOUS, AUTHENTICATED, UNAUTHENTICATED, User, service_account_groups, service_account_name,
    split_service_account_name,
};
use crate::status::ApiError;
use axum::http::HeaderMap;

/// The API group of the `uids` and `userextras` impersonation resources.
const AUTHENTICATION_GROUP: &str = "authentication.k8s.io";

/// Why a request may not act as the user it asks for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// The requester may not impersonate one of the things asked (403).
    #[error("{0}")]
    Forbidden(ApiError),
    /// Groups, a uid or extra were asked without a user (Kubernetes answers 500 with this
    /// text).
    #[error("requested {0} without impersonating a user")]
    WithoutUser(String),
}

/// One thing a request asks to act as (an `ObjectReference` of the filter).
#[derive(Debug, Clone, PartialEq)]
enum Target {
    ServiceAccount { namespace: String, name: String },
    User(String),
    Group(String),
    Extra { key: String, value: String },
    Uid(String),
}

impl Target {
    /// What the requester must be allowed for this target.
    fn attributes(&self) -> Attributes {
        let (group, version, resource, subresource, namespace, name) = match self {
            Target::ServiceAccount { namespace, name } => (
                "",
                "",
                "serviceaccounts",
                "",
                namespace.as_str(),
                name.as_str(),
            ),
            Target::User(name) => ("", "", "users", "", "", name.as_str()),
            Target::Group(name) => ("", "", "groups", "", "", name.as_str()),
            Target::Extra { key, value } => (
                AUTHENTICATION_GROUP,
                "v1",
                "userextras",
                key.as_str(),
                "",
                value.as_str(),
            ),
            Target::Uid(uid) => (AUTHENTICATION_GROUP, "v1", "uids", "", "", uid.as_str()),
        };
        Attributes {
            resource_request: true,
            verb: "impersonate".to_owned(),
            api_group: group.to_owned(),
            api_version: version.to_owned(),
            namespace: namespace.to_owned(),
            resource: resource.to_owned(),
            subresource: subresource.to_owned(),
            name: name.to_owned(),
            ..Attributes::default()
        }
    }

    /// The target as Go's `%v` prints the `ObjectReference` (Kind, Namespace, Name, UID,
    /// APIVersion, ResourceVersion, FieldPath).
    fn go_value(&self) -> String {
        let authentication = format!("{AUTHENTICATION_GROUP}/v1");
        let (kind, namespace, name, api_version, field_path) = match self {
            Target::ServiceAccount { namespace, name } => {
                ("ServiceAccount", namespace.as_str(), name.as_str(), "", "")
            }
            Target::User(name) => ("User", "", name.as_str(), "", ""),
            Target::Group(name) => ("Group", "", name.as_str(), "", ""),
            Target::Extra { key, value } => (
                "UserExtra",
                "",
                value.as_str(),
                authentication.as_str(),
                key.as_str(),
            ),
            Target::Uid(uid) => ("UID", "", uid.as_str(), authentication.as_str(), ""),
        };
        format!("{{{kind} {namespace} {name}  {api_version}  {field_path}}}")
    }
}

/// The user a request acts as: `requester` itself when it carries no impersonation header,
/// otherwise the user the headers name, once `authorizer` allows `requester` to impersonate
/// each part of it. A service account impersonated without groups gets its own; every
/// impersonated user but `system:anonymous` is in `system:authenticated` (unless the groups
/// asked include it or `system:unauthenticated`).
pub fn impersonate(
    requester: User,
    headers: &HeaderMap,
    authorizer: &Authorizer,
) -> Result<User, Refusal> {
    let targets = targets(headers);
    if targets.is_empty() {
        return Ok(requester);
    }
    let asks_user = targets
        .iter()
        .any(|target| matches!(target, Target::User(_) | Target::ServiceAccount { .. }));
    if !asks_user {
        let listed: Vec<String> = targets.iter().map(Target::go_value).collect();
        return Err(Refusal::WithoutUser(format!("[{}]", listed.join(" "))));
    }
    let groups_asked = targets
        .iter()
        .any(|target| matches!(target, Target::Group(_)));
    let mut user = User::default();
    for target in &targets {
        let attributes = target.attributes();
        let decision = authorizer.authorize(&requester, &attributes);
        if !decision.allowed {
            return Err(Refusal::Forbidden(forbidden(
                &requester,
                &attributes,
                &decision.reason,
            )));
        }
        match target {
            Target::ServiceAccount { namespace, name } => {
                user.name = service_account_name(namespace, name);
                if !groups_asked {
                    user.groups = service_account_groups(namespace);
                }
            }
            Target::User(name) => user.name.clone_from(name),
            Target::Group(group) => user.groups.push(group.clone()),
            Target::Extra { key, value } => {
                user.extra
                    .entry(key.clone())
                    .or_default()
                    .push(value.clone());
            }
            Target::Uid(uid) => user.uid.clone_from(uid),
        }
    }
    let implicit = if user.name == ANONYMOUS {
        UNAUTHENTICATED
    } else {
        AUTHENTICATED
    };
    if !user.in_group(implicit) && !user.in_group(UNAUTHENTICATED) {
        user.groups.push(implicit.to_owned());
    }
    Ok(user)
}

/// What the headers ask to act as, in the order the filter checks it: the user, the
/// groups, the extra (by key), the uid.
fn targets(headers: &HeaderMap) -> Vec<Target> {
    let text =
        |value: &axum::http::HeaderValue| String::from_utf8_lossy(value.as_bytes()).into_owned();
    let mut targets = Vec::new();
    if let Some(name) = headers
        .get("impersonate-user")
        .map(text)
        .filter(|name| !name.is_empty())
    {
        targets.push(match split_service_account_name(&name) {
            Some((namespace, account)) => Target::ServiceAccount {
                namespace: namespace.to_owned(),
                name: account.to_owned(),
            },
            None => Target::User(name),
        });
    }
    targets.extend(
        headers
            .get_all("impersonate-group")
            .iter()
            .map(|group| Target::Group(text(group))),
    );
    let mut extra: Vec<(String, Vec<String>)> = headers
        .keys()
        .filter_map(|header| {
            let key = header.as_str().strip_prefix("impersonate-extra-")?;
            let values = headers.get_all(header).iter().map(text).collect();
            Some((path_unescape(key), values))
        })
        .collect();
    extra.sort();
    for (key, values) in extra {
        targets.extend(values.into_iter().map(|value| Target::Extra {
            key: key.clone(),
            value,
        }));
    }
    if let Some(uid) = headers
        .get("impersonate-uid")
        .map(text)
        .filter(|uid| !uid.is_empty())
    {
        targets.push(Target::Uid(uid));
    }
    targets
}

/// `%`-escapes decoded, as Go's `url.PathUnescape` (the key kept as sent when it does not
/// decode).
fn path_unescape(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes
                .get(index + 1..index + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok());
            match hex {
                Some(byte) => {
                    decoded.push(byte);
                    index += 3;
                    continue;
                }
                None => return key.to_owned(),
            }
        }
        decoded.push(bytes[index]);
        index += 1;
    }
    String::from_utf8(decoded).unwrap_or_else(|_| key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use axum::http::HeaderValue;
    use std::sync::Arc;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).expect("header value"));
        }
        headers
    }

    #[test]
    fn the_admin_may_impersonate_anyone() {
        let authorizer = Authorizer::new(Arc::new(Store::default()), true);
        let account = impersonate(
            User::admin(),
            &headers(&[("impersonate-user", "system:serviceaccount:team-a:app")]),
            &authorizer,
        )
        .expect("allowed");
        assert_eq!(account, User::service_account("team-a", "app"));
        let user = impersonate(
            User::admin(),
            &headers(&[
                ("impersonate-user", "alice"),
                ("impersonate-group", "dev"),
                ("impersonate-group", "ops"),
                ("impersonate-uid", "1234"),
                ("impersonate-extra-example.org%2fscope", "read"),
                ("impersonate-extra-example.org%2fscope", "write"),
            ]),
            &authorizer,
        )
        .expect("allowed");
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["dev", "ops", "system:authenticated"]);
        assert_eq!(user.uid, "1234");
        assert_eq!(
            user.extra.get("example.org/scope").map(Vec::as_slice),
            Some(&["read".to_owned(), "write".to_owned()][..])
        );
        assert_eq!(
            impersonate(User::admin(), &HeaderMap::new(), &authorizer),
            Ok(User::admin())
        );
    }

    #[test]
    fn groups_without_a_user_are_refused() {
        let authorizer = Authorizer::new(Arc::new(Store::default()), false);
        let refused = impersonate(
            User::admin(),
            &headers(&[("impersonate-group", "dev"), ("impersonate-uid", "1")]),
            &authorizer,
        );
        assert_eq!(
            refused.map_err(|refusal| refusal.to_string()),
            Err("requested [{Group  dev    } {UID  1  authentication.k8s.io/v1  }] without impersonating a user".to_owned())
        );
    }

    #[test]
    fn unescaping_extra_keys() {
        assert_eq!(path_unescape("example.org%2Fscope"), "example.org/scope");
        assert_eq!(path_unescape("bad%zz"), "bad%zz");
        assert_eq!(path_unescape("plain"), "plain");
    }
}
