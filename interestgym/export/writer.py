"""Writing an export directory atomically: build it beside the target, swap it in, remove the old one.

What the files and the manifest hold is not decided here: the caller writes the payload files, and
the manifest is sealed (checksums, content digest) and written by :mod:`interestgym.runtime.manifest`,
the module that reads it back.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from interestgym.data.swap import recover, sibling
from interestgym.errors import ArtifactError
from interestgym.runtime.manifest import (
    MANIFEST_NAME,
    is_export_manifest,
    seal_manifest,
    write_manifest,
)


def write_export_directory(out: str | Path, write_files: Callable[[Path], Any], manifest: Mapping[str, Any]) -> Path:
    """Write an export directory atomically and return its path.

    ``write_files(tmp_dir)`` writes every payload file into a fresh temporary directory next to
    ``out``; then the sha256 and size of each file go into ``manifest["files"]``, ``manifest.json`` is
    written last, and the directory is renamed onto ``out``. An existing export at ``out`` is first
    renamed aside and removed only after the new one is in place, so a reader finds the old complete
    export or the new complete one, never a mixture (between the two renames the path is absent for
    an instant: a loader then fails cleanly with "no such export directory" and can retry). If the
    second rename fails, the old export is put back. A non-empty ``out`` that is not an export is
    refused rather than deleted.
    """
    def write_all(tmp: Path) -> None:
        write_files(tmp)
        write_manifest(tmp, seal_manifest(tmp, manifest))

    return write_atomic_directory(out, write_all, lambda d: is_export_manifest(d / MANIFEST_NAME), "an interestgym export")


def write_atomic_directory(out: str | Path, write_all: Callable[[Path], Any], recognised: Callable[[Path], bool],
                           what: str, note: Callable[[str], Any] | None = None) -> Path:
    """The mechanism behind :func:`write_export_directory`, for any folder an export stage writes:
    ``write_all(tmp_dir)`` fills a fresh temporary directory next to ``out`` (its manifest last), every
    file is made durable, and the directory is swapped in (:func:`_swap_in`). A non-empty ``out`` that
    ``recognised(out)`` does not accept as ``what`` is refused rather than deleted.

    The folders beside ``out`` are named as ``prepare``'s (``OUT.tmp-<pid>``, ``OUT.old-<pid>``, ``OUT.del-<pid>``:
    :mod:`interestgym.data.swap`), so the leftovers of a killed export are recovered the same way first: the previous
    export put back where a kill came between the two renames and left nothing at ``out``, the rest removed; each said
    through ``note`` (default: standard error)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for line in recover(out, "export"):
        (note or (lambda text: print(f"note: {text}", file=sys.stderr)))(line)
    if out.exists():
        if not out.is_dir():
            raise ArtifactError(f"{out}: exists and is not a directory; expected a new directory or {what}")
        if any(out.iterdir()) and not recognised(out):
            raise ArtifactError(f"{out}: a non-empty directory that is not {what}; refusing to replace it (choose another --out)")
    tmp = sibling(out, "tmp")  # recover() removed any left by a process of this pid
    tmp.mkdir()  # the umask's permissions, as any new folder (a shared export must be readable by its service)
    try:
        write_all(tmp)
        for path in sorted(tmp.rglob("*")):  # durable before the rename makes it visible
            if path.is_file():
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())
        _swap_in(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _swap_in(new: Path, out: Path) -> None:
    """Rename ``new`` onto ``out``; a previous ``out`` is set aside first and removed once ``new`` is
    in place (put back if the rename fails; a kill between the renames is undone by the next write's recovery)."""
    old = None
    if out.exists():
        old = sibling(out, "old")
        os.replace(out, old)
    try:
        os.replace(new, out)
    except BaseException:
        if old is not None:  # put the previous export back rather than leave nothing at `out`
            os.replace(old, out)
        raise
    if old is not None:
        trash = sibling(out, "del")  # renamed first: a removal killed half-way must not pass for a whole export
        os.replace(old, trash)
        shutil.rmtree(trash, ignore_errors=True)
