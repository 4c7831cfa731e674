//! Readiness: whether a node's live object passes its gates.
//!
//! A node's `readyWhen` predicates must all hold. Without predicates the kind's own rules
//! apply, in the spirit of kstatus: an object whose controller reports status is ready only
//! once that controller has observed the current generation and says so; objects nobody
//! reconciles (ConfigMaps, Secrets, ServiceAccounts, ...) are ready when they exist.

use serde_json::Value;

use crate::api::ReadyPredicate;

/// The verdict on one live object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Every gate holds.
    Ready,
    /// Some gate does not hold yet; the message says which and why.
    Waiting(String),
    /// The object will not become ready without a change: its controller said it failed
    /// (a Deployment past its progress deadline, a failed Job, a CloudNativePG cluster in
    /// a failed phase), or one of the node's `failWhen` rules holds.
    Failed {
        /// The object's own reason (`ProgressDeadlineExceeded`, `BackoffLimitExceeded`, ...).
        reason: String,
        /// What it said.
        message: String,
    },
}

impl Readiness {
    /// Whether the object is ready.
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }
}

/// Evaluates `predicates` (or the kind's default rules when empty) on `live`; first the
/// failures its kind reports and the node's `fail_when` rules, which end the wait at once.
pub fn evaluate(
    predicates: &[ReadyPredicate],
    fail_when: &[ReadyPredicate],
    live: &Value,
) -> Readiness {
    if let Some(failed) = kind_failure(live).or_else(|| declared_failure(fail_when, live)) {
        return failed;
    }
    if predicates.is_empty() {
        return default_rules(live);
    }
    for predicate in predicates {
        let verdict = predicate_holds(predicate, live, is_secret(live));
        if verdict != Readiness::Ready {
            return verdict;
        }
    }
    Readiness::Ready
}

/// Whether `live` is a Secret: no value read from it may reach a message.
fn is_secret(live: &Value) -> bool {
    live.get("kind").and_then(Value::as_str) == Some("Secret")
        && live.get("apiVersion").and_then(Value::as_str) == Some("v1")
}

/// The phases CloudNativePG gives a Cluster it cannot bring up without an intervention
/// (`api/v1/cluster_types.go`), with a reason for each.
const CNPG_FAILED_PHASES: [(&str, &str); 7] = [
    (
        "Cluster is unrecoverable and needs manual intervention",
        "Unrecoverable",
    ),
    (
        "Cluster is in an unrecoverable state, needs manual intervention",
        "Unrecoverable",
    ),
    (
        "Unable to create required cluster objects",
        "CannotCreateClusterObjects",
    ),
    (
        "Cluster cannot proceed to reconciliation due to an unknown plugin being required",
        "UnknownPlugin",
    ),
    (
        "Cluster cannot proceed to reconciliation due to an error while interacting with plugins",
        "FailurePlugin",
    ),
    (
        "Cluster has incomplete or invalid image catalog",
        "ImageCatalogError",
    ),
    (
        "Cluster cannot execute instance online upgrade due to missing architecture binary",
        "ArchitectureBinaryMissing",
    ),
];

/// A failure the object's kind reports: its controller gave up.
fn kind_failure(live: &Value) -> Option<Readiness> {
    let api_version = text(live, "apiVersion");
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    let failed_condition = |condition_type: &str, status: &str, reason: Option<&str>| {
        let found = condition(live, condition_type)?;
        let holds = text(found, "status") == status
            && reason.is_none_or(|wanted| text(found, "reason") == wanted);
        holds.then(|| condition_failure(condition_type, found))
    };
    match (group, text(live, "kind")) {
        ("apps", "Deployment") => {
            failed_condition("Progressing", "False", Some("ProgressDeadlineExceeded"))
        }
        ("batch", "Job") => failed_condition("Failed", "True", None),
        ("postgresql.cnpg.io", "Cluster") => {
            let phase = live.pointer("/status/phase").and_then(Value::as_str)?;
            let (_, reason) = CNPG_FAILED_PHASES.iter().find(|(p, _)| *p == phase)?;
            let why = live
                .pointer("/status/phaseReason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty());
            Some(Readiness::Failed {
                reason: reason.to_string(),
                message: match why {
                    Some(why) => format!("phase is {phase}: {why}"),
                    None => format!("phase is {phase}"),
                },
            })
        }
        _ => None,
    }
}

/// The first of the node's `fail_when` rules that holds.
fn declared_failure(fail_when: &[ReadyPredicate], live: &Value) -> Option<Readiness> {
    fail_when.iter().find_map(|rule| {
        if predicate_holds(rule, live, is_secret(live)) != Readiness::Ready {
            return None;
        }
        Some(match rule {
            ReadyPredicate::ConditionMatch { condition_type, .. } => {
                match condition(live, condition_type) {
                    Some(found) => condition_failure(condition_type, found),
                    None => failed_rule(rule),
                }
            }
            _ => failed_rule(rule),
        })
    })
}

/// The failure a condition reports: its reason, and `Type=Status: reason: message`.
fn condition_failure(condition_type: &str, found: &Value) -> Readiness {
    let reason = match text(found, "reason") {
        "" => "Failed",
        reason => reason,
    };
    let mut message = format!("{condition_type}={}: {reason}", text(found, "status"));
    if !text(found, "message").is_empty() {
        message.push_str(": ");
        message.push_str(text(found, "message"));
    }
    Readiness::Failed {
        reason: reason.to_string(),
        message,
    }
}

fn failed_rule(rule: &ReadyPredicate) -> Readiness {
    let message = match rule {
        ReadyPredicate::FieldEquals { path, .. } => format!("{path} has the value failWhen names"),
        ReadyPredicate::ConditionMatch { condition_type, .. } => {
            format!("the {condition_type} condition failWhen names holds")
        }
        ReadyPredicate::Exists => "the object exists, which failWhen names".to_string(),
        ReadyPredicate::DeploymentAvailable => {
            "the Deployment is available, which failWhen names".to_string()
        }
    };
    Readiness::Failed {
        reason: "FailWhen".to_string(),
        message,
    }
}

fn predicate_holds(predicate: &ReadyPredicate, live: &Value, secret: bool) -> Readiness {
    match predicate {
        ReadyPredicate::Exists => Readiness::Ready,
        ReadyPredicate::ConditionMatch {
            condition_type,
            status,
            reason,
        } => condition_match(live, condition_type, status, reason.as_deref()),
        ReadyPredicate::DeploymentAvailable => deployment_available(live),
        ReadyPredicate::FieldEquals { path, value } => {
            let found = field(live, path);
            if found == Some(value) {
                Readiness::Ready
            } else if secret {
                // A Secret's values never reach a status, an event or a log.
                Readiness::Waiting(format!("{path} does not match"))
            } else {
                Readiness::Waiting(format!(
                    "{path} is {}, waiting for {value}",
                    found.map_or_else(|| "unset".to_string(), Value::to_string)
                ))
            }
        }
    }
}

/// The value at a dotted path (`status.phase`); list indices may be numbers.
fn field<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|segment| !segment.is_empty())
        .try_fold(object, |value, segment| match value {
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => value.get(segment),
        })
}

fn condition<'a>(live: &'a Value, condition_type: &str) -> Option<&'a Value> {
    live.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(condition_type))
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

fn condition_match(
    live: &Value,
    condition_type: &str,
    status: &str,
    reason: Option<&str>,
) -> Readiness {
    let Some(found) = condition(live, condition_type) else {
        return Readiness::Waiting(format!("no {condition_type} condition yet"));
    };
    let status_ok = text(found, "status") == status;
    let reason_ok = reason.is_none_or(|r| text(found, "reason") == r);
    if status_ok && reason_ok {
        return Readiness::Ready;
    }
    let mut message = format!("{condition_type}={}", text(found, "status"));
    let detail = [text(found, "reason"), text(found, "message")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(&detail);
    }
    Readiness::Waiting(message)
}

fn integer(live: &Value, pointer: &str) -> Option<i64> {
    live.pointer(pointer).and_then(Value::as_i64)
}

/// Not ready while the object's controller has not observed its current generation.
fn observed(live: &Value) -> Option<Readiness> {
    let generation = integer(live, "/metadata/generation")?;
    match integer(live, "/status/observedGeneration") {
        Some(observed) if observed >= generation => None,
        _ => Some(Readiness::Waiting(format!(
            "waiting for the controller to observe generation {generation}"
        ))),
    }
}

fn deployment_available(live: &Value) -> Readiness {
    if let Some(waiting) = observed(live) {
        return waiting;
    }
    let wanted = integer(live, "/spec/replicas").unwrap_or(1);
    let updated = integer(live, "/status/updatedReplicas").unwrap_or(0);
    if updated < wanted {
        return Readiness::Waiting(format!("{updated} of {wanted} replicas updated"));
    }
    let available = condition_match(live, "Available", "True", None);
    if available != Readiness::Ready {
        return available;
    }
    let available = integer(live, "/status/availableReplicas").unwrap_or(0);
    if available < wanted {
        return Readiness::Waiting(format!("{available} of {wanted} replicas available"));
    }
    Readiness::Ready
}

fn statefulset_ready(live: &Value) -> Readiness {
    if let Some(waiting) = observed(live) {
        return waiting;
    }
    let wanted = integer(live, "/spec/replicas").unwrap_or(1);
    let ready = integer(live, "/status/readyReplicas").unwrap_or(0);
    let updated = integer(live, "/status/updatedReplicas").unwrap_or(0);
    if ready < wanted || updated < wanted {
        return Readiness::Waiting(format!(
            "{ready} of {wanted} replicas ready, {updated} updated"
        ));
    }
    Readiness::Ready
}

/// Kinds of the built-in API groups that no controller reports on: ready once they exist.
fn is_builtin_group(group: &str) -> bool {
    group.is_empty()
        || !group.contains('.')
        || group.ends_with(".k8s.io") && !group.ends_with(".x-k8s.io")
}

fn default_rules(live: &Value) -> Readiness {
    let api_version = text(live, "apiVersion");
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    match (group, text(live, "kind")) {
        ("apps", "Deployment") => deployment_available(live),
        ("apps", "StatefulSet") => statefulset_ready(live),
        ("apps", "DaemonSet") => {
            if let Some(waiting) = observed(live) {
                return waiting;
            }
            let wanted = integer(live, "/status/desiredNumberScheduled").unwrap_or(0);
            let ready = integer(live, "/status/numberReady").unwrap_or(0);
            if ready < wanted {
                Readiness::Waiting(format!("{ready} of {wanted} pods ready"))
            } else {
                Readiness::Ready
            }
        }
        ("batch", "Job") => condition_match(live, "Complete", "True", None),
        ("", "PersistentVolumeClaim") => {
            let phase = live.pointer("/status/phase").and_then(Value::as_str);
            if phase == Some("Bound") {
                Readiness::Ready
            } else {
                Readiness::Waiting(format!("phase is {}", phase.unwrap_or("unset")))
            }
        }
        (group, _) if is_builtin_group(group) => observed_if_reported(live),
        _ => custom_resource(live),
    }
}

/// Built-ins with an optional status (PDBs, HPAs, ...): ready unless their controller
/// reports an older generation.
fn observed_if_reported(live: &Value) -> Readiness {
    if live.pointer("/status/observedGeneration").is_some()
        && let Some(waiting) = observed(live)
    {
        return waiting;
    }
    Readiness::Ready
}

/// A custom resource: its controller must have written a status for the current generation;
/// then a `Ready` condition, when reported, decides.
fn custom_resource(live: &Value) -> Readiness {
    let status = live.get("status").filter(|s| match s {
        Value::Object(fields) => !fields.is_empty(),
        _ => false,
    });
    if status.is_none() {
        return Readiness::Waiting("waiting for its controller to report status".to_string());
    }
    if live.pointer("/status/observedGeneration").is_some()
        && let Some(waiting) = observed(live)
    {
        return waiting;
    }
    if condition(live, "Ready").is_some() {
        return condition_match(live, "Ready", "True", None);
    }
    Readiness::Ready
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn controllers_that_gave_up_fail_the_node_at_once() {
        let stuck = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"generation": 1}, "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                 "message": "ReplicaSet \"web-1\" has timed out progressing."}]}});
        assert_eq!(
            evaluate(&[], &[], &stuck),
            Readiness::Failed {
                reason: "ProgressDeadlineExceeded".into(),
                message: "Progressing=False: ProgressDeadlineExceeded: ReplicaSet \"web-1\" has timed out progressing.".into()
            }
        );
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "status": {"conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit"}]}});
        assert!(
            matches!(evaluate(&[], &[], &job), Readiness::Failed { reason, .. } if reason == "BackoffLimitExceeded")
        );
        let cluster = json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
            "status": {"phase": "Cluster is unrecoverable and needs manual intervention",
                       "phaseReason": "initdb job failed"}});
        assert_eq!(
            evaluate(&[ReadyPredicate::Exists], &[], &cluster),
            Readiness::Failed {
                reason: "Unrecoverable".into(),
                message: "phase is Cluster is unrecoverable and needs manual intervention: initdb job failed".into()
            }
        );
        let release = json!({"apiVersion": "helm.example.com/v1", "kind": "Release",
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "InstallFailed",
                                       "message": "chart not found"}]}});
        let install_failed = ReadyPredicate::ConditionMatch {
            condition_type: "Ready".into(),
            status: "False".into(),
            reason: Some("InstallFailed".into()),
        };
        assert_eq!(
            evaluate(&[], std::slice::from_ref(&install_failed), &release),
            Readiness::Failed {
                reason: "InstallFailed".into(),
                message: "Ready=False: InstallFailed: chart not found".into()
            }
        );
        let progressing = json!({"apiVersion": "helm.example.com/v1", "kind": "Release",
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Installing"}]}});
        assert_eq!(
            evaluate(&[], &[install_failed], &progressing),
            Readiness::Waiting("Ready=False: Installing".into())
        );
    }

    #[test]
    fn a_secrets_values_never_reach_a_message() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
                            "data": {"token": "U1VQRVJTRUNSRVQtNDI="}});
        let wanted = ReadyPredicate::FieldEquals {
            path: "data.token".into(),
            value: json!("x"),
        };
        assert_eq!(
            evaluate(std::slice::from_ref(&wanted), &[], &secret),
            Readiness::Waiting("data.token does not match".into())
        );
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"token": "y"}});
        assert_eq!(
            evaluate(&[wanted], &[], &config),
            Readiness::Waiting("data.token is \"y\", waiting for \"x\"".into())
        );
    }

    fn deployment(status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "generation": 2},
               "spec": {"replicas": 2}, "status": status})
    }

    #[test]
    fn deployment_waits_for_observation_rollout_and_availability() {
        assert_eq!(
            evaluate(&[], &[], &deployment(json!({}))),
            Readiness::Waiting("waiting for the controller to observe generation 2".into())
        );
        assert_eq!(
            evaluate(
                &[],
                &[],
                &deployment(json!({"observedGeneration": 2, "updatedReplicas": 1}))
            ),
            Readiness::Waiting("1 of 2 replicas updated".into())
        );
        let unavailable = deployment(json!({"observedGeneration": 2, "updatedReplicas": 2,
            "conditions": [{"type": "Available", "status": "False",
                            "reason": "MinimumReplicasUnavailable",
                            "message": "Deployment does not have minimum availability."}]}));
        assert_eq!(
            evaluate(&[ReadyPredicate::DeploymentAvailable], &[], &unavailable),
            Readiness::Waiting(
                "Available=False: MinimumReplicasUnavailable: Deployment does not have minimum availability."
                    .into()
            )
        );
        let available = deployment(json!({"observedGeneration": 2, "updatedReplicas": 2,
            "availableReplicas": 2, "conditions": [{"type": "Available", "status": "True"}]}));
        assert!(evaluate(&[], &[], &available).is_ready());
    }

    #[test]
    fn predicates_all_hold() {
        let pooler = json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Pooler",
                            "metadata": {"name": "p"}, "status": {"phase": "inactive"}});
        let active = ReadyPredicate::FieldEquals {
            path: "status.phase".into(),
            value: json!("active"),
        };
        assert_eq!(
            evaluate(&[ReadyPredicate::Exists, active.clone()], &[], &pooler),
            Readiness::Waiting("status.phase is \"inactive\", waiting for \"active\"".into())
        );
        let mut ready = pooler.clone();
        ready["status"]["phase"] = json!("active");
        assert!(evaluate(&[active], &[], &ready).is_ready());
        let cluster = json!({"kind": "Cluster", "status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "ClusterIsNotReady"}]}});
        let gate = ReadyPredicate::ConditionMatch {
            condition_type: "Ready".into(),
            status: "True".into(),
            reason: None,
        };
        assert_eq!(
            evaluate(std::slice::from_ref(&gate), &[], &cluster),
            Readiness::Waiting("Ready=False: ClusterIsNotReady".into())
        );
        assert_eq!(
            evaluate(&[gate], &[], &json!({"kind": "Cluster"})),
            Readiness::Waiting("no Ready condition yet".into())
        );
    }

    #[test]
    fn default_rules_by_kind() {
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        assert!(evaluate(&[], &[], &config).is_ready());
        let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                         "metadata": {"generation": 3}, "status": {"observedGeneration": 2}});
        assert!(!evaluate(&[], &[], &pdb).is_ready());
        let custom = json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
                            "metadata": {"generation": 1}});
        assert_eq!(
            evaluate(&[], &[], &custom),
            Readiness::Waiting("waiting for its controller to report status".into())
        );
        let reported = json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Database",
                              "metadata": {"generation": 1},
                              "status": {"applied": true, "observedGeneration": 1}});
        assert!(evaluate(&[], &[], &reported).is_ready());
        let statefulset = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"generation": 1}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 3}});
        assert_eq!(
            evaluate(&[], &[], &statefulset),
            Readiness::Waiting("1 of 3 replicas ready, 3 updated".into())
        );
    }
}
