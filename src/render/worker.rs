//! The evaluation worker: a `pequod` process started by the operator (hidden `__worker`
//! command) that evaluates requests from stdin, one at a time, on a thread with a large
//! stack, under an address-space limit, sealed ([`super::sandbox`]) before it reads the
//! first one. The parent kills it on a deadline and recycles it.

use std::io::{BufRead, Write};

use serde::Serialize;

use super::error::{EvalFailure, FailureKind};
use super::nickel::{Evaluator, VFS_ROOT};
use super::protocol::{EvalResponse, WorkerHello, WorkerRequest};
use super::sandbox::{self, SandboxStatus};
use crate::module::library_files;

/// The line a worker writes on stderr before exiting when memory ran out.
pub const OUT_OF_MEMORY: &str = "pequod worker: out of memory";

/// Resource limits of one worker process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerLimits {
    /// Address-space limit (RLIMIT_AS) in bytes.
    pub memory_bytes: u64,
    /// Stack size of the evaluating thread in bytes.
    pub stack_bytes: usize,
}

/// Seals the process, then runs the worker loop until stdin closes. Returns an error only
/// when the worker cannot start; evaluation errors are answered on stdout.
pub fn run(limits: WorkerLimits) -> std::io::Result<()> {
    if std::path::Path::new(VFS_ROOT).exists() {
        return Err(std::io::Error::other(format!(
            "{VFS_ROOT} exists on this file system; refusing to evaluate modules"
        )));
    }
    // The default hook captures a backtrace, which allocates: after an allocation failure
    // that can hang the process instead of letting it report and exit.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("panic");
        if message.contains("out of memory") {
            // Nickel panics when its allocator fails: the address-space limit was reached.
            // Unwinding in that state can fail in turn, so the worker stops here; the parent
            // reads this line and reports the memory limit.
            let _ = writeln!(std::io::stderr(), "{OUT_OF_MEMORY}");
            std::process::abort();
        }
        let _ = writeln!(std::io::stderr(), "pequod worker panic: {message}");
    }));
    rlimit::setrlimit(rlimit::Resource::CORE, 0, 0)?;
    rlimit::setrlimit(
        rlimit::Resource::AS,
        limits.memory_bytes,
        limits.memory_bytes,
    )?;
    // Sealed before the evaluating thread starts, which inherits the seal.
    let sandbox = sandbox::seal()?;
    let evaluator_thread = std::thread::Builder::new()
        .name("nickel-eval".into())
        .stack_size(limits.stack_bytes)
        .spawn(move || serve(sandbox))?;
    evaluator_thread
        .join()
        .map_err(|_| std::io::Error::other("evaluation thread panicked"))?
}

fn serve(sandbox: SandboxStatus) -> std::io::Result<()> {
    let library = library_files();
    let mut evaluator = Evaluator::new(library.clone());
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    write_line(&mut stdout, &WorkerHello { sandbox })?;
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let result = match serde_json::from_str::<WorkerRequest>(&line) {
            Ok(WorkerRequest::Probe(probe)) => serde_json::to_value(sandbox::probe(&probe))
                .map_err(|e| EvalFailure::new(FailureKind::Request, e.to_string())),
            Ok(WorkerRequest::Evaluate(request)) => {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    evaluator.evaluate(&request)
                }));
                outcome.unwrap_or_else(|panic| {
                    // The interpreter's state is unknown after a panic: start afresh.
                    evaluator = Evaluator::new(library.clone());
                    Err(EvalFailure::new(
                        FailureKind::Internal,
                        format!("the Nickel interpreter failed: {}", panic_message(&panic)),
                    ))
                })
            }
            Err(e) => Err(EvalFailure::new(FailureKind::Request, e.to_string())),
        };
        write_line(&mut stdout, &EvalResponse { result })?;
    }
    Ok(())
}

fn write_line(stdout: &mut impl Write, message: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *stdout, message)?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// Resident set size of this process, from /proc (0 where unavailable).
pub fn resident_bytes() -> u64 {
    status_bytes("self", "VmRSS:")
}

/// Address-space size of process `pid`, from /proc (0 where unavailable). The parent reads
/// it for its workers: a sealed worker cannot open /proc.
pub(super) fn address_space_bytes(pid: u32) -> u64 {
    status_bytes(&pid.to_string(), "VmSize:")
}

/// Private resident memory of process `pid` (`RssAnon`: not the pages of the binary, which
/// its workers share with the operator), from /proc (0 where unavailable).
pub(super) fn private_resident_bytes_of(pid: u32) -> u64 {
    status_bytes(&pid.to_string(), "RssAnon:")
}

/// A `kB` figure of /proc/`process`/status, in bytes (0 where unavailable).
fn status_bytes(process: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
