"""What an export wrote, what it left out and why: the record every step adds to.

An export never drops data silently: each step that cannot carry something over (a stream with no
samples, a marker outside the recorded signal, a trial outside the recording) adds a
:class:`Skipped` entry, and each assumption it had to make (a unit that was missing, a label it
made up) adds a note. Both end up in the :class:`ExportResult` the caller prints or returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ExportError(RuntimeError):
    """The export could not be done and nothing was written; the text says why."""


@dataclass(frozen=True)
class Skipped:
    """One thing left out of an export, and why."""

    item: str
    reason: str

    def __str__(self) -> str:
        return f"{self.item}: {self.reason}"


@dataclass
class Findings:
    """Skips and notes collected while one export runs (no duplicates, order kept)."""

    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def skip(self, item: str, reason: str) -> None:
        entry = Skipped(item, reason)
        if entry not in self.skipped:
            self.skipped.append(entry)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def copy(self) -> Findings:
        return Findings(list(self.skipped), list(self.notes))


@dataclass
class ExportResult:
    """One finished export: the folder written, its files, and what was skipped and why."""

    format: str
    source: Path
    out: Path
    files: list[Path]
    skipped: list[Skipped]
    notes: list[str]
    seconds: float
    validation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the recorder's EXPORT reply and ``control-room export --json``)."""
        return {
            "format": self.format,
            "source": str(self.source),
            "out": str(self.out),
            "files": [str(f) for f in self.files],
            "skipped": [{"item": s.item, "reason": s.reason} for s in self.skipped],
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
            "validation": self.validation,
        }

    def lines(self) -> list[str]:
        """Human-readable report, one line each."""
        out = [f"{self.format.upper()}: {self.out} ({len(self.files)} files, {self.seconds:.1f} s)"]
        main = [f for f in self.files if f.suffix in (".vhdr", ".edf", ".nwb", ".tsv")]
        out += [f"  wrote {f}" for f in main[:12]]
        if len(main) > 12:
            out.append(f"  ... and {len(main) - 12} more")
        out += [f"  skipped {s}" for s in self.skipped]
        out += [f"  note: {n}" for n in self.notes]
        if self.validation is not None:
            v = self.validation
            out.append(
                f"  validation ({v.get('tool')}): {v.get('errors')} errors, "
                f"{v.get('warnings')} warnings"
            )
        return out
