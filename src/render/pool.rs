//! The parent side of evaluation: a small pool of worker processes.
//!
//! A request goes to the worker its module digest routes to when that worker is free (it
//! likely has the module prepared), else to any free worker. Each exchange runs in its own
//! task, so a caller that gives up never leaves a reply in a worker's pipe for the next
//! request. A deadline is enforced by killing the worker. Workers are replaced after a number
//! of evaluations, or when their address space nears its limit: Nickel leaks on every
//! evaluation, and only a new process gives the memory back.
//!
//! Workers start with an empty environment and seal themselves before reading a request
//! ([`super::sandbox`]); the first line each writes says how far it is sealed.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Mutex, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

use super::error::RenderError;
use super::protocol::{EvalRequest, EvalResponse, WorkerHello, WorkerRequest};
use super::sandbox::{SandboxLevel, SandboxProbe, SandboxReport, SandboxStatus};
use super::worker::{OUT_OF_MEMORY, address_space_bytes, private_resident_bytes_of};
use crate::metrics::{self, Collectors};

/// Largest response a worker may send.
pub const MAX_OUTPUT_BYTES: usize = 16 << 20;
/// How much of a worker's stderr is kept to explain a crash.
const STDERR_TAIL_BYTES: usize = 4096;
/// Smallest address-space limit a worker can run with (its stack and binary included).
pub const MIN_MEMORY_MIB: u64 = 256;

/// Private resident memory past which a worker is replaced, by default (MiB). Its resident
/// memory is this plus the pages of the binary it shares with the operator (about 17 MiB of
/// a release build). A fresh worker holds 4 MiB of its own, and a few more with the
/// webservice module prepared (the postgres module's nine examples in a row stay under 16);
/// at 16 it serves about two dozen renders between restarts (a restart costs about 70 ms:
/// at 1,000 renders the same CPU as at 24 or 48, within noise, and 15 MiB less for two
/// workers than at 24; docs/performance.md).
pub const DEFAULT_RECYCLE_RESIDENT_MIB: u64 = 16;

/// How long a retired worker is waited for before its successor starts anyway (a killed
/// process is gone in milliseconds).
const RETIRE_WAIT: Duration = Duration::from_secs(1);

/// Settings of the worker pool.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// The `pequod` binary to start as a worker.
    pub program: PathBuf,
    /// Number of worker processes.
    pub workers: usize,
    /// Deadline of one evaluation, module preparation included.
    pub timeout: Duration,
    /// Address-space limit of a worker, in MiB.
    pub memory_mib: u64,
    /// Stack of the evaluating thread, in MiB.
    pub stack_mib: u64,
    /// A worker is replaced after this many evaluations.
    pub max_evaluations: u64,
    /// A worker is replaced once its address space passes this share of `memory_mib`, in
    /// percent, so that leaked memory never makes a healthy module hit the limit.
    pub recycle_at_percent: u64,
    /// A worker is replaced once its private resident memory passes this many MiB: Nickel
    /// leaks on every evaluation, and a worker's memory is the operator's memory.
    pub recycle_resident_mib: u64,
}

impl PoolConfig {
    /// The defaults (10 s, 512 MiB, 2 workers; docs/design.md), with `program` as the
    /// worker binary.
    pub fn with_program(program: PathBuf) -> PoolConfig {
        PoolConfig {
            program,
            workers: 2,
            timeout: Duration::from_secs(10),
            memory_mib: 512,
            stack_mib: 64,
            max_evaluations: 1000,
            recycle_at_percent: 70,
            recycle_resident_mib: DEFAULT_RECYCLE_RESIDENT_MIB,
        }
    }

    fn recycle_threshold_bytes(&self) -> u64 {
        self.memory_mib.saturating_mul(1 << 20) / 100 * self.recycle_at_percent
    }
}

/// Counters of the pool's activity, exported as `pequod_worker_*` metrics.
#[derive(Clone, Debug)]
pub struct PoolStats {
    /// Evaluations sent to a worker.
    pub evaluations: IntCounter,
    /// Worker processes started.
    pub spawned: IntCounter,
    /// Workers replaced for age or memory growth.
    pub recycled: IntCounter,
    /// Workers replaced after a failed exchange: deadline, crash, garbled reply.
    pub failed: IntCounter,
}

impl Default for PoolStats {
    fn default() -> Self {
        PoolStats {
            evaluations: metrics::counter(
                "worker_evaluations_total",
                "Evaluations sent to a worker process",
            ),
            spawned: metrics::counter("worker_spawns_total", "Worker processes started"),
            recycled: metrics::counter(
                "worker_recycles_total",
                "Workers replaced for their age or memory growth",
            ),
            failed: metrics::counter(
                "worker_failures_total",
                "Workers replaced after a failed exchange (deadline, crash, garbled reply)",
            ),
        }
    }
}

impl PoolStats {
    /// The counters, for the operator's registry.
    pub fn collectors(&self) -> Collectors {
        vec![
            Box::new(self.evaluations.clone()),
            Box::new(self.spawned.clone()),
            Box::new(self.recycled.clone()),
            Box::new(self.failed.clone()),
        ]
    }
}

/// A pool of evaluation workers.
pub struct WorkerPool {
    shared: Arc<Shared>,
    slots: Vec<Arc<Mutex<Option<Worker>>>>,
    free: Arc<Semaphore>,
}

/// What the exchange tasks need: settings, counters, and the sandbox workers report.
struct Shared {
    config: PoolConfig,
    stats: PoolStats,
    /// What the most recently started worker said of its sandbox.
    sandbox: std::sync::Mutex<Option<SandboxStatus>>,
}

/// A worker slot held for one exchange, with the permit that reserved it.
struct Lease {
    worker: OwnedMutexGuard<Option<Worker>>,
    _permit: OwnedSemaphorePermit,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr_tail: Arc<std::sync::Mutex<VecDeque<u8>>>,
    stderr_reader: tokio::task::JoinHandle<()>,
    evaluations: u64,
}

/// Why a worker gave no usable reply.
enum NoReply {
    /// The worker closed its stdout: it died.
    Died,
    /// Anything else: a deadline, a reply too large or garbled, a broken pipe.
    Failed(RenderError),
}

impl From<NoReply> for RenderError {
    fn from(failure: NoReply) -> RenderError {
        match failure {
            NoReply::Died => RenderError::Worker("worker exited".into()),
            NoReply::Failed(error) => error,
        }
    }
}

impl WorkerPool {
    /// A pool with `config.workers` slots; workers start on first use.
    pub fn new(config: PoolConfig) -> WorkerPool {
        let count = config.workers.max(1);
        WorkerPool {
            shared: Arc::new(Shared {
                config,
                stats: PoolStats::default(),
                sandbox: std::sync::Mutex::new(None),
            }),
            slots: (0..count).map(|_| Arc::new(Mutex::new(None))).collect(),
            free: Arc::new(Semaphore::new(count)),
        }
    }

    /// Activity counters.
    pub fn stats(&self) -> &PoolStats {
        &self.shared.stats
    }

    /// How far the most recently started worker is sealed; `None` before the first start.
    pub fn sandbox(&self) -> Option<SandboxStatus> {
        self.shared.sandbox.lock().ok().and_then(|status| *status)
    }

    /// Evaluates one request on a worker.
    pub async fn evaluate(&self, request: &EvalRequest<'_>) -> Result<Value, RenderError> {
        self.send(
            &WorkerRequest::Evaluate(Cow::Borrowed(request)),
            &request.digest,
        )
        .await
    }

    /// Asks a worker about its own sandbox, from inside it: what tests use to prove the seal.
    pub async fn probe(&self, probe: &SandboxProbe) -> Result<SandboxReport, RenderError> {
        let report = self.send(&WorkerRequest::Probe(probe.clone()), "").await?;
        serde_json::from_value(report).map_err(|e| RenderError::Worker(e.to_string()))
    }

    /// Sends one request to a worker, chosen by `digest`. A worker that had already served
    /// other requests and runs out of memory gets one retry on a fresh worker: its leaks, not
    /// this request, may have filled it.
    async fn send(&self, request: &WorkerRequest<'_>, digest: &str) -> Result<Value, RenderError> {
        let mut line =
            serde_json::to_vec(request).map_err(|e| RenderError::Worker(e.to_string()))?;
        line.push(b'\n');
        let line = Arc::new(line);
        let mut retried = false;
        loop {
            let lease = self.acquire(digest).await?;
            let shared = Arc::clone(&self.shared);
            let task_line = Arc::clone(&line);
            let fresh = retried;
            let (result, worn) =
                tokio::spawn(async move { exchange(shared, lease, &task_line, fresh).await })
                    .await
                    .map_err(|e| RenderError::Worker(format!("exchange task failed: {e}")))?;
            match result {
                Err(RenderError::MemoryLimit(_)) if worn && !retried => retried = true,
                other => return other,
            }
        }
    }

    /// Reserves a free slot: the one `digest` routes to when free, else any free one.
    async fn acquire(&self, digest: &str) -> Result<Lease, RenderError> {
        let permit = Arc::clone(&self.free)
            .acquire_owned()
            .await
            .map_err(|_| RenderError::Worker("worker pool closed".into()))?;
        let mut hasher = DefaultHasher::new();
        digest.hash(&mut hasher);
        let count = self.slots.len();
        let preferred = (hasher.finish() % count as u64) as usize;
        for index in (0..count).map(|i| (preferred + i) % count) {
            if let Ok(worker) = Arc::clone(&self.slots[index]).try_lock_owned() {
                return Ok(Lease {
                    worker,
                    _permit: permit,
                });
            }
        }
        // A slot is being released right now; wait for the preferred one.
        let worker = Arc::clone(&self.slots[preferred]).lock_owned().await;
        Ok(Lease {
            worker,
            _permit: permit,
        })
    }
}

/// One request/response with the leased worker, starting it if needed (or if `fresh` is
/// asked for and the worker has served before, or if it died while idle). Returns the
/// result, and whether the worker had served earlier requests.
async fn exchange(
    shared: Arc<Shared>,
    mut lease: Lease,
    line: &[u8],
    fresh: bool,
) -> (Result<Value, RenderError>, bool) {
    let config = &shared.config;
    let stats = &shared.stats;
    let replace = lease.worker.as_mut().is_some_and(|worker| {
        (fresh && worker.evaluations > 0) || !matches!(worker.child.try_wait(), Ok(None))
    });
    if replace && let Some(old) = lease.worker.take() {
        old.retire().await;
    }
    if lease.worker.is_none() {
        match start(&shared).await {
            Ok(worker) => {
                stats.spawned.inc();
                *lease.worker = Some(worker);
            }
            Err(error) => return (Err(error), false),
        }
    }
    let Some(worker) = lease.worker.as_mut() else {
        return (Err(RenderError::Worker("no worker".into())), false);
    };
    let worn = worker.evaluations > 0;
    worker.clear_stderr();
    stats.evaluations.inc();
    let outcome = tokio::time::timeout(config.timeout, worker.exchange(line)).await;
    let failure = match outcome {
        Ok(Ok(EvalResponse { result })) => {
            worker.evaluations += 1;
            // Read by the parent: the sealed worker cannot open /proc.
            let vm_bytes = worker.child.id().map_or(0, address_space_bytes);
            let resident = worker.child.id().map_or(0, private_resident_bytes_of);
            let recycle = worker.evaluations >= config.max_evaluations
                || vm_bytes >= config.recycle_threshold_bytes()
                || resident >= config.recycle_resident_mib.saturating_mul(1 << 20);
            if recycle && let Some(old) = lease.worker.take() {
                stats.recycled.inc();
                tracing::debug!(
                    evaluations = old.evaluations,
                    vm_bytes,
                    private_resident_bytes = resident,
                    "recycling evaluation worker"
                );
                old.retire().await;
            }
            return (result.map_err(RenderError::Evaluation), worn);
        }
        Err(_elapsed) => NoReply::Failed(RenderError::Timeout(config.timeout)),
        Ok(Err(failure)) => failure,
    };
    // A failed exchange leaves the worker in an unknown state: it is replaced.
    stats.failed.inc();
    let Some(worker) = lease.worker.take() else {
        return (Err(failure.into()), worn);
    };
    let error = worker.replace(failure, config.memory_mib).await;
    tracing::debug!(error = %error, "evaluation worker replaced");
    (Err(error), worn)
}

/// Starts a worker and reads its hello, within the evaluation deadline.
async fn start(shared: &Shared) -> Result<Worker, RenderError> {
    let config = &shared.config;
    let mut worker = spawn(config)?;
    let failure = match tokio::time::timeout(config.timeout, worker.read_reply()).await {
        Ok(Ok(WorkerHello { sandbox })) => {
            shared.record(sandbox);
            return Ok(worker);
        }
        Err(_elapsed) => NoReply::Failed(RenderError::Worker(format!(
            "worker did not start within {}",
            humantime::format_duration(config.timeout)
        ))),
        Ok(Err(failure)) => failure,
    };
    Err(worker.replace(failure, config.memory_mib).await)
}

impl Shared {
    /// Keeps a new worker's sandbox status, and says so when it changes: at the first start,
    /// as a warning when the worker is not fully sealed.
    fn record(&self, sandbox: SandboxStatus) {
        let Ok(mut last) = self.sandbox.lock() else {
            return;
        };
        if *last != Some(sandbox) {
            if sandbox.level() == SandboxLevel::Sealed {
                tracing::info!(%sandbox, "evaluation workers are sealed");
            } else {
                tracing::warn!(%sandbox, "evaluation workers are not fully sealed");
            }
        }
        *last = Some(sandbox);
    }
}

fn spawn(config: &PoolConfig) -> Result<Worker, RenderError> {
    // The worker sees none of the operator's environment (KUBECONFIG, tokens, ...): neither
    // Rust nor Nickel need any of it.
    let mut child = Command::new(&config.program)
        .arg("__worker")
        .arg("--memory-mib")
        .arg(config.memory_mib.to_string())
        .arg("--stack-mib")
        .arg(config.stack_mib.to_string())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            RenderError::Worker(format!("cannot start {}: {e}", config.program.display()))
        })?;
    let (Some(stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(RenderError::Worker("worker pipes missing".into()));
    };
    tracing::debug!(pid = child.id(), "started evaluation worker");
    let stderr_tail = Arc::new(std::sync::Mutex::new(VecDeque::new()));
    let tail = Arc::clone(&stderr_tail);
    let stderr_reader = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if let Ok(mut tail) = tail.lock() {
                tail.extend(&buf[..n]);
                let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
                tail.drain(..excess);
            }
        }
    });
    Ok(Worker {
        child,
        stdin,
        stdout: BufReader::new(stdout),
        stderr_tail,
        stderr_reader,
        evaluations: 0,
    })
}

impl Worker {
    async fn exchange(&mut self, line: &[u8]) -> Result<EvalResponse, NoReply> {
        let written = match self.stdin.write_all(line).await {
            Ok(()) => self.stdin.flush().await,
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => self.read_reply().await,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(NoReply::Died),
            Err(e) => Err(NoReply::Failed(RenderError::Worker(e.to_string()))),
        }
    }

    /// Reads the worker's next line.
    async fn read_reply<T: DeserializeOwned>(&mut self) -> Result<T, NoReply> {
        let mut response = Vec::new();
        let limit = MAX_OUTPUT_BYTES as u64 + 1;
        let read = (&mut self.stdout)
            .take(limit)
            .read_until(b'\n', &mut response)
            .await
            .map_err(|e| NoReply::Failed(RenderError::Worker(e.to_string())))?;
        if response.last() != Some(&b'\n') {
            return Err(if read as u64 >= limit {
                NoReply::Failed(RenderError::OutputTooLarge(MAX_OUTPUT_BYTES))
            } else {
                NoReply::Died
            });
        }
        serde_json::from_slice(&response).map_err(|e| {
            NoReply::Failed(RenderError::Worker(format!(
                "unreadable worker response: {e}"
            )))
        })
    }

    /// Gets rid of a worker that gave no reply: explains its death when it exited, else
    /// kills it.
    async fn replace(self, failure: NoReply, memory_mib: u64) -> RenderError {
        match failure {
            NoReply::Died => self
                .explain_death(memory_mib)
                .await
                .unwrap_or_else(|| NoReply::Died.into()),
            NoReply::Failed(error) => {
                self.kill().await;
                error
            }
        }
    }

    /// Forgets what the worker wrote on stderr before this request.
    fn clear_stderr(&self) {
        if let Ok(mut tail) = self.stderr_tail.lock() {
            tail.clear();
        }
    }

    /// Ends an idle worker at once (it holds nothing to finish: a graceful exit would only
    /// spend time dropping its heap) and waits until it is gone, so that it and its
    /// successor never hold memory at the same time; one that takes longer than
    /// [`RETIRE_WAIT`] is reaped in the background.
    async fn retire(self) {
        let Worker { mut child, .. } = self;
        let _ = child.start_kill();
        if tokio::time::timeout(RETIRE_WAIT, child.wait())
            .await
            .is_err()
        {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
    }

    /// Kills the worker.
    async fn kill(mut self) {
        let _ = self.child.kill().await;
        self.stderr_reader.abort();
    }

    /// Waits briefly for a dying worker and explains its death from its stderr: memory
    /// exhausted, stack overflow, or another crash.
    async fn explain_death(mut self, memory_mib: u64) -> Option<RenderError> {
        let status = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.stderr_reader).await;
        let Ok(Ok(status)) = status else {
            let _ = self.child.kill().await;
            return None;
        };
        let stderr = self
            .stderr_tail
            .lock()
            .map(|mut tail| String::from_utf8_lossy(tail.make_contiguous()).into_owned())
            .unwrap_or_default();
        let out_of_memory =
            stderr.contains(OUT_OF_MEMORY) || stderr.contains("memory allocation of");
        Some(if out_of_memory {
            RenderError::MemoryLimit(memory_mib)
        } else if stderr.contains("overflowed its stack") {
            RenderError::StackOverflow
        } else {
            RenderError::WorkerCrashed {
                status: status.to_string(),
                stderr: stderr.trim().lines().last().unwrap_or("").to_string(),
            }
        })
    }
}
