//! A test Kubernetes API server for Pequod's end-to-end tests.
//!
//! [`TestApiServer::start`] serves the Kubernetes REST protocol on a loopback port (plain
//! HTTP) faithfully enough for unmodified `kube` clients and `kubectl`: discovery, OpenAPI v3,
//! CRUD with server-side apply and managedFields, watches, the status subresource,
//! finalizers, garbage collection, CRD registration; bearer-token authentication, RBAC
//! authorization ([`Config::authorize`]) and impersonation ([`auth`]). A readiness simulator
//! plays the controllers of a real cluster. `e2e/README.md` lists where it differs from a
//! real server.

pub mod api;
pub mod auth;
pub mod defaults;
pub mod discovery;
pub mod faults;
pub mod gofmt;
pub mod managed;
pub mod metadata;
pub mod patch;
pub mod protobuf;
pub mod requests;
pub mod resources;
pub mod scale;
pub mod schema;
pub mod selector;
pub mod simulator;
pub mod status;
pub mod store;
pub mod table;
pub mod testing;
pub mod tls;
pub mod watch;

pub use crate::auth::User;

use crate::auth::authn::Tokens;
use crate::auth::authorizer::Authorizer;
use crate::faults::Faults;
use crate::requests::{RequestLog, Requests};
use crate::simulator::SimulatorControl;
use crate::store::{FieldValidation, Store, WriteOptions};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How to start a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub addr: SocketAddr,
    /// Where to write the kubeconfig (None: a file in a temporary directory owned by the
    /// server).
    pub kubeconfig: Option<PathBuf>,
    /// Run the readiness simulator.
    pub simulate: bool,
    /// How long simulated workloads take to become ready.
    pub readiness_delay: Duration,
    /// Directories (or files) of CRDs to load before serving.
    pub crds: Vec<PathBuf>,
    /// How many changes the event log keeps for watches to resume from.
    pub event_log: usize,
    /// Enforce authorization: members of `system:masters` (the admin, whom requests
    /// without credentials are) may do anything, every other user what RBAC grants. Off,
    /// every request is allowed whoever it comes from.
    pub authorize: bool,
    /// Bearer tokens the server accepts, and the user each authenticates as
    /// ([`TestApiServer::kubeconfig_for`] and [`TestApiServer::token_for`] add more).
    pub tokens: BTreeMap<String, User>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            kubeconfig: None,
            simulate: true,
            readiness_delay: Duration::from_millis(500),
            crds: Vec::new(),
            event_log: 10_000,
            authorize: false,
            tokens: BTreeMap::new(),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A CRD file is not valid YAML.
    #[error("{path}: {source}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_yaml::Error,
    },
    /// TLS could not be set up.
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    /// The server refused a CRD.
    #[error("{path}: CRD {name} refused: {source}")]
    Crd {
        /// The file.
        path: PathBuf,
        /// The CRD's name.
        name: String,
        /// The API error.
        source: Box<status::ApiError>,
    },
}

/// A running test API server. Dropping it without [`TestApiServer::stop`] stops it too.
pub struct TestApiServer {
    addr: SocketAddr,
    kubeconfig: PathBuf,
    store: Arc<Store>,
    faults: Arc<Faults>,
    simulator: Arc<SimulatorControl>,
    requests: Arc<RequestLog>,
    tokens: Arc<Tokens>,
    shutdown: CancellationToken,
    app: Arc<api::App>,
    task: Option<JoinHandle<()>>,
    /// Where the server's own files go (kubeconfigs), removed with it.
    dir: TempDir,
}

/// A directory removed on drop (for files nobody asked to keep).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestApiServer {
    /// Loads the CRDs, binds, writes the kubeconfig and starts serving (and simulating).
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let store = Arc::new(Store::new(config.event_log));
        for path in &config.crds {
            load_crds(&store, path)?;
        }
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.addr,
            source,
        })?;
        let dir =
            std::env::temp_dir().join(format!("pequod-e2e-{}-{}", std::process::id(), addr.port()));
        std::fs::create_dir_all(&dir).map_err(|source| StartError::Io {
            path: dir.clone(),
            source,
        })?;
        let dir = TempDir(dir);
        let kubeconfig = config
            .kubeconfig
            .clone()
            .unwrap_or_else(|| dir.0.join("kubeconfig"));
        std::fs::write(&kubeconfig, kubeconfig_text(addr, None)).map_err(|source| {
            StartError::Io {
                path: kubeconfig.clone(),
                source,
            }
        })?;
        let faults = Arc::new(Faults::default());
        let simulator = Arc::new(SimulatorControl::new(config.readiness_delay));
        let shutdown = CancellationToken::new();
        let requests = Arc::new(RequestLog::default());
        let tokens = Arc::new(Tokens::new(config.tokens.clone()));
        let app = Arc::new(api::App {
            store: store.clone(),
            faults: faults.clone(),
            shutdown: shutdown.clone(),
            watches: api::WatchCut::new(&shutdown),
            address: addr.to_string(),
            requests: requests.clone(),
            tokens: tokens.clone(),
            authorizer: Authorizer::new(store.clone(), config.authorize),
        });
        if config.simulate {
            tokio::spawn(simulator::run(
                store.clone(),
                simulator.clone(),
                shutdown.clone(),
            ));
        }
        let listener = tls::Listener::new(listener, shutdown.clone())?;
        let stop = shutdown.clone();
        let app_handle = app.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, api::router(app))
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "test API server stopped");
            }
        });
        tracing::info!(%addr, kubeconfig = %kubeconfig.display(), "test API server listening");
        Ok(TestApiServer {
            addr,
            kubeconfig,
            store,
            faults,
            simulator,
            requests,
            tokens,
            shutdown,
            app: app_handle,
            task: Some(task),
            dir,
        })
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The kubeconfig file naming this server, without credentials: its requests are the
    /// admin's.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A bearer token that authenticates as `user` (the one [`Config::tokens`] gives it,
    /// else one made now).
    pub fn token_for(&self, user: &User) -> String {
        self.tokens.token_for(user)
    }

    /// Writes a kubeconfig for this server whose token authenticates as `user`, for kubectl
    /// or a process (the operator) to act as that user; returns its path (in a directory
    /// removed with the server). It names the server over HTTPS, trusting the test CA
    /// ([`tls::CA`]): clients send credentials only over TLS.
    pub fn kubeconfig_for(&self, user: &User) -> std::io::Result<PathBuf> {
        let token = self.token_for(user);
        let readable: String = user
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut hasher = DefaultHasher::new();
        token.hash(&mut hasher);
        let path = self
            .dir
            .0
            .join(format!("{readable}-{:016x}.kubeconfig", hasher.finish()));
        std::fs::write(&path, kubeconfig_text(self.addr, Some(&token)))?;
        Ok(path)
    }

    /// The object store (for assertions that bypass HTTP).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Fault injection.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The readiness simulator's controls.
    pub fn simulator(&self) -> &SimulatorControl {
        &self.simulator
    }

    /// Ends every watch open now, as an API server restart does: clients watch again.
    pub fn drop_watches(&self) {
        self.app.watches.cut();
    }

    /// How many requests the server was sent so far, by verb, resource and user (also served
    /// as JSON at `/debug/requests`).
    pub fn requests(&self) -> Requests {
        self.requests.snapshot()
    }

    /// Stops serving: open watches end, the listener closes.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A kubeconfig for a server at `addr`: with a bearer `token`, over HTTPS trusting the test
/// CA; without, the admin's, over plain HTTP.
pub fn kubeconfig_text(addr: SocketAddr, token: Option<&str>) -> String {
    use base64::Engine;
    let (cluster, user) = match token {
        Some(token) => {
            let ca = base64::engine::general_purpose::STANDARD.encode(tls::CA);
            (
                format!("server: https://{addr}\n    certificate-authority-data: {ca}"),
                format!("\n    token: {token}"),
            )
        }
        None => (format!("server: http://{addr}"), " {}".to_owned()),
    };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: pequod-e2e
  cluster:
    {cluster}
contexts:
- name: pequod-e2e
  context:
    cluster: pequod-e2e
    user: pequod-e2e
    namespace: default
current-context: pequod-e2e
users:
- name: pequod-e2e
  user:{user}
"
    )
}

/// Loads every CustomResourceDefinition in `path` (a YAML/JSON file, or a directory searched
/// recursively) into the store. Returns how many were loaded.
pub fn load_crds(store: &Store, path: &Path) -> Result<usize, StartError> {
    let io = |source| StartError::Io {
        path: path.to_owned(),
        source,
    };
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        let mut loaded = 0;
        for entry in entries {
            let is_manifest = entry
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ["yaml", "yml", "json"].contains(&e));
            if entry.is_dir() || is_manifest {
                loaded += load_crds(store, &entry)?;
            }
        }
        return Ok(loaded);
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let registry = store.registry();
    let Some(ty) = registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    else {
        return Ok(0);
    };
    let options = WriteOptions {
        manager: "test-apiserver".into(),
        validation: FieldValidation::Ignore,
        dry_run: false,
    };
    let mut loaded = 0;
    for document in serde_yaml::Deserializer::from_str(&text) {
        let crd = Value::deserialize(document).map_err(|source| StartError::Yaml {
            path: path.to_owned(),
            source,
        })?;
        if crd.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
            continue;
        }
        let name = crd
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        store
            .create(&ty, "v1", "", crd, &options)
            .map_err(|source| StartError::Crd {
                path: path.to_owned(),
                name,
                source: Box::new(source),
            })?;
        loaded += 1;
    }
    Ok(loaded)
}
