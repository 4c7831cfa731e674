//! Objects as a watch last saw them. A pass reads an object it applied before from here
//! instead of asking the API server, when what it sees is what it left: the same desired
//! object applied, this graph's labels, and the fields Pequod owns as its last write left
//! them. Anything else (no copy, another owner, a fingerprint that moved, a node that only
//! observes) is read from the API server as the graph's identity, so a copy can only save
//! a request, never decide an ownership or a drift.

use serde_json::Value;

use super::cluster::Served;
use super::drift::fingerprint;

/// An object as read from the API server or a watch cache, with the fingerprint of the
/// fields Pequod owns in it. The fingerprint is taken where the object is whole: a cached
/// copy keeps it and drops the managed fields it was computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct Live {
    /// The object (a cached copy has no `metadata.managedFields`).
    pub object: Value,
    /// [`fingerprint`] of the whole object: None when Pequod applied none of its fields.
    pub owned_hash: Option<String>,
}

impl Live {
    /// An object as the API server returned it, whole.
    pub fn new(object: Value) -> Live {
        Live {
            owned_hash: fingerprint(&object),
            object,
        }
    }
}

/// Where a pass finds the objects graphs applied without a request.
pub trait LiveObjects: Send + Sync {
    /// The object `namespace/name` of `served` as the last watch event left it, with its
    /// `apiVersion` and `kind`; None when the watch has not seen it (or watches no such
    /// resource yet).
    fn get(&self, served: &Served, namespace: Option<&str>, name: &str) -> Option<Live>;
}
