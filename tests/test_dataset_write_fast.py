"""The dataset writer's fast paths equal the plain computations they replace: the events' order (one stable sort
of a packed key instead of ``np.lexsort``) and the repeat count (a sorted array's distinct pairs instead of
``np.unique``), on random logs with ties, negative times, out-of-order rows and keys too wide to pack."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from interestgym.core.log_features import engaged_items, repeated_engagements
from interestgym.data.dataset import SplitSpec, _event_order, repeat_engagements


@pytest.mark.parametrize("seed", range(6))
def test_event_order_is_lexsorts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 400))
    users = rng.integers(0, 7, n)
    ts = rng.integers(-5, 6, n) * (10**12 if seed == 5 else 1)  # seed 5: a span too wide to pack with the users
    seq = np.arange(n) * 3 + 1
    if seed == 4:
        seq = rng.permutation(seq)  # rows not in seq order: the lexsort path
    expected = np.lexsort((seq, ts, users))
    assert np.array_equal(_event_order(users, ts, seq), expected)


@pytest.mark.parametrize("seed", range(4))
def test_repeat_count_is_a_set_walk(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    users, items = rng.integers(0, 5, n), rng.integers(0, 9, n)
    actions = rng.choice(np.array(["view", "impression", "purchase", "hover"]), n)
    weights = {"view": 1.0, "impression": 0.0, "purchase": 3.0}  # hover: no weight, as an unknown action maps to 0
    seen: set[tuple[int, int]] = set()
    expected = 0
    for u, i, a in zip(users.tolist(), items.tolist(), actions.tolist()):
        if weights.get(a, 0.0) > 0:
            expected += (u, i) in seen
            seen.add((u, i))
    weight = np.array([weights.get(a, 0.0) for a in actions])
    assert repeated_engagements(users, engaged_items(items, weight)) == expected
    ids = pd.Series([f"i{i}" for i in items.tolist()], dtype=str)
    assert repeat_engagements(users, ids, pd.Series(actions, dtype=str), weights) == expected
    assert repeated_engagements(users[:0], engaged_items(items[:0], weight[:0])) == 0


def test_split_of_the_distinct_ids_is_the_split_of_every_row() -> None:
    rows = np.array(["u3", "u1", "u3", "u10", "u2", "u1"] * 7, dtype=object)
    spec = SplitSpec(seed=3)
    pd.testing.assert_frame_equal(spec.assign(rows), spec.assign(np.array(sorted(set(rows)), dtype=object)))
