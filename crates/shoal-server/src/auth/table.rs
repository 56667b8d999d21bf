//! The access every public RPC needs: the one table the authentication layer and the
//! services consult, and the README's table is generated from (a test keeps them
//! equal, and another checks that the table covers every method of the proto).

/// What a call needs of its credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any valid credential (what it is shown may depend on it: see [`Scope`]).
    Any,
    /// Read access to the request's collection: the read-only, read-write or admin
    /// role, or a token with `r` or `rw` on that collection.
    Read,
    /// Write access to the request's collection: the read-write or admin role, or a
    /// token with `rw` on that collection.
    Write,
    /// The admin role.
    Admin,
}

/// What a call's access is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Nothing but the credential.
    Credential,
    /// The collection the request names (checked by the service, once decoded).
    Collection,
    /// The reply is cut to what the credential may see.
    Reply,
}

/// One RPC of the public API.
#[derive(Debug, Clone, Copy)]
pub struct Rpc {
    /// The gRPC path, `/package.Service/Method`.
    pub path: &'static str,
    pub access: Access,
    pub scope: Scope,
    /// For the README: what is checked or cut, in a few words.
    pub note: &'static str,
}

const fn rpc(path: &'static str, access: Access, scope: Scope, note: &'static str) -> Rpc {
    Rpc {
        path,
        access,
        scope,
        note,
    }
}

use Access::*;
use Scope::*;

/// Every RPC of `shoal.v1`, and the access it needs.
pub const RPCS: &[Rpc] = &[
    rpc("/shoal.v1.Collections/Create", Admin, Credential, ""),
    rpc(
        "/shoal.v1.Collections/Get",
        Read,
        Collection,
        "the request's collection (`name`)",
    ),
    rpc(
        "/shoal.v1.Collections/List",
        Any,
        Reply,
        "a collection-scoped token sees only its collections",
    ),
    rpc(
        "/shoal.v1.Collections/Update",
        Admin,
        Credential,
        "replication factor and resharding",
    ),
    rpc("/shoal.v1.Collections/Delete", Admin, Credential, ""),
    rpc(
        "/shoal.v1.Points/Upsert",
        Write,
        Collection,
        "the request's `collection`",
    ),
    rpc(
        "/shoal.v1.Points/Delete",
        Write,
        Collection,
        "the request's `collection`",
    ),
    rpc(
        "/shoal.v1.Points/Get",
        Read,
        Collection,
        "the request's `collection`",
    ),
    rpc(
        "/shoal.v1.Points/Search",
        Read,
        Collection,
        "the request's `collection`",
    ),
    rpc(
        "/shoal.v1.Points/SearchBatch",
        Read,
        Collection,
        "the request's `collection`",
    ),
    rpc(
        "/shoal.v1.Points/Scroll",
        Read,
        Collection,
        "the request's `collection`",
    ),
    rpc(
        "/shoal.v1.Points/Count",
        Read,
        Collection,
        "the request's `collection`",
    ),
    rpc(
        "/shoal.v1.Cluster/Status",
        Any,
        Reply,
        "full for admin; otherwise without node addresses, error texts and digests \
         (`digests: true` needs admin), and a collection-scoped token sees only its \
         collections and no operations",
    ),
    rpc("/shoal.v1.Cluster/Drain", Admin, Credential, ""),
    rpc("/shoal.v1.Cluster/MoveReplica", Admin, Credential, ""),
    rpc(
        "/shoal.v1.Cluster/Rebalance",
        Admin,
        Credential,
        "dry runs too",
    ),
    rpc("/shoal.v1.Backups/Create", Admin, Credential, ""),
    rpc("/shoal.v1.Backups/List", Admin, Credential, ""),
    rpc("/shoal.v1.Backups/Delete", Admin, Credential, ""),
    rpc("/shoal.v1.Backups/Download", Admin, Credential, ""),
    rpc("/shoal.v1.Backups/Restore", Admin, Credential, ""),
];

/// Services every caller may use without a credential: health checks (load balancers
/// and orchestrators probe them) and server reflection (the API's schema, public in
/// the repository anyway).
pub const EXEMPT_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
];

/// How a request path is treated.
#[derive(Debug, Clone, Copy)]
pub enum Lookup {
    /// No credential needed.
    Exempt,
    Rpc(&'static Rpc),
    /// Not a method of this server: a valid credential is still required before the
    /// server answers `UNIMPLEMENTED`.
    Unknown,
}

/// The entry for `path`.
pub fn lookup(path: &str) -> Lookup {
    if let Some(rpc) = RPCS.iter().find(|r| r.path == path) {
        return Lookup::Rpc(rpc);
    }
    let service = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .map(|(s, _)| s);
    match service {
        Some(s) if EXEMPT_SERVICES.contains(&s) => Lookup::Exempt,
        _ => Lookup::Unknown,
    }
}

/// `/shoal.v1.Points/Search` → `Points.Search`, as messages and the README name it.
pub fn short_name(path: &str) -> &str {
    path.rsplit_once('.').map_or(path, |(_, m)| m)
}

fn access_name(a: Access) -> &'static str {
    match a {
        Any => "any valid credential",
        Read => "read (`r`)",
        Write => "write (`rw`)",
        Admin => "admin",
    }
}

/// The README's table of [`RPCS`] (Markdown), exempt services last.
pub fn markdown() -> String {
    let mut out =
        String::from("| RPC | needs | checked against, or what the reply shows |\n|---|---|---|\n");
    for r in RPCS {
        let against = match (r.scope, r.note) {
            (Credential, "") => "the credential".to_string(),
            (Credential, n) => format!("the credential ({n})"),
            (_, n) => n.to_string(),
        };
        out.push_str(&format!(
            "| `{}` | {} | {against} |\n",
            short_name(r.path).replace('/', "."),
            access_name(r.access)
        ));
    }
    for s in EXEMPT_SERVICES {
        out.push_str(&format!("| `{s}/*` | nothing (exempt) | |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every method of the services in the proto's descriptor set.
    fn proto_methods() -> Vec<String> {
        let set =
            prost_types::FileDescriptorSet::decode(shoal_proto::v1::FILE_DESCRIPTOR_SET).unwrap();
        let mut out = Vec::new();
        for file in set.file {
            let package = file.package.clone().unwrap_or_default();
            for service in &file.service {
                for method in &service.method {
                    out.push(format!("/{package}.{}/{}", service.name(), method.name()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn the_table_covers_every_method_of_the_proto_once() {
        let methods = proto_methods();
        assert!(methods.len() >= 16, "{methods:?}");
        let mut table: Vec<String> = RPCS.iter().map(|r| r.path.to_string()).collect();
        table.sort();
        assert_eq!(table, methods, "auth::table::RPCS against shoal.proto");
        for m in &methods {
            assert!(matches!(lookup(m), Lookup::Rpc(_)), "{m}");
        }
    }

    #[test]
    fn health_and_reflection_are_exempt_and_nothing_else() {
        assert!(matches!(
            lookup("/grpc.health.v1.Health/Check"),
            Lookup::Exempt
        ));
        assert!(matches!(
            lookup("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Lookup::Exempt
        ));
        for p in [
            "/shoal.v1.Points/Nope",
            "/grpc.health.v1.HealthX/Check",
            "/x/grpc.health.v1.Health/Check",
            "grpc.health.v1.Health/Check",
            "/",
            "",
        ] {
            assert!(matches!(lookup(p), Lookup::Unknown), "{p}");
        }
    }

    #[test]
    fn admin_calls_and_writes_are_what_the_issue_says() {
        let access = |m: &str| match lookup(m) {
            Lookup::Rpc(r) => r.access,
            other => panic!("{m}: {other:?}"),
        };
        for m in [
            "Collections/Create",
            "Collections/Delete",
            "Collections/Update",
            "Cluster/Drain",
            "Cluster/MoveReplica",
            "Cluster/Rebalance",
        ] {
            let p = format!("/shoal.v1.{m}");
            assert_eq!(access(&p), Admin, "{m}");
        }
        for m in ["Points/Upsert", "Points/Delete"] {
            assert_eq!(access(&format!("/shoal.v1.{m}")), Write, "{m}");
        }
        // Reads and writes are always checked against their collection.
        for r in RPCS {
            if matches!(r.access, Read | Write) {
                assert_eq!(r.scope, Collection, "{}", r.path);
            }
        }
    }

    #[test]
    fn the_readme_shows_this_table() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .unwrap();
        let table = markdown();
        assert!(
            readme.contains(&table),
            "README.md's RPC table differs from auth::table::RPCS; it should read:\n{table}"
        );
    }
}
