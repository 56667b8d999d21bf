//! # shoal-proto
//!
//! Generated code for Shoal's public gRPC API (`proto/shoal/v1/shoal.proto`) and for
//! the internal Raft transport between nodes (`proto/shoal/internal/raft.proto`,
//! module [`internal`]): message types, client stubs and server traits. Generated code only: conversions between
//! these wire types and `shoal-core`'s domain types live in `shoal-server`, next to
//! the validation that guards them.

#![allow(clippy::all, missing_docs)]

/// Package `shoal.v1`.
pub mod v1 {
    tonic::include_proto!("shoal.v1");

    /// Encoded file descriptor set, for the gRPC reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("shoal_descriptor");
}

/// Package `shoal.internal.v1`: the Raft transport between nodes (not public API).
pub mod internal {
    pub mod v1 {
        tonic::include_proto!("shoal.internal.v1");
    }
}
