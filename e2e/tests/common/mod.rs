//! Shared by the e2e suites: a server per test and a kube client (the kubectl runner is
//! `pequod_e2e::testing`, shared with Pequod's operator tests).

#![allow(dead_code)] // each suite uses part of this module

use kube::config::{KubeConfigOptions, Kubeconfig};
use pequod_e2e::{Config, TestApiServer};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The upstream CRDs (CloudNativePG and friends) shipped with the project's test data.
pub fn shared_crds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/crds")
}

/// Starts a server with the simulator and a short readiness delay.
pub async fn server() -> TestApiServer {
    server_with(Config {
        readiness_delay: Duration::from_millis(300),
        ..Config::default()
    })
    .await
}

/// Starts a server with `config`.
pub async fn server_with(config: Config) -> TestApiServer {
    TestApiServer::start(config)
        .await
        .unwrap_or_else(|error| panic!("test API server did not start: {error}"))
}

/// A kube client for `server`, built from the kubeconfig it wrote (the admin's).
pub async fn client(server: &TestApiServer) -> kube::Client {
    client_from(server.kubeconfig()).await
}

/// A kube client for the server and user a kubeconfig names.
pub async fn client_from(kubeconfig: &Path) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("kubeconfig written");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig accepted by kube");
    kube::Client::try_from(config).expect("kube client")
}

/// Sends one raw HTTP/1.1 request; returns the status code and the body.
pub async fn send_text(
    server: &TestApiServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("server listening");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).await.expect("request sent");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("response read");
    let text = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status code");
    (code, body.to_owned())
}

/// Sends one raw HTTP/1.1 request; returns the status code and the JSON body.
pub async fn send(
    server: &TestApiServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let (code, body) = send_text(server, method, path, headers, body).await;
    (code, serde_json::from_str(&body).expect("JSON body"))
}

/// The spec the server stores for a Deployment of `replicas` whose pods (labelled
/// `app: <app>`) run `container`: every default filled in, as a real API server fills it.
pub fn defaulted_deployment_spec(
    replicas: i64,
    app: &str,
    container: serde_json::Value,
) -> serde_json::Value {
    let mut container = container;
    for (key, value) in [
        ("imagePullPolicy", "IfNotPresent"),
        ("terminationMessagePath", "/dev/termination-log"),
        ("terminationMessagePolicy", "File"),
    ] {
        container[key] = serde_json::json!(value);
    }
    serde_json::json!({
        "replicas": replicas, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
        "selector": {"matchLabels": {"app": app}},
        "strategy": {"type": "RollingUpdate",
                     "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
        "template": {
            "metadata": {"labels": {"app": app}},
            "spec": {
                "containers": [container],
                "dnsPolicy": "ClusterFirst", "restartPolicy": "Always",
                "schedulerName": "default-scheduler", "securityContext": {},
                "terminationGracePeriodSeconds": 30
            }
        }
    })
}
