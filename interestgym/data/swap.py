"""Replacing a dataset folder so that a kill at any moment leaves a complete dataset.

A dataset is several files that only make sense together (events.parquet's rows are aligned with
truth.npy's, the manifest counts both). Writing them one by one into the final folder means a
killed ``prepare`` leaves a folder that is neither the old dataset nor the new one. So
:func:`replacing_dir` builds the new dataset in a sibling folder and swaps it in::

    OUT.tmp-<pid>   the new dataset, being written            (a kill: OUT is untouched)
    OUT -> OUT.old-<pid>, OUT.tmp-<pid> -> OUT                 (two renames)
    OUT.old-<pid> -> OUT.del-<pid>, then removed               (the old dataset, going away)

After a kill, OUT holds either the old complete dataset or the new one, except in the instant
between the two renames, when OUT is missing and ``OUT.old-<pid>`` is the old dataset whole.
:func:`recover` (run at the start of every write, and by ``prepare`` before it looks at OUT) puts
that one back, and removes the other leftovers of processes that no longer run, so a leftover
never blocks a rerun.

What the old folder holds besides the dataset's own tables (``embeddings/`` and ``cache/`` written
by ``encode``, or anything else) is carried into the new folder before the swap, as hard links
where the file system allows (no copy, and the old folder stays whole until the swap): an
embedding records the hash of the item ids it was made for and is refused if the items changed,
and the encoder's cache is keyed by text, so both stay valid. The dataset's own files (see
:data:`DATASET_FILES`) are not carried: a table of the old dataset that the new one lacks (``truth.npy`` of an old
synthetic dataset) must not survive. Any other file is the user's (a raw log kept beside the dataset, say) and is
carried, ``.parquet`` and ``.npy`` files included.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from interestgym.errors import DataError

#: Files of a dataset folder that belong to one ``prepare`` run (see interestgym.data.schema).
DATASET_FILES = ("manifest.json", "items.parquet", "events.parquet", "impressions.parquet", "users.parquet",
                 "truth.npy", "rejects.jsonl", "synthetic_users.parquet")

#: Folders that later stages write into a dataset folder and that a new dataset keeps.
STAGE_FOLDERS = ("embeddings", "cache")

_KINDS = ("tmp", "old", "del")


#: The temporary file of an atomic write (interestgym.io.atomic_path) of a dataset file, left by a kill.
_PARTIAL = re.compile(r"\.(.+?)\.[^.]+\.tmp")


def is_dataset_file(path: Path) -> bool:
    """Whether ``path`` (an entry of a dataset folder) is one of the dataset's own files (or a
    half-written one). Only the names ``prepare`` writes: any other ``.parquet`` or ``.npy`` is the user's (``--overwrite``
    once removed a raw log kept in the folder, input included)."""
    if not path.is_file() or path.is_symlink():
        return False
    partial = _PARTIAL.fullmatch(path.name)
    name = partial.group(1) if partial else path.name
    return name in DATASET_FILES


def sibling(out: Path, kind: str, pid: int | None = None) -> Path:
    """``OUT.tmp-<pid>`` / ``OUT.old-<pid>`` / ``OUT.del-<pid>`` beside ``out``."""
    return out.parent / f"{out.name}.{kind}-{os.getpid() if pid is None else pid}"


def leftovers(out: Path) -> list[tuple[str, int, Path]]:
    """``(kind, pid, path)`` of every temporary folder of ``out`` left beside it, oldest kind first."""
    if not out.parent.is_dir():
        return []
    pattern = re.compile(re.escape(out.name) + r"\.(tmp|old|del)-(\d+)")
    found = []
    with os.scandir(out.parent) as entries:
        for entry in entries:
            m = pattern.fullmatch(entry.name)
            if m and entry.is_dir(follow_symlinks=False):
                found.append((m.group(1), int(m.group(2)), Path(entry.path)))
    return sorted(found, key=lambda f: (_KINDS.index(f[0]), f[1]))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (its folders are then in use and left alone)."""
    if pid == os.getpid() or os.name != "posix":
        # Our own pid can only be on a folder of a dead process that had the same pid. (Windows has
        # no signal 0; a concurrent prepare into one folder there is not guarded.)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # runs, as another user
        return True
    except OSError:
        return False
    return True


def _remove(path: Path, stage: str = "prepare") -> None:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise DataError(f"{path}: cannot remove this leftover of an interrupted {stage} ({exc.strerror or exc}); remove it by hand") from None


def recover(out: str | Path, stage: str = "prepare") -> list[str]:
    """Clean up after a ``stage`` (``prepare``, ``export``) that was killed while writing ``out``; return what was
    done.

    A ``.old-`` folder is the previous folder, complete: put back when ``out`` is missing (the
    kill came between the two renames of the swap), else removed. ``.tmp-`` (a half-written new
    folder) and ``.del-`` (an old one half removed) folders are removed. Folders of a process that
    still runs are left alone.
    """
    out = Path(out)
    done: list[str] = []
    for kind, pid, path in leftovers(out):
        if _alive(pid):
            continue
        if kind == "old" and not out.exists() and not out.is_symlink():
            os.rename(path, out)
            done.append(f"restored {out} from {path.name}, left by a {stage} killed between the two renames that swap a new one in")
            continue
        if kind == "old":
            # Renamed first: were this removal killed half-way, the folder must not pass for a whole dataset.
            trash = sibling(out, "del", pid)
            os.rename(path, trash)
            path = trash
        _remove(path, stage)
        done.append(f"removed {path.name}, left by an interrupted {stage}")
    return done


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link ``src`` to ``dst`` (same file, no copy); copy where links are not possible."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def _carry(old: Path, new: Path) -> None:
    """Carry every entry of ``old`` that is not a dataset file, and not written anew, into ``new``."""
    for entry in sorted(old.iterdir()):
        target = new / entry.name
        if is_dataset_file(entry) or target.exists() or target.is_symlink():
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry), target)
        elif entry.is_dir():
            shutil.copytree(entry, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry), str(target))


def check_out(out: Path) -> Path:
    """The folder to replace, symlinks resolved; refuse one the process (or its user's shell) sits in."""
    if out.is_symlink():
        out = out.resolve()
    out = Path(os.path.abspath(out))
    cwd = Path.cwd()
    if out == cwd or out in cwd.parents:
        raise DataError(f"--out {out}: is the current folder (or holds it); expected a folder of its own, e.g. --out {out / 'dataset'}")
    return out


@contextlib.contextmanager
def replacing_dir(out: str | Path) -> Iterator[Path]:
    """Yield an empty folder beside ``out`` to write a dataset into; on success swap it in as ``out``.

    On an exception nothing changes: the new folder is removed and ``out`` stays as it was. See
    the module docstring for the steps and what a kill at each step leaves.
    """
    out = check_out(Path(out))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"--out {out}: cannot create its parent folder ({exc.strerror or exc})") from None
    recover(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: is a file; expected a folder for the dataset")
    tmp = sibling(out, "tmp")
    _remove(tmp)
    try:
        tmp.mkdir()
    except OSError as exc:
        # The dataset is built beside OUT and renamed into place, so the folder above must be writable.
        raise DataError(f"--out {out}: cannot create {tmp.name} beside it ({exc.strerror or exc}); expected a writable "
                        f"folder {out.parent} (the new dataset is built there and swapped in)") from None
    try:
        yield tmp
        if out.is_dir():
            _carry(out, tmp)
            shutil.copymode(out, tmp)
            aside = sibling(out, "old")
            try:
                os.rename(out, aside)
            except OSError as exc:  # e.g. OUT is a mount point; nothing has changed yet
                raise DataError(f"--out {out}: cannot be renamed to swap in the new dataset ({exc.strerror or exc}); "
                                "expected a folder that can be renamed (not a mount point); the old dataset is unchanged") from None
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(aside, out)  # put the old dataset back before reporting the failure
                raise
            trash = sibling(out, "del")
            os.rename(aside, trash)
            # The new dataset is in place: a failure to remove the old one is not a failure of the
            # run, and recover() retries (and then names the folder) on the next write.
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, out)
    finally:
        if tmp.exists():
            _remove(tmp)
