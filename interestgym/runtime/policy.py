"""Serve an exported update policy: observe, update and score per-user interest state.

Only numpy, onnxruntime and ``interestgym.core`` (pure numpy) are imported: no torch, no
stable-baselines3, no pandas. Every formula is the replay engine's, through the same core functions:

* observation features: :func:`interestgym.core.features.encode_features` on the same raw quantities
  (cosines of the event's item with L / S, running means, counts, gaps, category statistics);
* action -> strengths: :func:`interestgym.core.protocol.action_to_strengths` on the graph's action;
* state transition at a decision (running statistics, profile updates, category counts) and the
  folding of scoring points into the running means: :mod:`interestgym.core.transition`;
* decision rule and log features: :mod:`interestgym.core.log_features` (online form);
* score: :func:`interestgym.core.interest.score_candidates`;
* outcome metrics: :func:`interestgym.core.metrics.ranking_metrics`.

The per-event update lives in :mod:`interestgym.runtime.update`: a one-event path (a service's usual
call, ~40 us of which ~7 us is the graph) and a batched path (stacked users, the core's batched
functions); tests pin them together to the bit, and the replay-parity tests pin them to the evaluator.

A service's loop for one user::

    policy = load_policy("runs/ppo/export")
    state = policy.new_state()                                  # or UserState.from_bytes(blob)
    scores = policy.score(state, vectors, candidate_ids=ids)    # rank what to show
    state, metrics = policy.record_outcome(state, vectors, clicked, candidate_ids=ids)  # what was clicked
    state = policy.update(state, Event(ts, "click", item_vector=x, category="sports"))
    blob = state.to_bytes()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from interestgym.core.clock import time_slot
from interestgym.core.dtw import DRIFT_WINDOW
from interestgym.core.features import (
    N_FEATURES,
    TRACKER_FEATURE_NAMES,
)
from interestgym.core.interest import score_candidates
from interestgym.core.log_features import RATING_ACTION, is_decision
from interestgym.core.metrics import metric_names, ranking_metrics
from interestgym.core.protocol import action_to_strengths
from interestgym.core.rules import (
    compose_residual,
    compose_residual_row,
    rule_from_record,
)
from interestgym.core.transition import (
    action_changes,
    apply_keep_change,
    apply_rate_change,
    apply_slot_change,
    apply_tracker_change,
    category_forgetting_factor,
    shown_counts,
)
from interestgym.errors import InterestGymError
from interestgym.runtime.manifest import (
    CATEGORIES_FILE,
    ITEMS_FILE,
    POLICY_FILE,
    POPULARITY_FILE,
    EmbeddingDimensionError,
    EncoderMismatchError,
)
from interestgym.runtime.rowfeatures import RowEncoder
from interestgym.runtime.state import COUNTERS, PENDING, PENDING_SLICE, Event, UserState
from interestgym.runtime.table import EventBatch, StateTable, UserRows, empty_table
from interestgym.runtime.tracker import TrackerRuntime, TrackerTerm
from interestgym.runtime.update import observe_one, update_many, update_one, update_rows

_C = {name: i for i, name in enumerate(COUNTERS)}
_P = {name: i for i, name in enumerate(PENDING)}
#: Distinct (action, value, has item) decision outcomes remembered per policy (a bound: values are
#: usually a few ratings / quantities, but a caller could send arbitrary floats).
_DECISION_MEMO_SIZE = 4096

REQUIRED_FILES = (POLICY_FILE, ITEMS_FILE, POPULARITY_FILE, CATEGORIES_FILE)
#: The files every export has; a learned policy adds its graph (POLICY_FILE), a shipped rule has none.
DATA_FILES = (ITEMS_FILE, POPULARITY_FILE, CATEGORIES_FILE)
#: ``policy.form`` of an export: the graph's action (absolute), the rule plus the graph's change
#: (residual), or the rule alone (rule).
POLICY_FORMS = ("absolute", "residual", "rule")


class ExportedPolicy:
    """A loaded export directory (use :func:`load_policy`).

    Attributes read from the manifest: ``dim`` (encoder dimension), ``encoder`` (name, fingerprint),
    ``action_weights``, ``positive_rating``, ``reward_metric``, ``scoring`` (the fixed ScoringConfig
    fields), ``manifest`` (everything).
    """

    def __init__(self, directory: Path, manifest: dict[str, Any], session: Any, item_ids: list[str],
                 popularity: np.ndarray, categories: list[str], tracker: TrackerRuntime | None = None, *,
                 change_names: tuple[str, ...] | None = None) -> None:
        self.directory = directory
        self.manifest = manifest
        self._session = session
        #: the sequence tracker the score weighs (``beta_trk * z(tracker)``), or None
        self.tracker = tracker
        self._input = session.get_inputs()[0].name if session is not None else None
        # What acts: the graph alone (absolute), the reference rule plus the graph's change (residual),
        # or the rule alone (a run that shipped its reference rule).
        policy_info = manifest.get("policy") or {}
        self.form = str(policy_info.get("form", "absolute"))
        rule = policy_info.get("rule")
        self.rule = rule_from_record(rule, "manifest.json policy.rule") if self.form in ("residual", "rule") else None
        #: a residual graph's output components (core.protocol.residual_action_names), placed into the
        #: engine's action layout by compose_residual
        self.change_names = change_names
        self.item_ids = item_ids
        self._item_index = {iid: i for i, iid in enumerate(item_ids)}
        self.popularity = popularity
        self.categories = categories
        self._category_index = {c: i for i, c in enumerate(categories)}
        enc = manifest["encoder"]
        self.dim = int(enc["dim"])
        self.encoder = enc
        weights = manifest["replay"]["action_weights"]
        self.action_weights = {str(k): float(v) for k, v in weights.items()}
        self.max_action_weight = float(manifest["replay"]["max_action_weight"])
        self.positive_rating = float(manifest["replay"]["positive_rating"])
        self.reward_metric = str(manifest["replay"]["reward_metric"])
        self.tz_offset_hours = float(manifest["replay"].get("tz_offset_hours", 0.0))
        self.scoring = dict(manifest["scoring"]["config"])
        p = self.scoring.get("popularity_weight")
        self._fixed_p = None if p is None else float(p)
        self._beta_cat = float(self.scoring.get("beta_cat", 0.0))
        self._beta_ctx = float(self.scoring.get("beta_ctx", 0.0))
        self._context_rate = float(self.scoring.get("context_rate", 0.0))
        self._beta_trk = float(self.scoring.get("tracker_weight", 0.0) or 0.0)
        # lambda of the per-slot category counts (absent from manifests written before them: 0)
        self._slot_weight = float(self.scoring.get("category_slot_weight", 0.0) or 0.0) if self._beta_cat != 0 else 0.0
        # b of the exposure counts: the category term is clicks per exposure (absent from older manifests: 0)
        self._exposure_prior = float(self.scoring.get("category_exposure_prior", 0.0) or 0.0) if self._beta_cat != 0 else 0.0
        # Observations after FEATURES (core.features.EXTRA_FEATURES) the graph reads: the tracker's, the DTW drift
        observation = manifest.get("observation") or {}
        self.extra_obs: tuple[str, ...] = tuple(observation.get("extra") or ())
        self.n_obs = N_FEATURES + len(self.extra_obs)
        self.observes_tracker = any(name in TRACKER_FEATURE_NAMES for name in self.extra_obs)
        self.observes_drift = "dtw_drift" in self.extra_obs
        self.drift_k = int(observation.get("drift_window") or DRIFT_WINDOW)
        # None in the manifest = tied to the action (1 - a_L), as in the engine
        fixed_forgetting = self.scoring.get("category_forgetting", 1.0)
        self._fixed_forgetting = None if fixed_forgetting is None else float(fixed_forgetting)
        # The one-event path's helpers: the observation encoder (the core's features to the bit, see
        # runtime.rowfeatures), the time slot of every hour and the decision rule's outcomes, both
        # computed by the core once instead of with numpy calls per event.
        self._row_encoder = RowEncoder(self.max_action_weight, self.action_weights)
        self._slots = {h: int(s) for h, s in enumerate(time_slot(np.arange(24)).tolist())}
        self._decision_memo: dict[tuple[Any, ...], bool] = {}

    # -------------------------------------------------------------------------------- basics
    def __repr__(self) -> str:
        return f"ExportedPolicy({str(self.directory)!r}, encoder={self.encoder.get('name')!r}, dim={self.dim})"

    def new_state(self) -> UserState:
        """The state of a user with no history."""
        return UserState.empty(self.dim, len(self.categories) if self._beta_cat != 0 else None, with_slots=self._beta_ctx != 0,
                               tracker_weight=self._beta_trk if self.tracker is not None else None, with_drift=self.observes_drift,
                               with_slot_counts=self._slot_weight != 0, with_exposure=self._exposure_prior != 0)

    def check_encoder(self, fingerprint: str) -> None:
        """Raise :class:`EncoderMismatchError` unless ``fingerprint`` is the policy's encoder's."""
        expected = self.encoder.get("fingerprint")
        if fingerprint != expected:
            raise EncoderMismatchError(
                f"{self.directory / 'manifest.json'}: encoder fingerprint {str(fingerprint)[:16]}... given; the policy was "
                f"trained with {self.encoder.get('name')!r} fingerprint {str(expected)[:16]}... (vectors from another "
                "encoder live in another space)"
            )

    def _vectors(self, vectors: Any, what: str, ndim: int, given: tuple[int, ...] | None = None) -> np.ndarray:
        """``vectors`` as float32 of ``ndim`` dims, the last the encoder's dimension, each row L2-normalised (or zero);
        ``given``: the shape the caller was passed, when it made ``vectors`` from it (one vector as a row), for the message."""
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim != ndim or arr.shape[-1] != self.dim:
            shape, dims = (arr.shape, ndim) if given is None else (given, ndim - 1)
            encoder = self.encoder.get("name")
            raise EmbeddingDimensionError(
                f"{what} of shape {shape}; expected shape ({self.dim},), one vector of the dimension of encoder {encoder!r}"
                if dims == 1 else
                f"{what} of shape {shape}; expected {dims} dims with the last of size {self.dim} (the dimension of encoder {encoder!r})")
        # Profiles, features and scores assume the encoder's unit rows (zero rows: no text); a raw,
        # unnormalised vector would silently skew every cosine.
        norms = np.sqrt(np.einsum("...d,...d->...", arr, arr, dtype=np.float64))
        bad = ~((np.abs(norms - 1.0) <= 1e-3) | (norms == 0.0))
        if bad.any():
            found = norms[bad].reshape(-1)[0]
            raise InterestGymError(f"{what}: a vector of L2 norm {found:.4g}; expected L2-normalised rows (norm 1, or 0 for an item the encoder has no vector for) as the encoder writes them")
        return arr

    # -------------------------------------------------------------------------------- policy
    def act(self, observations: np.ndarray) -> np.ndarray:
        """Observations (n, n_obs) -> env actions float32 in [-1, 1]: (n, 4) from the ONNX graph, (n, 4) or
        wider from the shipped rule (a rule's own changes, e.g. a value gain); for a residual policy the rule's action plus the graph's change in the engine's
        layout (:data:`interestgym.core.protocol.ENV_ACTION_NAMES`, up to the policy's last component: the
        category keep factor, the tracker's weight, the count gain, the slot profile's rate, the per-slot
        category weight; :func:`interestgym.core.rules.compose_residual`)."""
        obs = np.ascontiguousarray(observations, dtype=np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.n_obs:
            raise InterestGymError(f"observations of shape {obs.shape}; expected (n, {self.n_obs})")
        if self.form == "rule":
            return np.asarray(self.rule.act(obs), dtype=np.float32)  # type: ignore[union-attr]
        graph = self._graph_action(obs)
        if self.form == "residual":
            return compose_residual(self.rule.act(obs), graph, self.change_names)  # type: ignore[union-attr]
        return graph

    def _act_row(self, obs: np.ndarray) -> list[float]:
        """:meth:`act` of one observation (1, n_obs) float32 as the runtime builds it, as Python floats (its float32
        values): the one-event update's form, with the residual composed by
        :func:`~interestgym.core.rules.compose_residual_row` (the same values as :meth:`act`'s row, to the bit)."""
        if self.form == "rule":
            return self.rule.act_row(obs)  # type: ignore[union-attr]  (every rule is a RulePolicy: rule_from_record)
        graph = self._graph_action(obs)[0].tolist()
        if self.form == "residual":
            return compose_residual_row(self.rule.act_row(obs), graph, self.change_names)  # type: ignore[union-attr]
        return graph

    def _graph_action(self, obs: np.ndarray) -> np.ndarray:
        """The ONNX graph's ``action`` output for float32 observations (n, n_obs): the learned part of
        :meth:`act` (a benchmark puts SB3's predict here to compare the two on the same bookkeeping)."""
        return self._session.run(["action"], {self._input: obs})[0]

    def strengths(self, observations: np.ndarray) -> np.ndarray:
        """(a_L, a_S, w, p) in [0, 1] (float64, as the env computes them), fixed p applied."""
        return self._strengths(self.act(observations))

    def _strengths(self, actions: np.ndarray) -> np.ndarray:
        s = action_to_strengths(actions[:, :4])
        if self._fixed_p is not None:
            s[:, 3] = self._fixed_p
        return s

    # ---------------------------------------------------------------------------- observation
    def _is_decision(self, event: Event) -> bool:
        if event.action not in self.action_weights:
            raise self._unknown_action(event.action)
        return bool(is_decision(self.action_weights[event.action], event.action == RATING_ACTION, float(event.value),
                                self.positive_rating, event.item_vector is not None))

    def _decision(self, event: Event) -> bool:
        """:meth:`_is_decision`, remembered per (action, value, has item): the core's rule on arrays
        costs ~5 numpy calls, the outcome depends on these three only."""
        try:
            key = (event.action, event.value, event.item_vector is not None)
            known = self._decision_memo.get(key)
        except TypeError:  # an unhashable value (e.g. an array): ask the rule every time
            return self._is_decision(event)
        if known is None:
            known = self._is_decision(event)  # raises for an unknown action, which is never remembered
            if len(self._decision_memo) < _DECISION_MEMO_SIZE:
                self._decision_memo[key] = known
        return known

    def _item_vector(self, vector: Any) -> np.ndarray:
        """One event's item vector as (d,) float32, checked like :meth:`_vectors` (which gives the
        error message) with a float32 dot product for the norm: its ~1e-7 error is far inside the
        1e-3 tolerance, and it is one call instead of five."""
        arr = np.asarray(vector, dtype=np.float32)
        if arr.shape == (self.dim,):
            sq = float(arr @ arr)
            if abs(sq - 1.0) <= 1e-3:  # |norm - 1| <= 1e-3 holds for every such sq (norm within 5e-4)
                return arr
        return self._vectors(arr[None], "event item_vector", 2, given=arr.shape)[0]

    def _slot_of_hour(self, hour: int) -> int:
        """The time-of-day slot of an hour (``core.clock.time_slot``, tabulated for 0-23)."""
        slot = self._slots.get(hour)
        return int(time_slot(hour)) if slot is None else slot

    def _check_state(self, state: UserState) -> None:
        """Refuse a user state that does not fit this policy (e.g. one written under another export): each part
        of the state the policy reads must be there, with the policy's sizes."""
        counts = state.category_counts
        self._check_blocks(state.profiles.shape[1], None if counts is None else counts.shape, state.slot_profiles is not None,
                           state.slot_category_counts is not None, state.exposure is not None, "a user state")

    def _check_table(self, table: StateTable, rows: np.ndarray) -> None:
        """:meth:`_check_state` for the table's ``rows``: a block the policy reads must be there for every one of them."""
        def held(name: str) -> bool:
            column = getattr(table, name)
            return column is not None and bool(table.present[name][rows].all())

        counts = table.category_counts
        shape = None if counts is None or (self._beta_cat != 0 and not held("category_counts")) else counts.shape[1:]
        self._check_blocks(table.dim, shape, held("slot_profiles"), held("slot_category_counts"), held("exposure"),
                           "a user state (a row of the table)")

    def _check_blocks(self, dim: int, counts: tuple[int, ...] | None, slots: bool, slot_counts: bool, exposure: bool,
                      what: str) -> None:
        if dim != self.dim:
            raise EmbeddingDimensionError(f"user state of dimension {dim}; the policy's encoder has dimension {self.dim}")
        if (self._beta_cat != 0 and counts is None) or (counts is not None and counts != (len(self.categories),)):
            found = "none" if counts is None else f"{counts[0]} columns"
            raise InterestGymError(f"{what} with category counts of {found} (e.g. written under another export): the "
                                   f"policy counts over its {len(self.categories)} categories"
                                   f"{'' if self._beta_cat != 0 else ' (or none: its score has no category term)'}; start users "
                                   "with policy.new_state()")
        if self._beta_ctx != 0 and not slots:
            raise InterestGymError(f"{what} without time-of-day profiles (e.g. written under a policy without them): "
                                   "the policy's score uses them (beta_ctx); start users with policy.new_state()")
        if self._slot_weight != 0 and not slot_counts:
            raise InterestGymError(f"{what} without per-slot category counts (e.g. written under a policy without them): "
                                   "the policy's category term weighs them (category_slot_weight); start users with "
                                   "policy.new_state()")
        if self._exposure_prior != 0 and not exposure:
            raise InterestGymError(f"{what} without exposure counts (e.g. written under a policy without them): the "
                                   "policy's category term divides by what each user was shown (category_exposure_prior); "
                                   "start users with policy.new_state()")

    def _action_weights_of(self, actions: np.ndarray) -> np.ndarray:
        """(n,) the action table's weight of each action name; an action not in the table is refused, as
        :meth:`_is_decision` refuses it."""
        weights = self.action_weights
        try:
            return np.array([weights[a] for a in actions.tolist()], dtype=np.float64)
        except (KeyError, TypeError):
            raise self._unknown_action(next(a for a in actions.tolist() if not isinstance(a, str) or a not in weights)) from None

    def _unknown_action(self, action: Any) -> InterestGymError:
        return InterestGymError(f"event action {action!r}: expected one of {', '.join(sorted(self.action_weights))}")

    def _tracker_weighted(self, term: TrackerTerm | None, actions: np.ndarray) -> TrackerTerm | None:
        """The tracker term after a decision with env ``actions`` (1, n) (its window and running mean
        already moved by :func:`~interestgym.runtime.update.decision_extras`): the weight is the export's,
        moved by a sixth action component when the policy has one
        (:func:`interestgym.core.transition.apply_tracker_change`, as the engine moves it)."""
        if self.tracker is None or term is None:
            return term
        weight = float(apply_tracker_change(np.array([self._beta_trk]), action_changes(actions).tracker)[0])
        return dataclasses.replace(term, weight=weight)

    def _forgetting(self, strengths: np.ndarray, keep_change: np.ndarray | None) -> np.ndarray:
        """(n,) keep factors of the category counts at decisions with ``strengths`` (the engine's)."""
        return apply_keep_change(category_forgetting_factor(self._fixed_forgetting, strengths), keep_change)

    def _context_rates(self, actions: np.ndarray) -> np.ndarray | float:
        """(n,) rates of the time-slot profiles' update at decisions with env ``actions``: the export's
        ``context_rate``, moved by a context change when the policy has one (as the engine moves it)."""
        change = action_changes(actions).context
        return apply_rate_change(np.full(len(actions), self._context_rate), change) if change is not None else self._context_rate

    def observe(self, state: UserState, event: Event) -> np.ndarray | None:
        """The observation the policy sees for ``event`` (None if the event is not a decision)."""
        if not self._decision(event):
            return None
        return observe_one(self, state, event)[0][0]

    # -------------------------------------------------------------------------------- update
    def update(self, state: UserState, event: Event) -> UserState:
        """The user's state after ``event`` (a new object; ``state`` is left unchanged)."""
        return update_one(self, state, event)

    def update_batch(self, states: Sequence[UserState], events: Sequence[Event]) -> list[UserState]:
        """:meth:`update` for many users at once (one ONNX call for all their decisions); equal to the
        one-event updates to the bit."""
        if len(states) == 1 and len(events) == 1:
            return [update_one(self, states[0], events[0])]
        return update_many(self, states, events)

    # -------------------------------------------------------------------------------- scoring
    def _popularity(self, candidate_ids: Any, popularity: Any, shape: tuple[int, ...]) -> np.ndarray:
        if popularity is not None:
            try:
                pop = np.asarray(popularity, dtype=np.float32)
            except (TypeError, ValueError):
                raise InterestGymError(f"popularity: {np.asarray(popularity).dtype} values that are not numbers; expected "
                                       "numbers in [0, 1], one per candidate") from None
            if pop.shape != shape:
                one = shape[0] == 1 and pop.shape[:1] == (1,)  # score(): one user's (C,) given, seen here as (1, C)
                raise InterestGymError(f"popularity of shape {pop.shape[1:] if one else pop.shape}; expected "
                                       f"{shape[1:] if one else shape} (one value per candidate)")
            outside = ~((pop >= 0.0) & (pop <= 1.0))  # NaN is neither
            if outside.any():
                at = np.unravel_index(int(np.flatnonzero(outside)[0]), shape)
                raise InterestGymError(f"popularity {float(pop[at])!r} at candidate {at[-1]}"
                                       + (f" of row {at[0]}" if len(shape) > 1 and shape[0] > 1 else "")
                                       + f" ({int(outside.sum())} such values); expected numbers in [0, 1], as the export's "
                                       "popularity.npy holds them")
            return pop
        if candidate_ids is None:
            if self._fixed_p == 0.0:
                return np.zeros(shape, dtype=np.float32)
            raise InterestGymError("score needs candidate_ids (or popularity=): the policy's score uses the items' popularity"
                                   + (" and a sequence tracker, which needs the ids" if self.tracker is not None else ""))
        ids = np.asarray(candidate_ids, dtype=object)
        if ids.shape != shape:
            raise InterestGymError(f"candidate_ids of shape {ids.shape}; expected {shape} (one id per candidate vector)")
        # An item the export does not know had no positive event among training users: count 0, pop 0.
        idx = np.fromiter((self._item_index.get(str(i), -1) for i in ids.reshape(-1)), dtype=np.int64, count=ids.size).reshape(shape)
        return np.where(idx >= 0, self.popularity[np.maximum(idx, 0)], np.float32(0.0)).astype(np.float32)

    def _category_columns(self, categories: Any, shape: tuple[int, ...]) -> np.ndarray:
        """(shape) the candidates' category columns; a category unknown to the export gets a column past the
        counts', which the core scores as a zero count (and a zero exposure)."""
        if categories is None:
            raise InterestGymError("score needs candidate_categories: the policy's score uses the category model (beta_cat)")
        cats = np.asarray(categories, dtype=object)
        if cats.shape != shape:
            raise InterestGymError(f"candidate_categories of shape {cats.shape}; expected {shape}")
        unknown = len(self.categories)
        return np.fromiter((self._category_index.get(str(c), unknown) for c in cats.reshape(-1)), dtype=np.int64,
                           count=cats.size).reshape(shape)

    def _exposure_inputs(self, users: UserRows) -> np.ndarray | None:
        """(B, n_categories) the users' counts of shown candidates, or None when the policy does not divide by them."""
        if self._exposure_prior == 0:
            return None  # (every state was checked to fit the policy: _check_state)
        return users.shown()

    def _category_inputs(self, users: UserRows, categories: Any, shape: tuple[int, ...], slots: np.ndarray | None
                         ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | float]:
        """(counts (B, n_categories), candidates' category columns (B, C), the counts of each row's time
        slot ``slots`` (B, n_categories) or None, their weights lambda (B,) or 0) for the category term, or
        (None, None, None, 0) when the policy does not score with it. A category unknown to the export
        gets a column past the counts', which the core scores as a zero count."""
        if self._beta_cat == 0:
            return None, None, None, 0.0
        idx = self._category_columns(categories, shape)
        counts = users.category_counts()
        if self._slot_weight == 0:
            return counts, idx, None, 0.0
        assert slots is not None
        slot_counts = users.at_slot("slot_category_counts", slots)
        # lambda x the factor each user's last decision set (1 without a slot lever): the engine's product
        factors = users.slot_factor()
        return counts, idx, slot_counts, apply_slot_change(self._slot_weight, factors)

    def _tracker_inputs(self, users: UserRows, candidate_ids: Any, shape: tuple[int, ...]) -> tuple[np.ndarray | None, Any]:
        """(the tracker's standardised scores (B, C), the users' tracker weights (B,)) for the tracker
        term, or (None, 0.0) when the policy does not score with one or every weight is 0 (and it does not
        observe the tracker, whose running mean ranks by the tracker alone)."""
        if self.tracker is None:
            return None, 0.0
        terms = users.tracker_terms()
        if any(t is None for t in terms):
            raise InterestGymError("a user state without the tracker's window: the policy scores with a sequence tracker; "
                                   "start users with policy.new_state()")
        weights = np.array([t.weight for t in terms], dtype=np.float64)  # type: ignore[union-attr]
        if not weights.any() and not self.observes_tracker:
            return None, 0.0
        if candidate_ids is None:
            raise InterestGymError("score needs candidate_ids: the policy's score uses a sequence tracker (it scores item ids)")
        ids = np.asarray(candidate_ids, dtype=object)
        if ids.shape != shape:
            raise InterestGymError(f"candidate_ids of shape {ids.shape}; expected {shape} (one id per candidate vector)")
        for t in terms:
            self.tracker.check_window(t.window, "user state field 'tracker_window'")  # type: ignore[union-attr]
        return self.tracker.standardised_scores([t.window for t in terms], ids), weights  # type: ignore[union-attr]

    def _scores(self, users: UserRows, cand: np.ndarray, candidate_ids: Any, popularity: Any,
                candidate_categories: Any, hour: Any
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(scores, cos(L, c), cos(S, c), the tracker's standardised scores or None, the candidates' category
        columns or None without a category term), each (B, C)."""
        b, c, _ = cand.shape
        users.check(self)
        long_term, short_term = users.profile(0), users.profile(1)
        strengths = users.strengths()
        if self._fixed_p is not None:
            strengths[:, 3] = self._fixed_p
        # A user without a decision yet has no profile and no strengths (p = 0 would score every candidate
        # alike): rank by popularity, the cold-start default. The replay never scores before a user's first
        # decision, so this changes nothing the evaluator measures.
        cold = users.n_decisions() == 0
        if cold.any():
            strengths[cold, 3] = 1.0
        # Same contraction as the engine (einsum over d per candidate): identical float32 cosines.
        cos_long = np.einsum("pcd,pd->pc", cand, long_term)
        cos_short = np.einsum("pcd,pd->pc", cand, short_term)
        pop = self._popularity(candidate_ids, popularity, (b, c))
        context, slots = None, None
        hours = None if hour is None else _ranking_hours(hour, b)  # checked when given, whether the score uses it or not
        if self._beta_ctx != 0 or self._slot_weight != 0:
            if hours is None:
                what = "time-of-day profiles (beta_ctx)" if self._beta_ctx != 0 else "category counts per time of day (category_slot_weight)"
                raise InterestGymError(f"score needs the hour of the ranking (hour=, or hours= for score_batch): the policy's "
                                       f"score uses {what}")
            slots = time_slot(hours)
        if self._beta_ctx != 0:
            assert slots is not None
            ctx_prof = users.at_slot("slot_profiles", slots)
            context = np.einsum("pcd,pd->pc", cand, ctx_prof)
        counts, cand_category, slot_counts, slot_weight = self._category_inputs(users, candidate_categories, (b, c), slots)
        tracker_z, beta_trk = self._tracker_inputs(users, candidate_ids, (b, c))
        scores = score_candidates(
            cos_long, cos_short, strengths, pop, beta_cat=np.full(b, self._beta_cat), category_counts=counts,
            candidate_category=cand_category, category_prior=float(self.scoring.get("category_prior", 1.0)),
            cos_context=context, beta_ctx=np.full(b, self._beta_ctx), tracker_z=tracker_z, beta_trk=beta_trk,
            slot_category_counts=slot_counts, category_slot_weight=slot_weight,
            exposure_counts=self._exposure_inputs(users), exposure_prior=self._exposure_prior,
        )
        return scores, cos_long, cos_short, tracker_z, cand_category

    def score(self, state: UserState, candidate_vectors: Any, candidate_ids: Sequence[str] | None = None, *,
              popularity: Any = None, candidate_categories: Sequence[str] | None = None, hour: int | None = None) -> np.ndarray:
        """Scores (C,) float64 of candidates (C, d) for one user: higher = show first.

        :param candidate_ids: item ids (for the popularity prior; ids unknown to the export count as
            never-clicked items, pop 0).
        :param popularity: pop(c) in [0, 1] given directly instead of ``candidate_ids``.
        :param candidate_categories: needed only if the policy scores with the category model.
        :param hour: hour of the ranking (for the time-of-day context term and the category counts per time of
            day; ``score_batch`` takes ``hours``, one per user).
        """
        cand = self._vectors(candidate_vectors, "candidate_vectors", 2)[None]
        ids = None if candidate_ids is None else [list(candidate_ids)]
        pop = None if popularity is None else np.asarray(popularity)[None]
        cats = None if candidate_categories is None else [list(candidate_categories)]
        return self._scores(UserRows([state]), cand, ids, pop, cats, None if hour is None else [hour])[0][0]

    def score_batch(self, states: Sequence[UserState], candidate_vectors: Any, candidate_ids: Any = None, *,
                    popularity: Any = None, candidate_categories: Any = None, hours: Any = None) -> np.ndarray:
        """Scores (B, C) for B users with C candidates each (``candidate_vectors``: (B, C, d))."""
        cand = self._vectors(candidate_vectors, "candidate_vectors", 3)
        if cand.shape[0] != len(states):
            raise InterestGymError(f"candidate_vectors for {cand.shape[0]} users; expected {len(states)} (one set per state)")
        return self._scores(UserRows(list(states)), cand, candidate_ids, popularity, candidate_categories, hours)[0]

    # -------------------------------------------------------------------------------- outcomes
    def record_outcome(self, state: UserState, candidate_vectors: Any, labels: Sequence[int],
                       candidate_ids: Sequence[str] | None = None, *, popularity: Any = None,
                       candidate_categories: Sequence[str] | None = None, hour: int | None = None
                       ) -> tuple[UserState, dict[str, float] | None]:
        """Record what the user clicked among ranked candidates; returns (new state, metrics).

        The ranking quality of the current profiles feeds the observation's running means (own metric,
        L-only and S-only metric) at the next decision. For a policy that divides its category term by what
        was shown (``category_exposure_prior``), the candidates are counted per category too, and those
        counts join the user's exposure at the next decision (as the replay counts a step's impressions):
        scores before it are unchanged. As in the replay protocol, an outcome is not scored or counted
        (metrics ``None``, state unchanged) before the user's first decision, or when it has no clicked or no
        unclicked candidate.
        """
        cand = self._vectors(candidate_vectors, "candidate_vectors", 2)
        lab = _labels(labels, (cand.shape[0],), "one per candidate")
        if hour is not None:
            _ranking_hours([hour], 1)  # checked whether the user is scored or not, as record_outcomes_table checks it
        if state.counters[_C["n_decisions"]] == 0 or not (lab == 1).any() or not (lab == 0).any():
            return state, None
        ids = None if candidate_ids is None else [list(candidate_ids)]
        pop = None if popularity is None else np.asarray(popularity)[None]
        cats = None if candidate_categories is None else [list(candidate_categories)]
        metrics, sums, alone, columns = self._outcomes(UserRows([state]), cand[None], lab[None], ids, pop, cats,
                                                       None if hour is None else [hour])
        new = state.copy()
        new.pending_sums[:] += sums[0]
        if alone is not None:  # the tracker's ranking alone, for its running mean (tracker_metric_ema)
            new.tracker = dataclasses.replace(new.tracker, pending=new.tracker.pending + alone[0])  # type: ignore[arg-type]
        new.counters[_C["pending_points"]] += 1
        if new.exposure is not None and self._exposure_prior != 0:
            # the candidates were shown: counted at the user's next decision, as the engine counts a step's impressions
            new.exposure[1] += shown_counts(np.zeros(1, dtype=np.int64), columns, 1, new.exposure.shape[1])[0]
        return new, {k: float(v[0]) for k, v in metrics.items()}

    def _outcomes(self, users: UserRows, cand: np.ndarray, lab: np.ndarray, ids: Any, pop: Any, cats: Any, hours: Any
                  ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None, np.ndarray | None]:
        """What recording outcomes adds for B users, each scored: (metrics name -> (B,), (B, len(PENDING)) the sums
        added to the pending sums in PENDING order, (B,) the tracker's metric alone or None, (B, C) the candidates'
        category columns or None without a category term)."""
        scores, cos_long, cos_short, tracker_z, columns = self._scores(users, cand, ids, pop, cats, hours)
        metrics = ranking_metrics(scores, lab, metric_names([self.reward_metric]))
        sums = np.zeros((len(lab), len(PENDING)))
        sums[:, _P["metric"]] = metrics[self.reward_metric]
        sums[:, _P["long_only"]] = ranking_metrics(cos_long, lab, [self.reward_metric])[self.reward_metric]
        sums[:, _P["short_only"]] = ranking_metrics(cos_short, lab, [self.reward_metric])[self.reward_metric]
        alone = ranking_metrics(tracker_z, lab, [self.reward_metric])[self.reward_metric] if self.observes_tracker else None
        return metrics, sums, alone, columns

    # -------------------------------------------------------------------------------- tables
    def new_table(self, n: int = 0) -> StateTable:
        """A :class:`~interestgym.runtime.table.StateTable` of ``n`` users with no history (add more with
        ``table.append([policy.new_state()] * k)``)."""
        return empty_table(self, n)

    def update_table(self, table: StateTable, rows: Any, events: EventBatch | Sequence[Event]) -> None:
        """:meth:`update_batch` for users held in a table, in place: ``rows`` (distinct row numbers) after one
        event each, ``events`` an :class:`~interestgym.runtime.table.EventBatch` (or a list of :class:`Event`)
        aligned with ``rows``. Equal to :meth:`update` on each user's state, to the bit. On an error (a bad event,
        an event before the user's previous one, a state that does not fit) nothing is written."""
        if isinstance(events, EventBatch):
            batch = events
        elif isinstance(events, (str, bytes, dict)) or not all(isinstance(e, Event) for e in events):
            raise InterestGymError(f"update_table events: {type(events).__name__}; expected an EventBatch or a list of Event")
        else:
            batch = EventBatch.of(events, self)
        if batch.item_vectors.shape[1] != self.dim and batch.has_item.any():
            self._vectors(batch.item_vectors, "EventBatch.item_vectors", 2)
        update_rows(self, table, table.rows(rows, len(batch)), batch)

    def score_table(self, table: StateTable, rows: Any, candidate_vectors: Any, candidate_ids: Any = None, *,
                    popularity: Any = None, candidate_categories: Any = None, hours: Any = None) -> np.ndarray:
        """:meth:`score_batch` for users held in a table: scores (B, C) of the table's ``rows`` (B row numbers) with
        C candidates each (``candidate_vectors``: (B, C, d)); equal to :meth:`score` on each user's state."""
        cand = self._vectors(candidate_vectors, "candidate_vectors", 3)
        at = table.rows(rows, distinct=False)
        if cand.shape[0] != len(at):
            raise InterestGymError(f"candidate_vectors for {cand.shape[0]} users; expected {len(at)} (one set per row)")
        return self._scores(UserRows(table=table, rows=at), cand, candidate_ids, popularity, candidate_categories, hours)[0]

    def record_outcomes_table(self, table: StateTable, rows: Any, candidate_vectors: Any, labels: Any,
                              candidate_ids: Any = None, *, popularity: Any = None, candidate_categories: Any = None,
                              hours: Any = None) -> dict[str, np.ndarray]:
        """:meth:`record_outcome` for users held in a table, in place: the table's ``rows`` (distinct) were shown
        ``candidate_vectors`` (B, C, d) and clicked ``labels`` (B, C) of 0 / 1. Returns each metric as (B,), NaN for
        a row not scored (before the user's first decision, or without a clicked or an unclicked candidate), whose
        state is left as it is. Equal to :meth:`record_outcome` on each user's state."""
        cand = self._vectors(candidate_vectors, "candidate_vectors", 3)
        at = table.rows(rows)
        if cand.shape[0] != len(at):
            raise InterestGymError(f"candidate_vectors for {cand.shape[0]} users; expected {len(at)} (one set per row)")
        lab = _labels(labels, cand.shape[:2], "one per candidate of each row")
        for name, given in (("candidate_ids", candidate_ids), ("candidate_categories", candidate_categories),
                            ("popularity", popularity)):
            if given is not None and len(given) != len(at):
                raise InterestGymError(f"{name} for {len(given)} rows; expected {cand.shape[:2]} (one per candidate of "
                                       "each row)")
        hours_all = None if hours is None else _ranking_hours(hours, len(at))  # checked whether a row is scored or not
        scored = (table.counters[at, _C["n_decisions"]] > 0) & (lab == 1).any(axis=1) & (lab == 0).any(axis=1)
        names = metric_names([self.reward_metric])
        out = {name: np.full(len(at), np.nan) for name in names}
        if not scored.any():
            return out
        k = np.flatnonzero(scored)

        def part(values: Any, dtype: Any = None) -> Any:  # the scored rows of a per-row input (None stays None)
            if values is None:
                return None
            if dtype is object:  # ragged rows: the shape check downstream names them, not numpy
                return [values[i] for i in k.tolist()]
            return np.asarray(values, dtype=dtype)[k]

        hours_k = None if hours_all is None else hours_all[k]
        metrics, sums, alone, columns = self._outcomes(UserRows(table=table, rows=at[k]), cand[k], lab[k],
                                                       part(candidate_ids, object), part(popularity),
                                                       part(candidate_categories, object), hours_k)
        r = at[k]
        table.stats[r, PENDING_SLICE] += sums
        table.counters[r, _C["pending_points"]] += 1
        if alone is not None and table.tracker is not None:
            for i, row in enumerate(r.tolist()):
                term = table.tracker[row]
                table.tracker[row] = dataclasses.replace(term, pending=term.pending + alone[i])  # type: ignore[arg-type]
        if table.exposure is not None and self._exposure_prior != 0:
            held = np.flatnonzero(table.present["exposure"][r])  # (the policy's check: every row has it)
            table.exposure[r[held], 1] += shown_counts(np.arange(len(k)), columns, len(k), table.exposure.shape[2])[held]
        for name in names:
            out[name][k] = metrics[name]
        return out


def _labels(labels: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``labels`` as int8 of ``shape``, each 0 (not clicked) or 1 (clicked)."""
    raw = np.asarray(labels)
    if raw.shape != tuple(shape):
        raise InterestGymError(f"labels of shape {raw.shape}; expected {tuple(shape)}, {what}")
    if raw.size and not np.isin(raw, (0, 1)).all():
        bad = raw[~np.isin(raw, (0, 1))][0].item()
        raise InterestGymError(f"labels hold {bad!r}; expected 0 (not clicked) or 1 (clicked) per candidate")
    return raw.astype(np.int8)


def _ranking_hours(hour: Any, b: int) -> np.ndarray:
    """(b,) hours of a ranking, each an integer in [0, 23]: one for all users, or one per user."""
    hours = np.asarray(hour)
    if hours.ndim > 1 or (hours.ndim == 1 and len(hours) not in (1, b)):
        raise InterestGymError(f"hours of shape {hours.shape}: expected one hour for all users or one per user ({b})")
    if hours.dtype.kind not in "iu" or ((hours < 0) | (hours > 23)).any():
        shown = hours.tolist() if hours.size <= 8 else f"{hours.size} values of type {hours.dtype}"
        raise InterestGymError(f"hour {shown!r}: expected integers in [0, 23] (the hour of the ranking on the dataset's clock)")
    return np.broadcast_to(hours, (b,))
