//! The installed `kubectl` against the test API server: server-side apply with managed
//! fields and conflicts, CRDs and custom resources, watches, finalizers, waiting for
//! simulated readiness, and the CloudNativePG CRDs.

mod common;

use common::{defaulted_deployment_spec, server, server_with, shared_crds};
use pequod_e2e::Config;
use pequod_e2e::testing::{Kubectl, eventually};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports: [{containerPort: 80}]
";

const CRD: &str = "\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
          status:
            type: object
            properties:
              phase: {type: string}
";

fn managed_fields(yaml: &str) -> Vec<Value> {
    let object: Value = serde_yaml::from_str(yaml).expect("kubectl printed YAML");
    let mut entries = object["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for entry in &mut entries {
        if let Some(fields) = entry.as_object_mut() {
            assert!(fields.remove("time").is_some(), "every entry has a time");
        }
    }
    entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_conflicts_and_force() {
    let server = server().await;
    let kubectl = Kubectl::new(&server);
    let applied = kubectl
        .ok(&["apply", "--server-side", "-f", "-"], Some(DEPLOYMENT))
        .await;
    assert_eq!(applied, "deployment.apps/web serverside-applied\n");

    let other = DEPLOYMENT.replace("replicas: 2", "replicas: 5");
    let only_replicas =
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 5}\n";
    let error = kubectl
        .fails(
            &[
                "apply",
                "--server-side",
                "--field-manager",
                "scaler",
                "-f",
                "-",
            ],
            Some(only_replicas),
        )
        .await;
    assert!(
        error.starts_with(
            "error: Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas\n"
        ),
        "{error}"
    );
    // The same value is no conflict: both managers own it.
    kubectl
        .ok(
            &[
                "apply",
                "--server-side",
                "--field-manager",
                "scaler",
                "-f",
                "-",
            ],
            Some(&only_replicas.replace("replicas: 5", "replicas: 2")),
        )
        .await;
    let forced = kubectl
        .ok(
            &[
                "apply",
                "--server-side",
                "--field-manager",
                "scaler",
                "--force-conflicts",
                "-f",
                "-",
            ],
            Some(only_replicas),
        )
        .await;
    assert_eq!(forced, "deployment.apps/web serverside-applied\n");
    let yaml = kubectl
        .ok(
            &[
                "get",
                "deployment",
                "web",
                "-o",
                "yaml",
                "--show-managed-fields",
            ],
            None,
        )
        .await;
    assert_eq!(
        managed_fields(&yaml),
        [
            json!({
                "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "manager": "kubectl", "operation": "Apply",
                "fieldsV1": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {
                        "f:selector": {},
                        "f:template": {
                            "f:metadata": {"f:labels": {"f:app": {}}},
                            "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                                ".": {}, "f:image": {}, "f:name": {},
                                // The defaulted protocol is a key, not a field kubectl owns.
                                "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                                    ".": {}, "f:containerPort": {}
                                }}
                            }}}
                        }
                    }
                }
            }),
            json!({
                "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "manager": "scaler", "operation": "Apply",
                "fieldsV1": {"f:spec": {"f:replicas": {}}}
            }),
            json!({
                "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "manager": "kube-controller-manager",
                "operation": "Update", "subresource": "status",
                "fieldsV1": managed_fields(&yaml)[2]["fieldsV1"].clone()
            }),
        ]
    );
    let replicas = kubectl
        .ok(
            &[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.spec.replicas}",
            ],
            None,
        )
        .await;
    assert_eq!(replicas, "5");
    // Without --show-managed-fields, kubectl hides them.
    let plain = kubectl
        .ok(&["get", "deployment", "web", "-o", "yaml"], None)
        .await;
    assert!(!plain.contains("managedFields"));

    // kubectl applying again without replicas gives up the field; the other manager keeps it.
    let without = other.replace("  replicas: 5\n", "");
    kubectl
        .ok(&["apply", "--server-side", "-f", "-"], Some(&without))
        .await;
    let replicas = kubectl
        .ok(
            &[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.spec.replicas}",
            ],
            None,
        )
        .await;
    assert_eq!(replicas, "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_available_through_the_simulator() {
    let server = server().await;
    let kubectl = Kubectl::new(&server);
    kubectl
        .ok(&["apply", "--server-side", "-f", "-"], Some(DEPLOYMENT))
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
    let table = kubectl.ok(&["get", "deployments"], None).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&row[..4], ["web", "2/2", "2", "2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_deployment_times_out() {
    let server = server().await;
    server
        .simulator()
        .never_ready("Deployment", "default", "web");
    let kubectl = Kubectl::new(&server);
    kubectl
        .ok(&["apply", "--server-side", "-f", "-"], Some(DEPLOYMENT))
        .await;
    let error = kubectl
        .fails(
            &[
                "wait",
                "--for=condition=Available",
                "deployment/web",
                "--timeout=2s",
            ],
            None,
        )
        .await;
    assert_eq!(
        error,
        "error: timed out waiting for the condition on deployments/web\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_then_custom_resource_watch_and_finalizer() {
    let server = server().await;
    let kubectl = Kubectl::new(&server);
    let out = kubectl
        .ok(&["apply", "--server-side", "-f", "-"], Some(CRD))
        .await;
    assert_eq!(
        out,
        "customresourcedefinition.apiextensions.k8s.io/widgets.example.com serverside-applied\n"
    );
    let established = kubectl
        .ok(
            &[
                "wait",
                "--for=condition=Established",
                "crd/widgets.example.com",
                "--timeout=10s",
            ],
            None,
        )
        .await;
    assert_eq!(
        established,
        "customresourcedefinition.apiextensions.k8s.io/widgets.example.com condition met\n"
    );
    let widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\n  finalizers: [example.com/hold]\nspec: {size: 3}\n";
    let out = kubectl
        .ok(&["apply", "--server-side", "-f", "-"], Some(widget))
        .await;
    assert_eq!(out, "widget.example.com/w1 serverside-applied\n");
    let table = kubectl.ok(&["get", "wd"], None).await;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "SIZE"]);
    assert_eq!(
        table
            .lines()
            .nth(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["w1", "3"])
    );
    // Client-side apply of a custom resource: created, then updated with a JSON merge
    // patch (the OpenAPI document offers no strategic merge patch for custom resources).
    let gadget =
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: gadget}\nspec: {size: 1}\n";
    let out = kubectl.ok(&["apply", "-f", "-"], Some(gadget)).await;
    assert_eq!(out, "widget.example.com/gadget created\n");
    let out = kubectl
        .ok(
            &["apply", "-f", "-"],
            Some(&gadget.replace("size: 1", "size: 2")),
        )
        .await;
    assert_eq!(out, "widget.example.com/gadget configured\n");
    let size = kubectl
        .ok(
            &["get", "widget", "gadget", "-o", "jsonpath={.spec.size}"],
            None,
        )
        .await;
    assert_eq!(size, "2");
    kubectl.ok(&["delete", "widget", "gadget"], None).await;

    // A watch sees the update.
    let mut watch = kubectl
        .command(&[
            "get",
            "widget",
            "w1",
            "-w",
            "-o",
            "jsonpath={.spec.size}{\"\\n\"}",
        ])
        .spawn()
        .expect("kubectl get -w");
    let stdout = watch.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("first watch line in time");
    assert_eq!(first.ok().flatten().as_deref(), Some("3"));
    kubectl
        .ok(
            &[
                "patch",
                "widget",
                "w1",
                "--type=merge",
                "-p",
                "{\"spec\":{\"size\":5}}",
            ],
            None,
        )
        .await;
    let next = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("watch update in time");
    assert_eq!(next.ok().flatten().as_deref(), Some("5"));
    let _ = watch.kill().await;
    // kubectl patches strategically by default; custom resources refuse that, as in Kubernetes.
    let error = kubectl
        .fails(
            &["patch", "widget", "w1", "-p", "{\"spec\":{\"size\":4}}"],
            None,
        )
        .await;
    assert_eq!(
        error,
        "error: application/strategic-merge-patch+json is not supported by example.com/v1, Kind=Widget: the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml\n"
    );

    // Deleting waits on the finalizer: Terminating until it is removed.
    let deleted = kubectl
        .ok(&["delete", "widget", "w1", "--wait=false"], None)
        .await;
    assert_eq!(deleted, "widget.example.com \"w1\" deleted\n");
    let timestamp = kubectl
        .ok(
            &[
                "get",
                "widget",
                "w1",
                "-o",
                "jsonpath={.metadata.deletionTimestamp}",
            ],
            None,
        )
        .await;
    assert!(
        timestamp.ends_with('Z'),
        "deletionTimestamp set: {timestamp:?}"
    );
    // A waiting delete returns once the finalizer is gone.
    let waiting = kubectl
        .command(&["delete", "widget", "w1", "--timeout=30s"])
        .spawn()
        .expect("kubectl delete");
    tokio::time::sleep(Duration::from_millis(500)).await;
    kubectl
        .ok(
            &[
                "patch",
                "widget",
                "w1",
                "--type=json",
                "-p",
                "[{\"op\":\"remove\",\"path\":\"/metadata/finalizers\"}]",
            ],
            None,
        )
        .await;
    let output = tokio::time::timeout(Duration::from_secs(30), waiting.wait_with_output())
        .await
        .expect("delete returned")
        .expect("kubectl ran");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let error = kubectl.fails(&["get", "widget", "w1"], None).await;
    assert_eq!(
        error,
        "Error from server (NotFound): widgets.example.com \"w1\" not found\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudnative_pg_cluster_applies_and_becomes_ready() {
    let server = server_with(Config {
        crds: vec![shared_crds()],
        readiness_delay: Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    let kubectl = Kubectl::new(&server);
    let cluster = "\
apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata: {name: ledger-db}
spec:
  instances: 3
  imageName: ghcr.io/cloudnative-pg/postgresql:16.6
  storage: {size: 1Gi}
  bootstrap: {initdb: {database: ledger, owner: ledger}}
";
    let out = kubectl
        .ok(&["apply", "--server-side", "-f", "-"], Some(cluster))
        .await;
    assert_eq!(
        out,
        "cluster.postgresql.cnpg.io/ledger-db serverside-applied\n"
    );
    let read: Value = serde_json::from_str(
        &kubectl
            .ok(&["get", "cluster", "ledger-db", "-o", "json"], None)
            .await,
    )
    .expect("JSON");
    assert_eq!(read["spec"]["storage"], json!({"size": "1Gi"}));
    assert_eq!(read["spec"]["bootstrap"]["initdb"]["owner"], "ledger");
    let waited = kubectl
        .ok(
            &[
                "wait",
                "--for=condition=Ready",
                "cluster/ledger-db",
                "--timeout=30s",
            ],
            None,
        )
        .await;
    assert_eq!(
        waited,
        "cluster.postgresql.cnpg.io/ledger-db condition met\n"
    );
    let table = kubectl
        .ok(&["get", "clusters.postgresql.cnpg.io"], None)
        .await;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "AGE", "INSTANCES", "READY", "STATUS", "PRIMARY"]
    );
    let row = table.lines().nth(1).unwrap_or_default();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!((cells[0], cells[2], cells[3]), ("ledger-db", "3", "3"));
    assert!(
        row.contains("Cluster in healthy state") && row.ends_with("ledger-db-1"),
        "{row}"
    );
    // The app Secret the CNPG operator would create.
    let user = eventually(10, "the ledger-db-app Secret", || async {
        let run = kubectl
            .run(
                &[
                    "get",
                    "secret",
                    "ledger-db-app",
                    "-o",
                    "jsonpath={.data.username}",
                ],
                None,
            )
            .await;
        run.success.then_some(run.stdout)
    })
    .await;
    assert_eq!(user, "bGVkZ2Vy"); // "ledger"

    // A Pooler goes inactive, then active; a Database reports applied.
    let pooler_and_database = "\
apiVersion: postgresql.cnpg.io/v1
kind: Pooler
metadata: {name: ledger-db-pooler}
spec:
  cluster: {name: ledger-db}
  instances: 2
  type: rw
  pgbouncer: {poolMode: session}
---
apiVersion: postgresql.cnpg.io/v1
kind: Database
metadata: {name: ledger}
spec:
  cluster: {name: ledger-db}
  name: ledger
  owner: ledger
";
    kubectl
        .ok(
            &["apply", "--server-side", "-f", "-"],
            Some(pooler_and_database),
        )
        .await;
    let waited = kubectl
        .ok(
            &[
                "wait",
                "--for=jsonpath={.status.phase}=active",
                "pooler/ledger-db-pooler",
                "--timeout=30s",
            ],
            None,
        )
        .await;
    assert_eq!(
        waited,
        "pooler.postgresql.cnpg.io/ledger-db-pooler condition met\n"
    );
    let waited = kubectl
        .ok(
            &[
                "wait",
                "--for=jsonpath={.status.applied}=true",
                "database/ledger",
                "--timeout=30s",
            ],
            None,
        )
        .await;
    assert_eq!(waited, "database.postgresql.cnpg.io/ledger condition met\n");
    let instances = kubectl
        .ok(
            &[
                "get",
                "pooler",
                "ledger-db-pooler",
                "-o",
                "jsonpath={.status.instances}",
            ],
            None,
        )
        .await;
    assert_eq!(instances, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_becomes_ready_through_the_simulator() {
    let server = server().await;
    let kubectl = Kubectl::new(&server);
    let statefulset = "\
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: cache}
spec:
  replicas: 2
  serviceName: cache
  selector: {matchLabels: {app: cache}}
  template:
    metadata: {labels: {app: cache}}
    spec: {containers: [{name: redis, image: redis:7}]}
";
    kubectl
        .ok(&["apply", "--server-side", "-f", "-"], Some(statefulset))
        .await;
    let waited = kubectl
        .ok(
            &[
                "wait",
                "--for=jsonpath={.status.readyReplicas}=2",
                "statefulset/cache",
                "--timeout=30s",
            ],
            None,
        )
        .await;
    assert_eq!(waited, "statefulset.apps/cache condition met\n");
}

/// The object kubectl prints with `-o json`, without the fields the server makes up.
async fn stored(kubectl: &Kubectl, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let mut object: Value =
        serde_json::from_str(&kubectl.ok(&args, None).await).expect("kubectl printed JSON");
    if let Some(metadata) = object["metadata"].as_object_mut() {
        for key in ["uid", "resourceVersion", "creationTimestamp"] {
            metadata.remove(key);
        }
    }
    object
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_generators_send_protobuf() {
    let server = server().await;
    let kubectl = Kubectl::new(&server);
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("motd.txt");
    std::fs::write(&file, "hello\n").expect("file written");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let openssl = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=example", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (scripts/test-all.sh installs it)");
    assert!(openssl.status.success(), "openssl failed");
    let from_file = format!("--from-file={}", file.display());
    let cert_arg = format!("--cert={}", cert.display());
    let key_arg = format!("--key={}", key.display());
    let runs: &[(&[&str], &str)] = &[
        (
            &["create", "namespace", "team-a"],
            "namespace/team-a created\n",
        ),
        (
            &[
                "create",
                "configmap",
                "x",
                "--from-literal=a=b",
                "-n",
                "team-a",
            ],
            "configmap/x created\n",
        ),
        (
            &["create", "configmap", "motd", &from_file],
            "configmap/motd created\n",
        ),
        (
            &[
                "create",
                "secret",
                "generic",
                "creds",
                "--from-literal=password=hunter2",
            ],
            "secret/creds created\n",
        ),
        (
            &["create", "secret", "tls", "tls", &cert_arg, &key_arg],
            "secret/tls created\n",
        ),
        (
            &[
                "create",
                "secret",
                "docker-registry",
                "pull",
                "--docker-server=r.example",
                "--docker-username=u",
                "--docker-password=p",
            ],
            "secret/pull created\n",
        ),
        (
            &["create", "serviceaccount", "robot"],
            "serviceaccount/robot created\n",
        ),
        (
            &[
                "create",
                "deployment",
                "web",
                "--image=nginx:1.27",
                "--replicas=2",
            ],
            "deployment.apps/web created\n",
        ),
        (
            &["create", "job", "once", "--image=busybox"],
            "job.batch/once created\n",
        ),
        (
            &[
                "create",
                "role",
                "reader",
                "--verb=get,list",
                "--resource=configmaps",
            ],
            "role.rbac.authorization.k8s.io/reader created\n",
        ),
        (
            &[
                "create",
                "rolebinding",
                "read",
                "--role=reader",
                "--user=alice",
                "--serviceaccount=default:robot",
            ],
            "rolebinding.rbac.authorization.k8s.io/read created\n",
        ),
        (
            &["create", "service", "clusterip", "web", "--tcp=80:8080"],
            "service/web created\n",
        ),
        (
            &[
                "create",
                "quota",
                "small",
                "--hard=cpu=0.5,memory=1024Mi,pods=10",
            ],
            "resourcequota/small created\n",
        ),
    ];
    for (args, expected) in runs {
        assert_eq!(kubectl.ok(args, None).await, *expected, "kubectl {args:?}");
    }
    // Every object was sent as protobuf and stored in its JSON form, defaulted.
    assert_eq!(
        stored(&kubectl, &["get", "configmap", "x", "-n", "team-a"]).await,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"},
               "metadata": {"name": "x", "namespace": "team-a"}})
    );
    assert_eq!(
        stored(&kubectl, &["get", "configmap", "motd"]).await["data"],
        json!({"motd.txt": "hello\n"})
    );
    assert_eq!(
        stored(&kubectl, &["get", "namespace", "team-a"]).await,
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "team-a"}},
               "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
    );
    assert_eq!(
        stored(&kubectl, &["get", "secret", "creds"]).await,
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "data": {"password": "aHVudGVyMg=="},
               "metadata": {"name": "creds", "namespace": "default"}})
    );
    let tls = stored(&kubectl, &["get", "secret", "tls"]).await;
    assert_eq!(tls["type"], "kubernetes.io/tls");
    let pem = |path: &std::path::Path| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).expect("PEM"))
    };
    assert_eq!(
        tls["data"],
        json!({"tls.crt": pem(&cert), "tls.key": pem(&key)})
    );
    assert_eq!(
        stored(&kubectl, &["get", "secret", "pull"]).await["type"],
        "kubernetes.io/dockerconfigjson"
    );
    assert_eq!(
        stored(&kubectl, &["get", "deployment", "web"]).await["spec"],
        defaulted_deployment_spec(
            2,
            "web",
            json!({"name": "nginx", "image": "nginx:1.27", "resources": {}})
        )
    );
    let job = stored(&kubectl, &["get", "job", "once"]).await;
    assert_eq!(
        (
            &job["spec"]["backoffLimit"],
            &job["spec"]["completions"],
            &job["spec"]["parallelism"]
        ),
        (&json!(6), &json!(1), &json!(1))
    );
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    assert_eq!(
        stored(&kubectl, &["get", "role", "reader"]).await["rules"],
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}])
    );
    let binding = stored(&kubectl, &["get", "rolebinding", "read"]).await;
    assert_eq!(
        (&binding["roleRef"], &binding["subjects"]),
        (
            &json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"}),
            &json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"},
                    {"kind": "ServiceAccount", "name": "robot", "namespace": "default"}])
        )
    );
    assert_eq!(
        stored(&kubectl, &["get", "service", "web"]).await["spec"],
        json!({
            "type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster", "sessionAffinity": "None",
            "selector": {"app": "web"},
            "ports": [{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}]
        })
    );
    assert_eq!(
        stored(&kubectl, &["get", "quota", "small"]).await["spec"],
        json!({"hard": {"cpu": "500m", "memory": "1Gi", "pods": "10"}})
    );
    let requests = server.requests();
    for (resource, creates) in [
        ("namespaces", 1),
        ("configmaps", 2),
        ("secrets", 3),
        ("serviceaccounts", 1),
        ("deployments", 1),
        ("jobs", 1),
        ("roles", 1),
        ("rolebindings", 1),
        ("services", 1),
        ("resourcequotas", 1),
    ] {
        assert_eq!(requests.count("create", resource), creates, "{resource}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_status_of_defaulted_workloads() {
    let server = server().await;
    let kubectl = Kubectl::new(&server);
    let stateful_set = "\
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - {name: db, image: postgres:17}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1.5Gi}}
";
    kubectl
        .ok(&["apply", "--server-side", "-f", "-"], Some(DEPLOYMENT))
        .await;
    kubectl
        .ok(&["apply", "--server-side", "-f", "-"], Some(stateful_set))
        .await;
    let deployment = kubectl
        .ok(
            &["rollout", "status", "deployment/web", "--timeout=30s"],
            None,
        )
        .await;
    assert!(
        deployment.ends_with("deployment \"web\" successfully rolled out\n"),
        "{deployment}"
    );
    let statefulset = kubectl
        .ok(
            &["rollout", "status", "statefulset/db", "--timeout=30s"],
            None,
        )
        .await;
    // The defaulted RollingUpdate strategy has `partition: 0`, so kubectl reports a
    // partitioned rollout, as against a real cluster.
    assert!(
        statefulset.ends_with("partitioned roll out complete: 2 new pods have been updated...\n"),
        "{statefulset}"
    );
    let stored = stored(&kubectl, &["get", "statefulset", "db"]).await;
    assert_eq!(
        (
            &stored["spec"]["updateStrategy"],
            &stored["spec"]["podManagementPolicy"],
            &stored["spec"]["volumeClaimTemplates"][0]
        ),
        (
            &json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            &json!("OrderedReady"),
            &json!({"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                             "resources": {"requests": {"storage": "1536Mi"}}},
                    "status": {"phase": "Pending"}})
        )
    );
}
