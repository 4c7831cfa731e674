//! Request accounting: how many requests the server was sent, by verb, resource and user, so
//! tests and benchmarks can assert how many calls a client makes.
//!
//! Verbs are the Kubernetes audit verbs (`get`, `list`, `watch`, `create`, `update`,
//! `patch`, `delete`, `deletecollection`), except that a server-side apply (a PATCH with
//! `application/apply-patch+yaml`) counts as `apply`. Requests for no resource (discovery,
//! OpenAPI, `/version`) count as their method (`get`) on their path (`/apis/apps/v1`).
//! The user is the one the request acts as: its bearer token's user ([`DEFAULT_USER`]
//! without one), or the user it impersonates; a request that may not impersonate counts
//! under its sender, one whose token is unknown under the empty name. Every request is
//! counted once it is authenticated, whatever its answer (refusals and injected faults
//! included); `/debug/requests` itself is not.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The user of requests without credentials (the kubeconfig the server writes has none).
pub const DEFAULT_USER: &str = "admin";

/// What one counter counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKey {
    /// Audit verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `apply`, `delete`,
    /// `deletecollection`).
    pub verb: String,
    /// API group (empty for core and for requests for no resource).
    pub group: String,
    /// Plural resource with its subresource (`deployments`, `deployments/status`), or the
    /// path of a request for no resource (`/apis/apps/v1`).
    pub resource: String,
    /// Who sent it.
    pub user: String,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests {
    /// Requests per verb, resource and user.
    pub counts: BTreeMap<RequestKey, u64>,
}

impl Requests {
    /// Requests with `verb` on `resource` (`deployments`, `deployments/status`), any group
    /// and user.
    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        self.counts
            .iter()
            .filter(|(key, _)| key.verb == verb && key.resource == resource)
            .map(|(_, count)| count)
            .sum()
    }

    /// Every request counted.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The requests `user` sent.
    pub fn of_user(&self, user: &str) -> Requests {
        let counts = self
            .counts
            .iter()
            .filter(|(key, _)| key.user == user)
            .map(|(key, count)| (key.clone(), *count))
            .collect();
        Requests { counts }
    }

    /// The requests made after `earlier` was taken (counters that did not move are left out).
    pub fn since(&self, earlier: &Requests) -> Requests {
        let counts = self
            .counts
            .iter()
            .filter_map(|(key, count)| {
                let before = earlier.counts.get(key).copied().unwrap_or(0);
                (*count > before).then(|| (key.clone(), count - before))
            })
            .collect();
        Requests { counts }
    }

    /// The `/debug/requests` document: `{"items": [{verb, group, resource, user, count}]}`,
    /// sorted by verb, group, resource and user.
    pub fn to_json(&self) -> serde_json::Value {
        let items: Vec<serde_json::Value> = self
            .counts
            .iter()
            .map(|(key, count)| {
                serde_json::json!({"verb": key.verb, "group": key.group, "resource": key.resource,
                                   "user": key.user, "count": count})
            })
            .collect();
        serde_json::json!({ "items": items })
    }
}

/// The live counters, shared by the request handlers.
#[derive(Debug, Default)]
pub struct RequestLog {
    counts: Mutex<BTreeMap<RequestKey, u64>>,
}

impl RequestLog {
    /// Counts one request.
    pub fn record(&self, key: RequestKey) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *counts.entry(key).or_insert(0) += 1;
    }

    /// The counters now.
    pub fn snapshot(&self) -> Requests {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        Requests { counts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(verb: &str, resource: &str, user: &str) -> RequestKey {
        RequestKey {
            verb: verb.into(),
            group: "apps".into(),
            resource: resource.into(),
            user: user.into(),
        }
    }

    #[test]
    fn counts_sum_over_users_and_diff_snapshots() {
        let log = RequestLog::default();
        log.record(key("apply", "deployments", "admin"));
        let before = log.snapshot();
        log.record(key("apply", "deployments", "pequod"));
        log.record(key("get", "deployments/status", "admin"));
        let after = log.snapshot();
        assert_eq!(after.count("apply", "deployments"), 2);
        assert_eq!(after.count("get", "deployments/status"), 1);
        assert_eq!(after.total(), 3);
        let since = after.since(&before);
        assert_eq!(
            since.counts,
            BTreeMap::from([
                (key("apply", "deployments", "pequod"), 1),
                (key("get", "deployments/status", "admin"), 1),
            ])
        );
        assert_eq!(
            since.to_json()["items"][0],
            serde_json::json!({"verb": "apply", "group": "apps", "resource": "deployments",
                               "user": "pequod", "count": 1})
        );
    }
}
