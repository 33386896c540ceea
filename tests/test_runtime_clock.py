"""The runtime derives hour / weekday on the same clock as `prepare --tz-offset` did at training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from interestgym.data.readers import hour_weekday
from interestgym.runtime.state import Event


@pytest.mark.parametrize("offset", [0.0, 8.0, -5.0, 5.5])
def test_event_clock_matches_the_prepare_columns(offset):
    rng = np.random.default_rng(0)
    ts = rng.integers(1_400_000_000, 1_800_000_000, size=200)
    hours, weekdays = hour_weekday(ts, round(offset * 3600))  # what prepare stored for training
    got = np.array([Event(int(t), "click").hour_weekday(offset) for t in ts])
    np.testing.assert_array_equal(got[:, 0], hours)
    np.testing.assert_array_equal(got[:, 1], weekdays)


def test_explicit_hour_and_weekday_win():
    assert Event(0, "click", hour=7, weekday=2).hour_weekday(8.0) == (7, 2)
    # 1970-01-01 00:00 UTC was a Thursday; eight hours east it is 08:00 the same day.
    assert Event(0, "click").hour_weekday(8.0) == (8, 3)
    assert Event(0, "click").hour_weekday(-1.0) == (23, 2)


def test_export_records_the_dataset_clock(tmp_path_factory):
    from export_fixtures import trained_export

    fixture = trained_export(tmp_path_factory)
    manifest = json.loads((fixture.export / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["replay"]["tz_offset_hours"] == 0.0
