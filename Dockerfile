# Multi-stage build of the `shoal` binary. protoc is vendored, so the Rust image is enough.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p shoal-cli --bin shoal \
 && install -D target/release/shoal /out/shoal

FROM debian:bookworm-slim
# /secrets: where docker-compose.yml keeps the generated cluster secret.
RUN useradd --system --home /data shoal && mkdir -p /data /secrets && chown shoal /data /secrets
COPY --from=build /out/shoal /usr/local/bin/shoal
USER shoal
# 7470: the public gRPC API, the only port exposed. 7471: Raft and node-to-node
# traffic, authenticated by the cluster secret; keep it on a private network and never
# publish it (a cluster sets SHOAL_NODE_ID, SHOAL_PEERS and SHOAL_CLUSTER_SECRET_FILE,
# see docker-compose.yml).
ENV SHOAL_LISTEN=0.0.0.0:7470 \
    SHOAL_RAFT_LISTEN=0.0.0.0:7471 \
    SHOAL_DATA_DIR=/data
VOLUME /data
EXPOSE 7470
ENTRYPOINT ["shoal"]
CMD ["serve"]
