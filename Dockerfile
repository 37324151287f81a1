# blockwatch: a release build on Debian bookworm, run as an unprivileged user.
#   docker build -t blockwatch .
#   docker run --rm -p 127.0.0.1:9464:9464 blockwatch                      # the demo
#   docker run --rm -v $PWD/blockwatch.toml:/etc/blockwatch.toml blockwatch run --config /etc/blockwatch.toml
# The toolchain matches rust-toolchain.toml.
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --bin blockwatch \
    && cp target/release/blockwatch /usr/local/bin/blockwatch

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/blockwatch --create-home blockwatch
COPY --from=build /usr/local/bin/blockwatch /usr/local/bin/blockwatch
USER blockwatch
WORKDIR /var/lib/blockwatch
# The HTTP API. Inside a container it must listen on 0.0.0.0 to be published (agent.http_listen,
# or `demo --http`); publish it on the host's 127.0.0.1 unless it is meant to be reachable.
EXPOSE 9464
ENTRYPOINT ["blockwatch"]
CMD ["demo", "--http", "0.0.0.0:9464"]
