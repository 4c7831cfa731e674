//! Authentication, RBAC authorization and impersonation (`Config::authorize`), through
//! kubectl, kube clients and raw HTTP, as non-admin users: bearer tokens from
//! `TestApiServer::kubeconfig_for`, Roles and ClusterRoles bound in a namespace, aggregated
//! ClusterRoles, impersonation rules, access reviews, and the exact Status answers.

mod common;

use common::{client, client_from, send, send_text, server_with};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use pequod_e2e::requests::RequestKey;
use pequod_e2e::testing::{Kubectl, eventually};
use pequod_e2e::{Config, TestApiServer, User};
use serde_json::{Value, json};

/// The service account the tenant's Role is bound to.
const APP: &str = "system:serviceaccount:team-a:app";

/// Two tenant namespaces; in `team-a` the service account `app`, a Role letting it create
/// ConfigMaps and read and patch the one named `settings`, and a RoleBinding naming the
/// service account without its namespace (the binding's is meant).
const TENANT: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: app, namespace: team-a}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: configmaps, namespace: team-a}
rules:
- {apiGroups: [''], resources: [configmaps], verbs: [create]}
- {apiGroups: [''], resources: [configmaps], resourceNames: [settings], verbs: [get, list, watch, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: app-configmaps, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmaps}
subjects:
- {kind: ServiceAccount, name: app}
";

/// A server enforcing RBAC, with the tenant set up by the admin.
async fn tenant_server() -> (TestApiServer, Kubectl) {
    let server = server_with(Config {
        authorize: true,
        simulate: false,
        ..Config::default()
    })
    .await;
    let admin = Kubectl::new(&server);
    admin.ok(&["apply", "-f", "-"], Some(TENANT)).await;
    (server, admin)
}

/// kubectl acting as `user`, with a token of its own.
fn kubectl_as(server: &TestApiServer, user: &User) -> Kubectl {
    Kubectl::with_kubeconfig(&server.kubeconfig_for(user).expect("kubeconfig written"))
}

/// A kube client acting as `user`, with a token of its own.
async fn client_as(server: &TestApiServer, user: &User) -> kube::Client {
    client_from(&server.kubeconfig_for(user).expect("kubeconfig written")).await
}

/// The Forbidden Status of `message` about `resource` (`kind` in its details) in `group`,
/// for the object `name` (none for collections).
fn forbidden(message: &str, group: &str, resource: &str, name: &str) -> Value {
    let mut details = serde_json::Map::new();
    for (key, value) in [("name", name), ("group", group), ("kind", resource)] {
        if !value.is_empty() {
            details.insert(key.to_owned(), json!(value));
        }
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": "Forbidden", "details": details, "code": 403})
}

/// The code and message of a kube client's API error.
fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn configmap(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"mode": "fast"}}))
        .expect("a ConfigMap")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_binding_grants_a_service_account_its_rules_in_its_namespace_only() {
    let (server, admin) = tenant_server().await;
    admin
        .ok(&["-n", "team-a", "create", "configmap", "other"], None)
        .await;
    let app = kubectl_as(&server, &User::service_account("team-a", "app"));
    let create = [
        "-n",
        "team-a",
        "create",
        "configmap",
        "settings",
        "--from-literal=mode=fast",
    ];
    assert_eq!(app.ok(&create, None).await, "configmap/settings created\n");
    let patch = [
        "-n",
        "team-a",
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"mode":"slow"}}"#,
    ];
    assert_eq!(app.ok(&patch, None).await, "configmap/settings patched\n");
    let read = [
        "-n",
        "team-a",
        "get",
        "configmap",
        "settings",
        "-o",
        "jsonpath={.data.mode}",
    ];
    assert_eq!(app.ok(&read, None).await, "slow");

    let who = format!("User \"{APP}\"");
    let in_team = |namespace: &str| format!("in API group \"\" in the namespace \"{namespace}\"");
    let refusals = [
        (
            "another namespace",
            vec!["-n", "team-b", "create", "configmap", "settings"],
            format!(
                "error: failed to create configmap: configmaps is forbidden: {who} cannot create resource \"configmaps\" {}",
                in_team("team-b")
            ),
        ),
        (
            "another resource",
            vec!["-n", "team-a", "create", "secret", "generic", "s"],
            format!(
                "error: failed to create secret secrets is forbidden: {who} cannot create resource \"secrets\" {}",
                in_team("team-a")
            ),
        ),
        (
            "a cluster-scoped resource",
            vec!["create", "namespace", "team-c"],
            format!(
                "Error from server (Forbidden): namespaces is forbidden: {who} cannot create resource \"namespaces\" in API group \"\" at the cluster scope"
            ),
        ),
        (
            "a name outside resourceNames",
            vec!["-n", "team-a", "get", "configmap", "other"],
            format!(
                "Error from server (Forbidden): configmaps \"other\" is forbidden: {who} cannot get resource \"configmaps\" {}",
                in_team("team-a")
            ),
        ),
        (
            "resourceNames grant no listing of everything",
            vec!["-n", "team-a", "get", "configmaps"],
            format!(
                "Error from server (Forbidden): configmaps is forbidden: {who} cannot list resource \"configmaps\" {}",
                in_team("team-a")
            ),
        ),
    ];
    for (case, args, refusal) in refusals {
        assert_eq!(
            app.fails(&args, None).await,
            format!("{refusal}\n"),
            "{case}"
        );
    }

    // The same answers to raw requests, as Status bodies.
    let token = format!(
        "Bearer {}",
        server.token_for(&User::service_account("team-a", "app"))
    );
    let bearer = [("Authorization", token.as_str())];
    let (code, body) = send(
        &server,
        "GET",
        "/api/v1/namespaces/team-a/configmaps/other",
        &bearer,
        b"",
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        body,
        forbidden(
            &format!(
                "configmaps \"other\" is forbidden: {who} cannot get resource \"configmaps\" in API group \"\" in the namespace \"team-a\""
            ),
            "",
            "configmaps",
            "other"
        )
    );
    let (code, body) = send(
        &server,
        "DELETE",
        "/apis/apps/v1/namespaces/team-a/deployments/web",
        &bearer,
        b"",
    )
    .await;
    assert_eq!(code, 403, "refused before the server looks for the object");
    assert_eq!(
        body,
        forbidden(
            &format!(
                "deployments.apps \"web\" is forbidden: {who} cannot delete resource \"deployments\" in API group \"apps\" in the namespace \"team-a\""
            ),
            "apps",
            "deployments",
            "web"
        )
    );
    let (code, body) = send(&server, "GET", "/metrics", &bearer, b"").await;
    assert_eq!(
        (code, body),
        (
            403,
            forbidden(
                &format!("forbidden: {who} cannot get path \"/metrics\""),
                "",
                "",
                ""
            )
        )
    );
    let (code, body) = send(&server, "GET", "/version", &bearer, b"").await;
    assert_eq!(
        (code, &body["major"]),
        (200, &json!("1")),
        "discovery is everyone's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_watches_naming_one_object_are_authorized_for_it() {
    let (server, admin) = tenant_server().await;
    admin
        .ok(&["-n", "team-a", "create", "configmap", "settings"], None)
        .await;
    let app = client_as(&server, &User::service_account("team-a", "app")).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(app, "team-a");
    let named = configmaps
        .list(&ListParams::default().fields("metadata.name=settings"))
        .await
        .expect("a list selecting settings is allowed");
    assert_eq!(named.items.len(), 1);
    let who = format!("User \"{APP}\"");
    assert_eq!(
        api_error(configmaps.list(&ListParams::default()).await),
        (
            403,
            format!(
                "configmaps is forbidden: {who} cannot list resource \"configmaps\" in API group \"\" in the namespace \"team-a\""
            )
        )
    );
    let watch = configmaps
        .watch(
            &WatchParams::default().fields("metadata.name=settings"),
            "0",
        )
        .await
        .expect("a watch of settings starts");
    let first = Box::pin(watch).next().await;
    let Some(Ok(WatchEvent::Added(added))) = first else {
        panic!("expected settings as ADDED, got {first:?}");
    };
    assert_eq!(added.metadata.name.as_deref(), Some("settings"));
    assert_eq!(
        api_error(
            configmaps
                .watch(&WatchParams::default(), "0")
                .await
                .map(|_| ())
        ),
        (
            403,
            format!(
                "configmaps is forbidden: {who} cannot watch resource \"configmaps\" in API group \"\" in the namespace \"team-a\""
            )
        ),
        "a watch is authorized when it starts"
    );
    assert_eq!(
        api_error(
            configmaps
                .list(&ListParams::default().fields("metadata.name=other"))
                .await
        ),
        (
            403,
            format!(
                "configmaps \"other\" is forbidden: {who} cannot list resource \"configmaps\" in API group \"\" in the namespace \"team-a\""
            )
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_role_bound_in_a_namespace_grants_only_there() {
    let (server, admin) = tenant_server().await;
    admin
        .ok(
            &["apply", "-f", "-"],
            Some(
                "
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: configmap-writer}
rules:
- {apiGroups: [''], resources: [configmaps], verbs: [get, list, create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-writes, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: configmap-writer}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}
",
            ),
        )
        .await;
    let alice = client_as(&server, &User::new("alice", ["developers"])).await;
    let team_a: Api<ConfigMap> = Api::namespaced(alice.clone(), "team-a");
    team_a
        .create(&PostParams::default(), &configmap("notes"))
        .await
        .expect("alice writes in team-a");
    assert_eq!(
        team_a
            .list(&ListParams::default())
            .await
            .expect("listed")
            .items
            .len(),
        1
    );
    let team_b: Api<ConfigMap> = Api::namespaced(alice.clone(), "team-b");
    assert_eq!(
        api_error(team_b.create(&PostParams::default(), &configmap("notes")).await),
        (403, "configmaps is forbidden: User \"alice\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"team-b\"".to_owned())
    );
    let everywhere: Api<ConfigMap> = Api::all(alice);
    assert_eq!(
        api_error(everywhere.list(&ListParams::default()).await),
        (403, "configmaps is forbidden: User \"alice\" cannot list resource \"configmaps\" in API group \"\" at the cluster scope".to_owned())
    );
}

/// A namespaced custom resource, for a role that extends `edit`.
const WIDGETS: &str = "
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: bob-edits, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}
";

const WIDGET_EDITOR: &str = "
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: widgets-edit
  labels: {rbac.authorization.k8s.io/aggregate-to-edit: 'true'}
rules:
- {apiGroups: [example.com], resources: [widgets], verbs: [create, get, list]}
";

fn widget(name: &str) -> String {
    format!(
        "{{\"apiVersion\": \"example.com/v1\", \"kind\": \"Widget\", \"metadata\": {{\"name\": \"{name}\", \"namespace\": \"team-a\"}}}}"
    )
}

/// Whether ClusterRole `role` (as kubectl prints it) has the widget rule.
async fn has_widget_rule(admin: &Kubectl, role: &str) -> bool {
    let printed = admin
        .ok(&["get", "clusterrole", role, "-o", "json"], None)
        .await;
    let role: Value = serde_json::from_str(&printed).expect("JSON");
    let rule = json!({"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["create", "get", "list"]});
    role["rules"]
        .as_array()
        .is_some_and(|rules| rules.contains(&rule))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_role_labelled_aggregate_to_edit_extends_edit_while_labelled() {
    let (server, admin) = tenant_server().await;
    admin.ok(&["apply", "-f", "-"], Some(WIDGETS)).await;
    let bob = kubectl_as(&server, &User::new("bob", Vec::<String>::new()));
    let refused = "Error from server (Forbidden): error when creating \"STDIN\": widgets.example.com is forbidden: User \"bob\" cannot create resource \"widgets\" in API group \"example.com\" in the namespace \"team-a\"\n";
    assert_eq!(
        bob.fails(&["create", "-f", "-"], Some(&widget("first")))
            .await,
        refused
    );

    admin.ok(&["apply", "-f", "-"], Some(WIDGET_EDITOR)).await;
    eventually(10, "edit and admin aggregate widgets-edit", || async {
        (has_widget_rule(&admin, "edit").await && has_widget_rule(&admin, "admin").await)
            .then_some(())
    })
    .await;
    let edit: Value = serde_json::from_str(
        &admin
            .ok(
                &[
                    "get",
                    "clusterrole",
                    "edit",
                    "-o",
                    "json",
                    "--show-managed-fields",
                ],
                None,
            )
            .await,
    )
    .expect("JSON");
    let controller: Vec<&Value> = edit["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["manager"] == "clusterrole-aggregation-controller")
        .collect();
    assert_eq!(controller.len(), 1, "{edit}");
    assert_eq!(
        (&controller[0]["operation"], &controller[0]["fieldsV1"]),
        (&json!("Apply"), &json!({"f:rules": {}}))
    );
    assert_eq!(
        bob.ok(&["create", "-f", "-"], Some(&widget("first"))).await,
        "widget.example.com/first created\n"
    );

    admin
        .ok(
            &[
                "label",
                "clusterrole",
                "widgets-edit",
                "rbac.authorization.k8s.io/aggregate-to-edit-",
            ],
            None,
        )
        .await;
    eventually(10, "edit drops the widget rule", || async {
        (!has_widget_rule(&admin, "edit").await && !has_widget_rule(&admin, "admin").await)
            .then_some(())
    })
    .await;
    assert_eq!(
        bob.fails(&["create", "-f", "-"], Some(&widget("second")))
            .await,
        refused
    );
}

/// A Role letting its holder impersonate the service accounts of `team-a`, bound to the
/// user `operator`.
const IMPERSONATOR: &str = "
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: impersonate-accounts, namespace: team-a}
rules:
- {apiGroups: [''], resources: [serviceaccounts], verbs: [impersonate]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: operator-impersonates, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: impersonate-accounts}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: operator}
";

/// A kube client for the operator acting as `user` (and `groups`).
async fn operator_as(server: &TestApiServer, user: &str, groups: &[&str]) -> kube::Client {
    let kubeconfig = server
        .kubeconfig_for(&User::new("operator", Vec::<String>::new()))
        .expect("kubeconfig written");
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kube config");
    config.auth_info.impersonate = Some(user.to_owned());
    if !groups.is_empty() {
        config.auth_info.impersonate_groups =
            Some(groups.iter().map(|g| (*g).to_owned()).collect());
    }
    kube::Client::try_from(config).expect("kube client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_needs_an_impersonate_rule_and_acts_as_the_impersonated() {
    let (server, admin) = tenant_server().await;
    admin.ok(&["apply", "-f", "-"], Some(IMPERSONATOR)).await;
    let before = server.requests();
    let as_app = operator_as(&server, APP, &[]).await;
    Api::<ConfigMap>::namespaced(as_app, "team-a")
        .create(&PostParams::default(), &configmap("settings"))
        .await
        .expect("the operator writes as team-a's app");
    let other = operator_as(&server, "system:serviceaccount:team-b:app", &[]).await;
    let refused = Api::<ConfigMap>::namespaced(other, "team-b")
        .create(&PostParams::default(), &configmap("settings"))
        .await;
    assert_eq!(
        api_error(refused),
        (403, "serviceaccounts \"app\" is forbidden: User \"operator\" cannot impersonate resource \"serviceaccounts\" in API group \"\" in the namespace \"team-b\"".to_owned())
    );
    let alice = operator_as(&server, "alice", &[]).await;
    assert_eq!(
        api_error(Api::<ConfigMap>::namespaced(alice, "team-a").list(&ListParams::default()).await),
        (403, "users \"alice\" is forbidden: User \"operator\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope".to_owned())
    );
    let masters = operator_as(&server, APP, &["system:masters"]).await;
    assert_eq!(
        api_error(Api::<ConfigMap>::namespaced(masters, "team-a").list(&ListParams::default()).await),
        (403, "groups \"system:masters\" is forbidden: User \"operator\" cannot impersonate resource \"groups\" in API group \"\" at the cluster scope".to_owned())
    );
    let counted = server.requests().since(&before);
    let key = |verb: &str, user: &str| RequestKey {
        verb: verb.into(),
        group: String::new(),
        resource: "configmaps".into(),
        user: user.into(),
    };
    assert_eq!(
        counted.counts.get(&key("create", APP)),
        Some(&1),
        "{counted:?}"
    );
    assert_eq!(counted.counts.get(&key("create", "operator")), Some(&1));
    assert_eq!(counted.counts.get(&key("list", "operator")), Some(&2));
    assert_eq!(counted.total(), 4);

    // Raw headers: extra and uid need their own rules; groups need a user.
    let token = format!(
        "Bearer {}",
        server.token_for(&User::new("operator", Vec::<String>::new()))
    );
    let (code, body) = send(
        &server,
        "GET",
        "/api/v1/namespaces/team-a/configmaps/settings",
        &[
            ("Authorization", &token),
            ("Impersonate-User", APP),
            ("Impersonate-Extra-Example.org%2Fscope", "read"),
        ],
        b"",
    )
    .await;
    assert_eq!(
        (code, body),
        (
            403,
            forbidden(
                "userextras.authentication.k8s.io \"read\" is forbidden: User \"operator\" cannot impersonate resource \"userextras/example.org/scope\" in API group \"authentication.k8s.io\" at the cluster scope",
                "authentication.k8s.io",
                "userextras",
                "read"
            )
        )
    );
    let path = "/api/v1/namespaces/team-a/configmaps";
    let (code, text) = send_text(
        &server,
        "GET",
        path,
        &[("Impersonate-Group", "developers")],
        b"",
    )
    .await;
    assert_eq!(
        (code, text.as_str()),
        (
            500,
            "Internal Server Error: \"/api/v1/namespaces/team-a/configmaps\": requested [{Group  developers    }] without impersonating a user\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_and_access_reviews_answer_from_rbac() {
    let (server, admin) = tenant_server().await;
    let app = kubectl_as(&server, &User::service_account("team-a", "app"));
    for (kubectl, extra) in [(&app, None), (&admin, Some(format!("--as={APP}")))] {
        let ask = |args: &[&str]| {
            let mut command = vec!["auth", "can-i"];
            command.extend_from_slice(args);
            if let Some(extra) = &extra {
                command.push(extra);
            }
            command
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<String>>()
        };
        for (args, answer) in [
            (vec!["create", "configmaps", "-n", "team-a"], "yes\n"),
            (vec!["create", "configmaps", "-n", "team-b"], "no\n"),
            (vec!["get", "configmaps/settings", "-n", "team-a"], "yes\n"),
            (vec!["get", "configmaps/other", "-n", "team-a"], "no\n"),
            (vec!["create", "namespaces"], "no\n"),
            (vec!["get", "/version"], "yes\n"),
            (vec!["get", "/metrics"], "no\n"),
        ] {
            let command = ask(&args);
            let command: Vec<&str> = command.iter().map(String::as_str).collect();
            let run = kubectl.run(&command, None).await;
            assert_eq!(
                (run.success, run.stdout.as_str()),
                (answer == "yes\n", answer),
                "kubectl {command:?}: {}",
                run.stderr
            );
        }
    }

    let review = json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": APP, "groups": ["system:serviceaccounts", "system:serviceaccounts:team-a", "system:authenticated"],
                 "resourceAttributes": {"namespace": "team-a", "verb": "create", "resource": "configmaps"}}
    })
    .to_string();
    let path = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
    let json_type = ("Content-Type", "application/json");
    let (code, answered) = send(&server, "POST", path, &[json_type], review.as_bytes()).await;
    assert_eq!(code, 201);
    assert_eq!(
        answered["status"],
        json!({"allowed": true, "reason": "RBAC: allowed by RoleBinding \"app-configmaps/team-a\" of Role \"configmaps\" to ServiceAccount \"app/team-a\""})
    );
    let token = format!(
        "Bearer {}",
        server.token_for(&User::service_account("team-a", "app"))
    );
    let (code, body) = send(
        &server,
        "POST",
        path,
        &[json_type, ("Authorization", &token)],
        review.as_bytes(),
    )
    .await;
    assert_eq!(
        (code, body),
        (
            403,
            forbidden(
                &format!(
                    "subjectaccessreviews.authorization.k8s.io is forbidden: User \"{APP}\" cannot create resource \"subjectaccessreviews\" in API group \"authorization.k8s.io\" at the cluster scope"
                ),
                "authorization.k8s.io",
                "subjectaccessreviews",
                ""
            )
        ),
        "only those allowed may ask about others"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_token_is_unauthorized() {
    let (server, _) = tenant_server().await;
    let before = server.requests();
    let (code, body) = send(
        &server,
        "GET",
        "/api/v1/namespaces",
        &[("Authorization", "Bearer not-a-token")],
        b"",
    )
    .await;
    assert_eq!(
        (code, body),
        (
            401,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                     "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
        )
    );
    let counted = server.requests().since(&before);
    let key = RequestKey {
        verb: "list".into(),
        group: String::new(),
        resource: "namespaces".into(),
        user: String::new(),
    };
    assert_eq!(counted.counts.get(&key), Some(&1), "counted under nobody");

    let kubeconfig = tempfile::NamedTempFile::new().expect("temporary file");
    std::fs::write(
        kubeconfig.path(),
        pequod_e2e::kubeconfig_text(server.addr(), Some("not-a-token")),
    )
    .expect("kubeconfig written");
    let stranger = Kubectl::with_kubeconfig(kubeconfig.path());
    let refused = stranger.fails(&["get", "namespaces"], None).await;
    let mut lines: Vec<&str> = refused.lines().collect();
    assert_eq!(
        lines.pop(),
        Some(
            "error: You must be logged in to the server (the server has asked for the client to provide credentials)"
        )
    );
    // Before giving up, kubectl retries discovery (each line with its time and pid).
    assert!(
        lines.iter().all(|line| line.ends_with("\"couldn't get current server API group list: the server has asked for the client to provide credentials\"")),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_authorize_every_user_may_do_anything() {
    let server = server_with(Config {
        simulate: false,
        ..Config::default()
    })
    .await;
    let nobody = kubectl_as(&server, &User::new("nobody", Vec::<String>::new()));
    assert_eq!(
        nobody.ok(&["create", "namespace", "team-a"], None).await,
        "namespace/team-a created\n"
    );
    assert_eq!(
        nobody
            .ok(&["auth", "can-i", "delete", "namespaces"], None)
            .await,
        "yes\n"
    );
    let before = server.requests();
    let as_app = nobody
        .ok(
            &[
                "-n",
                "team-a",
                "create",
                "configmap",
                "c",
                &format!("--as={APP}"),
            ],
            None,
        )
        .await;
    assert_eq!(as_app, "configmap/c created\n");
    let counted = server.requests().since(&before);
    let created = RequestKey {
        verb: "create".into(),
        group: String::new(),
        resource: "configmaps".into(),
        user: APP.into(),
    };
    assert_eq!(counted.counts.get(&created), Some(&1), "{counted:?}");
    let admin = client(&server).await;
    Api::<ConfigMap>::namespaced(admin, "team-a")
        .get("c")
        .await
        .expect("the admin's kubeconfig needs no credentials");
}
