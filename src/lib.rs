//! Pequod: a Kubernetes operator whose platform definitions are Nickel modules.
//!
//! A `Transform` names a module and an input; the module is fetched ([`module`]), evaluated
//! in bounded worker processes into a graph of Kubernetes objects ([`render`]), checked
//! ([`graph`]) and planned into a `ResourceGraph` ([`plan`], types in [`api`]) that the
//! operator ([`controller`]) writes and executes ([`exec`]). The layering is one way:
//! api ← graph ← module / render ← plan ← exec ← controller ← cli (CONTRIBUTING.md).

pub mod api;
pub mod backoff;
pub mod cli;
pub mod controller;
pub mod digest;
pub mod exec;
pub mod graph;
pub mod metrics;
pub mod module;
pub mod plan;
pub mod render;
