//! The readiness simulator: plays the controllers a real cluster runs. Deployments and
//! StatefulSets become available after a delay, a CloudNativePG `Cluster` becomes Ready (and
//! gets the `-app` Secret and `-rw`/`-ro`/`-r` Services the CNPG operator creates), a
//! `Pooler` becomes `active`, a `Database` `applied`. Tests can keep chosen objects from ever
//! becoming ready.

use crate::resources::GroupResource;
use crate::store::{EventType, FieldValidation, Store, WriteOptions, now};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// What the simulator is told to do, changeable while it runs.
#[derive(Debug)]
pub struct SimulatorControl {
    delay: Mutex<Duration>,
    never_ready: Mutex<HashSet<(String, String, String)>>,
}

impl SimulatorControl {
    /// A control with the given readiness delay.
    pub fn new(delay: Duration) -> Self {
        SimulatorControl {
            delay: Mutex::new(delay),
            never_ready: Mutex::new(HashSet::new()),
        }
    }

    /// How long workloads take to become ready.
    pub fn delay(&self) -> Duration {
        *self.delay.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the readiness delay for objects that change from now on.
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap_or_else(|p| p.into_inner()) = delay;
    }

    /// Keeps the object of `kind` named `namespace/name` from ever becoming ready.
    pub fn never_ready(&self, kind: &str, namespace: &str, name: &str) {
        self.never_ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((kind.to_owned(), namespace.to_owned(), name.to_owned()));
    }

    /// Lets every object become ready again.
    pub fn allow_all(&self) {
        self.never_ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn blocked(&self, kind: &str, namespace: &str, name: &str) -> bool {
        self.never_ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(kind.to_owned(), namespace.to_owned(), name.to_owned()))
    }
}

/// The kinds the simulator plays a controller for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Deployment,
    StatefulSet,
    Cluster,
    Pooler,
    Database,
}

impl Workload {
    fn of(gr: &GroupResource) -> Option<Workload> {
        match (gr.group.as_str(), gr.resource.as_str()) {
            ("apps", "deployments") => Some(Workload::Deployment),
            ("apps", "statefulsets") => Some(Workload::StatefulSet),
            ("postgresql.cnpg.io", "clusters") => Some(Workload::Cluster),
            ("postgresql.cnpg.io", "poolers") => Some(Workload::Pooler),
            ("postgresql.cnpg.io", "databases") => Some(Workload::Database),
            _ => None,
        }
    }

    /// The manager name real controllers write status with.
    fn manager(self) -> &'static str {
        match self {
            Workload::Deployment | Workload::StatefulSet => "kube-controller-manager",
            _ => "cnpg-manager",
        }
    }
}

fn text(object: &Value, pointer: &str) -> String {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn generation(object: &Value) -> i64 {
    object
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// A condition, keeping the transition time of an unchanged one.
fn condition(old: &Value, type_: &str, status: &str, reason: &str, message: &str) -> Value {
    let previous = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|conditions| conditions.iter().find(|c| c["type"] == type_));
    let time = match previous {
        Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
        _ => json!(now()),
    };
    let mut condition = json!({"type": type_, "status": status, "lastTransitionTime": time,
                               "reason": reason, "message": message});
    if type_ == "Available" || type_ == "Progressing" {
        condition["lastUpdateTime"] = condition["lastTransitionTime"].clone();
    }
    condition
}

/// The status a workload's controller reports: `ready` after the delay, otherwise the
/// in-progress status it shows at once.
fn status(workload: Workload, object: &Value, ready: bool) -> Value {
    let name = text(object, "/metadata/name");
    let generation = generation(object);
    match workload {
        Workload::Deployment => {
            let replicas = object
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let was_available = object
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Available" && c["status"] == "True")
                });
            let replica_set = format!(
                "{name}-{:x}",
                generation.wrapping_mul(0x5bd1e995) & 0xffff_ffff
            );
            if ready {
                json!({
                    "observedGeneration": generation,
                    "replicas": replicas, "updatedReplicas": replicas,
                    "readyReplicas": replicas, "availableReplicas": replicas,
                    "conditions": [
                        condition(object, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."),
                        condition(object, "Progressing", "True", "NewReplicaSetAvailable", &format!("ReplicaSet \"{replica_set}\" has successfully progressed.")),
                    ]
                })
            } else if was_available {
                json!({
                    "observedGeneration": generation,
                    "replicas": replicas, "updatedReplicas": 0,
                    "readyReplicas": replicas, "availableReplicas": replicas,
                    "conditions": [
                        condition(object, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."),
                        condition(object, "Progressing", "True", "ReplicaSetUpdated", &format!("ReplicaSet \"{replica_set}\" is progressing.")),
                    ]
                })
            } else {
                json!({
                    "observedGeneration": generation,
                    "replicas": replicas, "updatedReplicas": replicas,
                    "unavailableReplicas": replicas,
                    "conditions": [
                        condition(object, "Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability."),
                        condition(object, "Progressing", "True", "ReplicaSetUpdated", &format!("ReplicaSet \"{replica_set}\" is progressing.")),
                    ]
                })
            }
        }
        Workload::StatefulSet => {
            let replicas = object
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let ready_replicas = if ready { replicas } else { 0 };
            let revision = format!(
                "{name}-{:x}",
                generation.wrapping_mul(0x5bd1e995) & 0xffff_ffff
            );
            json!({
                "observedGeneration": generation, "replicas": replicas,
                "readyReplicas": ready_replicas, "currentReplicas": ready_replicas,
                "updatedReplicas": ready_replicas, "availableReplicas": ready_replicas,
                "currentRevision": revision, "updateRevision": revision, "collisionCount": 0
            })
        }
        Workload::Cluster => {
            let instances = object
                .pointer("/spec/instances")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let (phase, ready_condition, ready_instances) = if ready {
                (
                    "Cluster in healthy state",
                    condition(
                        object,
                        "Ready",
                        "True",
                        "ClusterIsReady",
                        "Cluster is Ready",
                    ),
                    instances,
                )
            } else {
                (
                    "Setting up primary",
                    condition(
                        object,
                        "Ready",
                        "False",
                        "ClusterIsNotReady",
                        "Cluster Is Not Ready",
                    ),
                    0,
                )
            };
            json!({
                "phase": phase, "instances": instances, "readyInstances": ready_instances,
                "currentPrimary": format!("{name}-1"), "targetPrimary": format!("{name}-1"),
                "writeService": format!("{name}-rw"), "readService": format!("{name}-r"),
                "latestGeneratedNode": instances,
                "conditions": [ready_condition]
            })
        }
        Workload::Pooler => {
            let instances = object
                .pointer("/spec/instances")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            json!({"phase": if ready { "active" } else { "inactive" }, "instances": if ready { instances } else { 0 }})
        }
        Workload::Database => {
            if ready {
                json!({"applied": true, "observedGeneration": generation})
            } else {
                json!({"applied": false, "observedGeneration": generation, "message": "waiting for the cluster"})
            }
        }
    }
}

/// The simulator task: reacts to every change of a workload kind until `shutdown`.
pub async fn run(store: Arc<Store>, control: Arc<SimulatorControl>, shutdown: CancellationToken) {
    let mut receiver = store.events();
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = receiver.recv() => event,
        };
        let event = match event {
            Ok(event) => event,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        let Some(workload) = Workload::of(&event.gr) else {
            continue;
        };
        if event.kind == EventType::Deleted {
            continue;
        }
        let namespace = event.namespace.clone();
        let name = text(&event.object, "/metadata/name");
        reconcile(&store, workload, &event.gr, &namespace, &name, false);
        if workload == Workload::Cluster {
            create_cluster_objects(&store, &event.object);
        }
        let store = store.clone();
        let control = control.clone();
        let gr = event.gr.clone();
        let kind = text(&event.object, "/kind");
        let shutdown = shutdown.clone();
        let delay = control.delay();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(delay) => {
                    if !control.blocked(&kind, &namespace, &name) {
                        reconcile(&store, workload, &gr, &namespace, &name, true);
                    }
                }
            }
        });
    }
}

/// Brings the status of one object to what its controller would report now.
fn reconcile(
    store: &Store,
    workload: Workload,
    gr: &GroupResource,
    namespace: &str,
    name: &str,
    ready: bool,
) {
    let registry = store.registry();
    let Some(ty) = registry.get(gr) else {
        return;
    };
    let version = ty.storage_version().to_owned();
    let Ok(object) = store.get(&ty, &version, namespace, name) else {
        return;
    };
    if object.pointer("/metadata/deletionTimestamp").is_some() {
        return;
    }
    let current_ready = is_ready(workload, &object);
    if !ready && current_ready {
        // An in-progress status never replaces a ready one for the same generation.
        return;
    }
    let desired = status(workload, &object, ready);
    if object.get("status") == Some(&desired) {
        return;
    }
    let mut body = object.clone();
    body["status"] = desired;
    let options = WriteOptions {
        manager: workload.manager().into(),
        validation: FieldValidation::Ignore,
        dry_run: false,
    };
    if let Err(error) = store.update(&ty, &version, namespace, name, body, true, &options) {
        tracing::debug!(%error, "simulator status write for {namespace}/{name}");
    }
}

/// Whether the status already reports the current generation as ready.
fn is_ready(workload: Workload, object: &Value) -> bool {
    let observed = object
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    match workload {
        Workload::Deployment => {
            observed == Some(generation(object))
                && object.pointer("/status/updatedReplicas") == object.pointer("/status/replicas")
                && object
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Available" && c["status"] == "True")
                    })
        }
        Workload::StatefulSet => {
            observed == Some(generation(object))
                && object.pointer("/status/readyReplicas") == object.pointer("/status/replicas")
        }
        Workload::Cluster => text(object, "/status/phase") == "Cluster in healthy state",
        Workload::Pooler => text(object, "/status/phase") == "active",
        Workload::Database => {
            object.pointer("/status/applied") == Some(&json!(true))
                && observed == Some(generation(object))
        }
    }
}

/// The Secret and Services the CNPG operator creates for a Cluster, owned by it.
fn create_cluster_objects(store: &Store, cluster: &Value) {
    use base64::Engine;
    let name = text(cluster, "/metadata/name");
    let namespace = text(cluster, "/metadata/namespace");
    let owner = json!([{
        "apiVersion": text(cluster, "/apiVersion"), "kind": "Cluster", "name": name,
        "uid": text(cluster, "/metadata/uid"), "controller": true, "blockOwnerDeletion": true
    }]);
    let labels = json!({"cnpg.io/cluster": name});
    let owner_role = cluster
        .pointer("/spec/bootstrap/initdb/owner")
        .and_then(Value::as_str)
        .unwrap_or("app");
    let database = cluster
        .pointer("/spec/bootstrap/initdb/database")
        .and_then(Value::as_str)
        .unwrap_or("app");
    let password = uuid::Uuid::new_v4().simple().to_string();
    let host = format!("{name}-rw");
    let encode = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let uri = format!("postgresql://{owner_role}:{password}@{host}.{namespace}:5432/{database}");
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
        "metadata": {"name": format!("{name}-app"), "labels": labels, "ownerReferences": owner},
        "data": {
            "username": encode(owner_role), "user": encode(owner_role), "password": encode(&password),
            "dbname": encode(database), "host": encode(&host), "port": encode("5432"),
            "uri": encode(&uri),
            "jdbc-uri": encode(&format!("jdbc:postgresql://{host}.{namespace}:5432/{database}?password={password}&user={owner_role}")),
            "pgpass": encode(&format!("{host}:5432:{database}:{owner_role}:{password}\n")),
        }
    });
    let mut objects = vec![("secrets", secret)];
    for (suffix, role) in [("rw", "primary"), ("ro", "replica"), ("r", "any")] {
        objects.push((
            "services",
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("{name}-{suffix}"), "labels": labels, "ownerReferences": owner},
                "spec": {"type": "ClusterIP", "ports": [{"name": "postgres", "port": 5432, "protocol": "TCP", "targetPort": 5432}],
                         "selector": {"cnpg.io/cluster": name, "cnpg.io/instanceRole": role}}
            }),
        ));
    }
    let registry = store.registry();
    let options = WriteOptions {
        manager: "cnpg-manager".into(),
        validation: FieldValidation::Ignore,
        dry_run: false,
    };
    for (resource, object) in objects {
        let gr = GroupResource {
            group: String::new(),
            resource: resource.into(),
        };
        let Some(ty) = registry.get(&gr) else {
            continue;
        };
        let object_name = text(&object, "/metadata/name");
        if store.get(&ty, "v1", &namespace, &object_name).is_ok() {
            continue;
        }
        if let Err(error) = store.create(&ty, "v1", &namespace, object, &options) {
            tracing::debug!(%error, "simulator could not create {resource} {object_name}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_statuses() {
        let deployment =
            json!({"metadata": {"name": "web", "generation": 2}, "spec": {"replicas": 3}});
        let pending = status(Workload::Deployment, &deployment, false);
        assert_eq!(pending["conditions"][0]["status"], "False");
        assert!(!is_ready(
            Workload::Deployment,
            &json!({"metadata": deployment["metadata"], "status": pending})
        ));
        let ready = status(Workload::Deployment, &deployment, true);
        assert_eq!(ready["availableReplicas"], 3);
        assert_eq!(ready["observedGeneration"], 2);
        assert!(is_ready(
            Workload::Deployment,
            &json!({"metadata": deployment["metadata"], "status": ready})
        ));
    }

    #[test]
    fn cluster_statuses() {
        let cluster =
            json!({"metadata": {"name": "db", "generation": 1}, "spec": {"instances": 2}});
        let ready = status(Workload::Cluster, &cluster, true);
        assert_eq!(ready["phase"], "Cluster in healthy state");
        assert_eq!(ready["conditions"][0]["reason"], "ClusterIsReady");
        assert_eq!(ready["readyInstances"], 2);
    }
}
