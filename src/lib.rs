//! Pequod: a Kubernetes operator whose platform definitions are Nickel modules.
//!
//! A `Transform` names a module and an input; the module is fetched ([`module`]), evaluated
//! in bounded worker processes into a graph of Kubernetes objects ([`render`]), checked
//! ([`graph`]) and written as a `ResourceGraph` ([`api`]) that the operator executes
//! ([`controller`], [`exec`], [`apply`], [`readiness`]).

pub mod api;
pub mod apply;
pub mod cli;
pub mod controller;
pub mod exec;
pub mod graph;
pub mod metrics;
pub mod module;
pub mod policy;
pub mod readiness;
pub mod render;
