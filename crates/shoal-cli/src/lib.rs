//! # shoal-cli
//!
//! The `shoal` command line and everything that only a client needs: argument parsing
//! and dispatch ([`cli`]; `shoal serve` hands its options to [`shoal_server::serve`]),
//! the client commands against a running node over the public gRPC API ([`client`]:
//! collections, import with a progress bar, search with recall, get, delete, count,
//! cluster status), backups ([`backup`]: create, list, delete, download, restore), the JSON spellings of filters and payloads ([`filter_json`]), the
//! load generator `shoal bench` ([`bench`]) and its PNG chart ([`plot`]).
//!
//! It knows the client commands' flags and `SHOAL_ADDR`; `shoal serve`'s options,
//! their environment variables and the logging set-up belong to `shoal-server`. It
//! must never reach a node other than through the public gRPC API (`shoal-proto`'s
//! clients, converted with `shoal_server::convert`), nor validate requests beyond
//! parsing its input: the node validates everything it is sent.

pub mod backup;
pub mod bench;
pub mod cli;
pub mod client;
pub mod filter_json;
pub mod plot;
