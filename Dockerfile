# The operator image: a static-enough release build on the Rust image, run on distroless as a
# non-root user. Build: docker build -t quay.io/ambient_code/agentic-operator:latest .
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crds crds
COPY queue queue
COPY legacy legacy
COPY src src
COPY benches benches
RUN cargo build --release --locked -p agentic-operator \
 && cp target/release/agentic-operator /agentic-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /agentic-operator /usr/local/bin/agentic-operator
# 65532 = nonroot in distroless; the Deployment also sets runAsNonRoot and this uid.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/agentic-operator"]
