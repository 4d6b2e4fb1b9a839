# One image with every paysaga binary; the chart picks one with `command`.
# Build: docker build -t paysaga:0.1.0 .   (make kind does, then loads it into kind)

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The Temporal SDK builds its protos with vendored-protox: no protoc needed.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      -p paysaga-operator -p paysaga-worker -p paysaga-sim \
 && mkdir -p /out \
 && cp target/release/paysaga-operator target/release/paysaga-worker target/release/paysaga-sim /out/

# Small, non-root, no shell: glibc, CA certificates and our binaries.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 8080 8081 8090
ENTRYPOINT []
