"""Reading and checking a dataset's ``manifest.json``.

``prepare`` writes the manifest, but people edit it by hand (the action weights and the positive
rating live there so that they can be tuned), and later stages trust what it holds: a weight that
is the string ``"heavy"`` would surface as a ``ValueError`` deep in training, a negative weight would
silently turn "the user purchased this" into "the user dislikes this", and a manifest that is a JSON
list would fail on its first ``.get``. So :func:`read_manifest` checks every field a later stage
reads, when the dataset is opened, and a problem is one line naming the file, the field, what was
found and what was expected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from interestgym.core.numeric import finite_number
from interestgym.data.schema import ACTIONS, DEFAULT_ACTION_WEIGHTS, SCHEMA_VERSION
from interestgym.errors import ArtifactError

#: Top-level fields that later stages read as JSON objects (``manifest["counts"]["events"]`` ...).
_OBJECT_FIELDS = ("source", "counts", "split", "validation", "reader", "synthetic")


def _found(value: Any) -> str:
    """A found value for a message: short, and with its JSON type when that is the problem."""
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > 60:
        text = text[:57] + "..."
    kind = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value))
    return f"{text} ({kind})" if kind and not isinstance(value, str) else text


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and check a dataset manifest; return it as a dict.

    :raises ArtifactError: the file is not JSON, not an object, of another schema version, or a
        field a later stage reads has the wrong type or an impossible value.
    """
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: corrupt manifest: {exc}") from None
    rerun = "fix the field or prepare the dataset again"
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: the manifest is {_found(manifest)}; expected a JSON object (as written by "
                            f"`interestgym prepare`); prepare the dataset again")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ArtifactError(f"{path}: schema_version {version!r}; this interestgym reads version {SCHEMA_VERSION}")

    for name in _OBJECT_FIELDS:
        if name in manifest and not isinstance(manifest[name], dict):
            raise ArtifactError(f"{path}: field {name} is {_found(manifest[name])}; expected a JSON object; {rerun}")

    weights = manifest.get("action_weights", {})
    if not isinstance(weights, dict):
        raise ArtifactError(f"{path}: field action_weights is {_found(weights)}; expected an object of action -> weight "
                            f"such as {{\"click\": 1.0, \"purchase\": 3.0}}; {rerun}")
    for action, weight in weights.items():
        if action not in ACTIONS:
            raise ArtifactError(f"{path}: field action_weights has the action {action!r}; expected one of {', '.join(ACTIONS)}; {rerun}")
        if not finite_number(weight) or weight < 0:
            # A negative weight would invert what an event says about the user's interest.
            raise ArtifactError(f"{path}: field action_weights.{action} is {_found(weight)}; expected a finite number >= 0 "
                                f"(0 = the action says nothing about interest); {rerun}")
    if not any(w > 0 for w in {**DEFAULT_ACTION_WEIGHTS, **weights}.values()):
        raise ArtifactError(f"{path}: field action_weights gives every action weight 0; expected at least one weight > 0 "
                            f"(otherwise no event is positive feedback); {rerun}")

    if "positive_rating" in manifest and not finite_number(manifest["positive_rating"]):
        raise ArtifactError(f"{path}: field positive_rating is {_found(manifest['positive_rating'])}; expected a finite number "
                            f"(ratings at or above it are positive feedback, e.g. 4.0); {rerun}")
    if "has_truth" in manifest and not isinstance(manifest["has_truth"], bool):
        raise ArtifactError(f"{path}: field has_truth is {_found(manifest['has_truth'])}; expected true or false; {rerun}")

    synthetic = manifest.get("synthetic", {})
    for name in ("topics", "topic_names"):
        value = synthetic.get(name)
        if value is not None and not (isinstance(value, list) and all(isinstance(t, str) for t in value)):
            raise ArtifactError(f"{path}: field synthetic.{name} is {_found(value)}; expected a list of topic names; {rerun}")
    return manifest
