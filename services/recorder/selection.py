"""Which streams a recording takes: by name, and by host or source_id where a name is not enough.

Why: LSL shows every stream on the network. Two rigs running the same experiment publish the same
names, and a recorder that picks streams by name alone records the other rig's EEG into this
session's file without a word. So:

- ``streams`` entries are names (``"mock_eeg"``) or tables ``{"name": "mock_eeg", "host":
  "rig2"}`` / ``{"name": ..., "source_id": ...}``; ``{"name": ..., "all": true}`` takes every
  source of that name on purpose, and ``streams: null`` or ``"all"`` takes every stream;
- a bare name that two sources publish (two ``(host, source_id)`` pairs) is refused at START with
  a message listing both;
- a bare name binds to the first source it records; a second source of that name appearing later
  is reported (log warning, ``conflicts`` in STATUS) and never recorded. The same source coming
  back (a restarted outlet on the same host, same source_id) is still taken.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from shared_utils.checks import short
from shared_utils.errors import CommandError
from shared_utils.logging import get_logger

log = get_logger("recorder.selection")

_KEYS = {"name", "host", "source_id", "all"}


@dataclass(frozen=True)
class Selector:
    """One ``streams`` entry."""

    name: str
    host: str | None = None
    source_id: str | None = None
    all_sources: bool = False

    @property
    def pinned(self) -> bool:
        """Names its source (or says every source is wanted): never ambiguous."""
        return self.host is not None or self.source_id is not None or self.all_sources

    def matches(self, info: Any) -> bool:
        return (
            info.name() == self.name
            and (self.host is None or info.hostname() == self.host)
            and (self.source_id is None or info.source_id() == self.source_id)
        )

    def label(self) -> str:
        """How ``waiting_for`` names it: the bare name, or ``name@host`` / ``name#source_id``."""
        return (
            self.name
            + (f"@{self.host}" if self.host is not None else "")
            + (f"#{self.source_id}" if self.source_id is not None else "")
        )


def source_of(info: Any) -> tuple[str, str]:
    """What tells two publishers of one name apart: (host, source_id)."""
    return info.hostname(), info.source_id()


def _fmt(src: tuple[str, str]) -> str:
    return f"host {src[0]!r} source_id {src[1]!r}"


def parse_streams(streams: Any) -> list[Selector] | None:
    """The START argument as selectors (None: every stream); a malformed entry is refused."""
    if streams is None or streams == "all":
        return None
    if not isinstance(streams, list):
        raise CommandError(
            f'"streams" must be a list of stream names or {{"name", "host" | "source_id"}} '
            f'tables, "all" or null; got {short(streams)}'
        )
    out = []
    for i, s in enumerate(streams):
        if isinstance(s, str) and s:
            out.append(Selector(s))
            continue
        if not isinstance(s, dict) or not isinstance(s.get("name"), str) or not s["name"]:
            raise CommandError(
                f'"streams"[{i}] must be a name or a table with "name" (and "host" or '
                f'"source_id"), got {short(s)}'
            )
        unknown = set(s) - _KEYS
        bad = [k for k in ("host", "source_id") if k in s and not isinstance(s[k], str)]
        if unknown or bad or not isinstance(s.get("all", False), bool):
            raise CommandError(
                f'"streams"[{i}]: keys are name, host, source_id (strings) and all (true/false); '
                f"got {short(s)}"
            )
        out.append(Selector(s["name"], s.get("host"), s.get("source_id"), s.get("all", False)))
    return list(dict.fromkeys(out))


class Selection:
    """The selectors of one recording, the source each bare name is bound to, and what was
    refused. Called from the recording's discovery thread and the command thread."""

    def __init__(self, selectors: list[Selector] | None) -> None:
        self.selectors = selectors
        self._bound: dict[Selector, tuple[str, str]] = {}
        self._refused: dict[str, dict[str, Any]] = {}  # uid -> what was not recorded
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str] | None:
        return (
            None if self.selectors is None else list(dict.fromkeys(s.name for s in self.selectors))
        )

    def check_unambiguous(self, infos: list[Any]) -> None:
        """Refuse a bare name that two sources publish right now, naming both."""
        for sel in self.selectors or []:
            if sel.pinned:
                continue
            sources = sorted({source_of(i) for i in infos if sel.matches(i)})
            if len(sources) > 1:
                listed = "; ".join(_fmt(s) for s in sources)
                raise CommandError(
                    f"stream name {sel.name!r} is published by {len(sources)} sources ({listed}); "
                    f'say which: {{"name": "{sel.name}", "host": "{sources[0][0]}"}} (or '
                    f'"source_id"), or {{"name": "{sel.name}", "all": true}} to record them all'
                )

    def admit(self, info: Any) -> bool:
        """Whether the recording takes this stream; a second source of a bound bare name is
        reported once and refused."""
        if self.selectors is None:
            return True
        sel = next((s for s in self.selectors if s.matches(info)), None)
        if sel is None:
            return False
        if sel.pinned:
            return True
        src = source_of(info)
        with self._lock:
            bound = self._bound.setdefault(sel, src)
            if bound == src:
                return True
            first = info.uid() not in self._refused
            self._refused[info.uid()] = {
                "name": sel.name,
                "recorded": {"host": bound[0], "source_id": bound[1]},
                "ignored": {"host": src[0], "source_id": src[1], "uid": info.uid()},
            }
        if first:
            log.warning(
                "a second source publishes a recorded stream name; not recorded (name the host "
                "or source_id in START to choose)",
                name=sel.name,
                recorded=_fmt(bound),
                ignored=_fmt(src),
            )
        return False

    def waiting_for(self, recorded: list[Any]) -> list[str]:
        """Selectors no recorded stream matches yet."""
        return [s.label() for s in self.selectors or [] if not any(s.matches(i) for i in recorded)]

    def conflicts(self) -> list[dict[str, Any]]:
        """Streams seen but not recorded because their name belongs to another source here."""
        with self._lock:
            return list(self._refused.values())
