"""The export directory's manifest: what each file is, its checksum, and the format version.

An export directory (written by ``interestgym export``) holds::

    manifest.json    format version, observation features, action semantics, scoring parameters,
                     encoder, provenance, evaluation metrics, and the sha256 of every other file
    policy.onnx      the actor: raw observation -> deterministic action in the action box
    *.npy / *.json   arrays and tables the runtime needs besides the graph (no pickle)

:func:`read_verified_manifest` is the one gate every loader goes through: it refuses a directory
whose manifest is missing or unreadable, whose format version is newer than this code, or whose files
are missing, unlisted-but-required, or do not match their recorded sha256. Each failure is a distinct
:class:`~interestgym.errors.ArtifactError` subclass whose message names the file, what was found and
what was expected.

Only the standard library is imported here: the runtime must load without torch or pandas.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from interestgym.errors import ArtifactError

#: Version of the export layout written by this code. A reader accepts this version and older ones
#: it knows how to read; a newer one means "upgrade interestgym", never a guess.
FORMAT_VERSION = 1
#: Versions this code can read.
READABLE_FORMAT_VERSIONS = frozenset({1})
MANIFEST_NAME = "manifest.json"
#: The ``kind`` field of the manifest: guards against pointing the runtime at a dataset or run dir.
MANIFEST_KIND = "interestgym-policy-export"


class ExportError(ArtifactError):
    """An exported policy directory cannot be used; the message says which file and why."""


class ExportFileMissingError(ExportError):
    """A file the manifest lists (or the manifest itself) is not in the export directory."""


class ExportFileCorruptError(ExportError):
    """A file is present but cannot be parsed (bad JSON, bad .npy, bad ONNX graph)."""


class ChecksumMismatchError(ExportError):
    """A file's sha256 differs from the one recorded in the manifest: it was changed after export."""


class FormatVersionError(ExportError):
    """The export was written by a newer (or unknown) format version than this runtime reads."""


class EmbeddingDimensionError(ExportError):
    """Vectors passed to the runtime do not have the encoder dimension the policy was trained with."""


class EncoderMismatchError(ExportError):
    """The caller's encoder fingerprint differs from the one the policy was trained with."""


def sha256_of_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


#: Field holding the sha256 of the manifest's own content (every other field, canonical JSON), so an
#: edit to the manifest itself (a scoring parameter, a recorded checksum) is detected like any file's.
CONTENT_DIGEST_FIELD = "manifest_sha256"


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest without its digest field, as canonical JSON (sorted keys, no spaces)."""
    body = {k: v for k, v in manifest.items() if k != CONTENT_DIGEST_FIELD}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Parse ``DIR/manifest.json`` and check its kind, format version and content digest (not the
    other files' checksums: see :func:`verify_files`)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ExportFileMissingError(f"{directory}: no such export directory (create one with `interestgym export RUN --out DIR`)")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ExportFileMissingError(f"{path}: missing; expected the manifest of an `interestgym export` directory")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportFileCorruptError(f"{path}: not valid JSON ({exc}); expected the manifest written by `interestgym export`") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
        found = manifest.get("kind") if isinstance(manifest, dict) else type(manifest).__name__
        raise ExportFileCorruptError(f"{path}: field 'kind' is {found!r}; expected {MANIFEST_KIND!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise FormatVersionError(f"{path}: field 'format_version' is {version!r}; expected an integer")
    if version not in READABLE_FORMAT_VERSIONS:
        newer = version > FORMAT_VERSION
        raise FormatVersionError(
            f"{path}: format_version {version}; this interestgym reads version(s) "
            f"{', '.join(map(str, sorted(READABLE_FORMAT_VERSIONS)))}"
            + ("; upgrade interestgym to load it" if newer else "")
        )
    recorded = manifest.get(CONTENT_DIGEST_FIELD)
    found = manifest_digest(manifest)
    if recorded != found:
        raise ChecksumMismatchError(
            f"{path}: content sha256 {found[:16]}... does not match its field {CONTENT_DIGEST_FIELD!r} "
            f"({str(recorded)[:16]}...); the manifest was changed after export"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ExportFileCorruptError(f"{path}: field 'files' is {files!r}; expected a mapping file name -> {{sha256, bytes}}")
    return manifest


def verify_files(directory: str | Path, manifest: dict[str, Any], required: tuple[str, ...] = ()) -> None:
    """Check that every listed file exists with its recorded size and sha256, and that ``required``
    files are listed at all (an export whose manifest forgot a needed file is as broken as one that
    lost it)."""
    directory = Path(directory)
    files: dict[str, Any] = manifest["files"]
    for name in required:
        if name not in files:
            raise ExportFileCorruptError(f"{directory / MANIFEST_NAME}: field 'files' does not list {name!r}; expected it with its sha256")
    for name, entry in files.items():
        if Path(name).name != name or name in (MANIFEST_NAME, "", ".", ".."):
            raise ExportFileCorruptError(f"{directory / MANIFEST_NAME}: files entry {name!r}; expected a plain file name inside the export")
        path = directory / name
        if not path.is_file():
            raise ExportFileMissingError(f"{path}: missing; the manifest lists it (sha256 {entry.get('sha256', '?')[:12]}...)")
        expected = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(expected, str) or len(expected) != 64:
            raise ExportFileCorruptError(f"{directory / MANIFEST_NAME}: files[{name!r}].sha256 is {expected!r}; expected 64 hex digits")
        size = path.stat().st_size
        if isinstance(entry.get("bytes"), int) and size != entry["bytes"]:
            raise ChecksumMismatchError(f"{path}: {size} bytes; the manifest records {entry['bytes']} bytes (the file was changed after export)")
        found = sha256_of_file(path)
        if found != expected:
            raise ChecksumMismatchError(f"{path}: sha256 {found[:16]}...; the manifest records {expected[:16]}... (the file was changed after export)")


def read_verified_manifest(directory: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """:func:`read_manifest` then :func:`verify_files`: the manifest of an intact export."""
    manifest = read_manifest(directory)
    verify_files(directory, manifest, required)
    return manifest
