//! The `test-apiserver` binary, run by hand as `e2e/README.md` describes: it writes its
//! kubeconfig, preloads CRDs, simulates readiness, enforces RBAC with `--authorize` and
//! stops cleanly on Ctrl-C (SIGINT).

mod common;

use common::shared_crds;
use pequod_e2e::testing::{Kubectl, eventually};
use std::process::Stdio;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_until_interrupted_with_crds_simulator_and_rbac() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let kubeconfig = dir.path().join("test.kubeconfig");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_test-apiserver"))
        .arg("--addr")
        .arg("127.0.0.1:0")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--simulate")
        .arg("--readiness-delay")
        .arg("200ms")
        .arg("--crds")
        .arg(shared_crds())
        .arg("--authorize")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("test-apiserver starts");
    eventually(60, "the kubeconfig", || async {
        std::fs::read_to_string(&kubeconfig)
            .ok()
            .filter(|text| text.contains("server: http://127.0.0.1:"))
    })
    .await;
    let kubectl = Kubectl::with_kubeconfig(&kubeconfig);

    // The CloudNativePG CRDs were preloaded and are Established.
    let established = kubectl
        .ok(
            &[
                "get",
                "crd",
                "clusters.postgresql.cnpg.io",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
            ],
            None,
        )
        .await;
    assert_eq!(established, "True");

    // The simulator runs: a Deployment becomes Available.
    let deployment = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx:1.27}]}
";
    kubectl
        .ok(&["apply", "--server-side", "-f", "-"], Some(deployment))
        .await;
    let waited = kubectl
        .ok(
            &[
                "wait",
                "--for=condition=Available",
                "deployment/web",
                "--timeout=30s",
            ],
            None,
        )
        .await;
    assert_eq!(waited, "deployment.apps/web condition met\n");

    // With --authorize, the admin's kubeconfig may do all that, a service account nothing.
    let account = "--as=system:serviceaccount:default:app";
    assert_eq!(
        kubectl
            .fails(&["get", "deployment", "web", account], None)
            .await,
        "Error from server (Forbidden): deployments.apps \"web\" is forbidden: User \"system:serviceaccount:default:app\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"default\"\n"
    );

    // Ctrl-C: a clean exit.
    let pid = child.id().expect("running").to_string();
    let interrupted = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(interrupted.success());
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("exits after SIGINT")
        .expect("waited");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("Ctrl-C stops"), "{stderr}");
}
