//! Conditions (`metav1.Condition`) of Transforms and ResourceGraphs: their types, their
//! reasons, and the one way a condition is written (its transition time kept while its
//! status does not change, its message within what Kubernetes accepts).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    /// Transform: the module reference resolved to a module (and its digest).
    pub const MODULE_RESOLVED: &str = "ModuleResolved";
    /// Transform: the module evaluated with the input into a graph.
    pub const RENDERED: &str = "Rendered";
    /// Transform: the input, the graph and the policies are valid.
    pub const VALIDATED: &str = "Validated";
    /// Transform: `spec.suspend` is true.
    pub const SUSPENDED: &str = "Suspended";
    /// Transform and ResourceGraph: every object of the graph is ready.
    pub const READY: &str = "Ready";
    /// ResourceGraph: every runnable node is applied.
    pub const APPLIED: &str = "Applied";
}

/// Condition reasons, by the step that sets them.
pub mod reasons {
    /// A step that succeeded.
    pub const SUCCEEDED: &str = "Succeeded";
    /// A step after the one that failed (its status is Unknown).
    pub const NOT_REACHED: &str = "NotReached";
    /// `spec.suspend` is true.
    pub const SUSPENDED: &str = "Suspended";

    // ModuleResolved=False.
    /// The content does not have the pinned digest.
    pub const DIGEST_MISMATCH: &str = "DigestMismatch";
    /// The source type cannot be used where it was used.
    pub const UNSUPPORTED_SOURCE: &str = "UnsupportedSource";
    /// No module at the reference.
    pub const MODULE_NOT_FOUND: &str = "ModuleNotFound";
    /// The files are not a valid module bundle.
    pub const INVALID_MODULE: &str = "InvalidModule";
    /// `moduleRef.path` names no directory of the bundle.
    pub const PATH_NOT_FOUND: &str = "PathNotFound";
    /// The reference cannot be parsed, or names a place Pequod may not read.
    pub const INVALID_REFERENCE: &str = "InvalidReference";
    /// The registry refused the credentials.
    pub const UNAUTHORIZED: &str = "Unauthorized";
    /// The OCI artifact is not a Pequod module.
    pub const INVALID_ARTIFACT: &str = "InvalidArtifact";
    /// The registry could not be reached or failed.
    pub const REGISTRY_UNAVAILABLE: &str = "RegistryUnavailable";
    /// Pequod could not read the source (the API server, its disk).
    pub const SOURCE_UNAVAILABLE: &str = "SourceUnavailable";
    /// A Git fetch failed.
    pub const FETCH_FAILED: &str = "FetchFailed";
    /// The Git branch, tag or commit does not exist.
    pub const REVISION_NOT_FOUND: &str = "RevisionNotFound";
    /// The Secret of `pullSecretRef` is missing or unusable.
    pub const PULL_SECRET_UNAVAILABLE: &str = "PullSecretUnavailable";
    /// The module's origin is not in the operator's `--module-sources` allowlist.
    pub const SOURCE_NOT_ALLOWED: &str = "SourceNotAllowed";

    // Rendered=False.
    /// The evaluation hit its deadline, memory or stack limit.
    pub const EVALUATION_LIMIT: &str = "EvaluationLimit";
    /// The evaluation worker failed.
    pub const WORKER_FAILED: &str = "WorkerFailed";
    /// The module failed to evaluate (syntax, type, runtime error).
    pub const RENDER_FAILED: &str = "RenderFailed";
    /// The rendered graph is larger than the API server would store.
    pub const TOO_LARGE: &str = "TooLarge";

    // Validated=False.
    /// The input breaks the module's Input contract, or is not a mapping.
    pub const INVALID_INPUT: &str = "InvalidInput";
    /// The rendered graph fails an integrity check (also the graph's Ready=False).
    pub const INVALID_GRAPH: &str = "InvalidGraph";
    /// A rendered object does not match its kind's schema.
    pub const SCHEMA_VIOLATION: &str = "SchemaViolation";
    /// The Transform's name does not fit in a label value.
    pub const NAME_TOO_LONG: &str = "NameTooLong";
    /// A policy reported an Error.
    pub const POLICY_VIOLATION: &str = "PolicyViolation";
    /// A cluster policy module could not check the graph, or could not be loaded.
    pub const POLICY_MODULE_FAILED: &str = "PolicyModuleFailed";

    // Ready.
    /// Every node is Ready.
    pub const ALL_NODES_READY: &str = "AllNodesReady";
    /// A node failed.
    pub const NODE_FAILED: &str = "NodeFailed";
    /// Nodes are being applied or are not ready yet.
    pub const PROGRESSING: &str = "Progressing";
    /// The Transform's ResourceGraph does not exist yet.
    pub const NO_RESOURCE_GRAPH: &str = "NoResourceGraph";
    /// The API server refused to store the planned ResourceGraph.
    pub const RESOURCE_GRAPH_REJECTED: &str = "ResourceGraphRejected";
    /// The graph is being deleted, its objects first.
    pub const DELETING: &str = "Deleting";
    /// The graph is not controlled by an existing Transform: it is not executed.
    pub const NOT_CONTROLLED_BY_TRANSFORM: &str = "NotControlledByTransform";

    // Applied.
    /// Every runnable node is applied.
    pub const APPLY_SUCCEEDED: &str = "ApplySucceeded";
    /// A node could not be applied.
    pub const APPLY_FAILED: &str = "ApplyFailed";
}

/// The status of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`.
    Unknown,
}

impl Status {
    /// `True` or `False`.
    pub fn from_bool(value: bool) -> Status {
        if value { Status::True } else { Status::False }
    }

    /// The status as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// Longest condition message Kubernetes accepts (bytes).
pub const MAX_MESSAGE: usize = 32768;

/// Writes the conditions of one reconcile of one object: they share the object's
/// generation, the reconcile's clock, and the conditions the object had, whose transition
/// times are kept while their status does not change.
#[derive(Clone, Copy, Debug)]
pub struct ConditionWriter<'a> {
    generation: Option<i64>,
    now: jiff::Timestamp,
    previous: &'a [Condition],
}

impl<'a> ConditionWriter<'a> {
    /// A writer for an object at `generation` whose conditions were `previous`, at `now`.
    pub fn new(
        generation: Option<i64>,
        now: jiff::Timestamp,
        previous: &'a [Condition],
    ) -> ConditionWriter<'a> {
        ConditionWriter {
            generation,
            now,
            previous,
        }
    }

    /// A condition; its message is cut to [`MAX_MESSAGE`] bytes.
    pub fn condition(&self, type_: &str, status: Status, reason: &str, message: &str) -> Condition {
        let status = status.as_str();
        let last_transition_time = self
            .previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or(Time(self.now), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: truncate(message, MAX_MESSAGE),
            observed_generation: self.generation,
            last_transition_time,
        }
    }
}

/// Replaces the condition of the same type in `conditions`, or adds it.
pub fn set(conditions: &mut Vec<Condition>, condition: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

/// The condition of `type_`, if any.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// `text` cut to at most `limit` bytes at a character boundary, `...` marking the cut.
pub fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let earlier = jiff::Timestamp::from_second(1_000).expect("valid");
        let later = jiff::Timestamp::from_second(2_000).expect("valid");
        let first = ConditionWriter::new(Some(1), earlier, &[]).condition(
            types::READY,
            Status::False,
            reasons::PROGRESSING,
            "a",
        );
        let previous = [first];
        let same = ConditionWriter::new(Some(2), later, &previous).condition(
            types::READY,
            Status::False,
            reasons::PROGRESSING,
            "b",
        );
        assert_eq!(same.last_transition_time, Time(earlier));
        assert_eq!(same.observed_generation, Some(2));
        let previous = [same];
        let flipped = ConditionWriter::new(Some(2), later, &previous).condition(
            types::READY,
            Status::True,
            reasons::ALL_NODES_READY,
            "c",
        );
        assert_eq!(flipped.last_transition_time, Time(later));
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let message = "é".repeat(MAX_MESSAGE);
        let condition = ConditionWriter::new(None, jiff::Timestamp::UNIX_EPOCH, &[]).condition(
            types::READY,
            Status::False,
            reasons::NODE_FAILED,
            &message,
        );
        assert!(condition.message.len() <= MAX_MESSAGE);
        assert!(condition.message.ends_with("é..."));
    }

    #[test]
    fn set_replaces_the_condition_of_the_same_type() {
        let writer = ConditionWriter::new(None, jiff::Timestamp::UNIX_EPOCH, &[]);
        let mut conditions = vec![writer.condition(types::READY, Status::False, "A", "")];
        set(
            &mut conditions,
            writer.condition(types::APPLIED, Status::True, "B", ""),
        );
        set(
            &mut conditions,
            writer.condition(types::READY, Status::True, "C", ""),
        );
        let reasons: Vec<&str> = conditions.iter().map(|c| c.reason.as_str()).collect();
        assert_eq!(reasons, ["C", "B"]);
        assert_eq!(
            find(&conditions, types::APPLIED).map(|c| c.status.as_str()),
            Some("True")
        );
    }
}
