"""Two hosts on one machine, for tests: network namespaces joined by a veth pair, and an OpenSSH
server on the far one.

Host A (``10.123.0.1``) runs the control room; host B (``10.123.0.2``) runs sshd in its own UTS
namespace with the hostname ``rig-b``, so everything started over ssh there (and so every LSL
stream it publishes) carries B's name, as on a second PC. Addresses exist only inside the two
namespaces. Linux only, and root only (``ip netns``); :func:`skip_reason` says why it cannot run.
Everything it creates (namespaces, veth, sshd, keys, temp files) is removed on exit, also after a
failure: the namespaces are deleted last, which takes the veth pair with them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
A_ADDR, B_ADDR = "10.123.0.1", "10.123.0.2"
B_HOSTNAME = "rig-b"
TOOLS = ("ip", "unshare", "hostname", "ssh", "ssh-keygen")


def skip_reason() -> str | None:
    """Why the two-host tests cannot run here (None: they can)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux-only"
    if os.geteuid() != 0:
        return "ip netns needs root"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (apt-get install iproute2 openssh-client)"
    if not Path(SSHD).exists():
        return "no sshd (apt-get install openssh-server; .ci/run installs it)"
    return None


@dataclass
class Host:
    """One namespace: run commands in it with :meth:`argv`."""

    netns: str
    address: str
    hostname: str | None = None  # a UTS hostname of its own for what we start here

    def argv(self, *cmd: str) -> list[str]:
        base = ["ip", "netns", "exec", self.netns]
        if self.hostname is None:
            return [*base, *cmd]
        script = 'hostname "$0" && exec "$@"'
        return [*base, "unshare", "--uts", "sh", "-c", script, self.hostname, *cmd]

    def run(self, *cmd: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(*cmd), capture_output=True, text=True, timeout=timeout, check=False
        )

    def pids(self) -> list[int]:
        """Every process in this network namespace."""
        out = subprocess.run(
            ["ip", "netns", "pids", self.netns], capture_output=True, text=True, check=False
        )
        return [int(p) for p in out.stdout.split()]


@dataclass
class TwoHosts:
    a: Host
    b: Host
    tmp: Path
    lab_cfg: Path  # LSL config with KnownPeers = both addresses
    ssh_config: Path  # client config: key, known host, batch mode
    sshd: subprocess.Popen

    @property
    def ssh_dest(self) -> str:
        return f"root@{self.b.address}"

    def others_in_b(self) -> list[str]:
        """Command lines of processes in B other than sshd's listener (what a test leaves)."""
        out = []
        for pid in self.b.pids():
            if pid == self.sshd.pid:
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if cmd and not cmd.startswith(("unshare", SSHD)):
                out.append(f"{pid}: {cmd.strip()}")
        return out

    def set_link(self, up: bool) -> None:
        """Take B off the network (its end of the veth down) or put it back."""
        self.b.run("ip", "link", "set", "veth-b", "up" if up else "down")


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


def _write_ssh_files(tmp: Path) -> tuple[Path, Path]:
    """Throwaway host and client keys, sshd_config on B's address, and a client config."""
    for key in ("host_key", "client_key"):
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key, "-f", str(tmp / key))
    (tmp / "authorized_keys").write_text((tmp / "client_key.pub").read_text())
    host_pub = " ".join((tmp / "host_key.pub").read_text().split()[:2])
    (tmp / "known_hosts").write_text(f"{B_ADDR} {host_pub}\n")
    sshd_config = tmp / "sshd_config"
    sshd_config.write_text(
        f"ListenAddress {B_ADDR}:22\nHostKey {tmp / 'host_key'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nPidFile none\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\n"
        # what docs/multi-host.md asks of a lab sshd: a vanished client ends its session soon
        "ClientAliveInterval 1\nClientAliveCountMax 2\nLogLevel ERROR\n"
    )
    client = tmp / "ssh_config"
    client.write_text(
        f"Host *\n  IdentityFile {tmp / 'client_key'}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {tmp / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
        "  LogLevel ERROR\n"
    )
    return sshd_config, client


def can_connect(host: Host, address: str, port: int) -> bool:
    """Whether ``address:port`` accepts a TCP connection from inside ``host``'s namespace."""
    probe = f"import socket; socket.create_connection(('{address}', {port}), 1).close()"
    return host.run(sys.executable, "-c", probe, timeout=10).returncode == 0


def _wait_port(host: Host, address: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not can_connect(host, address, port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {address}:{port} after {timeout} s")
        time.sleep(0.1)


@contextlib.contextmanager
def two_hosts(tmp: Path) -> Iterator[TwoHosts]:
    """Namespaces A and B, a veth pair between them, sshd on B; all removed on exit."""
    tag = uuid.uuid4().hex[:6]
    a = Host(f"mh-a-{tag}", A_ADDR)
    b = Host(f"mh-b-{tag}", B_ADDR, hostname=B_HOSTNAME)
    sshd: subprocess.Popen | None = None
    try:
        for h in (a, b):
            _sh("ip", "netns", "add", h.netns)
            _sh("ip", "netns", "exec", h.netns, "ip", "link", "set", "lo", "up")
        _sh("ip", "netns", "exec", a.netns, "ip", "link", "add", "veth-a", "type", "veth",
            "peer", "name", "veth-b", "netns", b.netns)  # fmt: skip
        for h, dev in ((a, "veth-a"), (b, "veth-b")):
            _sh("ip", "netns", "exec", h.netns, "ip", "addr", "add", f"{h.address}/24", "dev", dev)
            _sh("ip", "netns", "exec", h.netns, "ip", "link", "set", dev, "up")
        lab = tmp / "lab_lsl.cfg"
        lab.write_text(
            "[ports]\nIPv6 = disable\n\n[multicast]\nResolveScope = link\n\n"
            f"[lab]\nKnownPeers = {{{A_ADDR}, {B_ADDR}}}\n\n[log]\nlevel = -2\n"
        )
        sshd_config, client = _write_ssh_files(tmp)
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        with open(tmp / "sshd.log", "wb") as log:  # sshd keeps its own copy of the descriptor
            sshd = subprocess.Popen(
                b.argv(SSHD, "-D", "-e", "-f", str(sshd_config)),
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        _wait_port(a, B_ADDR, 22)
        yield TwoHosts(a, b, tmp, lab, client, sshd)
    finally:
        _teardown(a, b, sshd)


def _teardown(a: Host, b: Host, sshd: subprocess.Popen | None) -> None:
    """Kill what runs in either namespace (sshd first), then delete both namespaces."""
    if sshd is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sshd.pid, signal.SIGKILL)
        sshd.wait(10)
    for h in (b, a):
        for pid in h.pids() if _exists(h) else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if _exists(h):
            subprocess.run(["ip", "netns", "del", h.netns], capture_output=True, check=False)


def _exists(h: Host) -> bool:
    return Path(f"/run/netns/{h.netns}").exists()
