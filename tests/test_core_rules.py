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
