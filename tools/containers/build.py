"""Build the project image, with a clear way out when the base image cannot be pulled.

    python tools/containers/build.py [--engine E] [--base IMAGE|local] [--tag TAG]   (= make image)

``--base`` defaults to the Dockerfile's public base (``$BASE_IMAGE`` overrides it). ``local``
builds (once) and uses the Debian base from tools/containers/base.py. When the build fails and
the base image is not on this machine, the registry was most likely unreachable: the error says
so and names the local-base route, instead of leaving the user with an engine's pull error.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import base as bases
import engine as engines

ROOT = engines.ROOT
PUBLIC_BASE = "docker.io/library/python:3.11-slim-bookworm"
DEFAULT_TAG = "closedloop-mesh:latest"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")

NO_REGISTRY_HINT = """\
error: the base image {base} is not on this machine and could not be pulled
(no container registry reachable? a firewalled lab PC, or a machine like our build hosts).
Build on a local Debian base instead, made from the Debian mirror with debootstrap (~1 min):
    make image BASE_IMAGE=local          # base + project image, then: docker compose up -d
    make compose-test                    # the same route, then the end-to-end check
(docs/containers.md, "No container registry").
"""


def dockerfile_default_base() -> str:
    text = (ROOT / "Dockerfile").read_text()
    m = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M)
    return m.group(1) if m else PUBLIC_BASE


def build_image(
    eng: engines.Engine, base: str, tag: str = DEFAULT_TAG, host_ca: bool = True
) -> float:
    """Build ``tag`` on ``base``; returns the build time in seconds.

    Raises :class:`engines.EngineError` with the no-registry hint when the base is missing.
    """
    if base == "local":
        base = bases.build_base(eng)
    cmd = ["build", "-t", tag, "--build-arg", f"BASE_IMAGE={base}", "-f", "Dockerfile"]
    if host_ca and HOST_CA.is_file():
        # pip inside the build trusts the host's CAs (a TLS-inspecting proxy signs PyPI's
        # certificate with a CA only the host knows): a build secret, mounted for pip only.
        cmd += ["--secret", f"id=pip_ca,src={HOST_CA}"]
    # docker: secrets need BuildKit (built into dockerd >= 18.09; the default from 23.0 on)
    env = {"DOCKER_BUILDKIT": "1"} if eng.name == "docker" else {}
    engines.say(f"{eng.name} {' '.join(cmd)} .")
    t0 = time.monotonic()
    proc = subprocess.run(
        [*eng.cli, *cmd, "."],
        cwd=ROOT,
        env={**os.environ, **eng.env, **env},
        stdout=sys.stdout,
        stderr=sys.stderr,
    )
    took = time.monotonic() - t0
    if proc.returncode != 0:
        if not eng.image_exists(base):
            raise engines.EngineError(NO_REGISTRY_HINT.format(base=base))
        raise engines.EngineError(f"image build failed ({eng.name} exit {proc.returncode})")
    engines.say(f"image {tag} built on {base} in {took:.0f} s")
    return took


def main(argv: list[str] | None = None) -> int:
    p = engines.arg_parser(__doc__)
    p.add_argument(
        "--base",
        default=os.environ.get("BASE_IMAGE") or dockerfile_default_base(),
        help="base image, or 'local' for the debootstrap base (default: $BASE_IMAGE or the "
        "Dockerfile's)",
    )
    p.add_argument("--tag", default=os.environ.get("MESH_IMAGE") or DEFAULT_TAG)
    p.add_argument("--no-host-ca", action="store_true", help="do not mount the host's CA bundle")
    args = p.parse_args(argv)
    try:
        build_image(engines.find(args.engine), args.base, args.tag, not args.no_host_ca)
    except (engines.EngineError, subprocess.CalledProcessError) as exc:
        print(f"{exc}".rstrip(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
