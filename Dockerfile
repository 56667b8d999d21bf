# Multi-stage build of the `shoal` binary. protoc is vendored, so the Rust image is enough.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p shoal-server --bin shoal \
 && install -D target/release/shoal /out/shoal

FROM debian:bookworm-slim
RUN useradd --system --home /data shoal && mkdir -p /data && chown shoal /data
COPY --from=build /out/shoal /usr/local/bin/shoal
USER shoal
ENV SHOAL_LISTEN=0.0.0.0:7470 \
    SHOAL_DATA_DIR=/data
VOLUME /data
EXPOSE 7470
ENTRYPOINT ["shoal"]
CMD ["serve"]
