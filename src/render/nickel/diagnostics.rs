//! Nickel errors as a user reads them: one line (message, input path, expected contract,
//! first hint, location) plus the full report, with virtual paths shortened to what a module
//! author knows (`main.ncl`, `pequod/graph.ncl`, `spec.input.json`).

use std::path::{Path, PathBuf};

use codespan_reporting::diagnostic::{Diagnostic, Label, LabelStyle};
use nickel_lang_core::error::report::{ColorOpt, report_as_str};
use nickel_lang_core::error::{Error as NickelError, IntoDiagnostics};
use nickel_lang_core::files::{FileId, Files};

use super::{CONTRACT_FILE, ENTRY_FILE, EVAL_ROOT, INPUT_FILE, LIB_ROOT, MODULE_ROOT};
use crate::render::error::{EvalFailure, FailureKind};
use crate::render::input_json::SpannedJson;

/// Turns a Nickel error into an [`EvalFailure`]: a one-line message from the first
/// diagnostic, its location, the input path when the location is in the input, and the
/// full report with virtual paths shortened.
pub(super) fn failure(
    files: Files,
    error: NickelError,
    input: Option<&SpannedJson>,
) -> EvalFailure {
    let kind = match &error {
        NickelError::ParseErrors(_) => FailureKind::Syntax,
        NickelError::TypecheckError(_) => FailureKind::Type,
        NickelError::ImportError(_) => FailureKind::Import,
        NickelError::ExportError(_) => FailureKind::Export,
        _ => FailureKind::Evaluation,
    };
    let mut report_files = files.clone();
    let detail = shorten_paths(&report_as_str(
        &mut report_files,
        error.clone(),
        ColorOpt::Never,
    ));
    let mut diagnostic_files = files;
    let diagnostics = error.into_diagnostics(&mut diagnostic_files);
    let Some(first) = diagnostics.first() else {
        let message = detail.lines().next().unwrap_or("unknown error").to_string();
        return EvalFailure {
            detail,
            ..EvalFailure::new(kind, message)
        };
    };
    let kind = if kind == FailureKind::Evaluation && first.message.contains("contract broken") {
        FailureKind::Contract
    } else {
        kind
    };
    let anchor = anchor_label(first, &diagnostic_files);
    let location = anchor.map(|l| location(&diagnostic_files, l.file_id, l.range.start));
    let path = anchor.and_then(|label| {
        let in_input = diagnostic_files.name(label.file_id) == input_file_name().as_os_str();
        input
            .filter(|_| in_input)
            .and_then(|json| json.path_at(label.range.start))
            .map(str::to_string)
    });
    EvalFailure {
        kind,
        message: one_line(first, &diagnostic_files),
        path,
        location,
        detail,
    }
}

fn input_file_name() -> PathBuf {
    Path::new(EVAL_ROOT).join(INPUT_FILE)
}

fn is_generated(files: &Files, file: FileId) -> bool {
    [ENTRY_FILE, CONTRACT_FILE]
        .iter()
        .any(|generated| files.name(file) == Path::new(EVAL_ROOT).join(generated).as_os_str())
}

/// The label a user should look at: the primary one unless it points into the generated
/// entry, then one in the input, then any other outside the entry.
fn anchor_label<'d>(
    diagnostic: &'d Diagnostic<FileId>,
    files: &Files,
) -> Option<&'d Label<FileId>> {
    let labels = &diagnostic.labels;
    let input = input_file_name();
    labels
        .iter()
        .find(|l| l.style == LabelStyle::Primary && !is_generated(files, l.file_id))
        .or_else(|| {
            labels
                .iter()
                .find(|l| files.name(l.file_id) == input.as_os_str())
        })
        .or_else(|| labels.iter().find(|l| !is_generated(files, l.file_id)))
}

/// The diagnostic's message, the contract that was expected (when a label points at it),
/// and its notes, on one line.
fn one_line(diagnostic: &Diagnostic<FileId>, files: &Files) -> String {
    let message: Vec<&str> = diagnostic
        .message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut parts = vec![message.join(": ")];
    for label in &diagnostic.labels {
        if label.style == LabelStyle::Secondary && label.message.contains("expected type") {
            let source = files.source(label.file_id);
            if let Some(contract) = source.get(label.range.clone()) {
                let contract = contract.trim();
                parts.push(if is_generated(files, label.file_id) {
                    format!("expected `{contract}`")
                } else {
                    let at = location(files, label.file_id, label.range.start);
                    format!("expected `{contract}` ({at})")
                });
            }
        }
    }
    // The first note is the hint ("Have you misspelled a field?"); later ones are advice
    // for module authors that the full report keeps.
    parts.extend(
        diagnostic
            .notes
            .iter()
            .map(|n| n.trim().replace('\n', " "))
            .find(|n| !n.is_empty()),
    );
    shorten_paths(&parts.join("; "))
}

pub(super) fn location(files: &Files, file: FileId, offset: usize) -> String {
    let name = shorten_paths(&files.name(file).to_string_lossy());
    match <Files as codespan_reporting::files::Files>::location(files, file, offset) {
        Ok(loc) => format!("{name}:{}:{}", loc.line_number, loc.column_number),
        Err(_) => name,
    }
}

/// Virtual paths shown the way a module author sees them: `main.ncl`, `pequod/graph.ncl`,
/// `spec.input.json`.
pub(super) fn shorten_paths(text: &str) -> String {
    text.replace(&format!("{MODULE_ROOT}/"), "")
        .replace(&format!("{LIB_ROOT}/"), "")
        .replace(&format!("{EVAL_ROOT}/"), "")
}
