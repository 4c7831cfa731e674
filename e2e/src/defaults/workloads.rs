//! Deployments and StatefulSets (`pkg/apis/apps/v1/defaults.go`), Jobs and CronJobs
//! (`pkg/apis/batch/v1/defaults.go`), HorizontalPodAutoscalers
//! (`pkg/apis/autoscaling/v2/defaults.go`).

use super::pod::pod_spec;
use super::{default, each, existing, object_at, unset};
use serde_json::{Map, Value, json};

fn spec(object: &mut Value) -> Option<&mut Map<String, Value>> {
    object.get_mut("spec").and_then(Value::as_object_mut)
}

/// The pod template's spec under `spec` (`template.spec`).
fn template(spec: &mut Map<String, Value>) {
    if let Some(pod) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
        pod_spec(pod);
    }
}

/// `SetDefaults_Deployment`.
pub fn deployment(object: &mut Value) {
    let Some(spec) = spec(object) else {
        return;
    };
    default(spec, "replicas", json!(1));
    if let Some(strategy) = object_at(spec, "strategy") {
        default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type") == Some(&json!("RollingUpdate"))
            && let Some(rolling) = object_at(strategy, "rollingUpdate")
        {
            default(rolling, "maxUnavailable", json!("25%"));
            default(rolling, "maxSurge", json!("25%"));
        }
    }
    default(spec, "revisionHistoryLimit", json!(10));
    default(spec, "progressDeadlineSeconds", json!(600));
    template(spec);
}

/// `SetDefaults_StatefulSet` (with `StatefulSetAutoDeletePVC`, on by default), and the
/// claim templates' `SetDefaults_PersistentVolumeClaim`.
pub fn stateful_set(object: &mut Value) {
    let Some(spec) = spec(object) else {
        return;
    };
    default(spec, "podManagementPolicy", json!("OrderedReady"));
    if let Some(strategy) = object_at(spec, "updateStrategy") {
        if unset(strategy, "type") {
            strategy.insert("type".into(), json!("RollingUpdate"));
            default(strategy, "rollingUpdate", json!({}));
        }
        if strategy.get("type") == Some(&json!("RollingUpdate"))
            && let Some(rolling) = existing(strategy, "rollingUpdate")
        {
            default(rolling, "partition", json!(0));
        }
    }
    if let Some(policy) = object_at(spec, "persistentVolumeClaimRetentionPolicy") {
        default(policy, "whenDeleted", json!("Retain"));
        default(policy, "whenScaled", json!("Retain"));
    }
    default(spec, "replicas", json!(1));
    default(spec, "revisionHistoryLimit", json!(10));
    template(spec);
    for claim in each(spec, "volumeClaimTemplates") {
        super::core::claim_template(claim);
    }
}

/// `SetDefaults_Job`, with `podReplacementPolicy` (`JobPodReplacementPolicy`, on by
/// default).
pub fn job(object: &mut Value) {
    let template_labels = object.pointer("/spec/template/metadata/labels").cloned();
    let no_labels = object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    if let (Some(labels), true) = (template_labels, no_labels)
        && let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut)
    {
        metadata.insert("labels".into(), labels);
    }
    let Some(spec) = spec(object) else {
        return;
    };
    job_spec(spec);
}

fn job_spec(spec: &mut Map<String, Value>) {
    if unset(spec, "completions") && unset(spec, "parallelism") {
        spec.insert("completions".into(), json!(1));
    }
    default(spec, "parallelism", json!(1));
    default(spec, "backoffLimit", json!(6));
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    let replacement = if unset(spec, "podFailurePolicy") {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    default(spec, "podReplacementPolicy", json!(replacement));
    template(spec);
}

/// `SetDefaults_CronJob`, and the pod template of its job template.
pub fn cron_job(object: &mut Value) {
    let Some(spec) = spec(object) else {
        return;
    };
    default(spec, "concurrencyPolicy", json!("Allow"));
    default(spec, "suspend", json!(false));
    default(spec, "successfulJobsHistoryLimit", json!(3));
    default(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(job) = existing(spec, "jobTemplate").and_then(|t| existing(t, "spec")) {
        template(job);
    }
}

/// `SetDefaults_HorizontalPodAutoscaler`: one replica at least, 80% CPU utilization when no
/// metric is given, and the scaling rules of a `behavior` filled in.
pub fn autoscaler(object: &mut Value) {
    let Some(spec) = spec(object) else {
        return;
    };
    default(spec, "minReplicas", json!(1));
    let no_metrics = spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if no_metrics {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80}}}]),
        );
    }
    let Some(behavior) = existing(spec, "behavior") else {
        return;
    };
    let rules = [
        (
            "scaleUp",
            Some(0),
            json!([{"type": "Pods", "value": 4, "periodSeconds": 15},
                   {"type": "Percent", "value": 100, "periodSeconds": 15}]),
        ),
        (
            "scaleDown",
            None,
            json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
        ),
    ];
    for (direction, window, policies) in rules {
        if let Some(rules) = object_at(behavior, direction) {
            default(rules, "selectPolicy", json!("Max"));
            if let Some(window) = window {
                default(rules, "stabilizationWindowSeconds", json!(window));
            }
            default(rules, "policies", policies);
        }
    }
}
