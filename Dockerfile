# syntax=docker/dockerfile:1
# SendMe: build with the Rust toolchain, run on a slim Debian as a non-root user.
#   docker build -t sendme .
#   docker run -p 8080:8080 -e SENDME_ENVIRONMENT=production \
#     -e SENDME__AUTH__JWT_SECRET=... -v sendme-data:/var/lib/sendme sendme

FROM rust:1 AS builder
# The distributed backends (ScyllaDB store, Kafka queue); "" for an embedded-only image.
ARG FEATURES="kafka,scylla"
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY actors/Cargo.toml actors/Cargo.toml
COPY backends/kafka/Cargo.toml backends/kafka/Cargo.toml
COPY backends/scylla/Cargo.toml backends/scylla/Cargo.toml
# Patched dependencies (vendor/README.md), whole: they are built with the others.
COPY vendor vendor
RUN mkdir -p src actors/src backends/kafka/src backends/scylla/src benches \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs actors/src/lib.rs \
    && touch backends/kafka/src/lib.rs backends/scylla/src/lib.rs \
    && mkdir -p tests/api && echo 'fn main() {}' > benches/engine.rs && touch tests/api/main.rs \
    && cargo build --release --locked --features "$FEATURES" --bin sendme \
    && rm -rf src actors/src backends/kafka/src backends/scylla/src benches tests
COPY . .
RUN touch src/main.rs src/lib.rs actors/src/lib.rs backends/kafka/src/lib.rs backends/scylla/src/lib.rs \
    && cargo build --release --locked --features "$FEATURES" --bin sendme \
    && cp target/release/sendme /usr/local/bin/sendme

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 sendme \
    && useradd --uid 10001 --gid sendme --no-create-home --shell /usr/sbin/nologin sendme \
    && mkdir -p /var/lib/sendme && chown sendme:sendme /var/lib/sendme
COPY --from=builder /usr/local/bin/sendme /usr/local/bin/sendme
COPY config /app/config
WORKDIR /app
ENV SENDME_CONFIG_DIR=/app/config \
    SENDME_ENVIRONMENT=production \
    SENDME__STORE__PATH=/var/lib/sendme
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sendme"]
CMD ["serve"]
