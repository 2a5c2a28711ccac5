# syntax=docker/dockerfile:1
# The `payledger` binary in a small Debian image. Used by compose.yaml; build from the repository
# root: docker build -t payledger .

FROM rust:1-bookworm AS builder
WORKDIR /src
# The whole tree behind .dockerignore (never the host's target/ or databases): every workspace
# member is there, whatever members Cargo.toml lists; command-api/tests/deploy.rs checks that the
# ignore file leaves none of them out. The migrations are compiled into the binary
# (sqlx::migrate!).
COPY . .
# Cache mounts keep the registry and the build directory between builds; the binary is copied out
# of the cache because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p payledger-command-api \
    && cp target/release/payledger /usr/local/bin/payledger

FROM debian:bookworm-slim
# curl: the compose healthcheck calls /healthz.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --home-dir /var/lib/payledger --create-home payledger \
    && install -d -o payledger -m 0700 /var/lib/payledger/keys
COPY --from=builder /usr/local/bin/payledger /usr/local/bin/payledger
USER payledger
# Without DATABASE_URL the embedded SQLite file payledger.db lands here.
WORKDIR /var/lib/payledger
EXPOSE 8080
ENTRYPOINT ["payledger"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
