//! Render errors: what went wrong, located where the user can fix it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::schema::SchemaViolation;
use crate::api::condition::{reasons, types};
use crate::graph::IntegrityErrors;

/// The phase of Nickel processing that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// An import that is not a file of the module or the pequod library.
    ForbiddenImport,
    /// An import of a module file that cannot be read in its format (bad JSON/YAML, ...).
    Import,
    /// The module does not parse.
    Syntax,
    /// The module does not typecheck.
    Type,
    /// A contract was broken: by the input (path names the input field) or by module code.
    Contract,
    /// Any other evaluation error (missing field, failed assertion, ...).
    Evaluation,
    /// The result cannot be exported to JSON (functions, out-of-range numbers, ...).
    Export,
    /// The worker could not make sense of the request.
    Request,
    /// The interpreter itself failed (a caught panic): not a property of the module.
    Internal,
}

impl FailureKind {
    fn label(self) -> &'static str {
        match self {
            FailureKind::ForbiddenImport => "forbidden import",
            FailureKind::Import => "import error",
            FailureKind::Syntax => "syntax error",
            FailureKind::Type => "type error",
            FailureKind::Contract => "contract violation",
            FailureKind::Evaluation => "evaluation error",
            FailureKind::Export => "export error",
            FailureKind::Request => "bad evaluation request",
            FailureKind::Internal => "interpreter failure",
        }
    }
}

/// A Nickel failure turned into plain data on the evaluating thread (Nickel's own errors are
/// `!Send`), ready to cross the worker boundary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalFailure {
    /// Which phase failed.
    pub kind: FailureKind,
    /// One line: the message and its notes.
    pub message: String,
    /// The input path that broke a contract, e.g. `input.replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `file:line:col` of the primary location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The full Nickel report with source snippets.
    #[serde(default)]
    pub detail: String,
}

impl EvalFailure {
    /// A failure with only a kind and a message.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> EvalFailure {
        EvalFailure {
            kind,
            message: message.into(),
            path: None,
            location: None,
            detail: String::new(),
        }
    }
}

impl std::fmt::Display for EvalFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.kind.label())?;
        if let Some(path) = &self.path {
            write!(f, " at {path}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(location) = &self.location {
            write!(f, " ({location})")?;
        }
        Ok(())
    }
}

/// Why a render produced no graph.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RenderError {
    /// The Transform's input is not a mapping.
    #[error("input must be a mapping, found {0}")]
    InputNotAnObject(&'static str),
    /// The Transform's name cannot be a label value.
    #[error(
        "Transform name `{0}` is longer than 63 characters, the limit of the label values Pequod sets"
    )]
    NameTooLong(String),
    /// Nickel reported an error.
    #[error("{0}")]
    Evaluation(EvalFailure),
    /// The evaluation ran past its deadline and its worker was killed.
    #[error("evaluation exceeded {}s and was stopped", .0.as_secs_f64())]
    Timeout(Duration),
    /// The evaluation ran out of its address-space budget.
    #[error("evaluation exceeded memory limit of {0} MiB and was stopped")]
    MemoryLimit(u64),
    /// The evaluation nested too deeply for the worker's stack.
    #[error("evaluation overflowed the stack (a value or a recursion nested too deeply)")]
    StackOverflow,
    /// The worker died for another reason.
    #[error("evaluation worker crashed ({status}){}", if .stderr.is_empty() { String::new() } else { format!(": {}", .stderr) })]
    WorkerCrashed {
        /// Exit status.
        status: String,
        /// The end of the worker's stderr.
        stderr: String,
    },
    /// The worker could not be started or talked to.
    #[error("evaluation worker unavailable: {0}")]
    Worker(String),
    /// The rendered graph is larger than allowed.
    #[error("rendered output exceeds {0} bytes")]
    OutputTooLarge(usize),
    /// The evaluation result does not have the graph's shape.
    #[error("module output is not a valid graph: {0}")]
    InvalidOutput(String),
    /// The graph fails integrity checks.
    #[error("graph integrity: {0}")]
    Integrity(#[from] IntegrityErrors),
    /// Rendered objects break the JSON Schema of their kind.
    #[error("schema validation: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Schema(Vec<SchemaViolation>),
}

impl RenderError {
    /// True when the same module, input and engine always give this error, so it may be
    /// cached; false for failures of the sandbox or the worker, which may not recur.
    pub fn is_deterministic(&self) -> bool {
        match self {
            RenderError::Evaluation(failure) => {
                !matches!(failure.kind, FailureKind::Request | FailureKind::Internal)
            }
            RenderError::InputNotAnObject(_)
            | RenderError::NameTooLong(_)
            | RenderError::StackOverflow
            | RenderError::OutputTooLarge(_)
            | RenderError::InvalidOutput(_)
            | RenderError::Integrity(_)
            | RenderError::Schema(_) => true,
            RenderError::Timeout(_)
            | RenderError::MemoryLimit(_)
            | RenderError::WorkerCrashed { .. }
            | RenderError::Worker(_) => false,
        }
    }

    /// The Transform condition this error sets False, and its reason: `Validated` for what
    /// the input, the graph or its schemas got wrong, `Rendered` for the evaluation.
    pub fn condition(&self) -> (&'static str, &'static str) {
        match self {
            RenderError::InputNotAnObject(_) => (types::VALIDATED, reasons::INVALID_INPUT),
            RenderError::Evaluation(failure)
                if failure.kind == FailureKind::Contract && failure.path.is_some() =>
            {
                (types::VALIDATED, reasons::INVALID_INPUT)
            }
            RenderError::NameTooLong(_) => (types::VALIDATED, reasons::NAME_TOO_LONG),
            RenderError::Integrity(_) => (types::VALIDATED, reasons::INVALID_GRAPH),
            RenderError::Schema(_) => (types::VALIDATED, reasons::SCHEMA_VIOLATION),
            RenderError::Timeout(_) | RenderError::MemoryLimit(_) | RenderError::StackOverflow => {
                (types::RENDERED, reasons::EVALUATION_LIMIT)
            }
            RenderError::WorkerCrashed { .. } | RenderError::Worker(_) => {
                (types::RENDERED, reasons::WORKER_FAILED)
            }
            RenderError::Evaluation(_)
            | RenderError::OutputTooLarge(_)
            | RenderError::InvalidOutput(_) => (types::RENDERED, reasons::RENDER_FAILED),
        }
    }

    /// Whether the error was found in the input before anything was rendered.
    pub fn before_render(&self) -> bool {
        matches!(
            self.condition().1,
            reasons::INVALID_INPUT | reasons::NAME_TOO_LONG
        )
    }

    /// The multi-line report behind the one-line message, when there is one.
    pub fn detail(&self) -> Option<&str> {
        match self {
            RenderError::Evaluation(failure) if !failure.detail.is_empty() => Some(&failure.detail),
            _ => None,
        }
    }
}
