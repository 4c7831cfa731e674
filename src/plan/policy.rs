//! Enforcing policies (docs/modules.md): the findings of a module's own `policies` and of
//! the cluster's policy modules over a Transform's input and rendered graph, after the
//! Transform's overrides. An `Error` finding stops the render; a `Warning` is recorded on
//! the graph. A Transform may lower a policy to a warning only where the policy is
//! `overridable` and, for a cluster policy, its policy module lists the Transform's
//! namespace in `overridableIn`.

use crate::api::{PolicyOverride, Severity, Violation};
use crate::render::{DeclaredPolicy, Finding, PolicyReport};

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

/// A policy that applies to a Transform, by the name its overrides use, and whether that
/// Transform may lower it (or why not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `policy` for a module's own policy, `module/policy` for a cluster policy.
    pub name: String,
    /// Whether the Transform may lower it; why not.
    pub lowering: Result<(), String>,
    /// Whether it comes from a cluster policy module.
    pub cluster: bool,
}

/// Every policy that applies to a Transform in `namespace` and everything they found:
/// the module's own, then each cluster policy module's, their names qualified with the
/// policy module's (`baseline/no-privileged`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applicable {
    /// The policies.
    pub rules: Vec<Rule>,
    /// Their findings, named by the rules' names.
    pub findings: Vec<Finding>,
}

impl Applicable {
    /// The module's own policies and findings.
    pub fn of_module(policies: &[DeclaredPolicy], findings: &[Finding]) -> Applicable {
        let rules = policies
            .iter()
            .map(|policy| Rule {
                name: policy.name.clone(),
                lowering: if policy.overridable {
                    Ok(())
                } else {
                    Err("it is not overridable".to_string())
                },
                cluster: false,
            })
            .collect();
        Applicable {
            rules,
            findings: findings.to_vec(),
        }
    }

    /// Adds a cluster policy module's report for a Transform in `namespace`.
    pub fn add_cluster(&mut self, report: &PolicyReport, namespace: &str) {
        let module = &report.metadata.name;
        let allowed = report.overridable_in.iter().any(|n| n == namespace);
        for policy in &report.policies {
            let lowering = if !policy.overridable {
                Err(format!(
                    "the policy module {module} does not make it overridable"
                ))
            } else if !allowed {
                let listed = if report.overridable_in.is_empty() {
                    "none".to_string()
                } else {
                    report.overridable_in.join(", ")
                };
                Err(format!(
                    "the policy module {module} allows overrides only in the namespaces it lists in overridableIn ({listed}), not in {namespace}"
                ))
            } else {
                Ok(())
            };
            self.rules.push(Rule {
                name: format!("{module}/{}", policy.name),
                lowering,
                cluster: true,
            });
        }
        self.findings
            .extend(report.findings.iter().map(|finding| Finding {
                policy: format!("{module}/{}", finding.policy),
                ..finding.clone()
            }));
    }
}

/// Applies `overrides` (from `Transform.spec.policies`) to the `applicable` policies'
/// findings. An override to `Warning` (or `Warn`) lowers a policy the Transform may lower;
/// `Error` raises any policy. An override naming no applicable policy is an error at
/// `spec.policies[i]` (a misspelt name would otherwise lower nothing, silently); one that
/// may not lower its policy is an error there when the policy found an error (the message
/// says why the render stays refused), a warning otherwise, like an unknown enforcement.
pub fn enforce(applicable: &Applicable, overrides: &[PolicyOverride]) -> Enforcement {
    let mut out = Enforcement::default();
    for (index, wanted) in overrides.iter().enumerate() {
        let note = |severity: Severity, message: String| Violation {
            path: format!("spec.policies[{index}]"),
            message,
            severity,
            policy: Some(wanted.name.clone()),
        };
        let Some(rule) = applicable.rules.iter().find(|r| r.name == wanted.name) else {
            out.errors.push(note(
                Severity::Error,
                unknown_policy(&wanted.name, &applicable.rules),
            ));
            continue;
        };
        let blocking = applicable
            .findings
            .iter()
            .any(|f| f.policy == wanted.name && f.severity == Severity::Error);
        match (parse_enforcement(&wanted.enforcement), &rule.lowering) {
            (None, _) => out.warnings.push(note(
                Severity::Warning,
                format!(
                    "enforcement `{}` is not Error or Warning; override ignored",
                    wanted.enforcement
                ),
            )),
            (Some(Severity::Warning), Err(why)) if blocking => out.errors.push(note(
                Severity::Error,
                format!("policy `{}` cannot be lowered: {why}", wanted.name),
            )),
            (Some(Severity::Warning), Err(why)) => out.warnings.push(note(
                Severity::Warning,
                format!(
                    "policy `{}` cannot be lowered: {why}; override ignored",
                    wanted.name
                ),
            )),
            _ => {}
        }
    }
    for finding in &applicable.findings {
        let lowerable = applicable
            .rules
            .iter()
            .any(|r| r.name == finding.policy && r.lowering.is_ok());
        let severity = overrides
            .iter()
            .find(|o| o.name == finding.policy)
            .and_then(|o| parse_enforcement(&o.enforcement))
            .filter(|wanted| *wanted == Severity::Error || lowerable)
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

/// The message of an override naming no applicable policy: the policies there are.
fn unknown_policy(name: &str, rules: &[Rule]) -> String {
    let list = |cluster: bool| {
        let names: Vec<&str> = rules
            .iter()
            .filter(|r| r.cluster == cluster)
            .map(|r| r.name.as_str())
            .collect();
        names.join(", ")
    };
    let (own, cluster) = (list(false), list(true));
    let own = if own.is_empty() {
        "it has none".to_string()
    } else {
        format!("its policies: {own}")
    };
    if cluster.is_empty() {
        format!("the module has no policy `{name}` ({own})")
    } else {
        format!(
            "neither the module nor a cluster policy module has a policy `{name}` (the module: {own}; the cluster: {cluster})"
        )
    }
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
    use crate::render::ModuleMetadata;

    fn finding(policy: &str, severity: Severity, overridable: bool) -> Finding {
        Finding {
            path: "input.x".into(),
            message: format!("{policy} says no"),
            policy: policy.into(),
            severity,
            overridable,
        }
    }

    fn declared(policies: &[(&str, bool)]) -> Vec<DeclaredPolicy> {
        policies
            .iter()
            .map(|(name, overridable)| DeclaredPolicy {
                name: name.to_string(),
                overridable: *overridable,
            })
            .collect()
    }

    fn lower(name: &str, enforcement: &str) -> PolicyOverride {
        PolicyOverride {
            name: name.into(),
            enforcement: enforcement.into(),
        }
    }

    fn module(findings: &[Finding], policies: &[(&str, bool)]) -> Applicable {
        Applicable::of_module(&declared(policies), findings)
    }

    fn baseline(findings: &[Finding], overridable_in: &[&str]) -> PolicyReport {
        PolicyReport {
            metadata: ModuleMetadata {
                name: "baseline".into(),
                version: "1.0.0".into(),
                description: String::new(),
            },
            findings: findings.to_vec(),
            policies: declared(&[("no-privileged", false), ("container-resources", true)]),
            overridable_in: overridable_in.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn errors_block_and_warnings_are_recorded() {
        let findings = [
            finding("require-backup", Severity::Error, false),
            finding("pg14-eol", Severity::Warning, false),
        ];
        let policies = [("require-backup", false), ("pg14-eol", false)];
        let result = enforce(&module(&findings, &policies), &[]).into_result();
        assert_eq!(
            result.expect_err("blocked").to_string(),
            "policy violations: input.x: require-backup says no (policy require-backup)"
        );
        let warnings = enforce(&module(&findings[1..], &policies), &[])
            .into_result()
            .expect("only warnings");
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].severity, Severity::Warning);
    }

    #[test]
    fn overrides_lower_only_overridable_policies() {
        let findings = [
            finding("require-backup", Severity::Error, true),
            finding("pinned-images", Severity::Warning, false),
        ];
        let out = enforce(
            &module(
                &findings,
                &[
                    ("require-backup", true),
                    ("pinned-images", false),
                    ("pg14-eol", false),
                ],
            ),
            &[
                lower("require-backup", "Warn"),
                lower("pinned-images", "Warning"),
                lower("pg14-eol", "Maybe"),
            ],
        );
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let warnings: Vec<String> = out
            .warnings
            .iter()
            .map(|v| format!("{}: {}", v.path, v.message))
            .collect();
        assert_eq!(
            warnings,
            vec![
                "spec.policies[1]: policy `pinned-images` cannot be lowered: it is not overridable; override ignored",
                "spec.policies[2]: enforcement `Maybe` is not Error or Warning; override ignored",
                "input.x: require-backup says no",
                "input.x: pinned-images says no",
            ]
        );
    }

    #[test]
    fn an_override_that_cannot_lower_a_blocking_policy_says_why() {
        let findings = [finding("pinned-images", Severity::Error, false)];
        let out = enforce(
            &module(&findings, &[("pinned-images", false)]),
            &[lower("pinned-images", "Warning")],
        );
        assert_eq!(
            out.into_result().expect_err("refused").to_string(),
            "policy violations: spec.policies[0]: policy `pinned-images` cannot be lowered: it is not overridable (policy pinned-images); input.x: pinned-images says no (policy pinned-images)"
        );
    }

    #[test]
    fn error_overrides_raise_any_policy() {
        let findings = [finding("pg14-eol", Severity::Warning, false)];
        let out = enforce(
            &module(&findings, &[("pg14-eol", false)]),
            &[lower("pg14-eol", "Error")],
        );
        assert_eq!(out.errors.len(), 1);
        assert!(out.warnings.is_empty());
    }

    #[test]
    fn an_override_of_a_policy_the_module_does_not_have_is_an_error() {
        let findings = [finding("require-backup", Severity::Error, true)];
        let out = enforce(
            &module(
                &findings,
                &[("require-backup", true), ("pinned-images", false)],
            ),
            &[lower("require-bakup", "Warn")],
        );
        assert_eq!(
            out.into_result().expect_err("refused").to_string(),
            "policy violations: spec.policies[0]: the module has no policy `require-bakup` (its policies: require-backup, pinned-images) (policy require-bakup); input.x: require-backup says no (policy require-backup)"
        );
        let out = enforce(&module(&[], &[]), &[lower("anything", "Warn")]);
        assert_eq!(
            out.errors[0].message,
            "the module has no policy `anything` (it has none)"
        );
    }

    #[test]
    fn cluster_policies_are_named_with_their_module_and_lowered_only_where_allowed() {
        let found = [
            finding("no-privileged", Severity::Error, false),
            finding("container-resources", Severity::Error, true),
        ];
        let overrides = [
            lower("baseline/no-privileged", "Warning"),
            lower("baseline/container-resources", "Warning"),
        ];
        let mut allowed = module(&[], &[("probes-set", true)]);
        allowed.add_cluster(&baseline(&found, &["team-a"]), "team-a");
        let out = enforce(&allowed, &overrides);
        assert_eq!(
            out.into_result().expect_err("refused").to_string(),
            "policy violations: spec.policies[0]: policy `baseline/no-privileged` cannot be lowered: the policy module baseline does not make it overridable (policy baseline/no-privileged); input.x: no-privileged says no (policy baseline/no-privileged)"
        );

        let mut elsewhere = module(&[], &[]);
        elsewhere.add_cluster(&baseline(&found[1..], &["team-a"]), "team-b");
        let out = enforce(&elsewhere, &overrides[1..]);
        assert_eq!(
            out.errors[0].message,
            "policy `baseline/container-resources` cannot be lowered: the policy module baseline allows overrides only in the namespaces it lists in overridableIn (team-a), not in team-b"
        );

        let mut lowered = module(&[], &[]);
        lowered.add_cluster(&baseline(&found[1..], &["team-a"]), "team-a");
        let warnings = enforce(&lowered, &overrides[1..])
            .into_result()
            .expect("lowered");
        assert_eq!(
            warnings[0].policy.as_deref(),
            Some("baseline/container-resources")
        );
        assert_eq!(warnings[0].severity, Severity::Warning);

        let out = enforce(&allowed, &[lower("no-privileged", "Warning")]);
        assert_eq!(
            out.errors[0].message,
            "neither the module nor a cluster policy module has a policy `no-privileged` (the module: its policies: probes-set; the cluster: baseline/no-privileged, baseline/container-resources)"
        );
    }
}
