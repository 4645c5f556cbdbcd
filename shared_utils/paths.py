"""Where modules read and write files: one mesh-wide data folder, and names that cannot escape it.

Why: a command arrives over the network, so a file name in it is untrusted input. Every module
that writes (recorder START, decoder SAVE, presenter SCREENSHOT) or reads (decoder FIT and LOAD)
resolves names with :func:`resolve_in` against its folder: relative names land inside it,
``..`` is refused, and so are absolute paths outside the folder unless the module was started
with a flag that allows them (an absolute path inside it, as another module's reply gives, is
fine), existing files are not overwritten unless the command says ``overwrite: true``,
and the reply gives the resolved path. All modules share one data folder (``$MESH_DATA_DIR``,
default ``data`` in the working directory; the control room sets it for the modules it starts),
so the file the recorder just wrote is found by the decoder under the same relative name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from shared_utils.checks import did_you_mean, short
from shared_utils.errors import CommandError

__all__ = ["DATA_ENV", "data_dir", "resolve_in"]

DATA_ENV = "MESH_DATA_DIR"
MAX_NAME = 1024  # characters in a file name from a command (PATH_MAX is 4096)


def data_dir(default: str | os.PathLike[str] = "data") -> Path:
    """The mesh-wide data folder (absolute): ``$MESH_DATA_DIR``, else ``default``."""
    return Path(os.environ.get(DATA_ENV) or default).expanduser().resolve()


def resolve_in(
    folder: str | os.PathLike[str],
    name: str,
    *,
    what: str = "file",
    suffixes: Iterable[str] | None = None,
    allow_absolute: bool = False,
    must_exist: bool = False,
    overwrite: bool = True,
    create_dirs: bool = False,
    folder_name: str = "data folder",
) -> Path:
    """``name`` resolved inside ``folder``, or a :class:`CommandError` that says why not.

    - ``name`` is relative to ``folder``; ``..`` may not lead out of it (symlinks included);
    - an absolute ``name`` is accepted when it lies inside ``folder`` (a path another module
      replied with, e.g. the recorder's file), anywhere else only with ``allow_absolute`` (a
      module's start-up flag);
    - ``suffixes``: accepted endings (``.xdf``); ``must_exist``: the file must be there (the
      error names close matches in the folder); ``overwrite=False``: an existing file is refused;
    - ``create_dirs``: make missing parent folders (only ever inside ``folder``);
    - ``folder_name``: what messages call ``folder`` ("experiments folder").
    """
    if not isinstance(name, str) or not name.strip():
        raise CommandError(f"{what}: give a file name (relative to the {folder_name} {folder})")
    if len(name) > MAX_NAME:
        raise CommandError(
            f"{what}: a name of {len(name)} characters is too long (at most {MAX_NAME})"
        )
    try:
        return _resolve(
            folder,
            name,
            what,
            suffixes,
            allow_absolute,
            must_exist,
            overwrite,
            create_dirs,
            folder_name,
        )
    except (OSError, RuntimeError) as exc:  # too long for the file system, a symlink loop, ~user
        raise CommandError(
            f"{what} {short(name, 300)}: {getattr(exc, 'strerror', None) or exc}"
        ) from None


def _resolve(
    folder: str | os.PathLike[str],
    name: str,
    what: str,
    suffixes: Iterable[str] | None,
    allow_absolute: bool,
    must_exist: bool,
    overwrite: bool,
    create_dirs: bool,
    folder_name: str,
) -> Path:
    base = Path(folder).expanduser().resolve()
    given = Path(name).expanduser()
    if given.is_absolute():
        target = given.resolve()
        inside = target == base or base in target.parents
        if not allow_absolute and not inside:
            raise CommandError(
                f"{what} {short(name, 300)}: absolute paths outside the {folder_name} {base} are not accepted; "
                "give a name relative to it (or start the module with --allow-absolute-paths)"
            )
    else:
        target = (base / given).resolve()
        if target != base and base not in target.parents:
            raise CommandError(
                f"{what} {short(name, 300)} leads outside the {folder_name} {base}; use a name inside it"
            )
    if suffixes is not None:
        ends = [s.lower() for s in suffixes]
        if not any(target.name.lower().endswith(s) for s in ends):
            raise CommandError(f"{what} {short(name, 300)} must end with {' or '.join(ends)}")
    if must_exist and not target.is_file():
        near = _nearby(target)
        hint = f" (did you mean {near!r}?)" if near else ""
        raise CommandError(f"{what} not found: {short(str(target), 300)}{hint}")
    if not overwrite and target.exists():
        raise CommandError(
            f"{what} {short(str(target), 300)} already exists; choose another name or pass "
            "overwrite: true"
        )
    if create_dirs:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CommandError(f"cannot create folder {target.parent}: {exc.strerror}") from None
    return target


def _nearby(target: Path) -> str | None:
    """The closest existing file name in the same folder (for 'not found' messages)."""
    try:
        names = [p.name for p in target.parent.iterdir() if p.is_file()]
    except OSError:
        return None
    close = did_you_mean(target.name, names)
    return str(target.parent / close) if close else None
