//! The parent side of evaluation: a small pool of worker processes. Requests go to the
//! worker their module digest routes to when it is free, so that worker keeps the module
//! prepared, and to any free worker otherwise; each request has a deadline
//! enforced by killing the worker; workers are recycled after a number of evaluations or
//! when their memory grows (Nickel leaks a little on every evaluation).

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

use super::error::RenderError;
use super::protocol::{EvalRequest, EvalResponse};

/// Largest response a worker may send.
pub const MAX_OUTPUT_BYTES: usize = 16 << 20;
/// How much of a worker's stderr is kept to explain a crash.
const STDERR_TAIL_BYTES: usize = 4096;

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
    /// A worker is replaced once its resident memory passes this many MiB.
    pub max_rss_mib: u64,
}

impl PoolConfig {
    /// Defaults of SPEC §4 (10 s, 512 MiB), with this process as the worker program.
    pub fn with_program(program: PathBuf) -> PoolConfig {
        PoolConfig {
            program,
            workers: 2,
            timeout: Duration::from_secs(10),
            memory_mib: 512,
            stack_mib: 64,
            max_evaluations: 1000,
            max_rss_mib: 256,
        }
    }
}

/// Counters of the pool's activity.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Evaluations sent to a worker.
    pub evaluations: AtomicU64,
    /// Worker processes started.
    pub spawned: AtomicU64,
    /// Workers replaced for age or memory.
    pub recycled: AtomicU64,
    /// Workers killed for a deadline, or found dead.
    pub killed: AtomicU64,
}

/// A pool of evaluation workers.
pub struct WorkerPool {
    config: PoolConfig,
    slots: Vec<Mutex<Slot>>,
    stats: Arc<PoolStats>,
}

#[derive(Default)]
struct Slot {
    worker: Option<Worker>,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr_tail: Arc<std::sync::Mutex<VecDeque<u8>>>,
    stderr_reader: tokio::task::JoinHandle<()>,
    evaluations: u64,
}

/// How one exchange with a worker ended.
enum Exchange {
    Answered(EvalResponse),
    /// The worker closed its stdout: it died.
    Died,
    /// The response was over [`MAX_OUTPUT_BYTES`].
    TooLarge,
}

impl WorkerPool {
    /// A pool with `config.workers` slots; workers start on first use.
    pub fn new(config: PoolConfig) -> WorkerPool {
        let slots = (0..config.workers.max(1))
            .map(|_| Mutex::new(Slot::default()))
            .collect();
        WorkerPool {
            config,
            slots,
            stats: Arc::default(),
        }
    }

    /// Activity counters.
    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    /// The pool's settings.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Evaluates one request on the worker its digest routes to.
    pub async fn evaluate(&self, request: &EvalRequest<'_>) -> Result<Value, RenderError> {
        let mut line =
            serde_json::to_vec(request).map_err(|e| RenderError::Worker(e.to_string()))?;
        line.push(b'\n');
        let mut slot = self.acquire(&request.digest).await;
        if slot.worker.is_none() {
            slot.worker = Some(self.spawn()?);
        }
        let Some(worker) = slot.worker.as_mut() else {
            return Err(RenderError::Worker("no worker".into()));
        };
        self.stats.evaluations.fetch_add(1, Ordering::Relaxed);
        let exchange = tokio::time::timeout(self.config.timeout, worker.exchange(&line)).await;
        let failure = match exchange {
            Ok(Ok(Exchange::Answered(response))) => {
                worker.evaluations += 1;
                let worn_out = worker.evaluations >= self.config.max_evaluations
                    || response.rss_bytes >= self.config.max_rss_mib << 20;
                if worn_out {
                    self.stats.recycled.fetch_add(1, Ordering::Relaxed);
                    if let Some(worker) = slot.worker.take() {
                        worker.retire();
                    }
                }
                return response.result.map_err(RenderError::Evaluation);
            }
            Err(_elapsed) => RenderError::Timeout(self.config.timeout),
            Ok(Err(io)) => RenderError::Worker(io.to_string()),
            Ok(Ok(Exchange::TooLarge)) => RenderError::OutputTooLarge(MAX_OUTPUT_BYTES),
            Ok(Ok(Exchange::Died)) => RenderError::Worker("worker exited".into()),
        };
        // A failed exchange leaves the worker in an unknown state: it is replaced.
        self.stats.killed.fetch_add(1, Ordering::Relaxed);
        let Some(worker) = slot.worker.take() else {
            return Err(failure);
        };
        if matches!(failure, RenderError::Worker(_)) {
            Err(worker
                .explain_death(self.config.memory_mib)
                .await
                .unwrap_or(failure))
        } else {
            worker.kill().await;
            Err(failure)
        }
    }

    /// The slot a digest routes to when it is free (its worker likely has the module
    /// prepared), else any free slot, else a wait for the preferred one.
    async fn acquire(&self, digest: &str) -> tokio::sync::MutexGuard<'_, Slot> {
        let mut hasher = DefaultHasher::new();
        digest.hash(&mut hasher);
        let preferred = (hasher.finish() % self.slots.len() as u64) as usize;
        let order = (0..self.slots.len()).map(|i| (preferred + i) % self.slots.len());
        for index in order {
            if let Ok(slot) = self.slots[index].try_lock() {
                return slot;
            }
        }
        self.slots[preferred].lock().await
    }

    fn spawn(&self) -> Result<Worker, RenderError> {
        let mut child = Command::new(&self.config.program)
            .arg("__worker")
            .arg("--memory-mib")
            .arg(self.config.memory_mib.to_string())
            .arg("--stack-mib")
            .arg(self.config.stack_mib.to_string())
            .env("MALLOC_ARENA_MAX", "2")
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                RenderError::Worker(format!(
                    "cannot start {}: {e}",
                    self.config.program.display()
                ))
            })?;
        let (Some(stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(RenderError::Worker("worker pipes missing".into()));
        };
        self.stats.spawned.fetch_add(1, Ordering::Relaxed);
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
}

impl Worker {
    async fn exchange(&mut self, line: &[u8]) -> std::io::Result<Exchange> {
        if let Err(e) = self.stdin.write_all(line).await {
            return if e.kind() == std::io::ErrorKind::BrokenPipe {
                Ok(Exchange::Died)
            } else {
                Err(e)
            };
        }
        self.stdin.flush().await?;
        let mut response = Vec::new();
        let limit = MAX_OUTPUT_BYTES as u64 + 1;
        let read = (&mut self.stdout)
            .take(limit)
            .read_until(b'\n', &mut response)
            .await?;
        if read == 0 {
            return Ok(Exchange::Died);
        }
        if response.last() != Some(&b'\n') {
            return Ok(if read as u64 >= limit {
                Exchange::TooLarge
            } else {
                Exchange::Died
            });
        }
        serde_json::from_slice(&response)
            .map(Exchange::Answered)
            .map_err(|e| std::io::Error::other(format!("unreadable worker response: {e}")))
    }

    /// Lets the worker finish on its own: it exits when its stdin closes.
    fn retire(self) {
        let Worker { mut child, .. } = self;
        tokio::spawn(async move {
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        });
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
        let out_of_memory = stderr.contains(super::worker::OUT_OF_MEMORY)
            || stderr.contains("memory allocation of");
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
