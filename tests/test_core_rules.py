"""A rule made by name (from an export's manifest, a config, an env's JSON arguments) checks its parameters: each one
the rule has, a finite number of its range, refused with the rule, the parameter and what was expected."""

from __future__ import annotations

import re

import pytest

from interestgym.core.rules import RuleParameterError, make_rule


@pytest.mark.parametrize(("name", "params", "message"), [
    ("behaviour_rule", {"streak": 2.5}, r"streak=2.5: expected a whole number >= 1"),
    ("behaviour_rule", {"streak": 0}, r"streak=0: expected a whole number >= 1"),
    ("time_decay", {"half_life_hours": 0.0}, r"half_life_hours=0.0: expected a number > 0"),
    ("ema", {"rate": -0.1}, r"rate=-0.1: expected a number in \[0, 1\]"),
    ("context_rule+tracker", {"tracker_weight": -1.0}, r"tracker_weight=-1.0: expected a finite number >= 0"),
    ("bayesian_category", {"prior": "1"}, r"prior='1': expected a finite number"),
])
def test_a_rule_made_by_name_refuses_parameters_of_the_wrong_type_or_range(name, params, message):
    with pytest.raises(RuleParameterError, match=rf"rule '{re.escape(name)}' parameter {message}"):
        make_rule(name, **params)


def test_a_rule_made_by_name_takes_what_its_files_hold():
    assert make_rule("behaviour_rule", streak=3.0).params["streak"] == 3  # JSON may hold a whole number as a float
    assert make_rule("bayesian_category", forgetting=None).scoring.category_forgetting is None  # tied to a_L
    assert make_rule("ema", rate=0.0).params["rate"] == 0.0 and make_rule("ema", rate=1).params["rate"] == 1


def test_a_rules_scoring_argument_is_not_offered_as_a_parameter():
    # ema_two_profile's class takes a ScoringConfig (subclasses pass theirs); a file's params never hold one
    with pytest.raises(RuleParameterError, match=r"parameter\(s\) scoring: not parameters of this rule; expected some of "
                                                 r"long_rate, short_rate, short_weight, popularity_weight$"):
        make_rule("ema_two_profile", scoring={"beta_cat": 1.0})


def test_grid_edges_names_tuned_values_at_an_open_end_of_what_was_tried():
    """A tuned value at the top or bottom of the values its tuning tried is said, unless that end is the parameter's own
    bound (a rate of 1, a term's 0, a forgetting of 1) or only one value was tried."""
    from interestgym.core.rules import grid_edges

    grid = [{"long_rate": r, "popularity_weight": p, "beta_cat": b, "forgetting": f, "exposure": e, "half_life_hours": h}
            for r in (0.05, 0.4) for p in (0.0, 1.0) for b in (0.3, 3.0) for f in (0.9, 1.0) for e in (0.0, 1.0) for h in (1.0, 24.0)]
    assert grid_edges({"long_rate": 0.4, "popularity_weight": 1.0, "beta_cat": 0.3, "forgetting": 1.0, "exposure": 0.0,
                       "half_life_hours": 1.0}, grid) == [
        "long_rate 0.4 is the largest tried", "beta_cat 0.3 is the smallest tried", "half_life_hours 1 is the smallest tried"]
    # inside, at a bound of its own, None, or a parameter tried at one value: nothing to say
    assert grid_edges({"long_rate": 0.05 + 0.0, "popularity_weight": 0.0, "forgetting": None}, grid) == ["long_rate 0.05 is the smallest tried"]
    assert grid_edges({"rate": 0.2}, [{"rate": 0.2}, {"rate": 0.2}]) == []
    assert grid_edges({"rate": 0.2}, [{"rate": 0.1}, {"rate": 0.2}, {"rate": 0.3}]) == []
    assert grid_edges({"rate": 0.2}, None) == []
