# Multi-stage build: a full Rust toolchain to compile, a slim runtime to run.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libclang-dev clang && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p pgshift && strip target/release/pgshift

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /nonexistent --shell /usr/sbin/nologin pgshift
COPY --from=build /src/target/release/pgshift /usr/local/bin/pgshift
USER 10001:10001
EXPOSE 6432 9930
ENTRYPOINT ["/usr/local/bin/pgshift"]
CMD ["run", "--config", "/etc/pgshift/pgshift.yaml"]
