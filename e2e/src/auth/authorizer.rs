//! Authorization: whether a user may do what a request asks, and the `403 Forbidden`
//! Kubernetes answers when not. With enforcement off (the default) everything is allowed,
//! as kube-apiserver's `AlwaysAllow` mode does; with it on, members of `system:masters` may
//! do anything (the privileged-group authorizer ahead of RBAC) and everyone else what RBAC
//! grants.

use super::attributes::Attributes;
use super::rbac::Policy;
use super::user::{SYSTEM_MASTERS, User};
use crate::gofmt::go_quote;
use crate::status::{ApiError, Subject, sanitize};
use crate::store::Store;
use std::sync::Arc;

/// The answer to one authorization question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether it is allowed.
    pub allowed: bool,
    /// Why, as the authorizer says it (`RBAC: allowed by …`, the errors met reading the
    /// policy, or empty).
    pub reason: String,
}

/// Decides requests against the RBAC objects of a store.
pub struct Authorizer {
    store: Arc<Store>,
    enforce: bool,
}

impl Authorizer {
    /// An authorizer over `store`'s RBAC objects; `enforce` false allows everything.
    pub fn new(store: Arc<Store>, enforce: bool) -> Self {
        Authorizer { store, enforce }
    }

    /// Whether `user` may do what `attributes` ask.
    pub fn authorize(&self, user: &User, attributes: &Attributes) -> Decision {
        if !self.enforce || user.in_group(SYSTEM_MASTERS) {
            return Decision {
                allowed: true,
                reason: String::new(),
            };
        }
        match Policy::new(&self.store).authorize(user, attributes) {
            Ok(reason) => Decision {
                allowed: true,
                reason,
            },
            Err(reason) => Decision {
                allowed: false,
                reason,
            },
        }
    }

    /// Nothing when `user` may do what `attributes` ask, Kubernetes' 403 otherwise.
    pub fn check(&self, user: &User, attributes: &Attributes) -> Result<(), ApiError> {
        let decision = self.authorize(user, attributes);
        if decision.allowed {
            Ok(())
        } else {
            Err(forbidden(user, attributes, &decision.reason))
        }
    }
}

/// The 403 of a refused request, worded as `responsewriters.Forbidden` words it:
/// `configmaps "x" is forbidden: User "u" cannot get resource "configmaps" in API group ""
/// in the namespace "ns"` (or `at the cluster scope`; `forbidden: User "u" cannot get path
/// "/x"` for requests for no resource), with `: <reason>` when the authorizer gave one.
pub fn forbidden(user: &User, attributes: &Attributes, reason: &str) -> ApiError {
    let who = go_quote(&user.name);
    let verb = &attributes.verb;
    let message = if !attributes.resource_request {
        format!(
            "User {who} cannot {verb} path {}",
            go_quote(&attributes.path)
        )
    } else {
        let resource = go_quote(&attributes.combined_resource());
        let group = go_quote(&attributes.api_group);
        let scope = if attributes.namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace {}", go_quote(&attributes.namespace))
        };
        format!("User {who} cannot {verb} resource {resource} in API group {group} {scope}")
    };
    let message = sanitize(&message);
    let why = if reason.is_empty() {
        message
    } else {
        format!("{message}: {reason}")
    };
    let subject = Subject {
        group: &attributes.api_group,
        resource: &attributes.resource,
    };
    ApiError::forbidden_on(subject, &attributes.name, &why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn forbidden_messages_match_kubernetes() {
        let user = User::service_account("team-a", "app");
        let patch = Attributes::of_request(
            "PATCH",
            "/apis/apps/v1/namespaces/team-a/deployments/web",
            false,
            None,
        );
        let error = forbidden(&user, &patch, "");
        assert_eq!(
            error.message,
            "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:team-a:app\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"team-a\""
        );
        assert_eq!(
            error.body()["details"],
            json!({"name": "web", "group": "apps", "kind": "deployments"})
        );
        let list = Attributes::of_request("GET", "/api/v1/namespaces", false, None);
        assert_eq!(
            forbidden(
                &user,
                &list,
                "RBAC: role.rbac.authorization.k8s.io \"x\" not found"
            )
            .message,
            "namespaces is forbidden: User \"system:serviceaccount:team-a:app\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope: RBAC: role.rbac.authorization.k8s.io \"x\" not found"
        );
        let path = Attributes::of_request("GET", "/metrics", false, None);
        let error = forbidden(&user, &path, "");
        assert_eq!(
            error.message,
            "forbidden: User \"system:serviceaccount:team-a:app\" cannot get path \"/metrics\""
        );
        assert_eq!(error.body()["details"], json!({}));
    }
}
