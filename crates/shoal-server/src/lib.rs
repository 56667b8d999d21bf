//! # shoal-server
//!
//! The `shoal` binary's library: the gRPC services over a `shoal-cluster` node
//! ([`service`]), the wire⇄domain conversions ([`convert`]) and the one place where
//! domain errors become `tonic::Status` ([`status`]), `shoal serve`'s configuration
//! ([`serve`]), and the CLI client ([`client`]).
//!
//! Only this crate knows configuration, flags and environment variables. It must never
//! validate requests by hand (`shoal-core` does) or reach storage except through the
//! node.

pub mod bench;
pub mod cli;
pub mod client;
pub mod convert;
pub mod early_status;
pub mod filter_json;
pub mod plot;
pub mod serve;
pub mod service;
pub mod status;
