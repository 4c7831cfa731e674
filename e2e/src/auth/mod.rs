//! Authentication, authorization and impersonation, as kube-apiserver does them with a
//! static token file, `--authorization-mode=RBAC` and its impersonation filter.
//!
//! Every request is authenticated ([`authn`]: a bearer token names a user, no credentials
//! make the admin), may act as another user ([`impersonation`]), and, when the server
//! enforces authorization, is allowed or refused ([`authorizer`]) on what it asks
//! ([`attributes`]) by the RBAC objects in the store ([`rbac`]), which start with the default
//! roles and bindings ([`bootstrap`]) and whose aggregated ClusterRoles are kept up to date
//! ([`aggregation`]). Access reviews answer the same questions over the API ([`review`]).

pub mod aggregation;
pub mod attributes;
pub mod authn;
pub mod authorizer;
pub mod bootstrap;
pub mod impersonation;
pub mod rbac;
pub mod review;
pub mod user;

pub use user::User;
