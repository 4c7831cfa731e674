//! The Kubernetes Events the operator publishes (`events.k8s.io/v1`), a repeat of a recent
//! one counted on it instead of written again.
//!
//! kube's `Recorder` remembers every event it published for six minutes in one map behind one
//! lock, scanned whole on every publish, that never gives its memory back: a fleet of
//! thousands of Transforms, a few events each, kept megabytes in it and every publish waited
//! on the scan. This publisher remembers what a repeat needs (the Event's name and count) of
//! the last [`REMEMBERED`] distinct events, as client-go's recorder does with its cache of
//! 4,096: an event identical to one of them (same object, type, reason and note) adds to its
//! `series` (a merge patch), anything else is a new Event.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::Mutex;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use lru::LruCache;
use serde_json::json;

/// How many distinct recent events a repeat is recognised against.
pub const REMEMBERED: NonZeroUsize = NonZeroUsize::new(4096).expect("not zero");

/// Where an event published before is, and how often it happened.
#[derive(Clone, Debug)]
struct Published {
    name: String,
    count: i32,
}

/// Publishes Events as one controller (and instance) of the operator.
pub struct Publisher {
    client: kube::Client,
    controller: String,
    instance: String,
    /// Recent distinct events, by the hash of what makes them the same.
    recent: Mutex<LruCache<u64, Published>>,
}

/// An event to publish about an object.
#[derive(Debug, Hash)]
pub struct Note<'a> {
    pub type_: EventType,
    pub reason: &'a str,
    pub note: &'a str,
}

impl Publisher {
    /// Publishes as `controller`; `instance` (the pod's name) tells replicas apart.
    pub fn new(client: kube::Client, controller: &str, instance: Option<String>) -> Self {
        Publisher {
            client,
            controller: controller.to_string(),
            instance: instance.unwrap_or_else(|| controller.to_string()),
            recent: Mutex::new(LruCache::new(REMEMBERED)),
        }
    }

    /// Publishes `event` about the object `regarding`: a new Event, or one more in the series
    /// of a recent identical one (a new Event again if that one is gone).
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        event: &Note<'_>,
    ) -> Result<(), kube::Error> {
        let key = same_event(regarding, event);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let now = MicroTime(Timestamp::now());
        if let Some(repeat) = self.repeat(key) {
            let series = json!({"series": {"count": repeat.count, "lastObservedTime": now}});
            match events
                .patch(
                    &repeat.name,
                    &PatchParams::default(),
                    &Patch::Merge(&series),
                )
                .await
            {
                Ok(_) => return Ok(()),
                // Expired or deleted: published anew.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.0.as_nanosecond()
        );
        let created = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.to_string()),
                ..ObjectMeta::default()
            },
            action: Some(event.reason.to_string()),
            reason: Some(event.reason.to_string()),
            note: Some(event.note.to_string()),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_string(),
            ),
            event_time: Some(now),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        events.create(&PostParams::default(), &created).await?;
        self.remember(key, Published { name, count: 1 });
        Ok(())
    }

    /// The recent event `key` names, counted once more.
    fn repeat(&self, key: u64) -> Option<Published> {
        let mut recent = self.recent.lock().ok()?;
        let published = recent.get_mut(&key)?;
        published.count = published.count.saturating_add(1);
        Some(published.clone())
    }

    fn remember(&self, key: u64, published: Published) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.put(key, published);
        }
    }
}

/// What makes two events the same: the object (by uid too: a namesake created later is
/// another object), the type, the reason and the note.
fn same_event(regarding: &ObjectReference, event: &Note<'_>) -> u64 {
    let mut hasher = DefaultHasher::new();
    (
        &regarding.api_version,
        &regarding.kind,
        &regarding.namespace,
        &regarding.name,
        &regarding.uid,
    )
        .hash(&mut hasher);
    event.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::config::{KubeConfigOptions, Kubeconfig};
    use pequod_e2e::{Config, TestApiServer};

    async fn client(server: &TestApiServer) -> kube::Client {
        let kubeconfig = Kubeconfig::read_from(server.kubeconfig()).expect("kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("kubeconfig accepted");
        kube::Client::try_from(config).expect("client")
    }

    /// (name, note, series count) of every Event in `default`, oldest first.
    async fn published(events: &Api<Event>) -> Vec<(String, String, Option<i32>)> {
        let mut list = events
            .list(&Default::default())
            .await
            .expect("listed")
            .items;
        list.sort_by_key(|event| event.event_time.clone().map(|time| time.0));
        list.into_iter()
            .map(|event| {
                (
                    event.metadata.name.unwrap_or_default(),
                    event.note.unwrap_or_default(),
                    event.series.map(|series| series.count),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_repeated_event_is_counted_on_the_first_and_a_different_one_is_new() {
        let server = TestApiServer::start(Config::default())
            .await
            .expect("test API server starts");
        let client = client(&server).await;
        let events: Api<Event> = Api::namespaced(client.clone(), "default");
        let publisher = Publisher::new(client, "pequod", Some("pequod-0".into()));
        let regarding = ObjectReference {
            api_version: Some("pequod.io/v1alpha1".into()),
            kind: Some("Transform".into()),
            namespace: Some("default".into()),
            name: Some("shop".into()),
            uid: Some("u-1".into()),
            ..ObjectReference::default()
        };
        let rendered = |note| Note {
            type_: EventType::Normal,
            reason: "Rendered",
            note,
        };

        publisher
            .publish(&regarding, &rendered("4 nodes"))
            .await
            .expect("published");
        let first = published(&events).await;
        assert_eq!(first.len(), 1);
        let (name, _, _) = first[0].clone();
        let event = events.get(&name).await.expect("an Event");
        assert_eq!(event.reason.as_deref(), Some("Rendered"));
        assert_eq!(event.action.as_deref(), Some("Rendered"));
        assert_eq!(event.type_.as_deref(), Some("Normal"));
        assert_eq!(event.reporting_controller.as_deref(), Some("pequod"));
        assert_eq!(event.reporting_instance.as_deref(), Some("pequod-0"));
        assert_eq!(event.regarding.as_ref(), Some(&regarding));
        assert!(name.starts_with("shop."), "{name}");

        for _ in 0..2 {
            publisher
                .publish(&regarding, &rendered("4 nodes"))
                .await
                .expect("published");
        }
        assert_eq!(
            published(&events).await,
            [(name.clone(), "4 nodes".to_string(), Some(3))],
            "repeats counted on the first"
        );

        publisher
            .publish(&regarding, &rendered("5 nodes"))
            .await
            .expect("published");
        let after = published(&events).await;
        assert_eq!(after.len(), 2, "another note is another event: {after:?}");
        assert_eq!((after[1].1.as_str(), after[1].2), ("5 nodes", None));

        // The first is gone (expired): its repeat is published anew.
        events
            .delete(&name, &Default::default())
            .await
            .expect("deleted");
        publisher
            .publish(&regarding, &rendered("4 nodes"))
            .await
            .expect("published again");
        let last = published(&events).await;
        assert_eq!(last.len(), 2, "{last:?}");
        assert!(
            last.iter()
                .any(|(other, note, count)| *other != name && note == "4 nodes" && count.is_none()),
            "{last:?}"
        );
    }
}
