//! ClusterRole aggregation, as Kubernetes' clusterrole-aggregation controller does it
//! (`pkg/controller/clusterroleaggregation`): a ClusterRole with
//! `aggregationRule.clusterRoleSelectors` gets the rules of every other ClusterRole a
//! selector matches (in name order, each rule once), written by a forced server-side apply
//! of its `rules` under the controller's field manager. The store runs it after every change
//! of a ClusterRole, until nothing changes (aggregated roles may aggregate others).

use super::rbac::{GROUP, PolicyRule, rules_of};
use crate::selector::LabelSelector;
use serde_json::{Value, json};

/// The field manager of the aggregated rules.
pub const MANAGER: &str = "clusterrole-aggregation-controller";

fn name_of(role: &Value) -> &str {
    role.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The rules an aggregated ClusterRole should have, among all `roles`; None when it
/// aggregates nothing (no `aggregationRule`) or a selector is invalid (the controller
/// leaves it as it is).
fn aggregated_rules(role: &Value, roles: &[Value]) -> Option<Vec<PolicyRule>> {
    let rule = role.get("aggregationRule").filter(|rule| !rule.is_null())?;
    let selectors = rule
        .get("clusterRoleSelectors")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut rules: Vec<PolicyRule> = Vec::new();
    for selector in selectors {
        let selector = LabelSelector::from_object(selector).ok()?;
        let mut matched: Vec<&Value> = roles
            .iter()
            .filter(|other| name_of(other) != name_of(role) && selector.matches_object(other))
            .collect();
        matched.sort_by_key(|other| name_of(other));
        for other in matched {
            for rule in rules_of(other) {
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
    }
    Some(rules)
}

/// The aggregated ClusterRoles among `roles` whose rules are not what their selectors
/// pick: each one's name and the rules it should have.
pub fn stale(roles: &[Value]) -> Vec<(String, Vec<PolicyRule>)> {
    roles
        .iter()
        .filter_map(|role| {
            let rules = aggregated_rules(role, roles)?;
            (rules != rules_of(role)).then(|| (name_of(role).to_owned(), rules))
        })
        .collect()
}

/// The configuration the controller applies to give ClusterRole `name` its `rules` (no
/// rules at all when there are none).
pub fn applied(name: &str, rules: &[PolicyRule]) -> Value {
    let mut role = json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "ClusterRole",
        "metadata": {"name": name},
    });
    if !rules.is_empty() {
        role["rules"] = json!(rules);
    }
    role
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, labels: Value, rules: &[PolicyRule]) -> Value {
        json!({"metadata": {"name": name, "labels": labels}, "rules": rules})
    }

    #[test]
    fn aggregated_roles_collect_the_rules_of_the_roles_they_select() {
        let read = PolicyRule::resources(&["get"], &[""], &["pods"]);
        let write = PolicyRule::resources(&["create"], &[""], &["pods"]);
        let mut edit = role("edit", json!({}), &[]);
        edit["aggregationRule"] =
            json!({"clusterRoleSelectors": [{"matchLabels": {"to-edit": "true"}}]});
        let roles = vec![
            edit.clone(),
            role(
                "b-writer",
                json!({"to-edit": "true"}),
                &[write.clone(), read.clone()],
            ),
            role(
                "a-reader",
                json!({"to-edit": "true"}),
                std::slice::from_ref(&read),
            ),
            role("other", json!({}), std::slice::from_ref(&write)),
        ];
        assert_eq!(
            stale(&roles),
            vec![("edit".to_owned(), vec![read.clone(), write.clone()])]
        );
        let mut current = edit;
        current["rules"] = json!([read, write]);
        assert_eq!(
            stale(&[current.clone(), roles[1].clone(), roles[2].clone()]),
            []
        );
        assert_eq!(
            stale(&[current]),
            vec![("edit".to_owned(), Vec::new())],
            "roles no longer selected take their rules away"
        );
        assert_eq!(
            applied("edit", &[]),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "edit"}})
        );
    }
}
