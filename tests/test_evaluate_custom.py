"""Your own update rule in `interestgym evaluate` (--policy FILE.py:NAME, evaluate_run(extra_policies=...)): tuned
over its grid on the baselines' validation users, scored on the same test users, paired with the reference; each
figure checked against the public evaluator (evaluate_policy) run on its own."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from agents_fixtures import tiny_synthetic

from interestgym.cli import cli
from interestgym.errors import InterestGymError
from interestgym.evaluation.custom import load_policy_spec
from interestgym.evaluation.run import evaluate_run

RULE = textwrap.dedent('''
    import numpy as np
    from interestgym.core.features import FeatureView
    from interestgym.core.interest import ScoringConfig
    from interestgym.core.protocol import strengths_to_action


    class GapRule:
        """S jumps after a long absence; L moves at a fixed rate."""
        name = "gap_rule"
        grid = {"long_rate": [0.05, 0.3], "half_life_hours": [1.0, 48.0]}

        def __init__(self, long_rate=0.1, half_life_hours=24.0):
            self.params = {"long_rate": long_rate, "half_life_hours": half_life_hours}
            self.scoring = ScoringConfig()

        def act(self, observations):
            view = FeatureView(observations)
            a_s = np.maximum(0.2, 1.0 - 0.5 ** (view.decision_gap_seconds / 3600.0 / self.params["half_life_hours"]))
            a_l = np.where(view["long_empty"] > 0, 1.0, self.params["long_rate"])
            n = len(a_s)
            return strengths_to_action(np.stack([a_l, a_s, np.full(n, 0.5), np.zeros(n)], 1))


    fixed = GapRule(0.3, 1.0)
    fixed.name = "gap_fixed"


    class TrustRule(GapRule):
        """Weighs S by how well it ranked the user's recent positives: a feature the lean (tuning) replay skips."""
        name = "trust_rule"
        grid = {"long_rate": [0.05, 0.3]}

        def act(self, observations):
            actions = super().act(observations)
            view = FeatureView(observations)
            w = np.clip(0.5 + view["short_metric_ema"] - view["long_metric_ema"], 0.0, 1.0)
            actions[:, 2] = 2.0 * w - 1.0
            return actions
    ''')


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom")
    data = tiny_synthetic(root / "tiny")
    (root / "myrule.py").write_text(RULE)
    return data, root / "myrule.py"


def _per_user(result) -> dict[str, float]:
    return {str(u): float(v) for u, v in result.per_user()["ndcg@10"].items()}


def test_a_rule_with_a_grid_is_tuned_on_validation_users_and_paired_on_the_test_users(setup, tmp_path):
    from interestgym.envs.vector import evaluate_policy

    data, rule_file = setup
    result = CliRunner().invoke(cli, ["evaluate", str(data), "--out", str(tmp_path / "o"), "--baselines", "ema,static",
                                      "--policy", f"{rule_file}:GapRule", "--policy", f"{rule_file}:fixed", "--n-boot", "200"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "o" / "evaluation.json").read_text())
    policies = doc["summary"]["policies"]
    assert policies["gap_rule"]["kind"] == policies["gap_fixed"]["kind"] == "custom"
    assert doc["summary"]["reference"] in ("ema", "static")  # a custom row is compared with the reference, never it
    assert "gap_rule (long_rate" in result.output and "`gap_rule`" in result.output

    # the tuning, by brute force: every grid point replayed on the validation users (all of them: fewer than 100)
    GapRule = load_policy_spec(f"{rule_file}:GapRule")
    scores = {}
    for long_rate in GapRule.grid["long_rate"]:
        for half_life in GapRule.grid["half_life_hours"]:
            res = evaluate_policy(data, GapRule(long_rate, half_life), split="valid", progress=False)
            scores[(long_rate, half_life)] = float(res.per_user()["ndcg@10"].mean())
    best = max(scores, key=scores.get)
    tuned = doc["custom_policies"]["gap_rule"]
    assert (tuned["params"]["long_rate"], tuned["params"]["half_life_hours"]) == best
    assert tuned["valid_score"] == pytest.approx(scores[best], abs=1e-12) and len(tuned["grid"]) == 4

    # the test rows: the tuned rule's and the fixed object's per-user means, and their paired differences
    users = doc["users"]
    ref = doc["summary"]["reference"]
    for name, policy in (("gap_rule", GapRule(*best)), ("gap_fixed", GapRule(0.3, 1.0))):
        own = _per_user(evaluate_policy(data, policy, split="test", progress=False))
        mine = np.array(doc["per_user"][name]["ndcg@10"], dtype=float)
        np.testing.assert_allclose(mine, [own.get(u, np.nan) for u in users], rtol=0, atol=1e-12)
        diff = mine - np.array(doc["per_user"][ref]["ndcg@10"], dtype=float)
        assert policies[name]["diff_vs_reference"]["ndcg@10"]["mean"] == pytest.approx(np.nanmean(diff))
    # an object is evaluated as it is: its validation score is its own, with no grid
    fixed_valid = evaluate_policy(data, GapRule(0.3, 1.0), split="valid", progress=False)
    assert doc["custom_policies"]["gap_fixed"]["valid_score"] == pytest.approx(float(fixed_valid.per_user()["ndcg@10"].mean()))
    assert doc["custom_policies"]["gap_fixed"]["grid"] is None


def test_a_bad_policy_spec_or_a_taken_name_is_one_line_naming_what_was_expected(setup, tmp_path):
    data, rule_file = setup
    runner = CliRunner()
    base = ["evaluate", str(data), "--out", str(tmp_path / "o"), "--baselines", "ema"]
    for spec, expected in ((str(rule_file), "expected FILE.py:NAME"), (f"{rule_file}:Nope", "has no 'Nope'; it defines"),
                           (f"{tmp_path / 'none.txt'}:X", "is not a Python file (.py)"),
                           (f"{tmp_path / 'none.py'}:X", f"{tmp_path / 'none.py'}: no such file; expected FILE.py:NAME")):
        result = runner.invoke(cli, [*base, "--policy", spec])
        assert isinstance(result.exception, InterestGymError) and expected in str(result.exception), result.output
    # a relative path that is not there says where it was looked for (the README's `myrule.py` from another folder)
    result = runner.invoke(cli, [*base, "--policy", "no_such_rule_here.py:X"])
    assert f"no_such_rule_here.py: no such file (looked for it from {Path.cwd()})" in str(result.exception)
    clash = load_policy_spec(f"{rule_file}:fixed")
    clash.name = "ema"
    with pytest.raises(InterestGymError, match="'ema' is already a row"):
        evaluate_run(data, out=tmp_path / "o", baselines="ema", n_boot=50, extra_policies=[clash])
    with pytest.raises(InterestGymError, match="has no act"):
        evaluate_run(data, out=tmp_path / "o", baselines="ema", n_boot=50, extra_policies=[object()])


def test_a_policy_whose_act_raises_is_one_line_with_its_file_and_line(setup, tmp_path):
    """The user's own act() failing is said in one line naming the --policy, the exception and the line of the user's
    file, not three chained tracebacks through the tuning's fallback to the full engine (Trial M); an error in
    interestgym's own code keeps its traceback."""
    data, _ = setup
    (tmp_path / "raiser.py").write_text("class Raise:\n    name = 'raiser'\n\n    def act(self, obs):\n"
                                        "        raise ValueError('my bug')\n\n\nraiser = Raise()\n")
    spec = f"{tmp_path / 'raiser.py'}:raiser"
    result = CliRunner().invoke(cli, ["evaluate", str(data), "--out", str(tmp_path / "o"), "--baselines", "ema", "--policy", spec])
    assert isinstance(result.exception, InterestGymError), result.output
    assert str(result.exception) == (f"--policy {spec!r}: the policy's code raised ValueError: my bug ({tmp_path / 'raiser.py'} "
                                     "line 5, in act: raise ValueError('my bug'))")
    from interestgym.evaluation.custom import raised_in

    try:
        raise KeyError("interestgym's own")
    except KeyError as exc:
        assert raised_in(exc, [spec]) is None


def test_a_dataclass_rule_with_postponed_annotations_loads(tmp_path):
    """A rule file in the project's own style (from __future__ import annotations, @dataclass): its module is in
    sys.modules while it runs, as an import's is (dataclasses looks it up there: a bare AttributeError before); two
    files of one name in two folders are two modules."""
    code = ("from __future__ import annotations\nfrom dataclasses import dataclass\n\n@dataclass\nclass Rule:\n"
            "    rate: float = 0.3\n    name: str = '{name}'\n    grid = {{'rate': [0.1, 0.3]}}\n")
    found = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rule.py").write_text(code.format(name=name))
        found.append(load_policy_spec(f"{tmp_path / name / 'rule.py'}:Rule"))
    assert [cls(rate=0.1) for cls in found] == [found[0](0.1, "a"), found[1](0.1, "b")]
    assert found[0].__module__ != found[1].__module__ and found[1]().name == "b"


def test_actions_of_the_wrong_shape_or_not_finite_are_refused_naming_the_policy(setup):
    from interestgym.envs.vector import evaluate_policy

    from interestgym.core.interest import ScoringConfig

    data, _ = setup

    class Bad:
        scoring = ScoringConfig()

        def __init__(self, name, make):
            self.name, self.make = name, make

        def act(self, observations):
            return self.make(len(observations))

    for name, make, expected in (("three", lambda n: np.zeros((n, 3)), r"returned shape \(\d+, 3\) for \d+ observations"),
                                 ("one_row", lambda n: np.zeros(4), r"returned shape \(4,\) for \d+ observations"),
                                 ("nan", lambda n: np.full((n, 4), np.nan), r"returned \[nan, nan, nan, nan\] \(not finite\)"),
                                 ("words", lambda n: [["fast"] * 4] * n, r"returned list that is not an array of numbers .*expected \(\d+, 4\)"),
                                 ("ragged", lambda n: [[0.0] * 4, [0.0] * 3] + [[0.0] * 4] * (n - 2),
                                  r"returned list that is not an array of numbers"),
                                 ("forty", lambda n: np.zeros((n, 40)), r"returned 40 columns; expected 4 .* at most 9 ")):
        with pytest.raises(InterestGymError, match=rf"policy '{name}': act\(\) {expected}"):
            evaluate_policy(data, Bad(name, make), split="test", progress=False)


def test_a_rule_reading_a_feature_the_tuning_replay_skips_is_tuned_on_the_full_engine(setup, tmp_path):
    from interestgym.envs.vector import evaluate_policy

    data, rule_file = setup
    TrustRule = load_policy_spec(f"{rule_file}:TrustRule")
    evaluate_run(data, out=tmp_path / "o", baselines="ema", n_boot=50, extra_policies=[TrustRule], progress=False)
    tuned = json.loads((tmp_path / "o" / "evaluation.json").read_text())["custom_policies"]["trust_rule"]
    scores = {rate: float(evaluate_policy(data, TrustRule(rate), split="valid", progress=False).per_user()["ndcg@10"].mean())
              for rate in TrustRule.grid["long_rate"]}
    assert tuned["params"]["long_rate"] == max(scores, key=scores.get)
    assert tuned["valid_score"] == pytest.approx(max(scores.values()), abs=1e-12)


def test_a_policy_that_raises_on_the_tuning_replays_nan_features_is_scored_on_the_full_engine(setup, tmp_path):
    """Trial L: a stable-baselines3 model (its Gaussian refuses NaN means) given as a policy of one's own crashed
    `evaluate` in the lean tuning replay, where it raises instead of acting NaN."""
    from interestgym.envs.vector import evaluate_policy

    from interestgym.core.interest import ScoringConfig

    data, _ = setup

    class StrictModel:
        name = "strict_model"
        scoring = ScoringConfig()

        def act(self, observations):
            if np.isnan(observations).any():
                raise ValueError("Expected parameter loc of distribution Normal to satisfy the constraint Real()")
            return np.tanh(observations[:, :4] - 0.5)

    import hashlib

    import torch
    from interestgym.envs.policies import ModelPolicy

    class TinyModel:  # what ModelPolicy reads of an SB3 model: predict, and the torch policy holding its weights
        def __init__(self):
            torch.manual_seed(0)
            self.policy = torch.nn.Linear(26, 4)

        def predict(self, obs, deterministic=True):
            with torch.no_grad():
                return torch.tanh(self.policy(torch.as_tensor(obs))).numpy(), None

    tiny = TinyModel()
    evaluate_run(data, out=tmp_path / "o", baselines="ema", n_boot=50, progress=False,
                 extra_policies=[StrictModel(), ModelPolicy(tiny, name="tiny")])
    doc = json.loads((tmp_path / "o" / "evaluation.json").read_text())
    entry = doc["custom_policies"]["strict_model"]
    full = float(evaluate_policy(data, StrictModel(), split="valid", progress=False).per_user()["ndcg@10"].mean())
    assert entry["valid_score"] == pytest.approx(full, abs=1e-12)
    # where each row came from (Trial L: a custom row recorded no source): the class, its file and the file's digest,
    # and for a wrapped model its class and a digest of its weights
    source = entry["source"]
    assert source["class"].endswith("StrictModel") and source["file"] == str(Path(__file__).resolve())
    assert source["file_sha256"] == hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    model = doc["custom_policies"]["tiny"]["source"]
    assert model["class"] == "interestgym.envs.policies.ModelPolicy" and model["model"].endswith("TinyModel")
    expected = hashlib.sha256()
    for name, tensor in sorted(tiny.policy.state_dict().items()):
        expected.update(name.encode("utf-8") + tensor.numpy().tobytes())
    assert model["weights_sha256"] == expected.hexdigest()

    class Broken(StrictModel):
        name = "broken"

        def act(self, observations):
            raise KeyError("a bug of its own")

    with pytest.raises(KeyError, match="a bug of its own"):  # an error on observations without NaN stays the policy's
        evaluate_policy(data, Broken(), split="test", progress=False)


def test_tuning_a_rules_grid_shows_progress_as_the_baselines_tuning_does(monkeypatch, capsys):
    """A class's grid is one batched replay: the log line counts its points (stderr not a terminal), and --no-progress
    (``progress=False``) silences it."""
    import interestgym.progress
    from interestgym.evaluation.custom import resolve_policies

    monkeypatch.setattr(interestgym.progress, "LOG_EVERY_SECONDS", 0.0)

    class Rule:
        name = "my_rule"
        grid: ClassVar[dict[str, list[float]]] = {"a": [1, 2, 3], "b": [0.5, 0.25]}

        def __init__(self, a=1, b=0.5):
            self.params, self.scoring = {"a": a, "b": b}, None

        def act(self, observations):
            return np.zeros((len(observations), 4), dtype=np.float32)

    def score(policies):
        return [p.params["a"] * p.params["b"] for p in policies]

    resolved = resolve_policies([Rule], score, [])
    assert resolved[0]["params"] == {"a": 3, "b": 0.5} and len(resolved[0]["grid"]) == 6
    err = capsys.readouterr().err
    assert "tuning policy 'my_rule' on validation users: 6/6 grid points (100%)" in err and "done" in err
    resolve_policies([Rule], score, [], progress=False)
    assert capsys.readouterr().err == ""
