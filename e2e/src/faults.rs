//! Failures a test injects into the API: errors, throttling and latency on chosen requests.

use crate::status::ApiError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What an injected fault does to a matching request.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// Answer `500 InternalError` without touching the store.
    InternalError,
    /// Answer `429 TooManyRequests` with this `Retry-After`.
    Throttle {
        /// Seconds the client is asked to wait.
        retry_after_seconds: u64,
    },
    /// Serve the request normally after this delay.
    Latency(Duration),
    /// Hold the request until the rendezvous is complete (see [`Rendezvous`]).
    Rendezvous(Rendezvous),
}

/// Requests that must all be under way at once before any is served: evidence that a
/// client sends them concurrently, without measuring time. A client that waits for one
/// answer before it sends the next request never completes the rendezvous: after
/// [`Rendezvous::GIVE_UP`] the held requests fail with `500` and a message that says so.
#[derive(Debug, Clone)]
pub struct Rendezvous {
    parties: usize,
    barrier: Arc<tokio::sync::Barrier>,
}

impl Rendezvous {
    /// How long a held request waits for the others.
    pub const GIVE_UP: Duration = Duration::from_secs(30);

    /// A rendezvous of `parties` requests; add it to one fault per request to hold (the
    /// faults share it).
    pub fn new(parties: usize) -> Self {
        Rendezvous {
            parties,
            barrier: Arc::new(tokio::sync::Barrier::new(parties)),
        }
    }

    /// Waits for the other parties; an error when they do not come.
    pub async fn wait(&self) -> Result<(), ApiError> {
        match tokio::time::timeout(Self::GIVE_UP, self.barrier.wait()).await {
            Ok(_) => Ok(()),
            Err(_) => Err(ApiError::internal(format!(
                "injected fault: the other {} requests of the rendezvous never came",
                self.parties - 1
            ))),
        }
    }
}

impl PartialEq for Rendezvous {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.barrier, &other.barrier)
    }
}

/// One injected fault: which requests it hits and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Only requests on this plural resource (`deployments`), or all.
    pub resource: Option<String>,
    /// Only this HTTP method (`PATCH`), or all.
    pub method: Option<String>,
    /// Only requests for objects of this name, or all.
    pub name: Option<String>,
    /// What happens.
    pub action: FaultAction,
    /// How many more requests it hits (None = until cleared).
    pub times: Option<u32>,
    /// Hit only every this many matching requests (the others pass).
    pub every: u32,
    /// Matching requests seen so far, for `every`.
    pub seen: u32,
    /// At most this many requests for one object are hit; the later ones pass.
    pub per_object: Option<u32>,
    /// Hits so far, by object name, for `per_object`.
    pub hits_by_object: HashMap<String, u32>,
}

impl Fault {
    /// A fault that does `action` to every request until narrowed.
    pub fn new(action: FaultAction) -> Self {
        Fault {
            resource: None,
            method: None,
            name: None,
            action,
            times: None,
            every: 1,
            seen: 0,
            per_object: None,
            hits_by_object: HashMap::new(),
        }
    }

    /// Only every `n`-th matching request (the others pass untouched): a fault that comes
    /// and goes, as an overloaded server's.
    pub fn every(mut self, n: u32) -> Self {
        self.every = n.max(1);
        self
    }

    /// Never more than `n` hits on requests for one object (by name): what a client's
    /// bounded retries of that object ride out, however the hits of an `every` fault (and
    /// of other faults on the same object) happen to line up between concurrent clients.
    pub fn at_most_per_object(mut self, n: u32) -> Self {
        self.per_object = Some(n);
        self
    }

    /// Only on this resource.
    pub fn on(mut self, resource: &str) -> Self {
        self.resource = Some(resource.to_owned());
        self
    }

    /// Only for this method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_uppercase());
        self
    }

    /// Only for objects of this name.
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Only for the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    fn matches(&self, method: &str, resource: Option<&str>, name: Option<&str>) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self.resource.as_deref().is_none_or(|r| Some(r) == resource)
            && self.name.as_deref().is_none_or(|n| Some(n) == name)
    }
}

/// The faults in force, checked on every API request.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<Fault>>,
    hits: Mutex<u64>,
}

/// What to do to one request.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Wait this long first.
    pub delay: Duration,
    /// Then fail with this instead of serving.
    pub error: Option<ApiError>,
    /// Hold the request until this rendezvous completes (before the delay).
    pub rendezvous: Option<Rendezvous>,
}

impl Faults {
    /// Injects a fault.
    pub fn add(&self, fault: Fault) {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(fault);
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// How many requests faults have hit so far.
    pub fn hits(&self) -> u64 {
        *self.hits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The verdict for a request; counts down the faults it uses.
    pub fn check(&self, method: &str, resource: Option<&str>, name: Option<&str>) -> Verdict {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let mut verdict = Verdict::default();
        let mut hit = false;
        for rule in rules.iter_mut() {
            if rule.times == Some(0) || !rule.matches(method, resource, name) {
                continue;
            }
            rule.seen = rule.seen.wrapping_add(1);
            if rule.seen % rule.every != 0 {
                continue;
            }
            if let (Some(limit), Some(name)) = (rule.per_object, name) {
                let hits = rule.hits_by_object.entry(name.to_owned()).or_default();
                if *hits >= limit {
                    continue;
                }
                *hits += 1;
            }
            match &rule.action {
                FaultAction::Latency(delay) => verdict.delay += *delay,
                FaultAction::Rendezvous(rendezvous) if verdict.rendezvous.is_none() => {
                    verdict.rendezvous = Some(rendezvous.clone());
                }
                FaultAction::InternalError if verdict.error.is_none() => {
                    verdict.error = Some(ApiError::internal("injected fault: internal error"));
                }
                FaultAction::Throttle {
                    retry_after_seconds,
                } if verdict.error.is_none() => {
                    verdict.error = Some(ApiError::too_many_requests(*retry_after_seconds));
                }
                _ => continue,
            }
            hit = true;
            if let Some(times) = rule.times.as_mut() {
                *times -= 1;
            }
        }
        rules.retain(|rule| rule.times != Some(0));
        if hit {
            *self.hits.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_match_and_count_down() {
        let faults = Faults::default();
        faults.add(
            Fault::new(FaultAction::InternalError)
                .on("deployments")
                .method("patch")
                .times(1),
        );
        faults.add(Fault::new(FaultAction::Latency(Duration::from_millis(5))).on("secrets"));
        assert!(
            faults
                .check("GET", Some("deployments"), None)
                .error
                .is_none()
        );
        let verdict = faults.check("PATCH", Some("deployments"), Some("web"));
        assert_eq!(verdict.error.map(|e| e.code), Some(500));
        assert!(
            faults
                .check("PATCH", Some("deployments"), Some("web"))
                .error
                .is_none()
        );
        assert_eq!(
            faults.check("GET", Some("secrets"), None).delay,
            Duration::from_millis(5)
        );
        assert_eq!(faults.hits(), 2);
    }

    #[test]
    fn a_fault_can_hit_every_nth_request() {
        let faults = Faults::default();
        faults.add(
            Fault::new(FaultAction::InternalError)
                .on("configmaps")
                .every(3),
        );
        let failed: Vec<bool> = (0..7)
            .map(|_| {
                faults
                    .check("PATCH", Some("configmaps"), None)
                    .error
                    .is_some()
            })
            .collect();
        assert_eq!(failed, [false, false, true, false, false, true, false]);
    }

    #[test]
    fn a_fault_hits_one_object_at_most_so_many_times() {
        let faults = Faults::default();
        faults.add(
            Fault::new(FaultAction::InternalError)
                .on("configmaps")
                .at_most_per_object(2),
        );
        let failed = |name: &str| {
            faults
                .check("PATCH", Some("configmaps"), Some(name))
                .error
                .is_some()
        };
        let web: Vec<bool> = (0..4).map(|_| failed("web")).collect();
        assert_eq!(web, [true, true, false, false]);
        assert!(failed("api"), "another object has hits of its own");
    }

    #[tokio::test]
    async fn a_rendezvous_holds_requests_until_all_are_under_way() {
        let faults = Faults::default();
        let rendezvous = Rendezvous::new(2);
        for name in ["b", "c"] {
            let fault = Fault::new(FaultAction::Rendezvous(rendezvous.clone()));
            faults.add(fault.on("configmaps").named(name).times(1));
        }
        let held = |name| {
            faults
                .check("PATCH", Some("configmaps"), Some(name))
                .rendezvous
        };
        let (b, c) = (held("b").expect("b held"), held("c").expect("c held"));
        assert!(held("b").is_none(), "one request each");
        let (first, second) = tokio::join!(b.wait(), c.wait());
        assert!(first.is_ok() && second.is_ok());
    }
}
