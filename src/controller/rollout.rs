//! Staged rollouts of a module version. When the digest behind a moving reference (an OCI
//! tag, a Git branch, a ConfigMap) changes, the Transforms that use it move to it in waves:
//! at most `--rollout-max-unavailable` of them are on the new digest and not Ready at any
//! time, and a Transform that fails on it (render, validation, a node failed or timed out)
//! halts the rollout of that digest: the others stay on the digest they are on.
//!
//! The state is the Transforms' own status (`resolvedModule`, conditions, `pendingModule`),
//! read from the controller's cache: an operator that restarts, or a new leader, finds the
//! rollout where it was. Only the moves decided a moment ago, whose status the cache does not
//! show yet, are remembered in memory, so that concurrent reconciles do not all move at once.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::ResourceExt;

use crate::api::condition::{self, reasons, types};
use crate::api::{ModuleRef, ModuleType, PendingModule, Transform};

pub use crate::api::event_reasons::{ROLLOUT_HALTED, ROLLOUT_WAITING};

/// How many Transforms of a rollout may be on the new digest and not Ready at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxUnavailable {
    /// This many.
    Count(usize),
    /// This percentage of the Transforms using the reference (rounded down, at least one).
    Percent(u8),
}

impl MaxUnavailable {
    /// The number for a rollout over `total` Transforms: at least one, so a rollout moves.
    pub fn of(self, total: usize) -> usize {
        match self {
            MaxUnavailable::Count(count) => count,
            MaxUnavailable::Percent(percent) => total * usize::from(percent) / 100,
        }
        .max(1)
    }
}

impl FromStr for MaxUnavailable {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("expected a count (3) or a percentage (25%), not {text:?}");
        match text.strip_suffix('%') {
            Some(percent) => match percent.parse::<u8>() {
                Ok(percent) if (1..=100).contains(&percent) => Ok(MaxUnavailable::Percent(percent)),
                _ => Err(bad()),
            },
            None => match text.parse::<usize>() {
                Ok(count) if count > 0 => Ok(MaxUnavailable::Count(count)),
                _ => Err(bad()),
            },
        }
    }
}

impl std::fmt::Display for MaxUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxUnavailable::Count(count) => write!(f, "{count}"),
            MaxUnavailable::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}

/// The rollout a Transform's reference belongs to: `None` for references that do not move
/// (a digest, inline, embedded) and for Transforms that pin a digest (never held back).
pub fn group_of(transform: &Transform) -> Option<String> {
    let module_ref = &transform.spec.module_ref;
    if module_ref.digest.is_some() {
        return None;
    }
    match module_ref.type_ {
        ModuleType::Oci | ModuleType::Git if moves(module_ref) => {
            Some(format!("{} {}", module_ref.type_, module_ref.ref_))
        }
        ModuleType::Configmap => Some(format!(
            "configmap {}/{}",
            transform.namespace().unwrap_or_default(),
            module_ref.ref_
        )),
        _ => None,
    }
}

/// Whether a remote reference may move to other content: an OCI tag (not a digest), a Git
/// branch. (A ConfigMap moves too; its watch tells, not a resync.)
pub fn moves(module_ref: &ModuleRef) -> bool {
    match module_ref.type_ {
        ModuleType::Oci => !module_ref.ref_.contains('@'),
        ModuleType::Git => true,
        _ => false,
    }
}

/// Where a Transform of a rollout stands, from its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// `namespace/name`.
    pub key: String,
    /// The digest it is on (its last render, failed or not).
    pub digest: Option<String>,
    /// The digest its ResourceGraph was rendered from: written before the Transform's
    /// status, so a move whose status write has not landed (the operator stopped between
    /// the two) still counts.
    pub graph_digest: Option<String>,
    /// How it is doing on `digest`, as its status says.
    pub state: State,
}

impl Member {
    /// How it is doing on `digest`, or `None` when it is not on it. A Transform whose graph
    /// moved to `digest` and whose status does not say so yet is on its way there: what its
    /// status says (a failure or readiness on the digest before) is not about `digest`.
    fn on(&self, digest: &str) -> Option<&State> {
        if self.digest.as_deref() == Some(digest) {
            Some(&self.state)
        } else if self.graph_digest.as_deref() == Some(digest) {
            Some(&State::InProgress)
        } else {
            None
        }
    }
}

/// How a Transform is doing on its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Ready, for its current generation.
    Ready,
    /// Being reconciled, applied, or waiting for readiness.
    InProgress,
    /// Failed: the message of the condition that says so.
    Failed(String),
}

/// `transform` as a member of its rollout, its graph rendered from `graph_digest`.
pub fn member(transform: &Transform, graph_digest: Option<&str>) -> Member {
    let graph_digest = graph_digest.map(str::to_string);
    let key = format!(
        "{}/{}",
        transform.namespace().unwrap_or_default(),
        transform.name_any()
    );
    let Some(status) = &transform.status else {
        return Member {
            key,
            digest: None,
            graph_digest,
            state: State::InProgress,
        };
    };
    let digest = status.resolved_module.as_ref().map(|m| m.digest.clone());
    let failed = [types::MODULE_RESOLVED, types::RENDERED, types::VALIDATED]
        .into_iter()
        .filter_map(|kind| condition::find(&status.conditions, kind))
        .chain(
            condition::find(&status.conditions, types::READY).filter(|ready| {
                ready.reason == reasons::NODE_FAILED
                    || ready.reason == reasons::RESOURCE_GRAPH_REJECTED
            }),
        )
        // The cluster's policy modules failing to load is the operator's problem, not the
        // new digest's: it halts no rollout.
        .find(|c| c.status == "False" && c.reason != reasons::POLICY_MODULE_FAILED);
    let current = status.observed_generation == transform.metadata.generation;
    let state = match failed {
        Some(failed) => State::Failed(failed.message.clone()),
        None if current
            && condition::find(&status.conditions, types::READY)
                .is_some_and(|ready| ready.status == "True") =>
        {
            State::Ready
        }
        None => State::InProgress,
    };
    Member {
        key,
        digest,
        graph_digest,
        state,
    }
}

/// What a Transform whose reference moved to a new digest may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Move to the new digest.
    Move,
    /// Stay on its digest, and why.
    Hold(PendingModule),
}

/// Whether a Transform may move to `digest` now, given the rollout's `members` and `moving`
/// Transforms admitted to it that their status does not show yet, with at most `limit` on
/// the digest and not Ready at once.
pub fn decide(digest: &str, members: &[Member], moving: usize, limit: usize) -> Decision {
    let on_digest = || {
        members
            .iter()
            .filter_map(|m| m.on(digest).map(|state| (&m.key, state)))
    };
    if let Some((key, message)) = on_digest().find_map(|(key, state)| match state {
        State::Failed(message) => Some((key, message)),
        _ => None,
    }) {
        return Decision::Hold(PendingModule {
            digest: digest.to_string(),
            reason: ROLLOUT_HALTED.into(),
            message: format!("the rollout of {digest} is halted: {key} failed on it: {message}"),
        });
    }
    let unavailable = on_digest()
        .filter(|(_, state)| **state != State::Ready)
        .count()
        + moving;
    if unavailable >= limit {
        let moved = on_digest().count() + moving;
        return Decision::Hold(PendingModule {
            digest: digest.to_string(),
            reason: ROLLOUT_WAITING.into(),
            message: format!(
                "waiting for the wave before: {unavailable} of the {moved} Transforms on {digest} not Ready yet (at most {limit} at a time, of {})",
                members.len()
            ),
        });
    }
    Decision::Move
}

/// How long the members of a rollout read from the cache serve the decisions of every
/// Transform of it: a rollout of thousands held back reads them once a second, not once per
/// Transform per recheck. A stale read only holds back longer (a member gone Ready counts
/// as unavailable, a move admitted since counts until a read shows it), or notices a
/// failure this much later.
pub const MEMBERS_TTL: Duration = Duration::from_secs(1);

/// The moves admitted and not yet shown by the cache, by rollout and digest, and the last
/// read of each rollout's members.
#[derive(Debug, Default)]
pub struct Moves {
    admitted: Mutex<HashMap<(String, String), HashSet<String>>>,
    members: Mutex<HashMap<String, MembersRead>>,
}

/// When a rollout's members were read, and what was read.
type MembersRead = (Instant, Arc<Vec<Member>>);

impl Moves {
    /// The members of `group`: `read` from the cache, at most every [`MEMBERS_TTL`].
    pub fn members(&self, group: &str, read: impl FnOnce() -> Vec<Member>) -> Arc<Vec<Member>> {
        let mut all = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        all.retain(|_, (at, _)| now.duration_since(*at) < MEMBERS_TTL);
        all.entry(group.to_string())
            .or_insert_with(|| (now, Arc::new(read())))
            .1
            .clone()
    }

    /// Decides whether `key` may move to `digest` in the rollout `group` of `members` (every
    /// Transform using the reference, as the cache shows them), with at most `limit`
    /// unavailable; a Transform admitted counts as moving until the cache shows it there.
    pub fn admit(
        &self,
        group: &str,
        digest: &str,
        key: &str,
        members: &[Member],
        limit: usize,
    ) -> Decision {
        let mut moves = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        let moving = moves
            .entry((group.to_string(), digest.to_string()))
            .or_default();
        // A move the cache shows, or of a Transform that is gone, is no longer pending.
        moving.retain(|admitted| {
            members
                .iter()
                .any(|m| &m.key == admitted && m.digest.as_deref() != Some(digest))
        });
        if moving.contains(key) {
            return Decision::Move;
        }
        let decision = decide(digest, members, moving.len(), limit);
        if decision == Decision::Move {
            moving.insert(key.to_string());
        }
        moves.retain(|_, moving| !moving.is_empty());
        decision
    }
}

/// An OCI reference (`registry/repository:tag`) at `digest` instead of its tag.
pub fn oci_at_digest(reference: &str, digest: &str) -> String {
    let name_end = reference.rfind('/').unwrap_or(0);
    let repository = match reference.rfind(':') {
        Some(colon) if colon > name_end => &reference[..colon],
        _ => reference,
    };
    format!("{repository}@{digest}")
}

/// A Git reference (`url?ref=branch&path=dir`) at the commit of `digest` (`commit:path`, as
/// `status.resolvedModule` records it); `None` when the digest names no commit.
pub fn git_at_commit(reference: &str, digest: &str) -> Option<String> {
    let commit = digest.split(':').next().filter(|c| !c.is_empty())?;
    let (url, query) = reference.split_once('?').unwrap_or((reference, ""));
    let mut parameters: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("ref="))
        .map(str::to_string)
        .collect();
    parameters.insert(0, format!("ref={commit}"));
    Some(format!("{url}?{}", parameters.join("&")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(key: &str, digest: &str, state: State) -> Member {
        Member {
            key: key.into(),
            digest: Some(digest.into()),
            graph_digest: Some(digest.into()),
            state,
        }
    }

    #[test]
    fn the_cluster_policy_modules_failing_to_load_is_no_failure_of_the_digest() {
        let transform = |reason: &str| -> Transform {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
                "metadata": {"name": "a", "namespace": "team", "generation": 1},
                "spec": {"moduleRef": {"type": "oci", "ref": "r.corp/m:stable"}, "input": {}},
                "status": {
                    "observedGeneration": 1,
                    "resolvedModule": {"type": "oci", "ref": "r.corp/m:stable", "digest": "sha256:new"},
                    "conditions": [{"type": "Validated", "status": "False", "reason": reason,
                        "message": "no", "lastTransitionTime": "2026-12-05T00:00:00Z"}],
                },
            }))
            .expect("a Transform")
        };
        let refused = member(&transform(reasons::POLICY_VIOLATION), Some("sha256:new"));
        assert!(matches!(refused.state, State::Failed(_)));
        let unavailable = member(
            &transform(reasons::POLICY_MODULE_FAILED),
            Some("sha256:new"),
        );
        assert!(!matches!(unavailable.state, State::Failed(_)));
    }

    #[test]
    fn max_unavailable_is_a_count_or_a_percentage() {
        assert_eq!("25%".parse(), Ok(MaxUnavailable::Percent(25)));
        assert_eq!("3".parse(), Ok(MaxUnavailable::Count(3)));
        assert_eq!(MaxUnavailable::Percent(25).of(40), 10);
        assert_eq!(MaxUnavailable::Percent(25).of(3), 1, "at least one");
        assert_eq!(MaxUnavailable::Count(3).of(2), 3);
        for bad in ["0", "0%", "101%", "x", "-1", ""] {
            assert!(bad.parse::<MaxUnavailable>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_wave_waits_for_the_one_before_and_a_failure_halts_the_rollout() {
        let old = |key: &str| at(key, "sha256:old", State::Ready);
        let mut members = vec![old("a"), old("b"), old("c"), old("d")];
        assert_eq!(decide("sha256:new", &members, 0, 2), Decision::Move);
        assert_eq!(decide("sha256:new", &members, 1, 2), Decision::Move);
        let Decision::Hold(pending) = decide("sha256:new", &members, 2, 2) else {
            panic!("held")
        };
        assert_eq!(pending.reason, ROLLOUT_WAITING);
        assert_eq!(
            pending.message,
            "waiting for the wave before: 2 of the 2 Transforms on sha256:new not Ready yet (at most 2 at a time, of 4)"
        );
        // The first wave Ready: the next moves.
        members[0] = at("a", "sha256:new", State::Ready);
        members[1] = at("b", "sha256:new", State::InProgress);
        assert_eq!(decide("sha256:new", &members, 0, 2), Decision::Move);
        // A graph already on the new digest whose Transform's status does not say so yet
        // counts as moved, and not Ready there (its status is Ready on the old digest).
        let mut unwritten = members.clone();
        unwritten[2].graph_digest = Some("sha256:new".into());
        let Decision::Hold(pending) = decide("sha256:new", &unwritten, 0, 2) else {
            panic!("held")
        };
        assert_eq!(pending.reason, ROLLOUT_WAITING);
        // One failed: nobody else moves, whatever the room.
        members[1] = at(
            "b",
            "sha256:new",
            State::Failed("contract violation at input.x".into()),
        );
        let Decision::Hold(pending) = decide("sha256:new", &members, 0, 4) else {
            panic!("halted")
        };
        assert_eq!(pending.reason, ROLLOUT_HALTED);
        assert_eq!(
            pending.message,
            "the rollout of sha256:new is halted: b failed on it: contract violation at input.x"
        );
        // A failure on another digest does not halt this one.
        assert_eq!(decide("sha256:fix", &members, 0, 2), Decision::Move);
        // Nor does the failure of a Transform on its way to this one: its graph is on the
        // fix, its status still says how it failed on the digest before. It is not Ready
        // on the fix yet.
        members[1].graph_digest = Some("sha256:fix".into());
        let Decision::Hold(pending) = decide("sha256:fix", &members, 0, 1) else {
            panic!("held")
        };
        assert_eq!(pending.reason, ROLLOUT_WAITING);
        assert_eq!(decide("sha256:fix", &members, 0, 2), Decision::Move);
    }

    #[test]
    fn concurrent_reconciles_admit_no_more_than_the_limit() {
        let moves = Moves::default();
        let members: Vec<Member> = ["a", "b", "c", "d"]
            .iter()
            .map(|key| at(key, "sha256:old", State::Ready))
            .collect();
        let admitted: Vec<bool> = ["a", "b", "c", "d"]
            .iter()
            .map(|key| moves.admit("oci r:1", "sha256:new", key, &members, 2) == Decision::Move)
            .collect();
        assert_eq!(admitted, [true, true, false, false]);
        assert_eq!(
            moves.admit("oci r:1", "sha256:new", "a", &members, 2),
            Decision::Move,
            "an admitted Transform stays admitted"
        );
        // The cache shows a and b on the new digest, Ready: c and d move.
        let mut shown = members.clone();
        shown[0] = at("a", "sha256:new", State::Ready);
        shown[1] = at("b", "sha256:new", State::Ready);
        assert_eq!(
            moves.admit("oci r:1", "sha256:new", "c", &shown, 2),
            Decision::Move
        );
        assert_eq!(
            moves.admit("oci r:1", "sha256:new", "d", &shown, 2),
            Decision::Move
        );
    }

    #[test]
    fn a_held_transform_fetches_the_digest_it_is_on() {
        assert_eq!(
            oci_at_digest("localhost:5000/platform/web:stable", "sha256:aa"),
            "localhost:5000/platform/web@sha256:aa"
        );
        assert_eq!(
            oci_at_digest("localhost:5000/platform/web", "sha256:aa"),
            "localhost:5000/platform/web@sha256:aa"
        );
        assert_eq!(
            git_at_commit(
                "https://git.example/p.git?ref=main&path=web",
                "0123abcd:web"
            ),
            Some("https://git.example/p.git?ref=0123abcd&path=web".into())
        );
        assert_eq!(
            git_at_commit("/srv/p.git", "0123abcd"),
            Some("/srv/p.git?ref=0123abcd".into())
        );
        assert_eq!(git_at_commit("/srv/p.git", ""), None);
    }
}
