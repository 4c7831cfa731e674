//! The Kubernetes Events the operator publishes (`events.k8s.io/v1`), a repeat of a recent
//! one counted on it instead of written again.
//!
//! kube's `Recorder` remembers every event it published for six minutes in one map behind one
//! lock, scanned whole on every publish, that never gives its memory back: a fleet of
//! thousands of Transforms, a few events each, kept megabytes in it and every publish waited
//! on the scan. This publisher remembers what a repeat needs (the Event's name and count) of
//! the last [`REMEMBERED`] distinct events, as client-go's recorder does with its cache of
//! 4,096: an event identical to one of them (same object, type, reason and note) adds to its
//! `series` (a merge patch), anything else is a new Event. As client-go's recorder also
//! does, an object that gets more than [`MAX_SIMILAR`] events of one type and reason with
//! different notes within [`SIMILAR_WINDOW`] (a failure whose message keeps changing) gets
//! one combined Event for the rest, counted on its series: the notes an object's owner
//! controls cannot make the operator write an Event per reconcile.
//!
//! Two publishes of one event at the same moment may both create an Event, or patch the
//! series with their counts in either order: a count may be one short for a while.

use std::hash::{BuildHasher, Hash, RandomState};
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use lru::LruCache;
use serde_json::json;

use crate::api::condition::truncate;

/// How many distinct recent events a repeat is recognised against (and objects whose
/// similar events are counted).
const REMEMBERED: NonZeroUsize = NonZeroUsize::new(4096).expect("not zero");

/// Events of one object, type and reason with different notes that are each an Event of
/// their own within [`SIMILAR_WINDOW`]; more are counted on one combined Event.
const MAX_SIMILAR: u32 = 10;

/// The window in which similar events are counted (client-go's, too).
const SIMILAR_WINDOW: Duration = Duration::from_secs(600);

/// The note of the Event that counts the similar events past [`MAX_SIMILAR`], followed by
/// the first of their notes.
const COMBINED: &str = "(combined from similar events)";

/// The longest note an Event may have (bytes).
const NOTE_LIMIT: usize = 1024;

/// The longest name of an object (a DNS subdomain).
const NAME_LIMIT: usize = 253;

/// Where an event published before is, and how often it happened.
#[derive(Clone, Debug)]
struct Published {
    name: String,
    count: i32,
}

/// Events with different notes an object got of one type and reason.
#[derive(Clone, Copy, Debug)]
struct Similar {
    notes: u32,
    since: Instant,
}

/// What the publisher remembers, behind one lock held for no I/O.
struct Recent {
    /// Recent distinct events, by the hash of what makes them the same.
    published: LruCache<u64, Published>,
    /// By the hash of object, type and reason.
    similar: LruCache<u64, Similar>,
}

/// Publishes Events as one controller (and instance) of the operator.
pub struct Publisher {
    client: kube::Client,
    controller: String,
    instance: String,
    /// Seeded per process: the objects' names and notes, which tenants choose, cannot be
    /// made to collide on purpose.
    hasher: RandomState,
    recent: Mutex<Recent>,
}

/// An event to publish about an object.
#[derive(Debug, Hash)]
pub struct Note<'a> {
    /// Normal or Warning.
    pub type_: EventType,
    /// Why (a condition reason, `Rendered`, `NodeApplied`...); also the Event's action.
    pub reason: &'a str,
    /// What happened, for people; cut to 1 KiB.
    pub note: &'a str,
}

impl Publisher {
    /// Publishes as `controller`; `instance` (the pod's name) tells replicas apart, and is
    /// the controller's name when there is none.
    pub fn new(client: kube::Client, controller: &str, instance: Option<String>) -> Self {
        Publisher {
            client,
            controller: controller.to_string(),
            instance: instance.unwrap_or_else(|| controller.to_string()),
            hasher: RandomState::new(),
            recent: Mutex::new(Recent {
                published: LruCache::new(REMEMBERED),
                similar: LruCache::new(REMEMBERED),
            }),
        }
    }

    /// Publishes `event` about the object `regarding`: one more in the series of a recent
    /// identical one, or a new Event (also when that one is gone); past [`MAX_SIMILAR`]
    /// similar ones, one more in the series of their combined Event.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        event: &Note<'_>,
    ) -> Result<(), kube::Error> {
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let object = (
            &regarding.api_version,
            &regarding.kind,
            &regarding.namespace,
            &regarding.name,
            &regarding.uid,
        );
        let identical = self.hasher.hash_one((object, event));
        if self.counted(&events, identical).await? {
            return Ok(());
        }
        let (key, note) =
            if self.one_too_many(self.hasher.hash_one((object, event.type_, event.reason))) {
                let combined = self
                    .hasher
                    .hash_one((object, event.type_, event.reason, COMBINED));
                if self.counted(&events, combined).await? {
                    return Ok(());
                }
                (combined, format!("{COMBINED}: {}", event.note))
            } else {
                (identical, event.note.to_string())
            };
        let now = MicroTime(Timestamp::now());
        let name = event_name(regarding.name.as_deref().unwrap_or(&self.controller), &now);
        let created = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.to_string()),
                ..ObjectMeta::default()
            },
            action: Some(event.reason.to_string()),
            reason: Some(event.reason.to_string()),
            note: Some(truncate(&note, NOTE_LIMIT)),
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
        if let Ok(mut recent) = self.recent.lock() {
            recent.published.put(key, Published { name, count: 1 });
        }
        Ok(())
    }

    /// Counts one more on the series of the recent Event `key` names: false when there is
    /// none, or it is gone.
    async fn counted(&self, events: &Api<Event>, key: u64) -> Result<bool, kube::Error> {
        let repeat = self.recent.lock().ok().and_then(|mut recent| {
            let published = recent.published.get_mut(&key)?;
            published.count = published.count.saturating_add(1);
            Some(published.clone())
        });
        let Some(repeat) = repeat else {
            return Ok(false);
        };
        let now = MicroTime(Timestamp::now());
        let series = json!({"series": {"count": repeat.count, "lastObservedTime": now}});
        match events
            .patch(
                &repeat.name,
                &PatchParams::default(),
                &Patch::Merge(&series),
            )
            .await
        {
            Ok(_) => Ok(true),
            // Expired or deleted: published anew.
            Err(kube::Error::Api(status)) if status.code == 404 => {
                if let Ok(mut recent) = self.recent.lock() {
                    recent.published.pop(&key);
                }
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    /// Counts a new note among the similar events `key` names: whether it is one too many
    /// to be an Event of its own.
    fn one_too_many(&self, key: u64) -> bool {
        let Ok(mut recent) = self.recent.lock() else {
            return false;
        };
        let now = Instant::now();
        let similar = recent.similar.get_or_insert_mut(key, || Similar {
            notes: 0,
            since: now,
        });
        if now.duration_since(similar.since) > SIMILAR_WINDOW {
            *similar = Similar {
                notes: 0,
                since: now,
            };
        }
        similar.notes = similar.notes.saturating_add(1);
        similar.notes > MAX_SIMILAR
    }
}

/// An Event's name: the object's, and the time in nanoseconds (as client-go names them),
/// the object's cut so that the whole is a valid name.
fn event_name(object: &str, now: &MicroTime) -> String {
    let suffix = format!(".{:x}", now.0.as_nanosecond());
    let mut end = object.len().min(NAME_LIMIT - suffix.len());
    while !object.is_char_boundary(end) {
        end -= 1;
    }
    let prefix = object[..end].trim_end_matches(['-', '.']);
    format!("{prefix}{suffix}")
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

    fn shop() -> ObjectReference {
        ObjectReference {
            api_version: Some("pequod.io/v1alpha1".into()),
            kind: Some("Transform".into()),
            namespace: Some("default".into()),
            name: Some("shop".into()),
            uid: Some("u-1".into()),
            ..ObjectReference::default()
        }
    }

    async fn start() -> (TestApiServer, Api<Event>, Publisher) {
        let server = TestApiServer::start(Config::default())
            .await
            .expect("test API server starts");
        let client = client(&server).await;
        let events: Api<Event> = Api::namespaced(client.clone(), "default");
        let publisher = Publisher::new(client, "pequod", Some("pequod-0".into()));
        (server, events, publisher)
    }

    fn rendered(note: &str) -> Note<'_> {
        Note {
            type_: EventType::Normal,
            reason: "Rendered",
            note,
        }
    }

    #[tokio::test]
    async fn a_repeated_event_is_counted_on_the_first_and_a_different_one_is_new() {
        let (_server, events, publisher) = start().await;
        let regarding = shop();
        let publish = async |note: &str| publisher.publish(&regarding, &rendered(note)).await;

        publish("4 nodes").await.expect("published");
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
        assert!(event.event_time.is_some() && event.series.is_none());
        assert!(name.starts_with("shop."), "{name}");

        publish("4 nodes").await.expect("published");
        publish("4 nodes").await.expect("published");
        assert_eq!(
            published(&events).await,
            [(name.clone(), "4 nodes".to_string(), Some(3))],
            "repeats counted on the first"
        );
        let series = events.get(&name).await.expect("an Event").series;
        let observed = series.expect("a series").last_observed_time.0;
        assert!(Some(observed) > event.event_time.map(|time| time.0));

        publish("5 nodes").await.expect("published");
        let after = published(&events).await;
        assert_eq!(after.len(), 2, "another note is another event: {after:?}");
        assert_eq!((after[1].1.as_str(), after[1].2), ("5 nodes", None));

        // The first is gone (expired): its repeat is published anew, and counted on that.
        events
            .delete(&name, &Default::default())
            .await
            .expect("deleted");
        publish("4 nodes").await.expect("published again");
        publish("4 nodes").await.expect("published again");
        let last = published(&events).await;
        assert_eq!(last.len(), 2, "{last:?}");
        assert!(
            last.iter().any(|(other, note, count)| *other != name
                && note == "4 nodes"
                && *count == Some(2)),
            "{last:?}"
        );
    }

    #[tokio::test]
    async fn notes_that_keep_changing_are_combined_past_the_limit() {
        let (_server, events, publisher) = start().await;
        let regarding = shop();
        let failed = |note| Note {
            type_: EventType::Warning,
            reason: "RenderFailed",
            note,
        };
        let notes: Vec<String> = (1..=MAX_SIMILAR + 3)
            .map(|n| format!("attempt {n} failed"))
            .collect();
        for note in &notes {
            publisher
                .publish(&regarding, &failed(note))
                .await
                .expect("published");
        }
        // Another reason is not one of them.
        publisher
            .publish(&regarding, &rendered("4 nodes"))
            .await
            .expect("published");

        let all = published(&events).await;
        let limit = MAX_SIMILAR as usize;
        assert_eq!(all.len(), limit + 2, "{all:?}");
        for (event, note) in all.iter().zip(&notes[..limit]) {
            assert_eq!((&event.1, event.2), (note, None));
        }
        assert_eq!(
            (all[limit].1.as_str(), all[limit].2),
            (
                format!("{COMBINED}: attempt {} failed", limit + 1).as_str(),
                Some(3)
            ),
            "the rest counted on one combined Event"
        );
        assert_eq!(all[limit + 1].1, "4 nodes");
    }

    #[test]
    fn an_event_is_named_after_its_object_within_the_limit() {
        let now = MicroTime(Timestamp::from_nanosecond(0x1234).expect("a time"));
        assert_eq!(event_name("shop", &now), "shop.1234");
        // Cut to leave room for the time, and not ending in a dash.
        let long = format!("{}-xyz", "a".repeat(NAME_LIMIT - 6));
        let name = event_name(&long, &now);
        assert_eq!(name, format!("{}.1234", "a".repeat(NAME_LIMIT - 6)));
        assert!(name.len() <= NAME_LIMIT);
    }
}
