//! # shoal-server
//!
//! A node's gRPC front and start-up, as a library (the `shoal` binary in `shoal-cli`
//! calls [`serve::serve`]):
//! - [`service`]: the public gRPC services (`Collections`, `Points`, `Cluster`) over a
//!   `shoal-cluster` node, with single searches coalesced into batches;
//! - [`admission`]: what the public port admits (connections, calls in flight);
//! - [`backup`]: the `Backups` service (backups made, listed, downloaded, restored
//!   through the node, kept in `--backup-dir`);
//! - [`convert`]: wire ⇄ domain conversions (structural errors name the field);
//! - [`status`]: the one place where domain errors become `tonic::Status`;
//! - [`early_status`]: statuses tonic produces before our handlers run (oversized or
//!   undecodable messages), remapped to the codes the API promises;
//! - [`deadline`]: a client's expired deadline answered `DEADLINE_EXCEEDED` (tonic's
//!   own timeout says `CANCELLED`);
//! - [`auth`]: the public API's authentication and authorization: API keys with
//!   roles, JWT bearer tokens with per-collection access, the access every RPC needs
//!   (`auth::table`), the layer that checks each call;
//! - [`tls`]: TLS on the public port, certificates reloaded when their files change;
//! - [`reload`]: noticing that configuration files changed;
//! - [`monitoring`]: the metrics endpoint (`--metrics-listen`): Prometheus text at
//!   `/metrics`, `/healthz`, `/readyz`, the gRPC layer counting and timing every
//!   public call, and the collector sampling the node's gauges;
//! - [`error`]: this crate's error type (unusable security settings);
//! - [`serve`]: `shoal serve`'s options (flags and environment variables), its
//!   logging (default filter, text or JSON), and start-up: the node, the public server
//!   with health and reflection, and the internal Raft and node-to-node server.
//!
//! Only this crate knows a node's configuration, flags and environment variables
//! (`shoal-cli` knows only its client commands' flags and `SHOAL_ADDR`), and only this
//! crate turns domain errors into `tonic::Status`. It must never validate requests by
//! hand (`shoal-core` does), reach storage except through the node, or carry client
//! tooling (that is `shoal-cli`'s).

pub mod admission;
pub mod auth;
pub mod backup;
pub mod convert;
pub mod deadline;
pub mod early_status;
pub mod error;
pub mod monitoring;
pub mod reload;
pub mod serve;
pub mod service;
pub mod status;
pub mod tls;
