"""A sequence tracker in production: numpy + onnxruntime, no torch.

Load a folder written by ``interestgym export SEQUENCE_RUN`` (:mod:`interestgym.export.tracker`)::

    from interestgym.runtime.tracker import load_tracker_runtime
    tracker = load_tracker_runtime("exports/sasrec")
    window = tracker.new_window()                        # a user's state: the last k decisions
    window = tracker.update(window, item_id="i42", action="click", timestamp=1_700_000_000)
    scores = tracker.score(window, ["i1", "i7", "i42"])  # h . items[c]; higher ranks first
    blob = window.to_bytes()                             # for a profile store; TrackerWindow.from_bytes

A window holds the item rows, action codes and gap buckets of the user's last ``k`` decisions (oldest
first) and the time of the last one. An event that is not a decision (the dataset's rule, recorded in
the manifest: action weight > 0, ratings only from the positive threshold, a catalogue item) leaves the
window unchanged. The state ``h`` is the ONNX graph's output on the window; a candidate's score is
``h . items[c]``, the replay's scoring (:func:`interestgym.agents.sequence.scoring.score_replay`) to
float32 rounding (the parity test holds scores to 1e-5 and metrics exactly).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from interestgym.core.log_features import RATING_ACTION, is_decision
from interestgym.core.numeric import finite_number
from interestgym.core.tokens import N_ACTIONS, N_GAP_BUCKETS, action_codes, gap_buckets
from interestgym.errors import ArtifactError, InterestGymError
from interestgym.io import read_string_list, sha256_file

TRACKER_FORMAT = "interestgym-tracker/1"
TRACKER_MANIFEST = "tracker.json"
_CODEC_VERSION = 1


@dataclass(frozen=True)
class TrackerWindow:
    """One user's tracker state: the last ``k`` decisions (oldest first) and the last decision's time.

    ``items``: rows of the tracker's item table; ``actions``: action codes; ``gaps``: gap buckets
    (:mod:`interestgym.core.tokens`); all int64 of equal length <= k. ``last_ts``: seconds, None before
    the first decision.
    """

    items: np.ndarray
    actions: np.ndarray
    gaps: np.ndarray
    last_ts: int | None = None

    def __len__(self) -> int:
        return len(self.items)

    def to_bytes(self) -> bytes:
        """A compact JSON encoding (for a profile store)."""
        return json.dumps({"v": _CODEC_VERSION, "items": self.items.tolist(), "actions": self.actions.tolist(),
                           "gaps": self.gaps.tolist(), "last_ts": self.last_ts}, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, blob: bytes, *, window: int | None = None, n_items: int | None = None) -> TrackerWindow:
        """Decode :meth:`to_bytes`; a damaged or foreign blob raises :class:`ArtifactError` naming the field."""
        try:
            doc = json.loads(blob)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"tracker window: not a JSON document ({exc})") from None
        if not isinstance(doc, dict) or doc.get("v") != _CODEC_VERSION:
            raise ArtifactError(f"tracker window: codec version {doc.get('v') if isinstance(doc, dict) else None!r}; expected {_CODEC_VERSION}")
        arrays = {}
        for name in ("items", "actions", "gaps"):
            values = doc.get(name)
            if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise ArtifactError(f"tracker window: field {name!r} is {type(values).__name__}; expected a list of integers")
            arrays[name] = np.asarray(values, dtype=np.int64)
        problem = window_problem(arrays["items"], arrays["actions"], arrays["gaps"], k=window, n_items=n_items)
        if problem:
            raise ArtifactError(f"tracker window: {problem}")
        last_ts = doc.get("last_ts")
        if last_ts is not None and not isinstance(last_ts, int):
            raise ArtifactError(f"tracker window: field 'last_ts' is {last_ts!r}; expected an integer or null")
        return cls(arrays["items"], arrays["actions"], arrays["gaps"], last_ts)


def window_problem(items: np.ndarray, actions: np.ndarray, gaps: np.ndarray, *, k: int | None = None,
                   n_items: int | None = None) -> str | None:
    """What is wrong with a window's arrays (None: nothing): unequal lengths, more than ``k`` decisions,
    or item rows (when ``n_items`` is known), action codes or gap buckets outside their range. The one
    check of a window read from a blob, from a stored user state and by the tracker that reads it."""
    for name, values, high in (("items", items, n_items), ("actions", actions, N_ACTIONS), ("gaps", gaps, N_GAP_BUCKETS)):
        if len(values) and (values.min() < 0 or (high is not None and values.max() >= high)):
            return f"field {name!r} has values outside [0, {high}) (found {int(values.min())}..{int(values.max())})"
    if not len(items) == len(actions) == len(gaps):
        return f"items / actions / gaps of lengths {[len(items), len(actions), len(gaps)]}; expected equal lengths"
    if k is not None and len(items) > k:
        return f"{len(items)} decisions; the tracker reads at most {k}"
    return None


@dataclass(frozen=True)
class TrackerTerm:
    """The tracker part of a user's state under a policy that scores with a tracker term
    (``score += weight * z(tracker scores)``): the user's window and the weight set at the last decision
    (a residual agent's sixth action component changes it per decision; a mixture rule keeps its own).

    For an agent that observes the tracker, also ``metric_ema``, the running mean of the step metric of
    the tracker's ranking alone (the ``tracker_metric_ema`` observation), and ``pending``, the sum of that
    metric over the scoring points recorded since the last decision (folded in at the next one, with the
    state's ``pending_points`` count, as the other running means are)."""

    window: TrackerWindow
    weight: float
    metric_ema: float = 0.0
    pending: float = 0.0


class TrackerRuntime:
    """An exported tracker, ready to update windows and score candidates (see the module docstring)."""

    def __init__(self, folder: str | Path) -> None:
        import onnxruntime

        self.folder = Path(folder)
        self.manifest = _read_manifest(self.folder)
        m = self.manifest
        self.window = int(m["window"])
        self.hidden = int(m["hidden"])
        self.items = np.load(self.folder / "items.npy", allow_pickle=False)
        # windows hold rows and scores look rows up by id: a duplicate id would silently lose a row
        ids = read_string_list(self.folder / "item_ids.json", "item id", "the tracker's item ids, in items.npy's row order", ArtifactError)
        if self.items.shape != (len(ids), self.hidden) or self.items.dtype != np.float32:
            raise ArtifactError(f"{self.folder / 'items.npy'}: shape {self.items.shape} {self.items.dtype}; "
                                f"expected ({len(ids)}, {self.hidden}) float32 (one row per item id)")
        bad = np.flatnonzero(~np.isfinite(self.items).all(axis=1))
        if bad.size:  # a NaN row makes that item's score, and the confidence over the catalogue, NaN
            raise ArtifactError(f"{self.folder / 'items.npy'}: {bad.size} row(s) with a NaN or infinite value, the first row "
                                f"{int(bad[0])} (item {ids[int(bad[0])]!r}); expected finite item representations")
        self.item_ids: list[str] = list(ids)
        self.row = {item: i for i, item in enumerate(self.item_ids)}
        decisions = m["decisions"]
        self._weights = {str(k): float(v) for k, v in decisions["action_weights"].items()}
        self._positive_rating = float(decisions["positive_rating"])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # one user's window is a small graph: threads only contend
        self._session = onnxruntime.InferenceSession(str(self.folder / "tracker.onnx"), options, providers=["CPUExecutionProvider"])
        _check_graph(self.folder, self._session, self.window, self.hidden)

    # ------------------------------------------------------------------------------------ state
    def new_window(self) -> TrackerWindow:
        """The window of a user without decisions."""
        empty = np.zeros(0, dtype=np.int64)
        window = TrackerWindow(empty, empty, empty, None)
        object.__setattr__(window, "_checked", self)  # nothing in it to check
        return window

    def is_decision(self, item_id: str, action: str, value: float = 1.0) -> bool:
        """Whether the event enters the window (the dataset's decision rule, :func:`core.log_features.is_decision`); an
        action the dataset does not have is refused, as ``ExportedPolicy.update`` refuses it (not read as no decision)."""
        weight = self._weights.get(str(action))
        if weight is None:
            raise InterestGymError(f"event action {action!r}: expected one of {', '.join(sorted(self._weights))} (the actions "
                                   "of the dataset the tracker was exported with)")
        return bool(is_decision(np.array([weight]), np.array([str(action) == RATING_ACTION]), np.array([value]),
                                self._positive_rating, np.array([str(item_id) in self.row]))[0])

    def update(self, window: TrackerWindow, item_id: str, action: str, timestamp: int, value: float = 1.0) -> TrackerWindow:
        """The window after one event (unchanged when the event is not a decision)."""
        if not self.is_decision(item_id, action, value):
            return window
        return self.append(window, item_id, action, timestamp)

    def append(self, window: TrackerWindow, item_id: str, action: str, timestamp: int) -> TrackerWindow:
        """The window after a decision on ``item_id`` (a caller that applies the decision rule itself,
        e.g. an update policy whose score has a tracker term; an id outside the catalogue raises)."""
        row = self.row.get(str(item_id))
        if row is None:
            raise InterestGymError(f"item id {item_id!r} is not in the tracker's catalogue ({len(self.row)} items); "
                                   "expected an item of the dataset the tracker was exported with")
        first = window.last_ts is None
        if not first and int(timestamp) < int(window.last_ts):  # its gap would be negative: a token the tracker never saw
            raise InterestGymError(f"decision at ts {int(timestamp)} is before the window's last one at ts {window.last_ts}; a "
                                   "user's events must arrive in time order")
        gap = gap_buckets(np.array([0 if first else int(timestamp) - int(window.last_ts)]), np.array([first]))
        keep = slice(max(len(window) + 1 - self.window, 0), None)
        out = TrackerWindow(
            items=np.append(window.items, row)[keep],
            actions=np.append(window.actions, action_codes([action]))[keep],
            gaps=np.append(window.gaps, gap)[keep],
            last_ts=int(timestamp),
        )
        if window.__dict__.get("_checked") is self:  # a checked window plus a row of the catalogue: checked too
            object.__setattr__(out, "_checked", self)
        return out

    # ---------------------------------------------------------------------------------- scoring
    def states(self, windows: Sequence[TrackerWindow]) -> np.ndarray:
        """(len(windows), hidden) float32 states; a window without decisions has no state (refused)."""
        n, k = len(windows), self.window
        if any(len(w) == 0 for w in windows):
            raise InterestGymError("a window without decisions has no tracker state; score it with a fallback (e.g. popularity)")
        for i, w in enumerate(windows):  # a window made by hand or read from bytes: its rows, codes and length
            self.check_window(w, "tracker window" if n == 1 else f"tracker window {i}")  # (once per window object)
        items = np.zeros((n, k), dtype=np.int64)
        actions = np.zeros((n, k), dtype=np.int64)
        gaps = np.zeros((n, k), dtype=np.int64)
        length = np.array([len(w) for w in windows], dtype=np.int64)
        for i, w in enumerate(windows):
            items[i, : len(w)], actions[i, : len(w)], gaps[i, : len(w)] = w.items, w.actions, w.gaps
        feeds = {"item_reps": self.items[items], "action": actions, "gap": gaps, "length": length}
        return self._session.run(["state"], feeds)[0]

    def state(self, window: TrackerWindow) -> np.ndarray:
        """(hidden,) the state of one window, computed once per window object: a window is immutable, so
        the state is kept on it (an update's observation and the scores that follow share one graph call)."""
        cached = window.__dict__.get("_state")
        if cached is not None and cached[0] is self:  # computed by this tracker (another one has other weights)
            return cached[1]
        h = self.states([window])[0]
        object.__setattr__(window, "_state", (self, h))  # a cache of a value derived from the frozen fields
        return h

    def check_window(self, window: TrackerWindow, where: str = "tracker window") -> None:
        """Refuse a window this tracker cannot read (e.g. a stored state from another export): more than
        ``k`` decisions, or item rows, action codes or gap buckets out of range; the error names them."""
        if window.__dict__.get("_checked") is self:  # checked by this tracker already (a window is immutable)
            return
        problem = window_problem(window.items, window.actions, window.gaps, k=self.window, n_items=len(self.item_ids))
        if problem:
            raise InterestGymError(f"{where}: {problem} (a state stored under another export?)")
        object.__setattr__(window, "_checked", self)

    def confidence(self, window: TrackerWindow) -> tuple[float, float]:
        """(top-1 probability, entropy / log(n_items)) of the softmax over the whole catalogue after the
        window's last decision, in float32 as :func:`interestgym.agents.sequence.scoring.decision_confidence`
        computes them (the ``tracker_top1_prob`` and ``tracker_entropy`` observations). A window without
        decisions has no state: the softmax is taken as uniform (1 / n_items, entropy 1), no evidence."""
        from interestgym.core.features import tracker_confidence

        if len(window) == 0:
            return 1.0 / len(self.items), 1.0
        top1, entropy = tracker_confidence((self.items @ self.state(window))[None])
        return float(top1[0]), float(entropy[0])

    def score_rows(self, window: TrackerWindow, rows: np.ndarray) -> np.ndarray:
        """Scores of the item-table ``rows`` for one window (float32)."""
        return np.einsum("ch,h->c", self.items[np.asarray(rows, dtype=np.int64)], self.state(window))

    def standardised_scores(self, windows: Sequence[TrackerWindow], candidate_ids: np.ndarray) -> np.ndarray:
        """(B, C) float32: each user's scores of their candidates standardised over the candidates
        (:func:`interestgym.core.interest.standardise_scores`, as the replay's tracker term is), for the
        ids (B, C). An id outside the catalogue, and every candidate of a window without decisions, gets 0
        (no evidence either way) and is left out of the mean and spread."""
        from interestgym.core.interest import standardise_scores

        if len(windows) > 1:  # each window named by its place in the batch (the states below are computed one by one)
            for i, w in enumerate(windows):
                if len(w):
                    self.check_window(w, f"tracker window {i}")
        ids = np.asarray(candidate_ids, dtype=object)
        rows = np.fromiter((self.row.get(str(i), -1) for i in ids.reshape(-1)), dtype=np.int64, count=ids.size).reshape(ids.shape)
        has = np.array([len(w) > 0 for w in windows], dtype=bool)
        valid = (rows >= 0) & has[:, None]
        scores = np.zeros(ids.shape, dtype=np.float32)
        if has.any():
            h = np.stack([self.state(w) for w, ok in zip(windows, has) if ok])
            scores[has] = np.einsum("bch,bh->bc", self.items[np.maximum(rows[has], 0)], h)
        return standardise_scores(np.where(valid, scores, np.float32(0.0)), valid)

    def score(self, window: TrackerWindow, candidate_ids: Sequence[str]) -> np.ndarray:
        """Scores of the candidates (item ids; an id outside the catalogue raises, naming it)."""
        missing = [c for c in candidate_ids if str(c) not in self.row]
        if missing:
            raise InterestGymError(f"candidate item ids {missing[:5]} are not in the tracker's catalogue ({len(self.row)} items)")
        return self.score_rows(window, np.array([self.row[str(c)] for c in candidate_ids], dtype=np.int64))


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / TRACKER_MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no tracker manifest; export the tracker with `interestgym export SEQUENCE_RUN --out DIR`") from None
    except ValueError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != TRACKER_FORMAT:
        raise ArtifactError(f"{path}: format {manifest.get('format') if isinstance(manifest, dict) else None!r}; expected {TRACKER_FORMAT!r}")
    _check_fields(path, manifest)
    for name, entry in manifest.get("files", {}).items():
        file = folder / name
        if not file.is_file():
            raise ArtifactError(f"{file}: missing (listed in {TRACKER_MANIFEST})")
        digest = sha256_file(file)
        if digest != entry.get("sha256"):
            raise ArtifactError(f"{file}: sha256 {digest[:12]}... does not match the manifest's {str(entry.get('sha256'))[:12]}...; "
                                "the export is damaged or was edited: export it again")
    return manifest


def _check_fields(path: Path, manifest: dict[str, Any]) -> None:
    """The fields the runtime reads have the types it reads them as (``int()`` / ``float()`` truncated a window of 6.5,
    and raised a bare error on a string): ``window``, ``hidden`` whole numbers >= 1, ``decisions.action_weights`` a
    mapping action -> finite number >= 0, ``decisions.positive_rating`` a finite number."""
    for key in ("window", "hidden"):
        value = manifest.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ArtifactError(f"{path}: field {key!r} is {value!r}; expected a whole number >= 1")
    decisions = manifest.get("decisions")
    weights = decisions.get("action_weights") if isinstance(decisions, dict) else None
    if not isinstance(weights, dict) or not all(isinstance(k, str) and finite_number(v) and v >= 0 for k, v in weights.items()):
        raise ArtifactError(f"{path}: field decisions.action_weights is {weights!r}; expected a mapping action name -> finite number >= 0")
    rating = decisions.get("positive_rating")  # type: ignore[union-attr]
    if not finite_number(rating):
        raise ArtifactError(f"{path}: field decisions.positive_rating is {rating!r}; expected a finite number")


#: The graph's inputs and output: (name, rank, {axis: the tracker.json field that sizes it}); axis 0 is the batch.
_GRAPH_AXES = (("item_reps", 3, {1: "window", 2: "hidden"}), ("action", 2, {1: "window"}), ("gap", 2, {1: "window"}),
               ("length", 1, {}), ("state", 2, {1: "hidden"}))


def _check_graph(folder: Path, session: Any, window: int, hidden: int) -> None:
    """The graph reads windows of ``window`` decisions and gives states of ``hidden`` (its window axis is fixed at
    export): a tracker.json edited to another window loaded, then every score failed inside onnxruntime."""
    graph = {node.name: node.shape for node in (*session.get_inputs(), *session.get_outputs())}
    fields = {"window": window, "hidden": hidden}
    for name, rank, axes in _GRAPH_AXES:
        shape = graph.get(name)
        if shape is None or len(shape) != rank:
            raise ArtifactError(f"{folder / 'tracker.onnx'}: {name!r} of shape {shape}; expected a tensor of rank {rank} "
                                f"(inputs {', '.join(n for n, *_ in _GRAPH_AXES[:-1])}, output state)")
        for axis, field in axes.items():
            if isinstance(shape[axis], int) and shape[axis] != fields[field]:  # a named (dynamic) axis takes any size
                raise ArtifactError(f"{folder / TRACKER_MANIFEST}: field {field!r} is {fields[field]} but {folder / 'tracker.onnx'} "
                                    f"has {name!r} of shape {shape}; expected the graph's {field}, {shape[axis]}")


def load_tracker_runtime(folder: str | Path) -> TrackerRuntime:
    """An exported tracker (checked: format, every file's sha256, shapes)."""
    return TrackerRuntime(folder)
