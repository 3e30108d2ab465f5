# syntax=docker/dockerfile:1
# The coai-operator image: the operator (`coai-operator run`) and the engine its migration Jobs
# run (`coai-operator engine ...`), with the MariaDB client tools the engine calls (mariadb-dump,
# mariadb) and zstd for compressed backups.
#
#   docker build -t ghcr.io/coai-operator/coai-operator:0.1.0 .
#
# The e2e suite builds this file as is, without a daemon or a registry (buildah, chroot isolation,
# a local python:3.11-slim-bookworm made from Debian packages): e2e/localcluster/images.py.

# The tiktoken BPE files for CoaiInstance spec.offline (an init container copies them into the app's
# pod: without them the app's chat requests wait for ever on a download). They come from the Go
# module github.com/pkoukk/tiktoken-go-loader, laid out under tiktoken-go's cache names by
#   python e2e/localcluster/build_coai.py --tiktoken-only
# and are passed as a named build context:
#   docker buildx build --build-context tiktoken=<that directory> ...
# Without the context this stage is empty and the image has no files for offline mode.
FROM scratch AS tiktoken

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Wheels of the package and of its pinned dependencies.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends mariadb-client zstd ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels coai-operator \
    && coai-operator version
COPY --from=tiktoken / /opt/coai-operator/tiktoken/
# A fixed non-root user (the chart's runAsUser); the root filesystem can be read-only: Python
# writes no bytecode, and HOME and temporary files go to /tmp (an emptyDir in the pod).
RUN groupadd --system --gid 65532 nonroot \
    && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin nonroot
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
WORKDIR /tmp
LABEL org.opencontainers.image.title="coai-operator" \
      org.opencontainers.image.description="Kubernetes operator that runs CoAI and upgrades it safely" \
      org.opencontainers.image.source="https://github.com/coai-operator/coai-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
EXPOSE 8080
ENTRYPOINT ["coai-operator"]
CMD ["run", "--all-namespaces"]
