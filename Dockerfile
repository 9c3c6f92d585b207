# The operator image: a statically linked binary FROM scratch, run as a non-root numeric user.
# Two ways to build it, sharing the final stage below (so both produce the same image layout):
# - with a registry at hand:
#     docker build --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#       -t quay.io/ambient_code/agentic-operator:latest .
#   The build stage compiles the binary on the Rust image.
# - offline: `make image` (image/build.sh) compiles the same binary on the host and hands buildah
#   a directory as the `build` stage (--build-context build=…): only the final stage runs and no
#   base image is pulled. Output: target/image/agentic-operator.oci.tar.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crds crds
COPY queue queue
COPY legacy legacy
COPY src src
COPY benches benches
COPY image/stage.sh image/stage.sh
# crt-static: glibc linked in, so the image needs no libc, no loader, no shared library.
# getrandom_backend: getrandom 0.3 (kube-runtime's ahash, the queue's governor) finds glibc's
# getrandom() with dlsym, which a static binary cannot do, and falls back to /dev/urandom; this
# makes it use the system call, so randomness needs nothing from /dev.
RUN triple="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' \
    cargo build --release --locked --target "$triple" -p agentic-operator \
 && image/stage.sh "target/$triple/release/agentic-operator" /stage

FROM scratch
COPY --from=build /stage/ /
WORKDIR /app
# 65532: the Deployment's runAsUser/runAsGroup (runAsNonRoot needs a numeric uid: the image has
# no /etc/passwd).
USER 65532:65532
# metrics (/metrics) and probes (/healthz, /readyz), as in deploy/base/deployment.yaml.
EXPOSE 8080 8081
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="agentic-operator" \
      org.opencontainers.image.description="Kubernetes operator that runs AI coding agent sessions as Jobs" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
ENTRYPOINT ["/usr/local/bin/agentic-operator"]
