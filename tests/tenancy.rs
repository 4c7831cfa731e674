//! The attack suite: Transforms a hostile tenant would write, against the real operator and
//! the test API server (or a real cluster: `common/cluster.rs`). Each is refused with a
//! condition that says why, and nothing of anyone else's is lost.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/net.rs"]
mod net;
#[path = "common/registry.rs"]
mod registry;

use cluster::{Cluster, condition, inline_in, node, role_for, skip_on_real_cluster};
use pequod_e2e::testing::eventually;
use registry::{ENDLESS, FOREIGN_PAGE_SECRET, HostileRegistry, Hostility};

/// The base64 of the Secret value the attacks go after.
const SECRET_VALUE: &str = "U1VQRVJTRUNSRVQtNDI=";

/// Everything a tenant or an operator could look at, as one text: the Transform, its graph,
/// the events, and `pequod status`.
async fn everything_shown(cluster: &Cluster, namespace: &str, name: &str) -> String {
    let mut shown = String::new();
    for args in [
        vec!["-n", namespace, "get", "transform", name],
        vec!["-n", namespace, "get", "resourcegraph", name],
        vec!["get", "events.events.k8s.io", "-A"],
    ] {
        if let Some(object) = cluster.json(&args).await {
            shown.push_str(&object.to_string());
        }
    }
    shown.push_str(&cluster.pequod(&["status", name, "-n", namespace]).await);
    shown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_is_never_read_across_namespaces_nor_shown() {
    let cluster = Cluster::start_in("team-a").await;
    let ns = cluster.namespace().to_owned();
    // Another tenant's namespace: kube-system itself on the test server.
    let elsewhere = cluster.extra_namespace("kube-system").await;
    for (namespace, secret) in [(&elsewhere, "admin-token"), (&ns, "app-token")] {
        cluster
            .ok(
                &[
                    "-n",
                    namespace,
                    "create",
                    "secret",
                    "generic",
                    secret,
                    "--from-literal=token=SUPERSECRET-42",
                ],
                None,
            )
            .await;
    }
    let observe = |namespace: &str, name: &str| {
        format!(
            r#"{{ id = "{name}", object = {{ apiVersion = "v1", kind = "Secret", metadata = {{ name = "{name}", namespace = "{namespace}" }} }},
               applyPolicy = {{ mode = 'Observe }},
               readyWhen = [{{ type = "FieldEquals", path = "data.token", value = "x" }}] }}"#
        )
    };
    let nodes = format!(
        "[{}, {}]",
        observe(&elsewhere, "admin-token"),
        observe(&ns, "app-token")
    );
    cluster
        .ok(
            &["apply", "-f", "-"],
            Some(&inline_in(&ns, "exfiltrate", &nodes)),
        )
        .await;
    let graph = cluster
        .graph_when(&ns, "exfiltrate", "both nodes looked at", |g| {
            node(g, "admin-token")["phase"] == "Failed"
                && node(g, "app-token")["phase"] == "WaitingReady"
        })
        .await;
    assert_eq!(node(&graph, "admin-token")["reason"], "OutsideNamespace");
    assert_eq!(
        node(&graph, "admin-token")["message"],
        format!(
            "Secret {elsewhere}/admin-token is outside the graph's namespace {ns}: refused (the operator runs without --allow-cross-namespace)"
        )
    );
    assert_eq!(
        node(&graph, "app-token")["message"],
        "data.token does not match"
    );
    cluster
        .transform_when(&ns, "exfiltrate", "Ready=False", |t| {
            condition(t, "Ready").is_some_and(|c| c["reason"] == "NodeFailed")
        })
        .await;
    let shown = everything_shown(&cluster, &ns, "exfiltrate").await;
    assert!(
        !shown.contains(SECRET_VALUE) && !shown.contains("SUPERSECRET"),
        "a Secret's value leaked: {shown}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_cannot_take_over_or_delete_another_transforms_object() {
    let cluster = Cluster::start_in("team-a").await;
    let ns = cluster.namespace().to_owned();
    let shared = |value: &str| {
        format!(
            r#"[{{ id = "settings", object = {{ apiVersion = "v1", kind = "ConfigMap", metadata = {{ name = "shared-settings" }}, data = {{ owner = "{value}" }} }} }}]"#
        )
    };
    cluster
        .ok(
            &["apply", "-f", "-"],
            Some(&inline_in(&ns, "owner-one", &shared("one"))),
        )
        .await;
    cluster
        .graph_when(&ns, "owner-one", "owner-one Ready", |g| {
            g["status"]["phase"] == "Ready"
        })
        .await;
    cluster
        .ok(
            &["apply", "-f", "-"],
            Some(&inline_in(&ns, "owner-two", &shared("two"))),
        )
        .await;
    let graph = cluster
        .graph_when(&ns, "owner-two", "the takeover refused", |g| {
            node(g, "settings")["phase"] == "Failed"
        })
        .await;
    assert_eq!(node(&graph, "settings")["reason"], "OwnedByAnotherGraph");
    assert_eq!(
        node(&graph, "settings")["message"],
        format!(
            "ConfigMap {ns}/shared-settings is owned by ResourceGraph {ns}/owner-one: refused (a graph never writes, adopts or deletes another graph's objects)"
        )
    );
    assert!(graph["status"]["inventory"].is_null(), "{graph}");
    let transform = cluster
        .transform_when(&ns, "owner-two", "owner-two not Ready", |t| {
            condition(t, "Ready")
                .is_some_and(|c| c["status"] == "False" && c["reason"] == "NodeFailed")
        })
        .await;
    assert!(transform["status"]["conditions"].is_array());
    let owner = || async {
        cluster
            .ok(
                &[
                    "-n",
                    &ns,
                    "get",
                    "configmap",
                    "shared-settings",
                    "-o",
                    "jsonpath={.data.owner}",
                ],
                None,
            )
            .await
    };
    assert_eq!(owner().await, "one");

    // The attacker goes; the victim's object stays, and so does its Ready graph.
    cluster
        .ok(
            &[
                "-n",
                &ns,
                "delete",
                "transform",
                "owner-two",
                "--timeout=60s",
            ],
            None,
        )
        .await;
    eventually(60, "owner-two's graph gone", || async {
        let found = cluster
            .exists(&["-n", &ns, "get", "resourcegraph", "owner-two"])
            .await;
        (!found).then_some(())
    })
    .await;
    assert_eq!(owner().await, "one");
    let victim = cluster
        .json(&["-n", &ns, "get", "resourcegraph", "owner-one"])
        .await
        .expect("owner-one's graph");
    assert_eq!(victim["status"]["phase"], "Ready");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_object_is_taken_only_when_adopted() {
    let cluster = Cluster::start_in("team-a").await;
    let ns = cluster.namespace().to_owned();
    cluster
        .ok(
            &[
                "-n",
                &ns,
                "create",
                "configmap",
                "quota-settings",
                "--from-literal=limit=10",
            ],
            None,
        )
        .await;
    let nodes = r#"[{ id = "settings", object = { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "quota-settings" }, data = { limit = "1000" } } }]"#;
    cluster
        .ok(&["apply", "-f", "-"], Some(&inline_in(&ns, "grab", nodes)))
        .await;
    let graph = cluster
        .graph_when(&ns, "grab", "refused", |g| {
            node(g, "settings")["phase"] == "Failed"
        })
        .await;
    assert_eq!(node(&graph, "settings")["reason"], "AlreadyExists");
    assert_eq!(
        node(&graph, "settings")["message"],
        format!(
            "ConfigMap {ns}/quota-settings already exists and no graph owns it: refused (name it in the Transform's spec.adopt to take it over)"
        )
    );
    let limit = cluster
        .ok(
            &[
                "-n",
                &ns,
                "get",
                "configmap",
                "quota-settings",
                "-o",
                "jsonpath={.data.limit}",
            ],
            None,
        )
        .await;
    assert_eq!(limit, "10", "nothing written");
    cluster
        .ok(
            &["-n", &ns, "delete", "transform", "grab", "--timeout=60s"],
            None,
        )
        .await;
    assert!(
        cluster
            .exists(&["-n", &ns, "get", "configmap", "quota-settings"])
            .await,
        "nothing deleted"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_resource_graph_is_not_executed() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace().to_owned();
    let graph = serde_json::json!({
        "apiVersion": "platform.pequod.io/v1alpha1",
        "kind": "ResourceGraph",
        "metadata": {"name": "forged"},
        "spec": {
            "sourceRef": {"apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform", "name": "forged"},
            "metadata": {"module": "none", "version": "0", "moduleDigest": "sha256:0", "renderHash": "sha256:0"},
            "nodes": [{"id": "payload", "object": {"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "payload"}, "data": {"x": "y"}}}],
        },
    });
    cluster
        .ok(&["apply", "-f", "-"], Some(&graph.to_string()))
        .await;
    let refused = cluster
        .graph_when(&ns, "forged", "refused", |g| {
            condition(g, "Ready").is_some_and(|c| c["reason"] == "NotControlledByTransform")
        })
        .await;
    assert_eq!(
        condition(&refused, "Ready").expect("Ready")["message"],
        "no Transform controls this ResourceGraph: the graph is not executed (only graphs controlled by a Transform are; the operator runs without --allow-standalone-graphs)"
    );
    // The refusal is what the reconcile that would have applied it wrote instead.
    assert!(!cluster.exists(&["get", "configmap", "payload"]).await);
    assert!(
        refused["metadata"]["finalizers"].is_null(),
        "no finalizer: the graph may go"
    );
    cluster
        .ok(&["delete", "resourcegraph", "forged"], None)
        .await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_from_a_source_the_platform_did_not_allow_is_refused() {
    let cluster = Cluster::start_with_flags(
        std::time::Duration::from_millis(300),
        &[
            "--module-sources",
            "embedded:webservice,oci://registry.corp/platforms/*",
        ],
    )
    .await;
    let ns = cluster.namespace().to_owned();
    cluster
        .ok(
            &["apply", "-f", "-"],
            Some(&inline_in(&ns, "homemade", "[]")),
        )
        .await;
    let refused = cluster
        .transform_when(&ns, "homemade", "ModuleResolved=False", |t| {
            condition(t, "ModuleResolved").is_some_and(|c| c["status"] == "False")
        })
        .await;
    let resolved = condition(&refused, "ModuleResolved").expect("ModuleResolved");
    assert_eq!(resolved["reason"], "SourceNotAllowed");
    assert_eq!(
        resolved["message"],
        "module source inline is not allowed by the operator (--module-sources embedded:webservice,oci://registry.corp/platforms/*)"
    );
    assert!(!cluster.exists(&["get", "resourcegraph", "homemade"]).await);
    let scanner = serde_json::json!({
        "apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
        "metadata": {"name": "scanner"},
        "spec": {"moduleRef": {"type": "git", "ref": "git://10.0.0.1:22/probe"}, "input": {}},
    });
    cluster
        .ok(&["apply", "-f", "-"], Some(&scanner.to_string()))
        .await;
    let refused = cluster
        .transform_when(&ns, "scanner", "refused", |t| {
            condition(t, "ModuleResolved").is_some_and(|c| c["status"] == "False")
        })
        .await;
    assert_eq!(
        condition(&refused, "ModuleResolved").expect("ModuleResolved")["message"],
        "module source git::git://10.0.0.1:22/probe is not allowed by the operator (--module-sources embedded:webservice,oci://registry.corp/platforms/*)"
    );
    // An allowed module renders.
    cluster
        .ok(
            &["apply", "-f", "-"],
            Some(
                "apiVersion: platform.pequod.io/v1alpha1\nkind: Transform\nmetadata: {name: web}\nspec:\n  moduleRef: {type: embedded, ref: webservice}\n  input: {name: web, image: ghcr.io/acme/web:1.0.0}\n",
            ),
        )
        .await;
    let allowed = cluster
        .transform_when(&ns, "web", "rendered", |t| {
            condition(t, "Rendered").is_some_and(|c| c["status"] == "True")
        })
        .await;
    assert_eq!(
        condition(&allowed, "ModuleResolved").expect("ModuleResolved")["status"],
        "True"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_allowed_only_config_maps_cannot_write_a_deployment() {
    if skip_on_real_cluster(
        "needs the test API server: the operator's service-account token is minted by it (kubeconfig_for), the overlay's ClusterRoles would be cluster-wide, and its request accounting tells who wrote",
    ) {
        return;
    }
    let cluster = Cluster::start_locked_down(&[]).await;
    cluster.extra_namespace("team-a").await;
    let rules =
        serde_json::json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]);
    cluster
        .ok(
            &["apply", "-f", "-"],
            Some(&role_for("team-a", "app", rules)),
        )
        .await;
    let nodes = r#"[
      { id = "settings", object = { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "settings" }, data = { a = "b" } } },
      { id = "web", object = { apiVersion = "apps/v1", kind = "Deployment", metadata = { name = "web" },
          spec = { selector.matchLabels.app = "web", template = { metadata.labels.app = "web",
                   spec.containers = [{ name = "web", image = "nginx:1.27" }] } } } },
    ]"#;
    let mut transform: serde_json::Value =
        serde_json::from_str(&inline_in("team-a", "escalate", nodes)).expect("JSON");
    transform["spec"]["serviceAccountName"] = "app".into();
    cluster
        .ok(&["apply", "-f", "-"], Some(&transform.to_string()))
        .await;
    let graph = cluster
        .graph_when("team-a", "escalate", "the Deployment refused", |g| {
            node(g, "web")["phase"] == "Failed" && node(g, "settings")["phase"] == "Ready"
        })
        .await;
    assert_eq!(node(&graph, "web")["reason"], "Forbidden");
    assert_eq!(
        node(&graph, "web")["message"],
        "service account team-a/app may not get deployments.apps in namespace team-a: deployments.apps \"web\" is forbidden: User \"system:serviceaccount:team-a:app\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"team-a\""
    );
    assert!(
        !cluster
            .exists(&["-n", "team-a", "get", "deployment", "web"])
            .await
    );
    // Every write of the graph was the service account's; the operator wrote nothing of it.
    let requests = cluster.server().requests();
    let applies_by = |user: &str, resource: &str| {
        requests
            .counts
            .iter()
            .filter(|(key, _)| key.verb == "apply" && key.user == user && key.resource == resource)
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    assert_eq!(
        applies_by("system:serviceaccount:team-a:app", "configmaps"),
        1
    );
    assert_eq!(
        applies_by("system:serviceaccount:pequod-system:pequod", "configmaps"),
        0
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_and_force_never_reach_what_the_tenant_may_not_write() {
    if skip_on_real_cluster(
        "needs the test API server: the operator's service-account token is minted by it (kubeconfig_for), and the overlay's ClusterRoles would be cluster-wide",
    ) {
        return;
    }
    let cluster = Cluster::start_locked_down(&[]).await;
    cluster.extra_namespace("team-a").await;
    // The namespace's default service account is an editor: it may not touch quotas or
    // role bindings, which the platform team set.
    cluster
        .ok(
            &[
                "-n",
                "team-a",
                "create",
                "rolebinding",
                "default-edit",
                "--clusterrole=edit",
                "--serviceaccount=team-a:default",
            ],
            None,
        )
        .await;
    cluster
        .ok(
            &[
                "-n",
                "team-a",
                "create",
                "quota",
                "compute",
                "--hard=pods=10",
            ],
            None,
        )
        .await;
    let transform = serde_json::json!({
        "apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
        "metadata": {"name": "lift-quota", "namespace": "team-a"},
        "spec": {
            "moduleRef": {"type": "inline", "ref": r#"{
  metadata = { name = "lift", version = "0.1.0" },
  Input = { .. },
  render = fun input => { nodes = [
    { id = "quota", object = { apiVersion = "v1", kind = "ResourceQuota", metadata = { name = "compute" }, spec.hard.pods = "1000" } },
    { id = "binding", applyPolicy.conflictPolicy = 'Force,
      object = { apiVersion = "rbac.authorization.k8s.io/v1", kind = "RoleBinding", metadata = { name = "default-edit" },
                 roleRef = { apiGroup = "rbac.authorization.k8s.io", kind = "ClusterRole", name = "admin" },
                 subjects = [{ kind = "ServiceAccount", name = "default", namespace = "team-a" }] } },
  ] },
}"#},
            "input": {},
            "adopt": {"strategy": "TakeOwnership", "resources": [
                {"apiVersion": "v1", "kind": "ResourceQuota", "name": "compute"},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "name": "default-edit"}]},
        },
    });
    cluster
        .ok(&["apply", "-f", "-"], Some(&transform.to_string()))
        .await;
    let graph = cluster
        .graph_when("team-a", "lift-quota", "both refused", |g| {
            node(g, "quota")["phase"] == "Failed" && node(g, "binding")["phase"] == "Failed"
        })
        .await;
    for (id, verb, resource) in [
        ("quota", "patch", "resourcequotas"),
        ("binding", "get", "rolebindings.rbac.authorization.k8s.io"),
    ] {
        assert_eq!(node(&graph, id)["reason"], "Forbidden", "{id}");
        let message = node(&graph, id)["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(&format!(
                "service account team-a/default may not {verb} {resource} in namespace team-a: "
            )),
            "{id}: {message}"
        );
    }
    let hard = cluster
        .ok(
            &[
                "-n",
                "team-a",
                "get",
                "quota",
                "compute",
                "-o",
                "jsonpath={.spec.hard.pods}",
            ],
            None,
        )
        .await;
    assert_eq!(hard, "10", "the quota is untouched");
    let role = cluster
        .ok(
            &[
                "-n",
                "team-a",
                "get",
                "rolebinding",
                "default-edit",
                "-o",
                "jsonpath={.roleRef.name}",
            ],
            None,
        )
        .await;
    assert_eq!(role, "edit", "the binding is untouched");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_cannot_read_the_operators_token_or_environment() {
    let cluster = Cluster::start().await;
    for (name, path) in [
        (
            "token",
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
        ),
        ("environ", "/proc/self/environ"),
    ] {
        let probe = format!(
            r#"{{ apiVersion = "v1", kind = "ConfigMap", metadata.name = "{name}", data.stolen = import "{path}" }}"#
        );
        cluster
            .ok(
                &["apply", "-f", "-"],
                Some(&inline_in(
                    "default",
                    name,
                    &format!("[{{ id = \"x\", object = {probe} }}]"),
                )),
            )
            .await;
        let refused = cluster
            .transform_when("default", name, "Rendered=False", |t| {
                condition(t, "Rendered").is_some_and(|c| c["status"] == "False")
            })
            .await;
        let rendered = condition(&refused, "Rendered").expect("Rendered");
        assert_eq!(rendered["reason"], "RenderFailed");
        let message = rendered["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(&format!(
                "forbidden import: import `{path}` does not refer to a file of the module or of the pequod library (main.ncl:"
            )),
            "{message}"
        );
        assert!(!cluster.exists(&["get", "resourcegraph", name]).await);
        assert!(!cluster.exists(&["get", "configmap", name]).await);
    }
    cluster.stop().await;
}

/// A tenant names a registry of its own whose token service never stops answering, or whose
/// challenge sends the operator to a page only the operator can reach: the operator reads
/// neither whole, shows neither page, and goes on serving everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_registry_cannot_exhaust_the_operator_nor_show_it_another_page() {
    let endless = HostileRegistry::start(Hostility::EndlessToken);
    let foreign = HostileRegistry::start(Hostility::ForeignRealm);
    let cluster = Cluster::start_with_flags(
        std::time::Duration::from_millis(300),
        &[
            "--insecure-registry",
            &endless.host,
            "--insecure-registry",
            &foreign.host,
        ],
    )
    .await;
    let ns = cluster.namespace().to_owned();
    for (name, registry, answered) in [
        ("endless", &endless, "answered more than 65536 bytes"),
        ("foreign", &foreign, "answered 403 Forbidden"),
    ] {
        let transform = serde_json::json!({
            "apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
            "metadata": {"name": name},
            "spec": {"moduleRef": {"type": "oci", "ref": format!("{}/team/module:1", registry.host)},
                     "input": {}},
        });
        cluster
            .ok(&["apply", "-f", "-"], Some(&transform.to_string()))
            .await;
        let refused = cluster
            .transform_when(&ns, name, "ModuleResolved=False", |t| {
                condition(t, "ModuleResolved").is_some_and(|c| c["status"] == "False")
            })
            .await;
        let resolved = condition(&refused, "ModuleResolved").expect("ModuleResolved");
        let host = &registry.host;
        assert_eq!(resolved["reason"], "Unauthorized");
        assert_eq!(
            resolved["message"],
            format!(
                "registry {host} refused access (401/403): the registry's token service http://{host}/token {answered}"
            )
        );
        assert!(!cluster.exists(&["get", "resourcegraph", name]).await);
    }
    let sent = endless.endless_bytes_sent();
    assert!(sent < ENDLESS, "the whole answer was sent: {sent} bytes");
    let shown = everything_shown(&cluster, &ns, "foreign").await;
    assert!(!shown.contains(FOREIGN_PAGE_SECRET), "{shown}");
    // The operator goes on: a Transform created after them renders and is Ready.
    cluster
        .ok(
            &["apply", "-f", "-"],
            Some(&inline_in(
                &ns,
                "after",
                r#"[{ id = "cm", object = { apiVersion = "v1", kind = "ConfigMap", metadata.name = "after", data.ok = "yes" } }]"#,
            )),
        )
        .await;
    cluster
        .transform_when(&ns, "after", "Ready", |t| {
            condition(t, "Ready").is_some_and(|c| c["status"] == "True")
        })
        .await;
    cluster.stop().await;
}
