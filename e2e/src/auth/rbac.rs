//! Role-based access control, read from the Roles, ClusterRoles, RoleBindings and
//! ClusterRoleBindings in the store, as Kubernetes' RBAC authorizer decides
//! (`plugin/pkg/auth/authorizer/rbac/rbac.go`, the rule resolver of
//! `pkg/registry/rbac/validation/rule.go` and the matching helpers of
//! `pkg/apis/rbac/v1/evaluation_helpers.go`): ClusterRoleBindings grant their role's rules
//! everywhere, RoleBindings in their namespace; a subject is a User, a Group, or a
//! ServiceAccount (whose namespace defaults to the RoleBinding's).

use super::attributes::Attributes;
use super::user::{User, service_account_name};
use crate::store::{Selection, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The API group of the RBAC kinds.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// One rule of a Role or ClusterRole (`rbacv1.PolicyRule`). Empty lists are left out when
/// written, as Go's `omitempty` leaves them out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyRule {
    /// Verbs (`get`, `create`, `*`, `impersonate`, …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    /// API groups (`""` for core, `*`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// Resources (`configmaps`, `deployments/status`, `*`, `*/scale`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Object names the rule is limited to (none: every object).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Paths of requests for no resource (`/healthz`, `/apis/*`, `*`).
    #[serde(rename = "nonResourceURLs", skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
}

impl PolicyRule {
    /// A rule granting `verbs` on `resources` of `groups`, each list sorted (as
    /// Kubernetes' `PolicyRuleBuilder` sorts the rules it builds).
    pub fn resources(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Self {
        PolicyRule {
            verbs: sorted(verbs),
            api_groups: sorted(groups),
            resources: sorted(resources),
            ..PolicyRule::default()
        }
    }

    /// A rule granting `verbs` on the paths `urls`, each list sorted.
    pub fn urls(verbs: &[&str], urls: &[&str]) -> Self {
        PolicyRule {
            verbs: sorted(verbs),
            non_resource_urls: sorted(urls),
            ..PolicyRule::default()
        }
    }

    /// Whether the rule allows what `attributes` ask (`RuleAllows`).
    pub fn allows(&self, attributes: &Attributes) -> bool {
        let verb = self
            .verbs
            .iter()
            .any(|verb| verb == "*" || *verb == attributes.verb);
        if !attributes.resource_request {
            return verb
                && self.non_resource_urls.iter().any(|url| {
                    url == "*"
                        || *url == attributes.path
                        || (url.ends_with('*')
                            && attributes.path.starts_with(url.trim_end_matches('*')))
                });
        }
        let group = self
            .api_groups
            .iter()
            .any(|group| group == "*" || *group == attributes.api_group);
        let combined = attributes.combined_resource();
        let subresource = &attributes.subresource;
        let resource = self.resources.iter().any(|resource| {
            resource == "*"
                || *resource == combined
                || (!subresource.is_empty()
                    && resource.len() == subresource.len() + 2
                    && resource.starts_with("*/")
                    && resource.ends_with(subresource.as_str()))
        });
        let name = self.resource_names.is_empty() || self.resource_names.contains(&attributes.name);
        verb && group && resource && name
    }
}

/// `items`, owned and sorted.
fn sorted(items: &[&str]) -> Vec<String> {
    let mut owned: Vec<String> = items.iter().map(|item| (*item).to_owned()).collect();
    owned.sort();
    owned
}

/// The rules of a Role or ClusterRole object (none when it has none, or when they are not
/// rules: the server validates structure, not types).
pub fn rules_of(role: &Value) -> Vec<PolicyRule> {
    role.get("rules")
        .and_then(|rules| Vec::<PolicyRule>::deserialize(rules).ok())
        .unwrap_or_default()
}

/// A subject of a binding (`rbacv1.Subject`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Subject {
    kind: String,
    name: String,
    namespace: String,
}

impl Subject {
    /// Whether the subject is `user`, for a binding in `namespace` (empty for
    /// ClusterRoleBindings) (`appliesToUser`).
    fn applies_to(&self, user: &User, namespace: &str) -> bool {
        match self.kind.as_str() {
            "User" => user.name == self.name,
            "Group" => user.in_group(&self.name),
            "ServiceAccount" => {
                let namespace = if self.namespace.is_empty() {
                    namespace
                } else {
                    &self.namespace
                };
                !namespace.is_empty() && user.name == service_account_name(namespace, &self.name)
            }
            _ => false,
        }
    }

    /// How an allowing reason names the subject (`describeSubject`).
    fn describe(&self, binding_namespace: &str) -> String {
        match self.kind.as_str() {
            "ServiceAccount" => {
                let namespace = if self.namespace.is_empty() {
                    binding_namespace
                } else {
                    &self.namespace
                };
                format!("{} \"{}/{namespace}\"", self.kind, self.name)
            }
            _ => format!("{} \"{}\"", self.kind, self.name),
        }
    }
}

/// The role a binding grants (`rbacv1.RoleRef`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RoleRef {
    kind: String,
    name: String,
}

/// A RoleBinding or ClusterRoleBinding.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Binding {
    metadata: BindingMeta,
    subjects: Vec<Subject>,
    role_ref: RoleRef,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct BindingMeta {
    name: String,
    namespace: String,
}

/// Where a rule came from, as an allowing reason says (`clusterRoleBindingDescriber`,
/// `roleBindingDescriber`).
fn describe_source(binding: &Binding, subject: &Subject) -> String {
    let meta = &binding.metadata;
    let (kind, name) = if meta.namespace.is_empty() {
        ("ClusterRoleBinding", meta.name.clone())
    } else {
        ("RoleBinding", format!("{}/{}", meta.name, meta.namespace))
    };
    format!(
        "{kind} \"{name}\" of {} \"{}\" to {}",
        binding.role_ref.kind,
        binding.role_ref.name,
        subject.describe(&meta.namespace)
    )
}

/// The RBAC objects of the store, read as the authorizer's listers read them.
pub struct Policy<'a> {
    store: &'a Store,
}

impl<'a> Policy<'a> {
    /// The policy in `store`.
    pub fn new(store: &'a Store) -> Self {
        Policy { store }
    }

    /// Every object of an RBAC resource (in `namespace`, when given).
    fn objects(&self, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        let Some(ty) = self.store.registry().lookup(GROUP, "v1", resource) else {
            return Vec::new();
        };
        let selection = Selection {
            namespace: namespace.map(str::to_owned),
            ..Selection::default()
        };
        self.store
            .list(&ty, "v1", &selection, None, None)
            .map(|page| page.items)
            .unwrap_or_default()
    }

    /// The rules of the role a binding in `namespace` refers to (`GetRoleReferenceRules`),
    /// or the error the listers report.
    pub fn role_rules(
        &self,
        kind: &str,
        name: &str,
        namespace: &str,
    ) -> Result<Vec<PolicyRule>, String> {
        let (resource, singular, namespace) = match kind {
            "Role" => ("roles", "role", namespace),
            "ClusterRole" => ("clusterroles", "clusterrole", ""),
            other => return Err(format!("unsupported role reference kind: \"{other}\"")),
        };
        let ty = self
            .store
            .registry()
            .lookup(GROUP, "v1", resource)
            .ok_or_else(|| format!("{singular}.{GROUP} \"{name}\" not found"))?;
        self.store
            .get(&ty, "v1", namespace, name)
            .map(|role| rules_of(&role))
            .map_err(|_| format!("{singular}.{GROUP} \"{name}\" not found"))
    }

    /// Calls `visit` with every rule that applies to `user` in `namespace` (ClusterRoleBindings
    /// first, then the namespace's RoleBindings) and where it came from, and with every
    /// binding whose role cannot be read; stops when `visit` returns false
    /// (`VisitRulesFor`).
    pub fn visit_rules_for(
        &self,
        user: &User,
        namespace: &str,
        mut visit: impl FnMut(Result<(&PolicyRule, String), String>) -> bool,
    ) {
        let cluster = self.objects("clusterrolebindings", None);
        let local = if namespace.is_empty() {
            Vec::new()
        } else {
            self.objects("rolebindings", Some(namespace))
        };
        for binding in cluster.iter().chain(&local) {
            let Ok(binding) = Binding::deserialize(binding) else {
                continue;
            };
            let binding_namespace = &binding.metadata.namespace;
            let Some(subject) = binding
                .subjects
                .iter()
                .find(|subject| subject.applies_to(user, binding_namespace))
            else {
                continue;
            };
            let rules = match self.role_rules(
                &binding.role_ref.kind,
                &binding.role_ref.name,
                binding_namespace,
            ) {
                Ok(rules) => rules,
                Err(error) => {
                    if !visit(Err(error)) {
                        return;
                    }
                    continue;
                }
            };
            for rule in &rules {
                if !visit(Ok((rule, describe_source(&binding, subject)))) {
                    return;
                }
            }
        }
    }

    /// Every rule that applies to `user` in `namespace`, and the errors met reading them
    /// (`RulesFor`).
    pub fn rules_for(&self, user: &User, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
        let (mut rules, mut errors) = (Vec::new(), Vec::new());
        self.visit_rules_for(user, namespace, |found| {
            match found {
                Ok((rule, _)) => rules.push(rule.clone()),
                Err(error) => errors.push(error),
            }
            true
        });
        (rules, errors)
    }

    /// Whether RBAC allows `attributes` to `user`: `Ok(reason)` naming the binding that
    /// allows it, or `Err(reason)` with the errors met (empty when there were none), as the
    /// RBAC authorizer words them.
    pub fn authorize(&self, user: &User, attributes: &Attributes) -> Result<String, String> {
        let mut allowed = None;
        let mut errors = Vec::new();
        self.visit_rules_for(user, &attributes.namespace, |found| match found {
            Ok((rule, source)) if rule.allows(attributes) => {
                allowed = Some(format!("RBAC: allowed by {source}"));
                false
            }
            Ok(_) => true,
            Err(error) => {
                errors.push(error);
                true
            }
        });
        match allowed {
            Some(reason) => Ok(reason),
            None if errors.is_empty() => Err(String::new()),
            None => Err(format!("RBAC: {}", aggregate(&errors))),
        }
    }
}

/// Several errors as one, as `utilerrors.NewAggregate(...).Error()` writes them: one as
/// itself, more (duplicates dropped) in brackets.
pub fn aggregate(errors: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for error in errors {
        if !seen.contains(&error.as_str()) {
            seen.push(error);
        }
    }
    match seen.as_slice() {
        [one] => (*one).to_owned(),
        _ => format!("[{}]", seen.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes(
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        name: &str,
    ) -> Attributes {
        Attributes {
            resource_request: true,
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            name: name.into(),
            ..Attributes::default()
        }
    }

    #[test]
    fn rules_match_verbs_groups_resources_and_names() {
        let rule = PolicyRule::resources(&["get", "patch"], &["apps"], &["deployments", "*/scale"]);
        assert!(rule.allows(&attributes("get", "apps", "deployments", "", "web")));
        assert!(!rule.allows(&attributes("delete", "apps", "deployments", "", "web")));
        assert!(!rule.allows(&attributes("get", "", "deployments", "", "web")));
        assert!(
            !rule.allows(&attributes("get", "apps", "deployments", "status", "web")),
            "a resource does not grant its subresources"
        );
        assert!(rule.allows(&attributes("patch", "apps", "statefulsets", "scale", "db")));
        let mut named = PolicyRule::resources(&["*"], &["*"], &["*"]);
        named.resource_names = vec!["web".into()];
        assert!(named.allows(&attributes(
            "update",
            "apps",
            "deployments",
            "status",
            "web"
        )));
        assert!(!named.allows(&attributes("update", "apps", "deployments", "", "api")));
        assert!(!named.allows(&attributes("list", "apps", "deployments", "", "")));
        let paths = PolicyRule::urls(&["get"], &["/apis", "/apis/*", "/healthz"]);
        let path = |verb: &str, path: &str| Attributes {
            verb: verb.into(),
            path: path.into(),
            ..Attributes::default()
        };
        assert!(paths.allows(&path("get", "/apis/apps/v1")));
        assert!(paths.allows(&path("get", "/apis")));
        assert!(!paths.allows(&path("get", "/api")));
        assert!(!paths.allows(&path("post", "/healthz")));
        assert!(!paths.allows(&attributes("get", "", "apis", "", "")));
        assert!(
            !PolicyRule::resources(&["*"], &["*"], &["*"]).allows(&path("get", "/healthz")),
            "resource rules grant no paths"
        );
    }

    #[test]
    fn rules_round_trip_without_empty_lists() {
        let rule: PolicyRule = serde_json::from_value(serde_json::json!({
            "verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": []
        }))
        .expect("a rule");
        assert_eq!(
            serde_json::to_value(&rule).expect("JSON"),
            serde_json::json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]})
        );
    }

    #[test]
    fn errors_aggregate_as_go_writes_them() {
        assert_eq!(aggregate(&["a".into()]), "a");
        assert_eq!(aggregate(&["a".into(), "b".into(), "a".into()]), "[a, b]");
    }
}
