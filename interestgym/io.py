"""Small file helpers shared by every stage: atomic writes and checksums.

Outputs are written to a temporary file in the destination folder and renamed into place, so an
interrupted command never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions of an ordinary new file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_folder_path(path: str | os.PathLike[str], option: str = "--out") -> None:
    """Refuse a folder path that runs through a file (``afile/sub``), naming the file, without creating anything.

    :raises InterestGymError: naming ``option``, the path and the file in the way.
    """
    from interestgym.errors import InterestGymError

    path = Path(path)
    in_way = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if in_way is not None:
        raise InterestGymError(f"{option} {path}: {in_way} is a file, not a folder; expected a folder path")


def make_out_dir(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Create the output folder ``path`` (and its parents) before any work is done, and return it.

    :raises InterestGymError: naming ``option`` and what is in the way (a file on the path, no permission),
        instead of an OSError traceback after the work.
    """
    from interestgym.errors import InterestGymError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InterestGymError(f"{option} {path}: a file of that name exists; expected a folder (or a new name)") from None
    except NotADirectoryError:
        check_folder_path(path, option)
        raise InterestGymError(f"{option} {path}: {path.parent} is not a folder; expected a folder path") from None
    except OSError as exc:
        raise InterestGymError(f"{option} {path}: cannot create it ({exc.strerror or exc}); expected a folder you can write") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InterestGymError(f"{option} {path}: not writable; expected a folder you can write")
    return path


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def save_npy_atomic(path: str | os.PathLike[str], array: Any) -> None:
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_json_artifact(path: str | os.PathLike[str], what: str) -> Any:
    """A JSON file a stage wrote, or one ArtifactError naming the file and what was expected there."""
    from interestgym.errors import ArtifactError

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; expected {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc}); expected {what}") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read it ({exc.strerror or exc}); expected {what}") from None


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (for messages about a file, not about Python)."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def read_string_list(path: Path, what: str, expected: str, error: type[Exception], *, distinct: bool = True) -> list[str]:
    """A JSON file holding a list of strings (item ids, category names), each once when ``distinct``: tables look
    rows up by name, so a duplicate would silently lose a row, and a non-string would be matched by its ``str``.

    :param what: one value, for messages (``"item id"``); ``expected``: what the list holds (``"the dataset's item ids"``).
    :param error: the exception to raise (the caller's kind of artifact error), with the file, the row and the value.
    """
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise error(f"{path}: not readable JSON ({exc}); expected a list of {expected}") from None
    if not isinstance(values, list):
        raise error(f"{path}: a JSON {json_type(values)}; expected a list of {expected}")
    seen: dict[str, int] = {}
    for row, value in enumerate(values):
        if not isinstance(value, str):
            raise error(f"{path}: {what} {value!r} at row {row} is a JSON {json_type(value)}; expected a string")
        if distinct:
            if value in seen:
                raise error(f"{path}: {what} {value!r} at rows {seen[value]} and {row}; expected each {what} once")
            seen[value] = row
    return values
