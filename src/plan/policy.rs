//! Enforcing module policies (docs/modules.md): the findings a module's `policies` report
//! over its input and rendered graph, after the Transform's overrides. An `Error` finding
//! stops the render; a `Warning` is recorded on the graph. A Transform may lower a policy
//! to a warning only where the policy is `overridable`.

use crate::api::{PolicyOverride, Severity, Violation};
use crate::render::Finding;

/// Findings after the Transform's overrides: errors stop the render, warnings are recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Enforcement {
    /// Findings that block the render.
    pub errors: Vec<Violation>,
    /// Findings that are recorded only, and notes about ignored overrides.
    pub warnings: Vec<Violation>,
}

/// The render is refused by policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("policy violations: {}", .0.iter().map(describe).collect::<Vec<_>>().join("; "))]
pub struct PolicyErrors(pub Vec<Violation>);

fn describe(violation: &Violation) -> String {
    match &violation.policy {
        Some(policy) => format!(
            "{}: {} (policy {policy})",
            violation.path, violation.message
        ),
        None => format!("{}: {}", violation.path, violation.message),
    }
}

impl Enforcement {
    /// The warnings, or the errors as a [`PolicyErrors`].
    pub fn into_result(self) -> Result<Vec<Violation>, PolicyErrors> {
        if self.errors.is_empty() {
            Ok(self.warnings)
        } else {
            Err(PolicyErrors(self.errors))
        }
    }
}

/// Applies `overrides` (from `Transform.spec.policies`) to `findings` of a module whose
/// policies are named `policies`. An override to `Warning` (or `Warn`) lowers an
/// overridable policy; `Error` raises any policy. An override naming no policy of the
/// module is an error at `spec.policies[i]` (a misspelt name would otherwise lower
/// nothing, silently); one that is not allowed, or with an unknown enforcement, is reported
/// as a warning there.
pub fn enforce(
    findings: &[Finding],
    policies: &[String],
    overrides: &[PolicyOverride],
) -> Enforcement {
    let mut out = Enforcement::default();
    for (index, wanted) in overrides.iter().enumerate() {
        let note = |message: String| Violation {
            path: format!("spec.policies[{index}]"),
            message,
            severity: Severity::Warning,
            policy: Some(wanted.name.clone()),
        };
        if !policies.contains(&wanted.name) {
            let known = if policies.is_empty() {
                "it has none".to_string()
            } else {
                format!("its policies: {}", policies.join(", "))
            };
            out.errors.push(Violation {
                severity: Severity::Error,
                ..note(format!(
                    "the module has no policy `{}` ({known})",
                    wanted.name
                ))
            });
            continue;
        }
        let known = findings.iter().find(|f| f.policy == wanted.name);
        match (parse_enforcement(&wanted.enforcement), known) {
            (None, _) => out.warnings.push(note(format!(
                "enforcement `{}` is not Error or Warning; override ignored",
                wanted.enforcement
            ))),
            (Some(Severity::Warning), Some(finding)) if !finding.overridable => {
                out.warnings.push(note(format!(
                    "policy `{}` cannot be lowered; override ignored",
                    wanted.name
                )));
            }
            _ => {}
        }
    }
    for finding in findings {
        let severity = overrides
            .iter()
            .find(|o| o.name == finding.policy)
            .and_then(|o| parse_enforcement(&o.enforcement))
            .filter(|wanted| *wanted == Severity::Error || finding.overridable)
            .unwrap_or(finding.severity);
        let violation = Violation {
            path: finding.path.clone(),
            message: finding.message.clone(),
            severity,
            policy: Some(finding.policy.clone()),
        };
        match severity {
            Severity::Error => out.errors.push(violation),
            Severity::Warning => out.warnings.push(violation),
        }
    }
    out
}

fn parse_enforcement(text: &str) -> Option<Severity> {
    match text {
        "Error" => Some(Severity::Error),
        "Warning" | "Warn" => Some(Severity::Warning),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(policy: &str, severity: Severity, overridable: bool) -> Finding {
        Finding {
            path: "input.x".into(),
            message: format!("{policy} says no"),
            policy: policy.into(),
            severity,
            overridable,
        }
    }

    fn names(policies: &[&str]) -> Vec<String> {
        policies.iter().map(|p| p.to_string()).collect()
    }

    fn lower(name: &str, enforcement: &str) -> PolicyOverride {
        PolicyOverride {
            name: name.into(),
            enforcement: enforcement.into(),
        }
    }

    #[test]
    fn errors_block_and_warnings_are_recorded() {
        let findings = [
            finding("require-backup", Severity::Error, false),
            finding("pg14-eol", Severity::Warning, false),
        ];
        let policies = names(&["require-backup", "pg14-eol"]);
        let result = enforce(&findings, &policies, &[]).into_result();
        assert_eq!(
            result.expect_err("blocked").to_string(),
            "policy violations: input.x: require-backup says no (policy require-backup)"
        );
        let warnings = enforce(&findings[1..], &policies, &[])
            .into_result()
            .expect("only warnings");
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].severity, Severity::Warning);
    }

    #[test]
    fn overrides_lower_only_overridable_policies() {
        let findings = [
            finding("require-backup", Severity::Error, true),
            finding("pinned-images", Severity::Error, false),
        ];
        let out = enforce(
            &findings,
            &names(&["require-backup", "pinned-images", "pg14-eol"]),
            &[
                lower("require-backup", "Warn"),
                lower("pinned-images", "Warning"),
                lower("pg14-eol", "Maybe"),
            ],
        );
        let errors: Vec<_> = out.errors.iter().map(|v| v.policy.clone()).collect();
        assert_eq!(errors, vec![Some("pinned-images".to_string())]);
        let warnings: Vec<String> = out
            .warnings
            .iter()
            .map(|v| format!("{}: {}", v.path, v.message))
            .collect();
        assert_eq!(
            warnings,
            vec![
                "spec.policies[1]: policy `pinned-images` cannot be lowered; override ignored",
                "spec.policies[2]: enforcement `Maybe` is not Error or Warning; override ignored",
                "input.x: require-backup says no",
            ]
        );
    }

    #[test]
    fn error_overrides_raise_any_policy() {
        let findings = [finding("pg14-eol", Severity::Warning, false)];
        let out = enforce(
            &findings,
            &names(&["pg14-eol"]),
            &[lower("pg14-eol", "Error")],
        );
        assert_eq!(out.errors.len(), 1);
        assert!(out.warnings.is_empty());
    }

    #[test]
    fn an_override_of_a_policy_the_module_does_not_have_is_an_error() {
        let findings = [finding("require-backup", Severity::Error, true)];
        let out = enforce(
            &findings,
            &names(&["require-backup", "pinned-images"]),
            &[lower("require-bakup", "Warn")],
        );
        assert_eq!(
            out.into_result().expect_err("refused").to_string(),
            "policy violations: spec.policies[0]: the module has no policy `require-bakup` (its policies: require-backup, pinned-images) (policy require-bakup); input.x: require-backup says no (policy require-backup)"
        );
        let out = enforce(&[], &[], &[lower("anything", "Warn")]);
        assert_eq!(
            out.errors[0].message,
            "the module has no policy `anything` (it has none)"
        );
    }
}
