//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager): only the replica
//! holding the Lease runs the controllers; one that loses it stops.

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
        Ok(Leadership { receiver })
    }

    /// Resolves once this replica leads.
    pub async fn acquired(&mut self) {
        let _ = self.receiver.wait_for(|leading| *leading).await;
    }

    /// Resolves when this replica stops leading.
    pub async fn lost(&mut self) {
        let _ = self.receiver.wait_for(|leading| !*leading).await;
    }
}
