"""Build a Debian 12 base image from the Debian mirror, for machines with no container registry.

    python tools/containers/base.py [--engine E] [--tag TAG] [--mirror URL] [--force|--remove]
    (= make compose-base; make compose-clean removes it)

Lab PCs behind a firewall (and this project's build machines) reach the Debian mirror and PyPI
but no container registry, so ``FROM python:3.11-slim-bookworm`` cannot be pulled. ``debootstrap``
builds a minimal bookworm root file system with Debian's python3 (3.11), python3-venv and
ca-certificates (about a minute, ~300 MB), and the engine imports it as a local image. The
Dockerfile works on either base. The mirror is the one this machine's apt already uses.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import engine as engines

LOCAL_BASE = "localhost/closedloop-base:bookworm"
SUITE = "bookworm"
INCLUDE = "python3,python3-venv,ca-certificates"
FALLBACK_MIRROR = "http://deb.debian.org/debian"


def apt_mirror(etc: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt uses here (deb822 ``.sources`` or one-line ``.list``), else the default."""
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*"))]
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        if f.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(
                    (k.strip().lower(), v.strip())
                    for k, _, v in (
                        line.partition(":") for line in stanza.splitlines() if ":" in line
                    )
                    if not k.lstrip().startswith("#")
                )
                suites = fields.get("suites", "").split()
                if SUITE in suites and "main" in fields.get("components", "").split():
                    return fields.get("uris", "").split()[0]
        else:
            for line in text.splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)", line)
                if m and m.group(2) == SUITE and "main" in m.group(3).split():
                    return m.group(1)
    return FALLBACK_MIRROR


def build_base(
    eng: engines.Engine, tag: str = LOCAL_BASE, mirror: str | None = None, force: bool = False
) -> str:
    """Create ``tag`` unless it exists (or ``force``); returns the tag."""
    if eng.image_exists(tag) and not force:
        engines.say(f"local base {tag} already exists (make compose-clean removes it)")
        return tag
    if not shutil.which("debootstrap"):
        raise engines.EngineError("debootstrap missing: run `make compose-engine`")
    mirror = mirror or apt_mirror()
    t0 = time.monotonic()
    # /var/tmp: a real disk (not a tmpfs), and root-owned device nodes are allowed there.
    with tempfile.TemporaryDirectory(prefix="closedloop-base-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        engines.say(f"debootstrap {SUITE} from {mirror} (about a minute)")
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={INCLUDE}",
                SUITE,
                str(rootfs),
                mirror,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        # Smaller image: downloaded packages and apt lists are not needed (the build refreshes).
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        engines.say(f"importing the root file system as {tag}")
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
        )
        assert tar.stdout is not None
        imp = eng.run("import", "--change", 'CMD ["python3"]', "-", tag, stdin=tar.stdout)
        tar.stdout.close()
        tar.wait()
        if tar.returncode != 0 or imp.returncode != 0:
            raise engines.EngineError(f"import of the base failed: {imp.stderr.strip()}")
    engines.say(f"local base {tag} built in {time.monotonic() - t0:.0f} s")
    return tag


def main(argv: list[str] | None = None) -> int:
    p = engines.arg_parser(__doc__)
    p.add_argument("--tag", default=LOCAL_BASE)
    p.add_argument("--mirror", help="Debian mirror URL (default: the one apt uses here)")
    p.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    p.add_argument("--remove", action="store_true", help="remove the image instead")
    args = p.parse_args(argv)
    try:
        eng = engines.find(args.engine)
        if args.remove:
            if eng.image_exists(args.tag):
                eng.run("rmi", args.tag, check=True)
                engines.say(f"removed {args.tag}")
            return 0
        build_base(eng, args.tag, args.mirror, args.force)
    except (engines.EngineError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
