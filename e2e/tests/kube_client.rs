//! The same server through an unmodified `kube` client: dynamic objects, server-side apply,
//! the watcher, optimistic concurrency, the status subresource, selectors and paging,
//! garbage collection, namespaces, faults and shutdown.

mod common;

use common::{client, defaulted_deployment_spec, server, server_with};
use futures::{StreamExt, TryStreamExt};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, PropagationPolicy, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use pequod_e2e::faults::{Fault, FaultAction};
use pequod_e2e::testing::eventually;
use serde_json::{Value, json};
use std::time::Duration;

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn configmaps(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &resource("", "v1", "ConfigMap", "configmaps"),
    )
}

fn deployments(client: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        "default",
        &resource("apps", "v1", "Deployment", "deployments"),
    )
}

/// The next item of a watch stream, within 10 s.
async fn next_event<T, E: std::fmt::Debug>(
    stream: &mut (impl futures::Stream<Item = Result<T, E>> + Unpin),
) -> T {
    tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .expect("event in time")
        .expect("no watch error")
        .expect("stream open")
}

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("a valid object")
}

fn api_error(error: kube::Error) -> (u16, String, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.reason.clone(), status.message.clone()),
        other => panic!("expected an API error, got {other}"),
    }
}

fn deployment(replicas: i64, image: &str) -> DynamicObject {
    object(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "web", "image": image, "env": [{"name": "A", "value": "1"}]}
            ]}}
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_server_side_apply() {
    let server = server().await;
    let client = client(&server).await;
    let gvk = GroupVersionKind::gvk("apps", "v1", "Deployment");
    let (found, capabilities) = kube::discovery::pinned_kind(&client, &gvk)
        .await
        .expect("discovered");
    assert_eq!(found.plural, "deployments");
    assert_eq!(capabilities.scope, kube::discovery::Scope::Namespaced);

    let api = deployments(&client);
    let applied = api
        .patch(
            "web",
            &PatchParams::apply("pequod"),
            &Patch::Apply(deployment(2, "nginx:1")),
        )
        .await
        .expect("applied");
    assert_eq!(applied.metadata.generation, Some(1));
    let entries = applied.metadata.managed_fields.clone().unwrap_or_default();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].manager.as_deref(), Some("pequod"));
    assert_eq!(entries[0].operation.as_deref(), Some("Apply"));

    // Another manager's conflicting apply: 409 naming the manager and the field.
    let mut other = deployment(3, "nginx:1");
    other.data["spec"]["template"]["spec"]["containers"][0] =
        json!({"name": "web", "image": "nginx:2"});
    let error = api
        .patch(
            "web",
            &PatchParams::apply("intruder"),
            &Patch::Apply(other.clone()),
        )
        .await
        .expect_err("conflict");
    let (code, reason, message) = api_error(error);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert_eq!(
        message,
        "Apply failed with 2 conflicts: conflicts with \"pequod\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"web\"].image"
    );
    let forced = api
        .patch(
            "web",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(other),
        )
        .await
        .expect("forced");
    assert_eq!(forced.data["spec"]["replicas"], 3);
    assert_eq!(forced.metadata.generation, Some(2));

    // pequod re-applies without env: its env entry is removed (nobody else owns it); the
    // container's defaults, owned by nobody, stay.
    let mut without_env = deployment(3, "nginx:2");
    without_env.data["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .map(|c| c.remove("env"));
    let reapplied = api
        .patch(
            "web",
            &PatchParams::apply("pequod").force(),
            &Patch::Apply(without_env),
        )
        .await
        .expect("re-applied");
    assert_eq!(
        reapplied.data["spec"]["template"]["spec"]["containers"][0],
        json!({"name": "web", "image": "nginx:2", "imagePullPolicy": "IfNotPresent",
               "terminationMessagePath": "/dev/termination-log",
               "terminationMessagePolicy": "File"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_concurrency_and_status_split() {
    let server = server().await;
    let client = client(&server).await;
    let api = deployments(&client);
    server
        .simulator()
        .never_ready("Deployment", "default", "web");
    let created = api
        .create(&PostParams::default(), &deployment(1, "nginx:1"))
        .await
        .expect("created");
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let error = api
        .create(&PostParams::default(), &deployment(1, "nginx:1"))
        .await
        .expect_err("already exists");
    assert_eq!(
        api_error(error),
        (
            409,
            "AlreadyExists".into(),
            "deployments.apps \"web\" already exists".into()
        )
    );

    // Wait for the simulated controller's first status write, then race it no more.
    let observed = eventually(10, "observedGeneration 1", || {
        let api = api.clone();
        async move {
            let web = api.get("web").await.ok()?;
            (web.data["status"]["observedGeneration"] == 1).then_some(web)
        }
    })
    .await;
    let mut stale = observed.clone();
    let mut fresh = observed.clone();
    fresh.data["spec"]["replicas"] = json!(4);
    let replaced = api
        .replace("web", &PostParams::default(), &fresh)
        .await
        .expect("replaced");
    assert_eq!(replaced.metadata.generation, Some(2));
    stale.data["spec"]["replicas"] = json!(7);
    let error = api
        .replace("web", &PostParams::default(), &stale)
        .await
        .expect_err("stale");
    assert_eq!(
        api_error(error),
        (
            409,
            "Conflict".into(),
            "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again".into()
        )
    );

    // The main resource ignores status; /status changes only status, generation unchanged.
    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 9}})),
        )
        .await
        .expect("merge patch");
    assert_ne!(patched.data["status"]["replicas"], 9);
    let status = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}, "status": {"replicas": 9}})),
        )
        .await
        .expect("status patch");
    assert_eq!(status.data["status"]["replicas"], 9);
    assert_eq!(status.data["spec"]["replicas"], 4);
    assert_eq!(status.metadata.generation, Some(2));
    // A label change is not a spec change.
    let labelled = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "front"}}})),
        )
        .await
        .expect("label patch");
    assert_eq!(labelled.metadata.generation, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_types() {
    let server = server().await;
    let client = client(&server).await;
    let api = deployments(&client);
    api.create(&PostParams::default(), &deployment(1, "nginx:1"))
        .await
        .expect("created");
    let strategic = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "sidecar", "image": "envoy:1"}
            ]}}}})),
        )
        .await
        .expect("strategic merge patch");
    let names: Vec<&str> = strategic.data["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    // As in Kubernetes, elements the original lacks come first.
    assert_eq!(names, ["sidecar", "web"]);
    let json_patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "replace", "path": "/spec/replicas", "value": 6}
                ]))
                .expect("JSON patch"),
            ),
        )
        .await
        .expect("JSON patch applied");
    assert_eq!(json_patched.data["spec"]["replicas"], 6);
    let failed_test = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "test", "path": "/spec/replicas", "value": 1}
                ]))
                .expect("JSON patch"),
            ),
        )
        .await
        .expect_err("failing test op");
    assert_eq!(
        api_error(failed_test),
        (
            422,
            "Invalid".into(),
            "testing value /spec/replicas failed: test failed".into()
        )
    );
    // Leases, as leader election uses them: created, then renewed with an update.
    let leases: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &resource("coordination.k8s.io", "v1", "Lease", "leases"),
    );
    let lease = leases
        .create(
            &PostParams::default(),
            &object(
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                           "metadata": {"name": "pequod-leader"},
                           "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}),
            ),
        )
        .await
        .expect("lease created");
    let mut renewed = lease.clone();
    renewed.data["spec"]["holderIdentity"] = json!("b");
    let renewed = leases
        .replace("pequod-leader", &PostParams::default(), &renewed)
        .await
        .expect("lease renewed");
    assert_eq!(renewed.data["spec"]["holderIdentity"], "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_and_paging() {
    let server = server().await;
    let client = client(&server).await;
    let api = configmaps(&client, "default");
    for (name, tier) in [
        ("a", "front"),
        ("b", "back"),
        ("c", "front"),
        ("d", "db"),
        ("e", "front"),
    ] {
        api.create(
            &PostParams::default(),
            &object(json!({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": name, "labels": {"tier": tier}}})),
        )
        .await
        .expect("created");
    }
    let names = |list: &kube::core::ObjectList<DynamicObject>| -> Vec<String> {
        list.items
            .iter()
            .filter_map(|o| o.metadata.name.clone())
            .collect()
    };
    let front = api
        .list(&ListParams::default().labels("tier=front"))
        .await
        .expect("list");
    assert_eq!(names(&front), ["a", "c", "e"]);
    let not_front = api
        .list(&ListParams::default().labels("tier notin (front),tier"))
        .await
        .expect("list");
    assert_eq!(names(&not_front), ["b", "d"]);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=d"))
        .await
        .expect("list");
    assert_eq!(names(&by_name), ["d"]);
    let error = api
        .list(&ListParams::default().fields("spec.nonsense=x"))
        .await
        .expect_err("unsupported field");
    assert_eq!(
        api_error(error),
        (
            400,
            "BadRequest".into(),
            "field label not supported: spec.nonsense".into()
        )
    );

    let first = api
        .list(&ListParams::default().limit(2))
        .await
        .expect("page 1");
    assert_eq!(names(&first), ["a", "b"]);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().expect("continue token");
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("page 2");
    assert_eq!(names(&second), ["c", "d"]);
    let token = second.metadata.continue_.clone().expect("continue token");
    let last = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("page 3");
    assert_eq!(names(&last), ["e"]);
    assert_eq!(last.metadata.continue_, None);

    let deleted = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("tier=front"),
        )
        .await;
    assert!(deleted.is_ok());
    let left = api.list(&ListParams::default()).await.expect("list");
    assert_eq!(names(&left), ["b", "d"]);
}

/// Metadata only (`metadata_watcher`, `get_metadata`, `list_metadata`): what Kubernetes
/// sends as PartialObjectMetadata, the data left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_gets_lists_and_watches() {
    let server = server().await;
    let client = client(&server).await;
    let api = configmaps(&client, "default");
    let typed: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "default");
    let metadata: Api<kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::ConfigMap>> =
        Api::namespaced(client.clone(), "default");
    let mut stream = watcher(metadata, watcher::Config::default().labels("watched=yes"))
        .applied_objects()
        .boxed();
    let watched = |value: &str| {
        object(json!({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "meta", "labels": {"watched": "yes"}},
                      "data": {"v": value}}))
    };
    let created = api
        .create(&PostParams::default(), &watched("1"))
        .await
        .expect("created");
    let seen = next_event(&mut stream).await;
    assert_eq!(seen.metadata.name.as_deref(), Some("meta"));
    assert_eq!(
        seen.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(
        seen.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    let updated = api
        .patch(
            "meta",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": "2"}})),
        )
        .await
        .expect("patched");
    let next = next_event(&mut stream).await;
    assert_eq!(
        next.metadata.resource_version,
        updated.metadata.resource_version
    );
    let one = typed.get_metadata("meta").await.expect("metadata");
    assert_eq!(
        one.metadata.labels.as_ref().map(|l| l["watched"].as_str()),
        Some("yes")
    );
    let all = typed
        .list_metadata(&ListParams::default().labels("watched=yes"))
        .await
        .expect("listed");
    assert_eq!(all.items.len(), 1);
    assert_eq!(
        all.items[0].metadata.resource_version,
        updated.metadata.resource_version
    );
    // The raw answer holds no data.
    let (code, raw) = common::send(
        &server,
        "GET",
        "/api/v1/namespaces/default/configmaps?labelSelector=watched%3Dyes",
        &[(
            "Accept",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )],
        b"",
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(raw["kind"], "PartialObjectMetadataList");
    assert_eq!(raw["items"][0]["kind"], "PartialObjectMetadata");
    assert!(raw["items"][0].get("data").is_none(), "{raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_changes_and_410_on_expired_versions() {
    let server = server().await;
    let client = client(&server).await;
    let api = configmaps(&client, "default");
    let mut stream = watcher(
        api.clone(),
        watcher::Config::default().labels("watched=yes"),
    )
    .applied_objects()
    .boxed();
    let watched = |name: &str, value: &str| {
        object(json!({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": name, "labels": {"watched": "yes"}},
                      "data": {"v": value}}))
    };
    api.create(&PostParams::default(), &watched("one", "1"))
        .await
        .expect("created");
    let seen = next_event(&mut stream).await;
    assert_eq!(seen.metadata.name.as_deref(), Some("one"));
    api.patch(
        "one",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .expect("patched");
    let updated = next_event(&mut stream).await;
    assert_eq!(updated.data["data"]["v"], "2");

    // A raw watch from a compacted version gets an ERROR event with 410 Expired.
    let old_version = seen
        .metadata
        .resource_version
        .clone()
        .expect("resourceVersion");
    server.store().compact();
    api.create(&PostParams::default(), &watched("two", "1"))
        .await
        .expect("created");
    let mut raw = api
        .watch(&WatchParams::default(), &old_version)
        .await
        .expect("watch started")
        .boxed();
    let event = next_event(&mut raw).await;
    match event {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        }
        other => panic!("expected 410, got {other:?}"),
    }
    // The watcher itself relists and keeps going.
    let next = next_event(&mut stream).await;
    assert_eq!(next.metadata.name.as_deref(), Some("two"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_bookmarks_timeout_and_shutdown() {
    let server = server().await;
    let client = client(&server).await;
    let api = configmaps(&client, "default");
    let list = api.list(&ListParams::default()).await.expect("list");
    let version = list
        .metadata
        .resource_version
        .clone()
        .expect("list resourceVersion");
    let params = WatchParams::default().timeout(3);
    let events: Vec<_> = api
        .watch(&params, &version)
        .await
        .expect("watch")
        .collect()
        .await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Ok(WatchEvent::Bookmark(_)))),
        "bookmarks within 3 s: {events:?}"
    );
    let mut open = api
        .watch(&WatchParams::default(), &version)
        .await
        .expect("watch")
        .boxed();
    server.stop().await;
    let ended = tokio::time::timeout(Duration::from_secs(10), open.next())
        .await
        .expect("stream ended on shutdown");
    assert!(ended.is_none() || ended.is_some_and(|e| e.is_err()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_references_are_garbage_collected() {
    let server = server().await;
    let client = client(&server).await;
    let api = configmaps(&client, "default");
    let owner = |name: &str| {
        object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}))
    };
    let dependent = |name: &str, owner: &DynamicObject, extra: Value| {
        let mut metadata = json!({"name": name, "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name,
            "uid": owner.metadata.uid, "blockOwnerDeletion": true
        }]});
        if let (Some(m), Some(e)) = (metadata.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}))
    };
    let exists = |api: Api<DynamicObject>, name: &'static str| async move {
        api.get_opt(name).await.expect("get").is_some()
    };

    // Background: the owner goes, then its dependents.
    let parent = api
        .create(&PostParams::default(), &owner("parent"))
        .await
        .expect("owner");
    api.create(
        &PostParams::default(),
        &dependent("child", &parent, json!({})),
    )
    .await
    .expect("dependent");
    api.delete("parent", &DeleteParams::background())
        .await
        .expect("deleted");
    assert!(!exists(api.clone(), "parent").await);
    assert!(!exists(api.clone(), "child").await);

    // Foreground: the owner waits for a dependent held by a finalizer.
    let parent = api
        .create(&PostParams::default(), &owner("parent2"))
        .await
        .expect("owner");
    api.create(
        &PostParams::default(),
        &dependent("held", &parent, json!({"finalizers": ["example.com/hold"]})),
    )
    .await
    .expect("dependent");
    api.delete("parent2", &DeleteParams::foreground())
        .await
        .expect("deleting");
    let waiting = api.get("parent2").await.expect("owner still there");
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert_eq!(
        waiting.metadata.finalizers,
        Some(vec!["foregroundDeletion".to_owned()])
    );
    assert!(
        api.get("held")
            .await
            .expect("dependent")
            .metadata
            .deletion_timestamp
            .is_some()
    );
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("finalizer removed");
    assert!(!exists(api.clone(), "held").await);
    assert!(!exists(api.clone(), "parent2").await);

    // Orphan: dependents stay, without the reference.
    let parent = api
        .create(&PostParams::default(), &owner("parent3"))
        .await
        .expect("owner");
    api.create(
        &PostParams::default(),
        &dependent("orphan", &parent, json!({})),
    )
    .await
    .expect("dependent");
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..DeleteParams::default()
    };
    api.delete("parent3", &params).await.expect("deleted");
    let orphan = api.get("orphan").await.expect("orphan kept");
    assert_eq!(orphan.metadata.owner_references, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_scope_and_terminate() {
    let server = server().await;
    let client = client(&server).await;
    let namespaces: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &resource("", "v1", "Namespace", "namespaces"),
    );
    let error = configmaps(&client, "nowhere")
        .create(
            &PostParams::default(),
            &object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})),
        )
        .await
        .expect_err("no such namespace");
    assert_eq!(
        api_error(error),
        (
            404,
            "NotFound".into(),
            "namespaces \"nowhere\" not found".into()
        )
    );
    namespaces
        .create(
            &PostParams::default(),
            &object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})),
        )
        .await
        .expect("namespace");
    let team = configmaps(&client, "team");
    team.create(
        &PostParams::default(),
        &object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held", "finalizers": ["example.com/hold"]}})),
    )
    .await
    .expect("configmap");
    let all: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &resource("", "v1", "ConfigMap", "configmaps"),
    );
    let everywhere = all
        .list(&ListParams::default())
        .await
        .expect("list across namespaces");
    assert_eq!(everywhere.items.len(), 1);
    namespaces
        .delete("team", &DeleteParams::default())
        .await
        .expect("deleting");
    let terminating = namespaces.get("team").await.expect("still there");
    assert_eq!(terminating.data["status"]["phase"], "Terminating");
    let error = team
        .create(
            &PostParams::default(),
            &object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}})),
        )
        .await
        .expect_err("terminating namespace");
    assert_eq!(
        api_error(error),
        (403, "Forbidden".into(), "configmaps \"late\" is forbidden: unable to create new content in namespace team because it is being terminated".into())
    );
    team.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("finalizer removed");
    assert!(namespaces.get_opt("team").await.expect("get").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_and_simulated_readiness() {
    let server = server().await;
    let client = client(&server).await;
    let api = deployments(&client);
    server.faults().add(
        Fault::new(FaultAction::InternalError)
            .on("deployments")
            .method("POST")
            .times(1),
    );
    let error = api
        .create(&PostParams::default(), &deployment(1, "nginx:1"))
        .await
        .expect_err("500");
    assert_eq!(api_error(error).0, 500);
    // kube retries a 429 after the server's Retry-After.
    server.faults().add(
        Fault::new(FaultAction::Throttle {
            retry_after_seconds: 1,
        })
        .on("deployments")
        .times(1),
    );
    let started = std::time::Instant::now();
    api.create(&PostParams::default(), &deployment(2, "nginx:1"))
        .await
        .expect("created after the 429");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(server.faults().hits(), 2);
    // Latency delays the answer, nothing more.
    server.faults().add(
        Fault::new(FaultAction::Latency(Duration::from_millis(400)))
            .on("deployments")
            .method("GET")
            .named("web")
            .times(1),
    );
    let started = std::time::Instant::now();
    api.get("web").await.expect("read after the delay");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(server.faults().hits(), 3);
    let available = eventually(10, "Deployment Available", || {
        let api = api.clone();
        async move {
            let web = api.get("web").await.ok()?;
            let conditions = web.data["status"]["conditions"].as_array()?.clone();
            conditions
                .iter()
                .any(|c| c["type"] == "Available" && c["status"] == "True")
                .then_some(web)
        }
    })
    .await;
    assert_eq!(available.data["status"]["availableReplicas"], 2);
    assert_eq!(available.data["status"]["observedGeneration"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_naming_a_stale_resource_version_conflicts() {
    let server = server().await;
    let client = client(&server).await;
    let api = configmaps(&client, "default");
    let first = api
        .patch(
            "cfg",
            &PatchParams::apply("one"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": "cfg"}, "data": {"a": "1"}})),
        )
        .await
        .expect("created");
    let seen = first
        .metadata
        .resource_version
        .clone()
        .expect("a resourceVersion");
    api.patch(
        "cfg",
        &PatchParams::apply("one"),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": "cfg"}, "data": {"a": "2"}})),
    )
    .await
    .expect("updated");
    let error = api
        .patch(
            "cfg",
            &PatchParams::apply("one").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": "cfg", "resourceVersion": seen},
                                 "data": {"a": "3"}})),
        )
        .await
        .expect_err("stale");
    assert_eq!(
        api_error(error),
        (
            409,
            "Conflict".into(),
            "Operation cannot be fulfilled on configmaps \"cfg\": the object has been modified; please apply your changes to the latest version and try again".into()
        )
    );
}

/// What Pequod applies: a Deployment with non-canonical quantities and none of the defaults.
fn rendered(cpu: &str, memory: &str, limit: &str) -> DynamicObject {
    object(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "web", "image": "nginx:1.27",
                 "resources": {"requests": {"cpu": cpu, "memory": memory},
                               "limits": {"memory": limit}}}
            ]}}
        }
    }))
}

/// The server side of the operator's drift detection: an applied object comes back with
/// the defaults and canonical quantities a real API server writes, the defaults belong to
/// nobody, and applying it again changes neither its spec nor its generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_objects_come_back_defaulted_and_canonical() {
    let server = server_with(pequod_e2e::Config {
        simulate: false,
        ..pequod_e2e::Config::default()
    })
    .await;
    let client = client(&server).await;
    let api = deployments(&client);
    let params = PatchParams::apply("pequod");
    let first = api
        .patch(
            "web",
            &params,
            &Patch::Apply(rendered("0.5", "1024Mi", "1.5Gi")),
        )
        .await
        .expect("applied");
    assert_eq!(
        first.data["spec"],
        defaulted_deployment_spec(
            1,
            "web",
            json!({"name": "web", "image": "nginx:1.27",
                   "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                                 "limits": {"memory": "1536Mi"}}})
        )
    );
    let owned = |object: &DynamicObject| {
        let entries = object.metadata.managed_fields.clone().unwrap_or_default();
        assert_eq!(entries.len(), 1);
        serde_json::to_value(&entries[0].fields_v1).expect("fieldsV1")
    };
    // Pequod owns what it applied, not the defaults.
    assert_eq!(
        owned(&first),
        json!({"f:spec": {"f:selector": {}, "f:template": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                ".": {}, "f:image": {}, "f:name": {},
                "f:resources": {"f:limits": {"f:memory": {}},
                                "f:requests": {"f:cpu": {}, "f:memory": {}}}
            }}}
        }}})
    );

    // The same configuration again: same spec, same generation, same ownership. (Its
    // resourceVersion may move: as in Kubernetes, "0.5" differs from the stored "500m" as
    // applied, so the apply entry's time is renewed when a second has passed.)
    let second = api
        .patch(
            "web",
            &params,
            &Patch::Apply(rendered("0.5", "1024Mi", "1.5Gi")),
        )
        .await
        .expect("re-applied");
    assert_eq!(second.data["spec"], first.data["spec"]);
    assert_eq!(second.metadata.generation, Some(1));
    assert_eq!(owned(&second), owned(&first));

    // The configuration as stored: nothing to write at all.
    let canonical = api
        .patch(
            "web",
            &params,
            &Patch::Apply(rendered("500m", "1Gi", "1536Mi")),
        )
        .await
        .expect("applied canonical");
    assert_eq!(
        canonical.metadata.resource_version,
        second.metadata.resource_version
    );
    assert_eq!(canonical.data["spec"], first.data["spec"]);
    assert_eq!(canonical.metadata.generation, Some(1));
}
