//! Shared by the e2e suites: a server per test and a kube client (the kubectl runner is
//! `pequod_e2e::testing`, shared with Pequod's operator tests).

#![allow(dead_code)] // each suite uses part of this module

use kube::config::{KubeConfigOptions, Kubeconfig};
use pequod_e2e::{Config, TestApiServer};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// A kube client for `server`, built from the kubeconfig it wrote.
pub async fn client(server: &TestApiServer) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig()).expect("kubeconfig written");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig accepted by kube");
    kube::Client::try_from(config).expect("kube client")
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
