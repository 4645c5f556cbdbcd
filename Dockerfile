# One image for every module and the control room: the project and its runtime dependencies,
# PsychoPy and Xvfb for the presenter. docs/containers.md explains the choices.
#
# BASE_IMAGE is any Debian 12 (bookworm) image with python3 3.11 and python3-venv:
#   - the public default below (Docker Hub's python:3.11-slim-bookworm; needs a registry);
#   - a local base built from the Debian mirror with debootstrap, where no registry is reachable:
#       make compose-base      (then BASE_IMAGE=localhost/closedloop-base:bookworm)
#     `make image` and `make compose-test` do this for you when the registry cannot be reached.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# X server and GL libraries for PsychoPy under Xvfb (presenter); nothing else.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates xvfb xauth libgl1 libglu1-mesa libegl1 libgl1-mesa-dri libglib2.0-0 \
        libxrender1 libxi6 libxkbcommon0 libfontconfig1 libdbus-1-3 \
    && rm -rf /var/lib/apt/lists/*

# A venv works the same on both bases (python.org's Python in /usr/local, or Debian's python3).
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app

# Dependencies first, from pyproject.toml alone (empty package folders), so that a code change
# rebuilds only the last layers and not PsychoPy.
# pip trusts the system CA bundle, or the host's when the build is given it as the build secret
# `pip_ca` (tools/containers/build.py does: behind a TLS-inspecting proxy only the host knows the
# CA that signs PyPI's certificate). A secret is mounted for this step only, never stored.
COPY pyproject.toml README.md ./
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; \
    else export PIP_CERT=/etc/ssl/certs/ca-certificates.crt; fi \
    && mkdir -p shared_utils services control_room \
    && pip install --no-cache-dir '.[presenter,export]' \
    && pip uninstall -y -q closedloop-mesh \
    && rm -rf shared_utils services control_room build ./*.egg-info

COPY shared_utils ./shared_utils
COPY services ./services
COPY control_room ./control_room
COPY config ./config
COPY examples ./examples
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; \
    else export PIP_CERT=/etc/ssl/certs/ca-certificates.crt; fi \
    && pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info

# All services use the host network (compose.yaml): LSL stays on the loopback interface, as with
# `make run`, and every module binds 127.0.0.1.
ENV LSLAPICFG=/app/config/lsl_loopback.cfg
CMD ["control-room", "--help"]
