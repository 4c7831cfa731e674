//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager): only the replica
//! holding the Lease runs the controllers; one that loses it stops.

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;

/// Where the Lease lives and how long a holder keeps it without renewing.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the Pod name in a cluster).
    pub identity: String,
    /// Seconds a lease stays valid after its last renewal (at least 2).
    pub duration_seconds: u64,
}

/// Leadership as it changes: `true` while this replica holds the Lease. Dropping it
/// releases the Lease.
pub struct Leadership {
    receiver: watch::Receiver<bool>,
    leases: Api<Lease>,
    config: LeaderConfig,
}

/// Why leader election could not start.
#[derive(Debug, thiserror::Error)]
#[error("leader election on Lease {namespace}/{name}: {message}")]
pub struct LeaderError {
    namespace: String,
    name: String,
    message: String,
}

impl Leadership {
    /// Starts competing for the Lease.
    pub async fn start(
        client: kube::Client,
        config: &LeaderConfig,
    ) -> Result<Leadership, LeaderError> {
        let duration = config.duration_seconds.max(2);
        // Renew a third of the way before expiry; the library wants 0 < grace < duration.
        let grace = (duration / 3).max(1);
        let params = LeaseParams::new(config.identity.clone(), duration, grace)
            .with_field_manager(format!("pequod-leader-{}", config.identity));
        let client_for_watchdog = client.clone();
        let manager = LeaseManagerBuilder::new(client, config.name.clone())
            .with_namespace(config.namespace.clone())
            .with_parameters(params)
            .build()
            .await
            .map_err(|e| LeaderError {
                namespace: config.namespace.clone(),
                name: config.name.clone(),
                message: e.to_string(),
            })?;
        let (receiver, _task) = manager.watch().await;
        Ok(Leadership {
            receiver,
            leases: Api::namespaced(client_for_watchdog, &config.namespace),
            config: config.clone(),
        })
    }

    /// Resolves once this replica leads.
    pub async fn acquired(&mut self) {
        let _ = self.receiver.wait_for(|leading| *leading).await;
    }

    /// Resolves when this replica stops leading: the lease manager says so, or the Lease
    /// names another holder, or it has not been renewed for a lease duration (renewals
    /// that keep failing never make the manager give up, so the Lease itself is checked).
    pub async fn lost(&mut self) {
        let duration = std::time::Duration::from_secs(self.config.duration_seconds.max(2));
        let watchdog = async {
            let mut last_seen_valid = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(duration / 3).await;
                match self.leases.get_opt(&self.config.name).await {
                    Ok(Some(lease)) => {
                        let spec = lease.spec.unwrap_or_default();
                        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                            return;
                        }
                        let renewed = spec.renew_time.map(|t| t.0);
                        let fresh = renewed.is_some_and(|t| {
                            jiff::Timestamp::now().duration_since(t).as_secs_f64()
                                < duration.as_secs_f64()
                        });
                        if fresh {
                            last_seen_valid = tokio::time::Instant::now();
                        }
                    }
                    Ok(None) => return,
                    Err(error) => tracing::warn!(%error, "cannot read the leader Lease"),
                }
                if last_seen_valid.elapsed() >= duration {
                    return;
                }
            }
        };
        let receiver = &mut self.receiver;
        tokio::select! {
            _ = receiver.wait_for(|leading| !*leading) => {}
            () = watchdog => {}
        }
    }
}
