//! A real OCI registry for the tests: the Debian `docker-registry` (distribution) on a
//! loopback port, with its storage in a temporary directory, optionally behind htpasswd; and a
//! hostile one, whose manifests or token service never end, or whose token service is a
//! page of someone else's.

#![allow(dead_code)] // each suite uses part of this module

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::net::{free_port, wait_for_port};

/// A running registry; stopped when dropped.
pub struct TestRegistry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    child: Child,
    dir: tempfile::TempDir,
}

/// The credentials of a registry started with [`TestRegistry::with_auth`].
pub const USER: &str = "pequod";
/// The password of [`USER`].
pub const PASSWORD: &str = "s3cret-pw";

impl TestRegistry {
    /// An open registry.
    pub fn start() -> TestRegistry {
        TestRegistry::launch(false)
    }

    /// A registry that wants [`USER`] and [`PASSWORD`] (HTTP basic, htpasswd bcrypt).
    pub fn with_auth() -> TestRegistry {
        TestRegistry::launch(true)
    }

    fn launch(auth: bool) -> TestRegistry {
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog: {{level: info, accesslog: {{disabled: false}}}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        if auth {
            let htpasswd = Command::new("htpasswd")
                .args(["-Bbn", USER, PASSWORD])
                .output()
                .expect("htpasswd (Debian package apache2-utils) is installed");
            std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).expect("htpasswd file");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: pequod-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("docker-registry (Debian package docker-registry) is installed");
        let registry = TestRegistry { host, child, dir };
        wait_for_port(port, Duration::from_secs(30), "the registry", || {
            registry.log()
        });
        registry
    }

    /// What the registry logged (its access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The file the registry logs to.
    pub fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("registry.log")
    }

    /// How many blobs of `repository` the registry served (its access log's 200 GETs).
    pub fn blob_pulls(&self, repository: &str) -> usize {
        let request = format!("\"GET /v2/{repository}/blobs/");
        self.log()
            .lines()
            .filter(|line| line.contains(&request) && line.contains(" 200 "))
            .count()
    }

    /// How many manifest requests (GET or HEAD, by tag or digest) for `repository` the
    /// registry answered.
    pub fn manifest_requests(&self, repository: &str) -> usize {
        let path = format!(" /v2/{repository}/manifests/");
        self.log()
            .lines()
            .filter(|line| {
                line.contains(&format!("\"GET{path}")) || line.contains(&format!("\"HEAD{path}"))
            })
            .count()
    }

    /// Publishes the module in `module` (a directory of this repository) as `reference`
    /// with `pequod module publish` and `extra` flags (plain HTTP to this registry); the
    /// digest it printed.
    pub fn publish(&self, module: &str, reference: &str, extra: &[&std::ffi::OsStr]) -> String {
        let published = Command::new(env!("CARGO_BIN_EXE_pequod"))
            .args(["module", "publish", module, reference])
            .args(["--insecure-registry", &self.host])
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("pequod runs");
        assert!(
            published.status.success(),
            "{}",
            String::from_utf8_lossy(&published.stderr)
        );
        String::from_utf8_lossy(&published.stdout)
            .trim()
            .to_string()
    }

    /// A docker config file with the credentials of [`USER`] for this registry.
    pub fn docker_config(&self, path: &Path) {
        use base64::Engine;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        let config = serde_json::json!({"auths": {self.host.clone(): {"auth": auth}}});
        std::fs::write(path, config.to_string()).expect("docker config written");
    }

    /// Stops the registry: from now on its port refuses connections.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long an endless answer of a [`HostileRegistry`] would be: 1 GiB (of JSON whitespace).
pub const ENDLESS: u64 = 1 << 30;

/// The digest a [`HostileRegistry`] gives for every manifest, when it gives one.
pub const HOSTILE_DIGEST: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// What the page a [`Hostility::ForeignRealm`] registry sends the operator to holds.
pub const FOREIGN_PAGE_SECRET: &str = "internal-admin-password-42";

/// How a [`HostileRegistry`] attacks.
#[derive(Clone, Copy, Debug)]
pub enum Hostility {
    /// Every manifest is [`ENDLESS`] bytes long. With `says_digest`, a HEAD of a manifest
    /// names [`HOSTILE_DIGEST`] (a client then pulls it by digest); without, it names none
    /// (a client must read the manifest to know its digest).
    EndlessManifest {
        /// Whether a HEAD names a digest.
        says_digest: bool,
    },
    /// Every manifest wants a token (`401` with a Bearer challenge), and the token service
    /// answers [`ENDLESS`] bytes.
    EndlessToken,
    /// Every manifest wants a token, and the challenge's realm is a page that is no token
    /// service: `403` with [`FOREIGN_PAGE_SECRET`] in its text (as an internal service the
    /// operator can reach and the tenant cannot would answer).
    ForeignRealm,
}

/// A hostile registry on a loopback port; it reports how much of an endless answer it sent
/// before the client hung up.
pub struct HostileRegistry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    sent: mpsc::Receiver<u64>,
}

impl HostileRegistry {
    /// Starts one.
    pub fn start(hostility: Hostility) -> HostileRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let host = listener.local_addr().expect("its address").to_string();
        let (report, sent) = mpsc::channel();
        let realm = format!("http://{host}/token");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let report = report.clone();
                let realm = realm.clone();
                std::thread::spawn(move || serve(stream, hostility, &realm, &report));
            }
        });
        HostileRegistry { host, sent }
    }

    /// How many bytes of an endless answer the registry sent before the client hung up
    /// (waits for the one such request to end).
    pub fn endless_bytes_sent(&self) -> u64 {
        self.sent
            .recv_timeout(Duration::from_secs(60))
            .expect("an endless answer was asked for")
    }
}

/// Answers the requests of one connection: `/v2/` 200; a manifest as `hostility` says; a
/// token request (`/token`) an endless answer or the foreign page.
fn serve(stream: TcpStream, hostility: Hostility, realm: &str, report: &mpsc::Sender<u64>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        let mut header = String::new();
        while header != "\r\n" {
            header.clear();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
        }
        let method = request.split(' ').next().unwrap_or("");
        let manifest = request.contains("/manifests/");
        let token = request.contains(" /token?");
        let answer = match (hostility, method, manifest, token) {
            (Hostility::EndlessManifest { .. }, "GET", true, _)
            | (Hostility::EndlessToken, "GET", _, true) => {
                let _ = report.send(endless_answer(&mut writer));
                return;
            }
            (Hostility::EndlessManifest { says_digest: true }, "HEAD", true, _) => format!(
                "HTTP/1.1 200 OK\r\nDocker-Content-Digest: {HOSTILE_DIGEST}\r\nContent-Length: 0\r\n\r\n"
            ),
            (Hostility::EndlessToken | Hostility::ForeignRealm, _, true, _) => format!(
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"hostile\"\r\nContent-Length: 0\r\n\r\n"
            ),
            (Hostility::ForeignRealm, "GET", _, true) => {
                let page = format!("<html>admin console; password: {FOREIGN_PAGE_SECRET}</html>");
                format!(
                    "HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{page}",
                    page.len()
                )
            }
            (_, "HEAD", _, _) => "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_string(),
            _ => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_string(),
        };
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// Sends an [`ENDLESS`] JSON answer in 64 KiB chunks until the client hangs up; returns the
/// bytes of it sent.
fn endless_answer(stream: &mut TcpStream) -> u64 {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nTransfer-Encoding: chunked\r\n\r\n";
    if stream.write_all(head.as_bytes()).is_err() {
        return 0;
    }
    let chunk = [b' '; 64 << 10];
    let mut sent = 0;
    while sent < ENDLESS {
        let written = stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .and_then(|()| stream.write_all(&chunk))
            .and_then(|()| stream.write_all(b"\r\n"));
        if written.is_err() {
            return sent;
        }
        sent += chunk.len() as u64;
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    sent
}
