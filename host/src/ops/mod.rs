//! What operators see: the read-only admin endpoint and the control
//! endpoint ([`admin`]) with their connection slots ([`slots`]), and the
//! Prometheus metrics ([`metrics`]), read
//! from the tenants at scrape time. The top of the host's layers: depends
//! on tenancy and below, and only the process (crate::app) uses it.

pub mod admin;
pub mod metrics;
pub mod slots;
