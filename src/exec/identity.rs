//! Who a graph acts as. In the multi-tenant setup every graph writes, deletes and reads its
//! objects as a ServiceAccount of its namespace, through Kubernetes impersonation, so a
//! tenant's graph can do no more than the tenant's own RBAC allows; without a service
//! account the graph acts as the operator (single tenant).

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::cluster::{ApiError, Applier};

/// The identity of a graph's requests.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// The operator's own (single-tenant mode).
    Operator,
    /// `system:serviceaccount:<namespace>:<name>`, impersonated.
    ServiceAccount {
        /// The graph's namespace.
        namespace: String,
        /// The ServiceAccount's name.
        name: String,
    },
}

impl Identity {
    /// The identity of a graph in `namespace` naming `service_account` (its spec), with the
    /// operator's `--default-service-account` for graphs that name none.
    pub fn of_graph(
        namespace: &str,
        service_account: Option<&str>,
        default: Option<&str>,
    ) -> Identity {
        match service_account.filter(|s| !s.is_empty()).or(default) {
            Some(name) => Identity::ServiceAccount {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
            None => Identity::Operator,
        }
    }

    /// The Kubernetes user name impersonated, if any.
    pub fn user(&self) -> Option<String> {
        match self {
            Identity::Operator => None,
            Identity::ServiceAccount { namespace, name } => {
                Some(format!("system:serviceaccount:{namespace}:{name}"))
            }
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Operator => f.write_str("the operator"),
            Identity::ServiceAccount { namespace, name } => {
                write!(f, "service account {namespace}/{name}")
            }
        }
    }
}

/// How many impersonating clients are kept (one per service account in use), least
/// recently used out first.
const MAX_CLIENTS: NonZeroUsize = NonZeroUsize::new(1024).expect("non-zero");

/// Appliers by identity: the operator's own, and one per impersonated service account, all
/// sharing one discovery cache. Clients are made once per identity and kept while used.
#[derive(Clone)]
pub struct Appliers {
    config: kube::Config,
    operator: Applier,
    impersonating: Arc<Mutex<LruCache<String, Applier>>>,
}

impl Appliers {
    /// Appliers for the API server of `config` (the operator's credentials). Their clients
    /// do not retry by themselves: a pass must not hold a write permit while a throttled
    /// request waits; the node rides the error out and is tried again with its own
    /// backoff, no sooner than the server asked.
    pub fn new(mut config: kube::Config) -> Result<Appliers, kube::Error> {
        config.default_retry = false;
        let operator = Applier::new(kube::Client::try_from(config.clone())?);
        Ok(Appliers {
            config,
            operator,
            impersonating: Arc::new(Mutex::new(LruCache::new(MAX_CLIENTS))),
        })
    }

    /// The operator's own applier.
    pub fn operator(&self) -> &Applier {
        &self.operator
    }

    /// The applier acting as `identity`.
    pub fn of(&self, identity: &Identity) -> Result<Applier, ApiError> {
        let Some(user) = identity.user() else {
            return Ok(self.operator.clone());
        };
        let mut cache = self
            .impersonating
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(applier) = cache.get(&user) {
            return Ok(applier.clone());
        }
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(user.clone());
        config.auth_info.impersonate_groups = None;
        let client = kube::Client::try_from(config).map_err(|e| {
            ApiError::Transport(format!(
                "cannot make a client impersonating {identity}: {e}"
            ))
        })?;
        let applier = self.operator.with_client(client);
        cache.put(user, applier.clone());
        Ok(applier)
    }
}
