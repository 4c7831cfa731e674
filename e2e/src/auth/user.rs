//! Who a request is: the user information Kubernetes' authenticators produce (name, uid,
//! groups, extra), and the naming rules of service-account users
//! (`k8s.io/apiserver/pkg/authentication/serviceaccount`).

use std::collections::BTreeMap;

/// The group whose members may do anything (`user.SystemPrivilegedGroup`).
pub const SYSTEM_MASTERS: &str = "system:masters";
/// The group of every authenticated user (`user.AllAuthenticated`).
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of unauthenticated requests (`user.AllUnauthenticated`).
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The name of unauthenticated requests (`user.Anonymous`).
pub const ANONYMOUS: &str = "system:anonymous";
/// The group of every service account (`serviceaccount.AllServiceAccountsGroup`).
pub const SERVICE_ACCOUNTS: &str = "system:serviceaccounts";
/// The prefix of service-account user names (`serviceaccount.ServiceAccountUsernamePrefix`).
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// A user, as authentication or impersonation makes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    /// The user name (`alice`, `system:serviceaccount:team-a:app`).
    pub name: String,
    /// A unique id (empty unless impersonated with `Impersonate-Uid` or reviewed with one).
    pub uid: String,
    /// The groups the user belongs to.
    pub groups: Vec<String>,
    /// Extra information (`Impersonate-Extra-*`), by lower-case key.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// A user named `name` in `groups`. Authenticated by a token, it also belongs to
    /// `system:authenticated` (added by the server as Kubernetes' authenticators do).
    pub fn new<G: Into<String>>(
        name: impl Into<String>,
        groups: impl IntoIterator<Item = G>,
    ) -> Self {
        User {
            name: name.into(),
            groups: groups.into_iter().map(Into::into).collect(),
            ..User::default()
        }
    }

    /// The user of requests without credentials: `admin` in `system:masters` (so every
    /// request may do anything unless it names another user).
    pub fn admin() -> Self {
        User::new(
            crate::requests::DEFAULT_USER,
            [SYSTEM_MASTERS, AUTHENTICATED],
        )
    }

    /// The user a service account's token authenticates as:
    /// `system:serviceaccount:<namespace>:<name>` in `system:serviceaccounts`,
    /// `system:serviceaccounts:<namespace>` and `system:authenticated`.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        let mut groups = service_account_groups(namespace);
        groups.push(AUTHENTICATED.to_owned());
        User::new(service_account_name(namespace, name), groups)
    }

    /// Whether the user belongs to `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// `system:serviceaccount:<namespace>:<name>` (`serviceaccount.MakeUsername`).
pub fn service_account_name(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}")
}

/// The groups of a service account's user, `system:authenticated` aside
/// (`serviceaccount.MakeGroupNames`).
pub fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        SERVICE_ACCOUNTS.to_owned(),
        format!("{SERVICE_ACCOUNTS}:{namespace}"),
    ]
}

/// The namespace and name of a service-account user name, when it is one: the prefix, then
/// a namespace that is a DNS label and a name that is a DNS subdomain
/// (`serviceaccount.SplitUsername`).
pub fn split_service_account_name(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix(SERVICE_ACCOUNT_PREFIX)?;
    let (namespace, name) = rest.split_once(':')?;
    let valid = !name.contains(':')
        && crate::store::is_dns_label(namespace)
        && crate::store::is_dns_subdomain(name);
    valid.then_some((namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_users() {
        let user = User::service_account("team-a", "app");
        assert_eq!(user.name, "system:serviceaccount:team-a:app");
        assert_eq!(
            user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:team-a",
                "system:authenticated"
            ]
        );
        assert_eq!(
            split_service_account_name(&user.name),
            Some(("team-a", "app"))
        );
        for not_one in [
            "alice",
            "system:serviceaccount:team-a",
            "system:serviceaccount:team-a:app:x",
            "system:serviceaccount:Team:app",
            "system:serviceaccount::app",
        ] {
            assert_eq!(split_service_account_name(not_one), None, "{not_one}");
        }
        assert!(User::admin().in_group(SYSTEM_MASTERS));
    }
}
