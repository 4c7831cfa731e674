//! Helpers for tests that drive a [`TestApiServer`](crate::TestApiServer) from outside: the
//! installed `kubectl` with its own discovery cache, polling until a condition holds, and
//! plain HTTP GETs of an operator's metrics and probes.
//! Shared by this crate's suites and Pequod's operator tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::TestApiServer;

/// The output of one kubectl run.
#[derive(Debug)]
pub struct Run {
    /// Whether kubectl exited with 0.
    pub success: bool,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

/// Runs the installed `kubectl` against one server, with its own discovery cache.
pub struct Kubectl {
    kubeconfig: PathBuf,
    cache: tempfile::TempDir,
}

impl Kubectl {
    /// kubectl for `server`.
    pub fn new(server: &TestApiServer) -> Self {
        Self::with_kubeconfig(server.kubeconfig())
    }

    /// kubectl for whatever server `kubeconfig` names.
    pub fn with_kubeconfig(kubeconfig: &Path) -> Self {
        Kubectl {
            kubeconfig: kubeconfig.to_owned(),
            cache: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// The command with kubeconfig and cache set.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs kubectl with `stdin`, waiting at most a minute.
    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut child = self.command(args).spawn().unwrap_or_else(|error| {
            panic!("kubectl must be installed (it is on the build machines): {error}")
        });
        if let Some(mut input) = child.stdin.take()
            && let Some(text) = stdin
        {
            input
                .write_all(text.as_bytes())
                .await
                .expect("kubectl stdin");
        }
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish within a minute"))
            .expect("kubectl ran");
        Run {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs kubectl and insists that it succeeds; returns stdout.
    pub async fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let run = self.run(args, stdin).await;
        assert!(
            run.success,
            "kubectl {args:?} failed:\n{}\n{}",
            run.stdout, run.stderr
        );
        run.stdout
    }

    /// Runs kubectl and insists that it fails; returns stderr.
    pub async fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let run = self.run(args, stdin).await;
        assert!(
            !run.success,
            "kubectl {args:?} should have failed:\n{}",
            run.stdout
        );
        run.stderr
    }
}

/// Polls `check` every 50 ms until it returns Some, for at most `seconds`.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The body of `GET path` from the plain-HTTP server at `addr` (an operator's metrics and
/// probes), when it answers 2xx.
pub async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 2").then(|| body.to_string())
}
