# syntax=docker/dockerfile:1
# keygate node daemon image.
#   docker build -t keygate:0.1.0 .
#
# The base is pinned by digest (a tag can be re-pointed; a digest cannot). To refresh it:
#   docker buildx imagetools inspect python:3.11-slim --format '{{json .Manifest.Digest}}'
# and replace the digest below (tests/test_dockerfile.py checks the form and the version).
ARG PYTHON_IMAGE=python:3.11-slim@sha256:74132ced0002947303bc75654c7d51d3818435fe1c0ec6e4d84f7ca4d0849878
# Backends whose SDKs go into the image, and sigstore for keyless signatures (optional extras of the keygate package).
ARG KEYGATE_EXTRAS=vault,azure,gcp,aws,signatures

# --- stage 1: build the keygate wheel and every dependency's wheel ---
FROM ${PYTHON_IMAGE} AS build
ARG KEYGATE_EXTRAS
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# README.md* : copied when present (pyproject's readme), without failing when it is not.
COPY pyproject.toml README.md* ./
COPY proto/ proto/
COPY provider/ provider/
COPY providers/ providers/
RUN pip wheel --wheel-dir /wheels ".[${KEYGATE_EXTRAS}]"

# --- stage 2: the runtime, with only the installed wheels ---
FROM ${PYTHON_IMAGE}
ARG KEYGATE_EXTRAS
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="keygate" \
      org.opencontainers.image.description="Secrets Store CSI Driver provider that attests pods and releases secrets from many backends" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/keygate/keygate" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "keygate[${KEYGATE_EXTRAS}]" \
    && keygate version
# Root, on purpose: the provider socket directory on the node is a root-owned hostPath
# (0755) shared with the driver, and the socket is created 0600 for the driver (root) alone.
# The DaemonSet drops every capability, forbids privilege escalation and mounts the root
# filesystem read-only, so uid 0 here cannot act beyond the files it owns. See daemonset.yaml.
USER 0:0
ENTRYPOINT ["keygate", "serve"]
