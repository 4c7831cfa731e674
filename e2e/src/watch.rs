//! Watch streams: newline-delimited JSON events over a chunked HTTP 200 response, as the
//! Kubernetes API server sends them.

use crate::resources::ResourceType;
use crate::status::ApiError;
use crate::store::{Event, EventType, Selection, Store};
use crate::{metadata, table};
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::channel::mpsc;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// What a watch request asked for.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    /// Requested version of the objects.
    pub version: String,
    /// Namespace, labels, fields.
    pub selection: Selection,
    /// `resourceVersion`: None (or "0") starts with the current objects as ADDED events.
    pub since: Option<u64>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `sendInitialEvents`: the initial ADDED events end with a bookmark annotated
    /// `k8s.io/initial-events-end`.
    pub initial_events_end: bool,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
    /// Events' objects whole, as Tables (`kubectl get -w`) or as their metadata.
    pub presentation: Presentation,
}

/// How the objects of an answer are presented, as its `Accept` header asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presentation {
    /// Whole (JSON).
    Object,
    /// `meta.k8s.io/v1 Table` rows (`kubectl get`).
    Table,
    /// `meta.k8s.io/v1 PartialObjectMetadata`: the metadata only.
    Metadata,
}

/// How often bookmarks are sent when allowed.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(2);

/// One watch event line.
fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

/// Starts a watch: HTTP 200 at once, then one line per event until the timeout, the client
/// leaving or `shutdown`. A resourceVersion the server no longer remembers is answered, as
/// Kubernetes does, by a single `ERROR` event carrying a 410 Expired Status.
pub fn serve(
    store: Arc<Store>,
    ty: Arc<ResourceType>,
    request: WatchRequest,
    shutdown: CancellationToken,
) -> Response {
    let (sender, receiver) = mpsc::unbounded::<Result<Bytes, std::convert::Infallible>>();
    let content_type = match request.presentation {
        Presentation::Table => table::CONTENT_TYPE,
        Presentation::Metadata => metadata::CONTENT_TYPE,
        Presentation::Object => "application/json",
    };
    match store.subscribe(&ty, request.since, &request.selection) {
        Err(error) => {
            let _ = sender.unbounded_send(Ok(line("ERROR", &error.body())));
        }
        Ok(subscription) => {
            tokio::spawn(stream(ty, request, subscription, sender, shutdown));
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(receiver),
    )
        .into_response()
}

type Sender = mpsc::UnboundedSender<Result<Bytes, std::convert::Infallible>>;

async fn stream(
    ty: Arc<ResourceType>,
    request: WatchRequest,
    subscription: crate::store::Subscription,
    sender: Sender,
    shutdown: CancellationToken,
) {
    let send = |kind: &str, object: &Value| -> bool {
        let object = present(&ty, &request, object.clone());
        sender.unbounded_send(Ok(line(kind, &object))).is_ok()
    };
    let mut last_seen = subscription.resource_version;
    for (_, object) in &subscription.initial {
        if !send("ADDED", object) {
            return;
        }
    }
    if request.initial_events_end && request.bookmarks {
        let bookmark = bookmark(&ty, &request, last_seen, true);
        if sender
            .unbounded_send(Ok(line("BOOKMARK", &bookmark)))
            .is_err()
        {
            return;
        }
    }
    for event in &subscription.backlog {
        last_seen = event.rv;
        if let Some((kind, object)) = filter(event, &request.selection)
            && !send(kind, object)
        {
            return;
        }
    }
    let mut receiver = subscription.receiver;
    let deadline = request.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
    ticker.tick().await;
    loop {
        let timeout = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = timeout => return,
            _ = ticker.tick() => {
                if sender.is_closed() {
                    return;
                }
                if request.bookmarks {
                    let bookmark = bookmark(&ty, &request, last_seen, false);
                    if sender.unbounded_send(Ok(line("BOOKMARK", &bookmark))).is_err() {
                        return;
                    }
                }
            }
            event = receiver.recv() => match event {
                Ok(event) => {
                    if event.rv <= last_seen {
                        continue;
                    }
                    last_seen = event.rv;
                    if event.gr != ty.gr {
                        continue;
                    }
                    if let Some((kind, object)) = filter(&event, &request.selection)
                        && !send(kind, object) {
                            return;
                        }
                }
                Err(RecvError::Lagged(_)) => {
                    // This watcher fell behind the event buffer: tell it to start over.
                    let error = ApiError::expired("the watch fell behind and its events were dropped; list again");
                    let _ = sender.unbounded_send(Ok(line("ERROR", &error.body())));
                    return;
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}

/// The event a watcher with `selection` sees for `event`: objects entering the selection
/// are ADDED, objects leaving it DELETED.
fn filter<'e>(event: &'e Event, selection: &Selection) -> Option<(&'static str, &'e Value)> {
    let now = selection.matches(&event.namespace, &event.object);
    match event.kind {
        EventType::Added | EventType::Deleted => {
            now.then_some((event.kind.as_str(), &event.object))
        }
        EventType::Modified => {
            let before = event
                .old
                .as_ref()
                .is_some_and(|old| selection.matches(&event.namespace, old));
            match (before, now) {
                (true, true) => Some(("MODIFIED", &event.object)),
                (false, true) => Some(("ADDED", &event.object)),
                (true, false) => Some(("DELETED", &event.object)),
                (false, false) => None,
            }
        }
    }
}

/// The object as the watcher asked for it: in its version, as a Table row or its metadata
/// if asked.
fn present(ty: &ResourceType, request: &WatchRequest, mut object: Value) -> Value {
    object["apiVersion"] = json!(ty.api_version(&request.version));
    match request.presentation {
        Presentation::Table => {
            let rv = object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_owned);
            table::table(ty, &[object], rv, None)
        }
        Presentation::Metadata => metadata::partial(&object),
        Presentation::Object => object,
    }
}

fn bookmark(ty: &ResourceType, request: &WatchRequest, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let object =
        json!({"kind": ty.kind, "apiVersion": ty.api_version(&request.version), "metadata": meta});
    match request.presentation {
        Presentation::Metadata => metadata::partial(&object),
        Presentation::Table | Presentation::Object => object,
    }
}
