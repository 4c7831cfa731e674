//! Modules as OCI artifacts (docs/distribution.md): an image manifest whose config
//! (`application/vnd.pequod.module.config.v1+json`) names the module and whose one layer
//! (`application/vnd.pequod.module.content.v1.tar+gzip`) is a reproducible tarball of its
//! files, so the same directory always has the same digest.

use std::collections::BTreeMap;
use std::io::Read;

use flate2::Compression;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciEnvelope};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::bounded::read_at_most;
use super::{MAX_BUNDLE_BYTES, ModuleBundle, token};

/// Media type of the config blob, also the manifest's `artifactType`.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.pequod.module.config.v1+json";
/// Media type of the content layer.
pub const CONTENT_MEDIA_TYPE: &str = "application/vnd.pequod.module.content.v1.tar+gzip";
/// Largest manifest or config accepted from a registry.
const MAX_METADATA_BYTES: usize = 1 << 20;
/// How much of a registry's error answer is read for its message.
const MAX_ERROR_BYTES: usize = 64 << 10;
/// The manifests a registry may answer with: what oci-client asks for (a module artifact is an
/// OCI image manifest; the others fail as not a module).
const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];
/// A registry that does not accept a connection in this time fails the request.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A registry that stops sending for this long fails the request instead of hanging it.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// A module's input JSON Schema, when it ships one: its digest goes into the config.
const INPUT_SCHEMA_FILE: &str = "input.schema.json";

/// The config blob: what the module is, without unpacking it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleConfig {
    /// The module's name (its `metadata.name`).
    pub name: String,
    /// The module's version.
    pub version: String,
    /// The entrypoint file.
    pub entrypoint: String,
    /// One-line description.
    #[serde(default)]
    pub description: String,
    /// `sha256:` of `input.schema.json`, when the module ships one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema_digest: Option<String>,
}

/// Where a module came from, for the `org.opencontainers.image.*` annotations.
#[derive(Clone, Debug, Default)]
pub struct Provenance {
    /// `org.opencontainers.image.source`: the repository URL.
    pub source: Option<String>,
    /// `org.opencontainers.image.revision`: the commit.
    pub revision: Option<String>,
    /// `org.opencontainers.image.created`, RFC 3339. Fixed by the caller (SOURCE_DATE_EPOCH)
    /// so that publishing stays reproducible.
    pub created: String,
}

/// Why a module could not be published or pulled.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The reference does not parse.
    #[error("invalid OCI reference `{reference}`: {message}")]
    Reference {
        /// The reference.
        reference: String,
        /// Why.
        message: String,
    },
    /// The registry refused the credentials (or wanted some).
    #[error("registry {registry} refused access (401/403): {message}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The registry's words.
        message: String,
    },
    /// No such repository, tag or digest.
    #[error("{reference} not found in the registry")]
    NotFound {
        /// The reference.
        reference: String,
    },
    /// The registry could not be reached or answered with an error.
    #[error("registry error for {reference}: {message}")]
    Registry {
        /// The reference.
        reference: String,
        /// What went wrong.
        message: String,
    },
    /// The artifact is not a Pequod module, or is damaged.
    #[error("{reference} is not a valid Pequod module artifact: {message}")]
    Malformed {
        /// The reference.
        reference: String,
        /// What is wrong.
        message: String,
    },
}

/// A registry client: plain HTTP for the `insecure` registries, credentials from a docker
/// config (`{"auths": {host: {auth | username, password}}}`). Pulls read manifests and blobs
/// with its own HTTP client, each with a size bound (oci-client reads manifests and token
/// answers whole), and asks the registry's token service itself ([`super::token`]);
/// publishing is oci-client's.
pub struct Registry {
    client: Client,
    http: reqwest::Client,
    /// For token services: follows no redirect.
    token_http: reqwest::Client,
    insecure: Vec<String>,
    docker_config: Option<Value>,
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Registry {
    /// A client; `insecure` lists the registries (`host:port`) spoken to over plain HTTP.
    pub fn new(insecure: &[String], docker_config: Option<Value>) -> Registry {
        // reqwest's rustls needs a process-wide crypto provider; a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure.to_vec()),
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            ..ClientConfig::default()
        };
        let http = || {
            reqwest::Client::builder()
                .user_agent(concat!("pequod/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(READ_TIMEOUT)
        };
        Registry {
            client: Client::new(config),
            http: http().build().unwrap_or_default(),
            token_http: http()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            insecure: insecure.to_vec(),
            docker_config,
        }
    }

    fn auth(&self, reference: &Reference) -> RegistryAuth {
        credentials(
            self.docker_config.as_ref(),
            reference.resolve_registry(),
            reference.repository(),
        )
    }

    /// Pushes `bundle` as `reference`; returns the manifest digest.
    pub async fn publish(
        &self,
        reference: &str,
        bundle: &ModuleBundle,
        config: &ModuleConfig,
        provenance: &Provenance,
    ) -> Result<String, OciError> {
        let parsed = parse(reference)?;
        let auth = self.auth(&parsed);
        let artifact = artifact(bundle, config, provenance)?;
        let failed = |e| classify(reference, e);
        self.client
            .store_auth_if_needed(parsed.resolve_registry(), &auth)
            .await;
        self.client
            .push_blob(&parsed, artifact.layer.clone(), &artifact.layer_digest)
            .await
            .map_err(failed)?;
        self.client
            .push_blob(&parsed, artifact.config.clone(), &artifact.config_digest)
            .await
            .map_err(failed)?;
        self.client
            .push_manifest_raw(
                &parsed,
                artifact.manifest.clone(),
                http::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE),
            )
            .await
            .map_err(failed)?;
        Ok(sha256(&artifact.manifest))
    }

    /// The digest `reference` names now (a tag's current manifest, or the digest itself),
    /// asked of the registry with this client's credentials even for a digest reference, so
    /// that access is checked before a cached copy is used.
    pub async fn resolve(&self, reference: &str) -> Result<String, OciError> {
        let session = self.session(reference)?;
        let head = session
            .request(reqwest::Method::HEAD, &session.manifest_path())
            .await?;
        let said = head
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let found = match said {
            Some(digest) => digest,
            // A registry that does not say: the digest of the manifest itself.
            None => session.manifest().await?.1,
        };
        match session.parsed.digest() {
            Some(pinned) if pinned != found => Err(OciError::Malformed {
                reference: reference.to_string(),
                message: format!("the registry says its digest is {found}"),
            }),
            _ => Ok(found),
        }
    }

    /// Pulls and checks the module at `reference`: the manifest digest, the config and the
    /// files (the content layer's digest verified, sizes bounded).
    pub async fn pull(&self, reference: &str) -> Result<Pulled, OciError> {
        let session = self.session(reference)?;
        let malformed = |message: String| OciError::Malformed {
            reference: reference.to_string(),
            message,
        };
        let (manifest_bytes, digest) = session.manifest().await?;
        if let Some(pinned) = session.parsed.digest()
            && digest != pinned
        {
            return Err(malformed(format!(
                "the manifest's content does not match its digest {pinned}"
            )));
        }
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| malformed(format!("the manifest is not an OCI image manifest: {e}")))?;
        if manifest.config.media_type != CONFIG_MEDIA_TYPE {
            return Err(malformed(format!(
                "config media type is {}, expected {CONFIG_MEDIA_TYPE}",
                manifest.config.media_type
            )));
        }
        let [layer] = manifest.layers.as_slice() else {
            return Err(malformed(format!(
                "expected one layer of {CONTENT_MEDIA_TYPE}, found {}",
                manifest.layers.len()
            )));
        };
        if layer.media_type != CONTENT_MEDIA_TYPE {
            return Err(malformed(format!(
                "layer media type is {}, expected {CONTENT_MEDIA_TYPE}",
                layer.media_type
            )));
        }
        if manifest.config.size > MAX_METADATA_BYTES as i64 || layer.size > MAX_BUNDLE_BYTES as i64
        {
            return Err(malformed(format!(
                "the artifact is larger than the {MAX_BUNDLE_BYTES} byte limit of a module"
            )));
        }
        let config_bytes = session.blob(&manifest.config).await?;
        let config: ModuleConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| malformed(format!("the config is not a Pequod module config: {e}")))?;
        let layer_bytes = session.blob(layer).await?;
        let files = unpack(&layer_bytes).map_err(malformed)?;
        Ok(Pulled {
            digest,
            config,
            files,
            annotations: manifest.annotations,
        })
    }

    /// The requests of one pull or resolution of `reference`, with its credentials from the
    /// docker config.
    fn session<'a>(&'a self, reference: &'a str) -> Result<Session<'a>, OciError> {
        let parsed = parse(reference)?;
        let auth = self.auth(&parsed);
        Ok(Session {
            registry: self,
            parsed,
            reference,
            auth,
            token: std::sync::OnceLock::new(),
        })
    }
}

/// Requests for one reference, with the credentials oci-client would send (basic
/// credentials, or a bearer token from the registry's token service once the registry asks
/// for one) but Pequod's own HTTP client, so that every body is read with a bound
/// (oci-client reads manifests, token and error answers whole). A registry that needs no
/// token is asked nothing more than the requests themselves.
struct Session<'a> {
    registry: &'a Registry,
    parsed: Reference,
    reference: &'a str,
    auth: RegistryAuth,
    /// The token service's token, once a request was answered 401 with a Bearer challenge.
    token: std::sync::OnceLock<String>,
}

impl Session<'_> {
    /// Where the manifest is: `manifests/` and its digest, else its tag.
    fn manifest_path(&self) -> String {
        let target = self
            .parsed
            .digest()
            .or(self.parsed.tag())
            .unwrap_or("latest");
        format!("manifests/{target}")
    }

    /// The manifest and its digest (of the bytes read), refused past [`MAX_METADATA_BYTES`]:
    /// a registry cannot make Pequod hold more.
    async fn manifest(&self) -> Result<(Vec<u8>, String), OciError> {
        let bytes = self
            .read(&self.manifest_path(), MAX_METADATA_BYTES)
            .await?
            .ok_or_else(|| OciError::Malformed {
                reference: self.reference.to_string(),
                message: format!("the manifest is over the {MAX_METADATA_BYTES} byte limit"),
            })?;
        let digest = sha256(&bytes);
        Ok((bytes, digest))
    }

    /// The blob `descriptor` names, never more than the size it declares (itself bounded by
    /// the caller), checked against its digest.
    async fn blob(&self, descriptor: &Descriptor) -> Result<Vec<u8>, OciError> {
        let malformed = |message: String| OciError::Malformed {
            reference: self.reference.to_string(),
            message,
        };
        let declared = usize::try_from(descriptor.size).unwrap_or(0);
        let bytes = self
            .read(&format!("blobs/{}", descriptor.digest), declared)
            .await?
            .ok_or_else(|| {
                malformed(format!(
                    "blob {} is larger than its declared {declared} bytes",
                    descriptor.digest
                ))
            })?;
        if sha256(&bytes) != descriptor.digest {
            return Err(malformed(format!(
                "blob {} does not match its digest",
                descriptor.digest
            )));
        }
        Ok(bytes)
    }

    /// The body of a GET of `path`, read chunk by chunk: `None` past `limit` bytes, the rest
    /// never read.
    async fn read(&self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, OciError> {
        let mut response = self.request(reqwest::Method::GET, path).await?;
        read_at_most(&mut response, limit)
            .await
            .map_err(|e| classify(self.reference, e.into()))
    }

    /// A `method` request of `path` (`manifests/…`, `blobs/…`) in the repository, answered
    /// 200; any other answer is the error it says (401/403, 404, the registry's).
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::Response, OciError> {
        let registry = self.parsed.resolve_registry();
        let insecure = self.registry.insecure.iter().any(|host| host == registry);
        let scheme = if insecure { "http" } else { "https" };
        let url = format!(
            "{scheme}://{registry}/v2/{}/{path}",
            self.parsed.repository()
        );
        let mut response = self.send(method.clone(), &url).await?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED
            && self.token.get().is_none()
            && let Some(challenge) = token::Challenge::of(response.headers())
        {
            let token = token::pull_token(
                &self.registry.token_http,
                &challenge,
                self.parsed.repository(),
                &self.auth,
                insecure,
            )
            .await
            .map_err(|e| {
                if e.is_unavailable() {
                    OciError::Registry {
                        reference: self.reference.to_string(),
                        message: e.to_string(),
                    }
                } else {
                    OciError::Unauthorized {
                        registry: registry_of(self.reference),
                        message: e.to_string(),
                    }
                }
            })?;
            let _ = self.token.set(token);
            response = self.send(method, &url).await?;
        }
        let status = response.status();
        if status == reqwest::StatusCode::OK {
            return Ok(response);
        }
        let body = read_at_most(&mut response, MAX_ERROR_BYTES)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        Err(classify(self.reference, refusal(status, &body, url)))
    }

    /// Sends a `method` request of `url` with the session's credentials: its token, else
    /// the basic credentials.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::Response, OciError> {
        let request = self
            .registry
            .http
            .request(method, url)
            .header(http::header::ACCEPT, MANIFEST_MEDIA_TYPES.join(", "));
        let request = match (self.token.get(), &self.auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            (None, _) => request,
        };
        request
            .send()
            .await
            .map_err(|e| classify(self.reference, e.into()))
    }
}

/// The error a registry's answer other than 200 is, as oci-client reads it: 401, an OCI
/// error envelope for a 4xx, else the status and the envelope's messages. An answer that is
/// no registry's error is not shown: the host is the Transform's to name, and what some
/// other server answers the operator is not for its author to read.
fn refusal(status: reqwest::StatusCode, body: &[u8], url: String) -> OciDistributionError {
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return OciDistributionError::UnauthorizedError { url };
    }
    let message = match serde_json::from_slice::<OciEnvelope>(body) {
        Ok(envelope) if status.is_client_error() => {
            return OciDistributionError::RegistryError { envelope, url };
        }
        Ok(envelope) => envelope
            .errors
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>()
            .join("; "),
        Err(_) => NOT_A_REGISTRY_ERROR.to_string(),
    };
    OciDistributionError::ServerError {
        code: status.as_u16(),
        url,
        message,
    }
}

/// What is said of an error answer that is not a registry's.
const NOT_A_REGISTRY_ERROR: &str = "(the answer is not a registry's error; it is not shown)";

/// A pulled module.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// The manifest digest.
    pub digest: String,
    /// The config blob.
    pub config: ModuleConfig,
    /// The module's files.
    pub files: BTreeMap<String, String>,
    /// The manifest's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// The parts of an OCI image manifest a module artifact uses.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// The blobs and manifest of a module artifact, ready to push.
struct Artifact {
    layer: Vec<u8>,
    layer_digest: String,
    config: Vec<u8>,
    config_digest: String,
    manifest: Vec<u8>,
}

fn artifact(
    bundle: &ModuleBundle,
    config: &ModuleConfig,
    provenance: &Provenance,
) -> Result<Artifact, OciError> {
    let internal = |message: String| OciError::Malformed {
        reference: config.name.clone(),
        message,
    };
    let layer = pack(bundle.files()).map_err(|e| internal(format!("cannot pack: {e}")))?;
    let config_bytes = serde_json::to_vec(config).map_err(|e| internal(format!("config: {e}")))?;
    let mut annotations = BTreeMap::from([
        (
            "org.opencontainers.image.title".to_string(),
            config.name.clone(),
        ),
        (
            "org.opencontainers.image.version".to_string(),
            config.version.clone(),
        ),
        (
            "org.opencontainers.image.created".to_string(),
            provenance.created.clone(),
        ),
    ]);
    if !config.description.is_empty() {
        annotations.insert(
            "org.opencontainers.image.description".to_string(),
            config.description.clone(),
        );
    }
    for (key, value) in [
        ("org.opencontainers.image.source", &provenance.source),
        ("org.opencontainers.image.revision", &provenance.revision),
    ] {
        if let Some(value) = value {
            annotations.insert(key.to_string(), value.clone());
        }
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_string()),
        artifact_type: Some(CONFIG_MEDIA_TYPE.to_string()),
        config: Descriptor {
            media_type: CONFIG_MEDIA_TYPE.to_string(),
            digest: sha256(&config_bytes),
            size: config_bytes.len() as i64,
            annotations: BTreeMap::new(),
        },
        layers: vec![Descriptor {
            media_type: CONTENT_MEDIA_TYPE.to_string(),
            digest: sha256(&layer),
            size: layer.len() as i64,
            annotations: BTreeMap::from([(
                "org.opencontainers.image.title".to_string(),
                format!("{}.tar.gz", config.name),
            )]),
        }],
        annotations,
    };
    let manifest = serde_json::to_vec(&manifest).map_err(|e| internal(format!("manifest: {e}")))?;
    Ok(Artifact {
        layer_digest: sha256(&layer),
        config_digest: sha256(&config_bytes),
        layer,
        config: config_bytes,
        manifest,
    })
}

/// The config of a module from its metadata, with the digest of its input schema.
pub fn module_config(
    bundle: &ModuleBundle,
    name: &str,
    version: &str,
    description: &str,
) -> ModuleConfig {
    ModuleConfig {
        name: name.to_string(),
        version: version.to_string(),
        entrypoint: bundle.entrypoint().to_string(),
        description: description.to_string(),
        input_schema_digest: bundle
            .files()
            .get(INPUT_SCHEMA_FILE)
            .map(|schema| sha256(schema.as_bytes())),
    }
}

/// A reproducible `.tar.gz` of `files`: sorted entries, no timestamps, owners or modes
/// from the machine, a gzip header without name or time.
pub fn pack(files: &BTreeMap<String, String>) -> std::io::Result<Vec<u8>> {
    let gzip = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    let mut archive = tar::Builder::new(gzip);
    archive.mode(tar::HeaderMode::Deterministic);
    for (name, content) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        archive.append_data(&mut header, name, content.as_bytes())?;
    }
    archive.into_inner()?.finish()
}

/// The files of a module tarball: regular files only, at most [`MAX_BUNDLE_BYTES`] in all,
/// UTF-8 text. Names are checked when the bundle is built.
pub fn unpack(bytes: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let gzip = flate2::read::GzDecoder::new(bytes);
    // Bounded: a gzip bomb stops at the limit.
    let mut archive = tar::Archive::new(gzip.take(MAX_BUNDLE_BYTES as u64 * 2));
    let mut files = BTreeMap::new();
    let mut total = 0usize;
    let entries = archive
        .entries()
        .map_err(|e| format!("the content layer is not a tar.gz: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("the content layer is damaged: {e}"))?;
        let kind = entry.header().entry_type();
        let name = entry
            .path()
            .map_err(|e| format!("bad entry name: {e}"))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(format!("{name}: only regular files may be in a module"));
        }
        let mut content = String::new();
        entry
            .read_to_string(&mut content)
            .map_err(|e| format!("{name}: not UTF-8 text or damaged: {e}"))?;
        total += content.len();
        if total > MAX_BUNDLE_BYTES {
            return Err(format!(
                "the files are over the {MAX_BUNDLE_BYTES} byte limit of a module"
            ));
        }
        files.insert(name, content);
    }
    Ok(files)
}

fn parse(reference: &str) -> Result<Reference, OciError> {
    reference
        .parse::<Reference>()
        .map_err(|e| OciError::Reference {
            reference: reference.to_string(),
            message: e.to_string(),
        })
}

/// Credentials for `registry/repository` from a docker config: `auth` (base64
/// `user:password`) or `username` and `password`; anonymous when none match. Keys match much
/// as the kubelet matches them: the host (`*` standing for one label, Docker Hub's names
/// alike) and, for a key with a path (`registry.example.com/team-a`), a repository under that
/// path, segment by segment; the most specific key wins. Docker's legacy endpoint keys
/// (`https://host/v1/`) name a whole registry.
pub fn credentials(
    docker_config: Option<&Value>,
    registry: &str,
    repository: &str,
) -> RegistryAuth {
    use base64::Engine;
    let Some(auths) = docker_config
        .and_then(|c| c.get("auths"))
        .and_then(Value::as_object)
    else {
        return RegistryAuth::Anonymous;
    };
    let repository: Vec<&str> = repository.split('/').filter(|s| !s.is_empty()).collect();
    let entry = auths
        .iter()
        .filter_map(|(key, entry)| {
            let key = key
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            let (host, path) = key.split_once('/').unwrap_or((key, ""));
            // Docker's legacy endpoint keys (`https://index.docker.io/v1/`) name a registry.
            let path = if matches!(path, "v1" | "v2") {
                ""
            } else {
                path
            };
            let path: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            (same_registry(host, registry) && repository.starts_with(&path))
                .then_some((path.len(), entry))
        })
        .max_by_key(|(specificity, _)| *specificity);
    let Some((_, entry)) = entry else {
        return RegistryAuth::Anonymous;
    };
    let text = |key: &str| entry.get(key).and_then(Value::as_str).map(str::to_string);
    if let Some(encoded) = text("auth")
        && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded)
        && let Ok(decoded) = String::from_utf8(decoded)
        && let Some((user, password)) = decoded.split_once(':')
    {
        return RegistryAuth::Basic(user.to_string(), password.to_string());
    }
    match (text("username"), text("password")) {
        (Some(user), Some(password)) => RegistryAuth::Basic(user, password),
        _ => RegistryAuth::Anonymous,
    }
}

/// Whether a docker config key's host names `registry`: equal (with its port), one of
/// Docker Hub's names for the other, or equal but for labels the key writes as `*`.
fn same_registry(key_host: &str, registry: &str) -> bool {
    let docker_hub = ["docker.io", "index.docker.io", "registry-1.docker.io"];
    if key_host == registry || (docker_hub.contains(&key_host) && docker_hub.contains(&registry)) {
        return true;
    }
    let (key_name, key_port) = key_host.split_once(':').unwrap_or((key_host, ""));
    let (name, port) = registry.split_once(':').unwrap_or((registry, ""));
    let (key_labels, labels): (Vec<&str>, Vec<&str>) =
        (key_name.split('.').collect(), name.split('.').collect());
    key_port == port
        && key_labels.len() == labels.len()
        && key_labels
            .iter()
            .zip(&labels)
            .all(|(pattern, label)| *pattern == "*" || pattern == label)
}

/// The registry part of `reference`, as errors name it.
fn registry_of(reference: &str) -> String {
    reference.split('/').next().unwrap_or(reference).to_string()
}

fn classify(reference: &str, error: OciDistributionError) -> OciError {
    use OciDistributionError as E;
    let message = with_causes(&error);
    let registry = registry_of(reference);
    match &error {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => {
            OciError::Unauthorized { registry, message }
        }
        E::ImageManifestNotFoundError(_) => OciError::NotFound {
            reference: reference.to_string(),
        },
        E::ServerError { code, .. } if *code == 401 || *code == 403 => {
            OciError::Unauthorized { registry, message }
        }
        E::ServerError { code, .. } if *code == 404 => OciError::NotFound {
            reference: reference.to_string(),
        },
        E::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                )
            }) =>
        {
            OciError::NotFound {
                reference: reference.to_string(),
            }
        }
        E::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::Unauthorized
                        | oci_client::errors::OciErrorCode::Denied
                )
            }) =>
        {
            OciError::Unauthorized { registry, message }
        }
        E::DigestError(_) | E::ManifestParsingError(_) | E::VersionedParsingError(_) => {
            OciError::Malformed {
                reference: reference.to_string(),
                message,
            }
        }
        _ => OciError::Registry {
            reference: reference.to_string(),
            message,
        },
    }
}

/// An error's message followed by those of its causes not already in it (`a: b: c`): a
/// failed request says why (`tcp connect error: Connection refused`).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let text = next.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = next.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("main.ncl".to_string(), "{ metadata = {} }".to_string()),
            ("lib/util.ncl".to_string(), "{}".to_string()),
        ])
    }

    #[test]
    fn tarballs_are_reproducible_and_round_trip() {
        let first = pack(&files()).expect("packs");
        let second = pack(&files()).expect("packs");
        assert_eq!(first, second, "the same files, the same bytes");
        assert_eq!(unpack(&first).expect("unpacks"), files());
    }

    /// The bytes of a tarball are part of every published digest: a change of them (a new
    /// deflate backend, say) must be a deliberate, visible change.
    #[test]
    fn tarball_bytes_are_pinned() {
        let packed = pack(&files()).expect("packs");
        assert_eq!(
            sha256(&packed),
            PINNED_TARBALL_DIGEST,
            "the module tarball format changed: every published digest changes with it"
        );
    }

    const PINNED_TARBALL_DIGEST: &str =
        "sha256:b2e7b99c7ea621825f9919bdcafb590098727a70b7b15da978918055444830d0";

    #[test]
    fn damaged_content_is_refused() {
        assert!(unpack(b"not a tarball").is_err());
        let mut packed = pack(&files()).expect("packs");
        let middle = packed.len() / 2;
        packed[middle] ^= 0xff;
        assert!(unpack(&packed).is_err());
    }

    #[test]
    fn credentials_come_from_the_docker_config() {
        let config = serde_json::json!({"auths": {
            "registry.example.com": {"auth": "YWxpY2U6czNjcmV0"},
            "registry.example.com/team-a": {"username": "team-a", "password": "pw"},
            "registry.example.com/team-a/private": {"username": "private", "password": "pw"},
            "https://other.example.com/v1/": {"username": "bob", "password": "pw"},
            "https://other.example.com/team-b": {"username": "team-b", "password": "pw"},
            "*.mirror.example.com:5000": {"username": "mirror", "password": "pw"},
            "https://index.docker.io/v1/": {"username": "hub", "password": "pw"}
        }});
        let user = |registry: &str, repository: &str| match credentials(
            Some(&config),
            registry,
            repository,
        ) {
            RegistryAuth::Basic(user, password) => format!("{user}:{password}"),
            _ => "anonymous".to_string(),
        };
        assert_eq!(
            user("registry.example.com", "platforms/postgres"),
            "alice:s3cret"
        );
        assert_eq!(user("registry.example.com", "team-a/postgres"), "team-a:pw");
        assert_eq!(
            user("registry.example.com", "team-a/private/db"),
            "private:pw"
        );
        assert_eq!(
            user("registry.example.com", "team-ab/postgres"),
            "alice:s3cret"
        );
        assert_eq!(user("other.example.com", "v1/x"), "bob:pw");
        assert_eq!(user("other.example.com", "platforms/x"), "bob:pw");
        assert_eq!(user("other.example.com", "team-b/x"), "team-b:pw");
        assert_eq!(user("eu.mirror.example.com:5000", "p"), "mirror:pw");
        assert_eq!(user("eu.mirror.example.com", "p"), "anonymous");
        assert_eq!(user("a.eu.mirror.example.com:5000", "p"), "anonymous");
        assert_eq!(user("registry-1.docker.io", "library/x"), "hub:pw");
        assert_eq!(user("ghcr.io", "acme/x"), "anonymous");
        assert!(matches!(
            credentials(None, "ghcr.io", "acme/x"),
            RegistryAuth::Anonymous
        ));
    }

    /// What the fake registry's token service answers.
    #[derive(Clone, Copy)]
    enum TokenService {
        /// A token.
        Grants,
        /// Spaces, without end.
        Endless,
        /// 401 with a distribution error.
        Denies,
        /// 403 with a page that is not the token service's (another URL the realm names).
        SomeOtherPage,
        /// 200 without a token.
        NoToken,
        /// 503: the token service is down.
        Unavailable,
        /// 302 to a URL that would give a token.
        Redirects,
    }

    /// A registry serving the module `m:1` to whoever holds the token `t0k3n`, with its
    /// token service at `/token`; its requests are logged (method, path and query, and
    /// whether they carried basic credentials).
    async fn fake_registry(
        service: TokenService,
    ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use axum::body::{Body, Bytes};
        use axum::http::{Response, StatusCode};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let host = listener.local_addr().expect("its address").to_string();
        let bundle = ModuleBundle::new(files(), None).expect("a bundle");
        let config = ModuleConfig {
            name: "m".into(),
            version: "1.0.0".into(),
            entrypoint: "main.ncl".into(),
            description: String::new(),
            input_schema_digest: None,
        };
        let provenance = Provenance {
            created: "2026-12-05T00:00:00Z".into(),
            ..Provenance::default()
        };
        let artifact = artifact(&bundle, &config, &provenance).expect("an artifact");
        let served = std::sync::Arc::new(BTreeMap::from([
            ("/v2/m/manifests/1".to_string(), artifact.manifest),
            (
                format!("/v2/m/blobs/{}", artifact.config_digest),
                artifact.config,
            ),
            (
                format!("/v2/m/blobs/{}", artifact.layer_digest),
                artifact.layer,
            ),
        ]));
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let logged = log.clone();
        let realm = format!("http://{host}/token");
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let served = served.clone();
            let logged = logged.clone();
            let realm = realm.clone();
            async move {
                let authorization = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let basic = if authorization.starts_with("Basic ") { " (basic)" } else { "" };
                logged.lock().expect("the log").push(format!(
                    "{} {}{basic}",
                    request.method(),
                    request.uri()
                ));
                let answer = |status: StatusCode, body: Body| {
                    Response::builder().status(status).body(body).expect("a response")
                };
                if request.uri().path() == "/elsewhere" {
                    return answer(StatusCode::OK, Body::from(r#"{"token":"t0k3n"}"#));
                }
                if request.uri().path() == "/token" {
                    return match service {
                        TokenService::Grants => {
                            answer(StatusCode::OK, Body::from(r#"{"token":"t0k3n"}"#))
                        }
                        TokenService::Endless => answer(
                            StatusCode::OK,
                            Body::from_stream(futures::stream::repeat_with(|| {
                                Ok::<_, std::convert::Infallible>(Bytes::from_static(&[b' '; 4096]))
                            })),
                        ),
                        TokenService::Denies => answer(
                            StatusCode::UNAUTHORIZED,
                            Body::from(
                                r#"{"errors":[{"code":"UNAUTHORIZED","message":"incorrect username or password"}]}"#,
                            ),
                        ),
                        TokenService::SomeOtherPage => answer(
                            StatusCode::FORBIDDEN,
                            Body::from("<html>internal admin page: the secret is 42</html>"),
                        ),
                        TokenService::NoToken => answer(StatusCode::OK, Body::from("{}")),
                        TokenService::Unavailable => {
                            answer(StatusCode::SERVICE_UNAVAILABLE, Body::from("down"))
                        }
                        TokenService::Redirects => {
                            let mut response = answer(StatusCode::FOUND, Body::empty());
                            let elsewhere = realm.replace("/token", "/elsewhere");
                            response.headers_mut().insert(
                                "location",
                                elsewhere.parse().expect("a header value"),
                            );
                            response
                        }
                    };
                }
                if authorization != "Bearer t0k3n" {
                    let mut response = answer(StatusCode::UNAUTHORIZED, Body::empty());
                    let challenge = format!(r#"Bearer realm="{realm}",service="fake""#);
                    response.headers_mut().insert(
                        "www-authenticate",
                        challenge.parse().expect("a header value"),
                    );
                    return response;
                }
                match served.get(request.uri().path()) {
                    Some(bytes) => answer(StatusCode::OK, Body::from(bytes.clone())),
                    None => answer(StatusCode::NOT_FOUND, Body::empty()),
                }
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        (host, log)
    }

    #[tokio::test]
    async fn a_token_is_asked_of_the_token_service_the_registry_names() {
        let (host, log) = fake_registry(TokenService::Grants).await;
        let auths = serde_json::json!({"auths": {&host: {"username": "u", "password": "p"}}});
        let registry = Registry::new(std::slice::from_ref(&host), Some(auths));
        let pulled = registry
            .pull(&format!("{host}/m:1"))
            .await
            .expect("pulled with the token");
        assert_eq!(pulled.files, files());
        let log = log.lock().expect("the log").clone();
        let config = log[3].clone();
        let layer = log[4].clone();
        assert_eq!(
            log,
            [
                "GET /v2/m/manifests/1 (basic)".to_string(),
                "GET /token?scope=repository%3Am%3Apull&service=fake (basic)".to_string(),
                "GET /v2/m/manifests/1".to_string(),
                config,
                layer,
            ],
            "no ping of /v2/; the credentials go to the token service, then the token is used"
        );
        assert!(log[3].starts_with("GET /v2/m/blobs/sha256:") && !log[3].ends_with("(basic)"));
    }

    /// How pulling `m:1` from a fake registry whose token service is `service` fails, the
    /// registry's host, and its request log.
    async fn failed_pull(
        service: TokenService,
    ) -> (
        OciError,
        String,
        std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    ) {
        let (host, log) = fake_registry(service).await;
        let error = Registry::new(std::slice::from_ref(&host), None)
            .pull(&format!("{host}/m:1"))
            .await
            .expect_err("no token, no module");
        (error, host, log)
    }

    #[tokio::test]
    async fn a_token_service_that_does_not_give_a_token_fails_the_pull_with_its_reason() {
        let cases = [
            (
                TokenService::Endless,
                "answered more than 65536 bytes".to_string(),
            ),
            (
                TokenService::Denies,
                "answered 401 Unauthorized: incorrect username or password".to_string(),
            ),
            (
                TokenService::SomeOtherPage,
                "answered 403 Forbidden".to_string(),
            ),
            (
                TokenService::NoToken,
                "answered without a token".to_string(),
            ),
            (TokenService::Redirects, "answered 302 Found".to_string()),
        ];
        for (service, said) in cases {
            let (error, host, log) = failed_pull(service).await;
            assert!(matches!(error, OciError::Unauthorized { .. }), "{error}");
            assert_eq!(
                error.to_string(),
                format!(
                    "registry {host} refused access (401/403): the registry's token service http://{host}/token {said}"
                )
            );
            let log = log.lock().expect("the log").clone();
            assert!(
                log.iter().all(|line| !line.contains("/elsewhere")),
                "a redirect is not followed: {log:?}"
            );
        }
        // A token service that is down is the registry's unavailability, not a refusal: a
        // pinned digest the cache holds is then served from it.
        let (error, host, _) = failed_pull(TokenService::Unavailable).await;
        assert!(matches!(error, OciError::Registry { .. }), "{error}");
        assert_eq!(
            error.to_string(),
            format!(
                "registry error for {host}/m:1: the registry's token service http://{host}/token answered 503 Service Unavailable"
            )
        );
    }

    #[test]
    fn only_a_registrys_own_error_answer_is_shown() {
        let url = || "http://10.0.0.1/v2/x/manifests/1".to_string();
        let envelope = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        let not_found = refusal(reqwest::StatusCode::NOT_FOUND, envelope, url());
        assert!(matches!(
            not_found,
            OciDistributionError::RegistryError { .. }
        ));
        let unavailable = refusal(
            reqwest::StatusCode::SERVICE_UNAVAILABLE,
            br#"{"errors":[{"code":"UNAVAILABLE","message":"storage is down"}]}"#,
            url(),
        );
        assert_eq!(
            unavailable.to_string(),
            "Server error: url http://10.0.0.1/v2/x/manifests/1, code: 503, message: storage is down"
        );
        let page = refusal(
            reqwest::StatusCode::NOT_FOUND,
            b"<html>internal wiki: the password is 42</html>",
            url(),
        );
        assert_eq!(
            page.to_string(),
            format!(
                "Server error: url http://10.0.0.1/v2/x/manifests/1, code: 404, message: {NOT_A_REGISTRY_ERROR}"
            )
        );
    }
}
