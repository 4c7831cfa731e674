//! Pequod: a Kubernetes operator whose platform definitions are Nickel modules.
//!
//! A `Transform` names a module and an input; the module is fetched ([`module`]), evaluated
//! in bounded worker processes into a graph of Kubernetes objects ([`render`]), checked
//! ([`graph`]) and written as a `ResourceGraph` ([`api`]) that the operator executes.

pub mod api;
pub mod cli;
pub mod graph;
pub mod module;
pub mod policy;
pub mod render;
