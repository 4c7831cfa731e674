//! Access reviews (`authorization.k8s.io/v1`): a SelfSubjectAccessReview asks whether the
//! requester may do something (what `kubectl auth can-i` sends), a SubjectAccessReview
//! whether a given user may. Both are created and answered at once, never stored, by the
//! same authorizer as requests (`pkg/registry/authorization/*subjectaccessreview/rest.go`).

use super::attributes::Attributes;
use super::authorizer::Authorizer;
use super::user::User;
use crate::status::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The API group of access reviews.
pub const GROUP: &str = "authorization.k8s.io";

/// The kind of a SubjectAccessReview, which names the user it asks about.
const SUBJECT_ACCESS_REVIEW: &str = "SubjectAccessReview";

/// `spec.resourceAttributes`: an action on a resource.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
struct ResourceAttributes {
    #[serde(skip_serializing_if = "String::is_empty")]
    namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    verb: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    group: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    resource: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    subresource: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
}

/// `spec.nonResourceAttributes`: an action on a path.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
struct NonResourceAttributes {
    #[serde(skip_serializing_if = "String::is_empty")]
    path: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    verb: String,
}

/// The spec of either review (the user fields only in SubjectAccessReviews).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
struct Spec {
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_attributes: Option<ResourceAttributes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    non_resource_attributes: Option<NonResourceAttributes>,
    #[serde(skip_serializing_if = "String::is_empty")]
    user: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extra: BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "String::is_empty")]
    uid: String,
}

/// Answers the access review `review` (of `kind`) sent by `requester`: the review as sent,
/// with `status.allowed` and the authorizer's reason. Fails with Kubernetes' 422 when the
/// spec asks about neither a resource nor a path, or both, or (for a SubjectAccessReview)
/// about nobody.
pub fn answer(
    kind: &str,
    review: &Value,
    requester: &User,
    authorizer: &Authorizer,
) -> Result<Value, ApiError> {
    let spec = review
        .get("spec")
        .map(|spec| {
            Spec::deserialize(spec).map_err(|error| ApiError::bad_request(error.to_string()))
        })
        .transpose()?
        .unwrap_or_default();
    let about_subject = kind == SUBJECT_ACCESS_REVIEW;
    let mut causes = Vec::new();
    let union = "exactly one of nonResourceAttributes or resourceAttributes must be specified";
    match (&spec.resource_attributes, &spec.non_resource_attributes) {
        (Some(_), Some(paths)) => causes.push((
            "spec".to_owned(),
            format!("Invalid value: {}: {union}", json!(paths)),
        )),
        (None, None) => causes.push(("spec".to_owned(), format!("Invalid value: null: {union}"))),
        _ => {}
    }
    if about_subject && spec.user.is_empty() && spec.groups.is_empty() {
        causes.push((
            "spec.user".to_owned(),
            "Invalid value: \"\": at least one of user or group must be specified".to_owned(),
        ));
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(&format!("{kind}.{GROUP}"), "", &causes));
    }
    let user = if about_subject {
        User {
            name: spec.user.clone(),
            uid: spec.uid.clone(),
            groups: spec.groups.clone(),
            extra: spec.extra.clone(),
        }
    } else {
        requester.clone()
    };
    let attributes = match (&spec.resource_attributes, &spec.non_resource_attributes) {
        (Some(asked), _) => Attributes {
            resource_request: true,
            verb: asked.verb.clone(),
            api_group: asked.group.clone(),
            api_version: asked.version.clone(),
            namespace: asked.namespace.clone(),
            resource: asked.resource.clone(),
            subresource: asked.subresource.clone(),
            name: asked.name.clone(),
            ..Attributes::default()
        },
        (None, Some(asked)) => Attributes {
            verb: asked.verb.clone(),
            path: asked.path.clone(),
            ..Attributes::default()
        },
        (None, None) => Attributes::default(),
    };
    let decision = authorizer.authorize(&user, &attributes);
    let mut status = json!({"allowed": decision.allowed});
    if !decision.reason.is_empty() {
        status["reason"] = json!(decision.reason);
    }
    let mut metadata = review.get("metadata").cloned().unwrap_or_else(|| json!({}));
    if let Some(fields) = metadata.as_object_mut() {
        fields.entry("creationTimestamp").or_insert(Value::Null);
    }
    Ok(json!({
        "kind": kind,
        "apiVersion": format!("{GROUP}/v1"),
        "metadata": metadata,
        "spec": spec,
        "status": status,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use std::sync::Arc;

    #[test]
    fn reviews_answer_and_validate() {
        let authorizer = Authorizer::new(Arc::new(Store::default()), true);
        let asked = json!({"spec": {"resourceAttributes": {"verb": "create", "resource": "configmaps", "namespace": "a"}}});
        let answered = answer(
            "SelfSubjectAccessReview",
            &asked,
            &User::admin(),
            &authorizer,
        )
        .expect("a valid review");
        assert_eq!(answered["status"], json!({"allowed": true}));
        assert_eq!(answered["spec"], asked["spec"]);
        let stranger = User::new("stranger", ["system:authenticated"]);
        let answered = answer("SelfSubjectAccessReview", &asked, &stranger, &authorizer)
            .expect("a valid review");
        assert_eq!(answered["status"], json!({"allowed": false}));
        let path = json!({"spec": {"user": "stranger", "groups": ["system:authenticated"],
                                   "nonResourceAttributes": {"verb": "get", "path": "/version"}}});
        let answered = answer("SubjectAccessReview", &path, &User::admin(), &authorizer)
            .expect("a valid review");
        assert_eq!(
            answered["status"],
            json!({"allowed": true, "reason": "RBAC: allowed by ClusterRoleBinding \"system:discovery\" of ClusterRole \"system:discovery\" to Group \"system:authenticated\""})
        );
        assert_eq!(
            answer("SubjectAccessReview", &json!({}), &User::admin(), &authorizer)
                .map_err(|error| error.message),
            Err("SubjectAccessReview.authorization.k8s.io \"\" is invalid: [spec: Invalid value: null: exactly one of nonResourceAttributes or resourceAttributes must be specified, spec.user: Invalid value: \"\": at least one of user or group must be specified]".to_owned())
        );
    }
}
