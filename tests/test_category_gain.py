"""The state levers: a residual agent also sets what each event adds to its category's count (gain) and
how fast the event's time-slot profile moves (context rate).

* The maths (``core.transition``): a zero change adds exactly 1, as the rule does; the gain is
  ``clip(1 + change, 0, 2)``; the counts move as a hand computation says.
* The layout (``core.protocol``): a (keep, gain) change lands in the engine's columns 4 and 6, with a
  zero tracker column, and old layouts stay as they were.
* The agent: untrained, it ranks every user exactly as the rule does; a gain of 0 on every event leaves
  the counts empty, i.e. the ranking of the same rule without its category term.
* The run, its export and the runtime: the gain component is recorded by name and the runtime replays a
  gain agent exactly as the evaluator does (``test_learning_shipping``'s parity test runs both layouts).
* The context rate lever, likewise: untrained it is ``context_rule`` to the bit, a rate of 0 freezes the
  slot profiles (the rule without its context term), and the runtime replays it exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from agents_fixtures import per_user_metrics, shipping_config, tiny_synthetic
from interestgym.agents.config import TrainConfig
from interestgym.agents.rules import make_baseline
from interestgym.agents.sb3_policy import policy_from_model
from interestgym.agents.train import new_agent, train_run
from interestgym.envs.policies import ResidualPolicy
from interestgym.envs.vector import InterestReplayVecEnv, evaluate_policy

from interestgym.core.features import N_FEATURES
from interestgym.core.protocol import (
    ENV_ACTION_NAMES,
    RESIDUAL_ACTION_NAMES,
    RESIDUAL_LAYOUTS,
    TRACKER_ACTION_NAMES,
    env_action_layout,
    residual_action_names,
    residual_names_for_width,
)
from interestgym.core.rules import compose_residual
from interestgym.core.transition import (
    GAIN_MAX,
    apply_gain_change,
    apply_rate_change,
    update_category_counts,
)
from interestgym.errors import InterestGymError

REFERENCE = make_baseline("bayesian_category", beta_cat=1.0, forgetting=0.9, long_rate=0.2, short_rate=0.7,
                          short_weight=0.4, popularity_weight=0.1)
GAIN_NAMES = residual_action_names(tracker=False, gain=True)
CONTEXT_REFERENCE = make_baseline("context_rule", beta_ctx=0.6, context_rate=0.3, long_rate=0.2, short_rate=0.7,
                                  short_weight=0.4, popularity_weight=0.1)
CONTEXT_NAMES = residual_action_names(tracker=False, gain=False, context=True)
SLOT_REFERENCE = make_baseline("bayesian_category", **REFERENCE.params, slot_weight=2.0)
SLOT_NAMES = residual_action_names(tracker=False, gain=False, slot=True)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_synthetic(tmp_path_factory.mktemp("gain") / "tiny", users=40)


def _config(dataset, run_dir, **kw) -> TrainConfig:
    # the gain and context levers alone (the tuned reference may weigh slot counts: tests/test_slot_category_counts.py)
    return shipping_config(dataset, run_dir, **{"slot_lever": False, **kw})


def _per_user(data, policy) -> dict[str, np.ndarray]:
    return per_user_metrics(data, policy)


class Change:
    """A fixed learned change: ``values`` by component name, 0 elsewhere."""

    def __init__(self, names, **values):
        self.row = np.array([values.get(n, 0.0) for n in names], dtype=np.float32)

    def act(self, obs):
        return np.tile(self.row, (len(obs), 1))


# ------------------------------------------------------------------------------------------ maths
def test_the_gain_is_one_plus_the_change_clipped_and_exactly_one_for_no_change():
    change = np.array([0.0, -1.0, -0.25, 0.5, 1.0, -3.0, 5.0])
    assert apply_gain_change(change).tolist() == [1.0, 0.0, 0.75, 1.5, 2.0, 0.0, GAIN_MAX]
    assert apply_gain_change(None) is None


def test_the_counts_forget_then_add_each_rows_gain_in_its_events_column():
    counts = np.array([[2.0, 1.0, 0.0], [0.5, 0.5, 4.0], [1.0, 1.0, 1.0]])
    category = np.array([1, 2, -1])  # the third event has no known category: only the forgetting applies
    forgetting = np.array([0.5, 1.0, 0.8])
    gain = np.array([0.25, 0.0, 2.0])
    expected = [[1.0, 0.5 + 0.25, 0.0], [0.5, 0.5, 4.0], [0.8, 0.8, 0.8]]
    assert update_category_counts(counts, category, forgetting, gain).tolist() == expected
    # a gain of exactly 1 is the rule's +1, to the bit
    assert np.array_equal(update_category_counts(counts, category, forgetting, np.ones(3)),
                          update_category_counts(counts, category, forgetting))


# ----------------------------------------------------------------------------------------- layout
def test_a_keep_and_gain_change_lands_in_the_engines_columns_with_a_zero_tracker_column():
    base = np.array([[0.1, -0.2, 0.3, 0.9], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    change = np.array([[0.1, 0.1, 0.1, 0.5, -0.5, -0.75], [0, 0, 0, 0, 0, 0]], dtype=np.float32)
    out = compose_residual(base, change, GAIN_NAMES)
    assert out.shape == (2, ENV_ACTION_NAMES.index("gain_change") + 1)
    np.testing.assert_array_equal(out[0], np.array([0.2, -0.1, 0.4, 1.0, -0.5, 0.0, -0.75], dtype=np.float32))
    assert out[1].tolist() == [0.0] * 7
    # the older layouts are prefixes of the engine's: their actions are what they were
    assert env_action_layout(RESIDUAL_ACTION_NAMES) is None and env_action_layout(TRACKER_ACTION_NAMES) is None
    five = compose_residual(base, change[:, :5], RESIDUAL_ACTION_NAMES)
    np.testing.assert_array_equal(five, compose_residual(base, change[:, :5]))
    assert five.shape == (2, 5)


def test_saved_widths_map_to_their_components():
    """Runs and exports record their components by name; those saved before that had 5, or 6 with a tracker."""
    assert residual_names_for_width(5, tracker=False) == RESIDUAL_ACTION_NAMES
    assert residual_names_for_width(6, tracker=True) == TRACKER_ACTION_NAMES
    assert residual_names_for_width(6, tracker=False) is None and residual_names_for_width(7, tracker=True) is None
    assert GAIN_NAMES in RESIDUAL_LAYOUTS
    assert residual_action_names(tracker=True, gain=True, context=True, slot=True) == ENV_ACTION_NAMES
    with pytest.raises(ValueError, match="bogus"):
        env_action_layout(("long_strength", "bogus"))
    # a component named twice would be summed by the one-row composition and overwritten by the array one: refused
    twice = ("long_strength", "short_strength", "short_weight", "popularity_weight", "gain_change", "gain_change")
    with pytest.raises(ValueError, match=r"\['gain_change'\] named twice"):
        env_action_layout(twice)
    with pytest.raises(ValueError, match="named twice"):
        compose_residual(np.zeros((1, 4), np.float32), np.zeros((1, 6), np.float32), twice)


# ------------------------------------------------------------------------------------------ agent
@pytest.mark.parametrize("split", ["train", "valid", "test"])
@pytest.mark.parametrize("lever", ["gain", "context", "slot"])
def test_the_untrained_agent_with_a_lever_is_its_reference_rule_to_the_bit(dataset, tmp_path, split, lever):
    reference, names = {"gain": (REFERENCE, GAIN_NAMES), "context": (CONTEXT_REFERENCE, CONTEXT_NAMES),
                        "slot": (SLOT_REFERENCE, SLOT_NAMES)}[lever]
    config = _config(dataset, tmp_path / "unused")
    venv = InterestReplayVecEnv(config.replay_data("train"), n_envs=4, reward_baseline=reference, residual_to=reference,
                                gain_lever=lever == "gain", context_lever=lever == "context", slot_lever=lever == "slot", seed=0)
    assert venv.action_space.shape == (6,) and venv.residual.names == names
    model, init = new_agent(config, venv, reference, None, config.replay_data("train"), reference.scoring)
    assert init.tolist() == [0.0] * 6
    agent = ResidualPolicy(reference, policy_from_model(model, model.get_vec_normalize_env(), scoring=reference.scoring),
                           names=names)
    data = config.replay_data(split)
    ours, theirs = _per_user(data, agent), _per_user(data, reference)
    for metric in theirs:
        assert np.array_equal(ours[metric], theirs[metric], equal_nan=True), metric


def test_a_gain_of_zero_on_every_event_ranks_as_the_rule_without_its_category_term(dataset, tmp_path):
    """Never counted, the counts stay 0: the category term is the same constant for every candidate."""
    data = _config(dataset, tmp_path / "unused").replay_data("valid")
    never = _per_user(data, ResidualPolicy(REFERENCE, Change(GAIN_NAMES, gain_change=-1.0), names=GAIN_NAMES))
    params = {**REFERENCE.params, "beta_cat": 0.0}
    without = _per_user(data, make_baseline("bayesian_category", **params))
    counted = _per_user(data, REFERENCE)
    np.testing.assert_allclose(never["ndcg@10"], without["ndcg@10"], rtol=0, atol=1e-12)
    assert not np.allclose(never["ndcg@10"], counted["ndcg@10"])  # the lever is wired: counting matters here


def test_the_gain_lever_needs_a_reference_that_counts_categories(dataset):
    plain = make_baseline("ema_two_profile", long_rate=0.2, short_rate=0.7, short_weight=0.4, popularity_weight=0.1)
    with pytest.raises(InterestGymError, match="beta_cat"):
        InterestReplayVecEnv(str(dataset), n_envs=2, split="train", residual_to=plain, gain_lever=True)


# -------------------------------------------------------------------------------- run and export
@pytest.mark.parametrize("gain, width", [(True, 6), (False, 5)])
def test_a_run_records_its_change_components(dataset, tmp_path, gain, width):
    from interestgym.agents.run_folder import load_run_policy

    run = tmp_path / "run"
    train_run(_config(dataset, run, category_gain=gain, timesteps=64, eval_every=64, checkpoint_every=64))
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["category_gain"] is gain
    assert saved["action_space"]["names"] == list(GAIN_NAMES if gain else RESIDUAL_ACTION_NAMES)
    policy = load_run_policy(run, "final")
    assert policy.names == tuple(saved["action_space"]["names"]) and policy.change.act(np.zeros((1, N_FEATURES), np.float32)).shape == (1, width)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    gains = [e.value for e in acc.Scalars("charts/mean_count_gain")] if "charts/mean_count_gain" in acc.Tags()["scalars"] else []
    assert bool(gains) is gain and all(0.0 <= g <= GAIN_MAX for g in gains)  # the lever, watched in TensorBoard


def test_a_run_whose_recorded_components_disagree_with_its_model_is_refused(dataset, tmp_path):
    from interestgym.agents.run_folder import load_run_policy

    from interestgym.errors import ArtifactError

    run = tmp_path / "run"
    train_run(_config(dataset, run, timesteps=64, eval_every=64, checkpoint_every=64))
    saved = json.loads((run / "config.json").read_text())
    saved["action_space"]["names"] = list(TRACKER_ACTION_NAMES)  # 6 names, but no tracker and a gain model
    (run / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ArtifactError, match="action_space.names"):
        load_run_policy(run, "final")


def test_the_export_names_the_gain_component_and_a_damaged_manifest_is_refused(dataset, tmp_path):
    import shutil

    from interestgym.export.run import export_run
    from interestgym.runtime import load_policy
    from interestgym.runtime.manifest import (
        ExportFileCorruptError,
        read_manifest,
        seal_manifest,
        write_manifest,
    )

    run = tmp_path / "run"
    train_run(_config(dataset, run, ship_threshold=-1.0, timesteps=64, eval_every=64, checkpoint_every=64))
    export_run(run, tmp_path / "export", which="final", verify_observations=50)
    manifest = read_manifest(tmp_path / "export")
    assert manifest["policy"]["outputs"]["action"]["names"] == list(GAIN_NAMES)
    assert load_policy(tmp_path / "export").change_names == GAIN_NAMES

    def damaged(edit, name):
        out = tmp_path / name
        shutil.copytree(tmp_path / "export", out)
        m = read_manifest(out)
        edit(m["policy"]["outputs"]["action"])
        (out / "manifest.json").unlink()  # re-sealed over the same files, as an edited export would be
        write_manifest(out, seal_manifest(out, {k: v for k, v in m.items() if k not in ("files", "manifest_sha256")}))
        return out

    # an export written before the names were recorded had no gain: 6 outputs there meant a tracker's weight
    with pytest.raises(ExportFileCorruptError, match="no 'tracker' section"):
        load_policy(damaged(lambda a: a.pop("names"), "old-style"))
    with pytest.raises(ExportFileCorruptError, match="names"):
        load_policy(damaged(lambda a: a.update(names=["long_strength", "x"]), "bad-names"))
    # a lever the policy's scoring does not have (same width): the context rate on a rule without slot profiles
    with pytest.raises(ExportFileCorruptError, match=r"context_change, but scoring.config.beta_ctx is 0.0"):
        load_policy(damaged(lambda a: a.update(names=list(CONTEXT_NAMES)), "swapped-lever"))


# ------------------------------------------------------------------------- the context rate lever


def test_a_rate_change_is_added_and_clipped_and_no_change_is_the_rate_itself():
    change = np.array([0.0, -1.0, 0.25, 1.0])
    assert apply_rate_change(0.3, change).tolist() == [0.3, 0.0, 0.55, 1.0]
    assert apply_rate_change(0.3, None) == 0.3
    rates = np.array([0.1, 0.2, 0.3, 0.4])
    assert apply_rate_change(rates, np.zeros(4)).tolist() == rates.tolist()


def test_a_context_rate_of_zero_ranks_as_the_rule_without_its_context_term(dataset, tmp_path):
    """Never moved, the slot profiles stay zero: cos(T, c) = 0 adds nothing to any score."""
    data = _config(dataset, tmp_path / "unused").replay_data("valid")
    frozen = _per_user(data, ResidualPolicy(CONTEXT_REFERENCE, Change(CONTEXT_NAMES, context_change=-1.0), names=CONTEXT_NAMES))
    without = _per_user(data, make_baseline("context_rule", **{**CONTEXT_REFERENCE.params, "beta_ctx": 0.0}))
    moving = _per_user(data, CONTEXT_REFERENCE)
    for metric in without:
        assert np.array_equal(frozen[metric], without[metric], equal_nan=True), metric
    assert not np.array_equal(frozen["ndcg@10"], moving["ndcg@10"])  # the lever is wired


def test_a_context_lever_agent_exports_and_the_runtime_reproduces_evaluate(dataset, tmp_path):
    from interestgym.agents.run_folder import load_shipped_policy, read_shipped

    from interestgym.data.dataset import Dataset
    from interestgym.export.parity import replay_through_runtime
    from interestgym.export.run import export_run
    from interestgym.runtime import load_policy

    run = tmp_path / "run"
    train_run(_config(dataset, run, reward_baseline="context_rule", ship_threshold=-1.0))
    assert read_shipped(run)["policy"] == "learned"
    assert json.loads((run / "config.json").read_text())["action_space"]["names"] == list(CONTEXT_NAMES)
    export_run(run, tmp_path / "export", verify_observations=100)
    policy = load_policy(tmp_path / "export")
    assert policy.change_names == CONTEXT_NAMES
    data = _config(dataset, run).replay_data("test")
    expected = evaluate_policy(data, load_shipped_policy(run), progress=False)
    got = replay_through_runtime(policy, Dataset.open(dataset), data, serialise="bytes")
    for metric in expected.metrics:
        np.testing.assert_array_equal(got[metric].to_numpy(), expected.points[metric].to_numpy(), err_msg=metric)


def test_an_export_from_before_the_names_were_recorded_still_loads(dataset, tmp_path):
    """A 5-wide residual export written before ``outputs.action.names`` existed reads as (a_L .. keep_change)."""
    import shutil

    from interestgym.export.run import export_run
    from interestgym.runtime import load_policy
    from interestgym.runtime.manifest import (
        read_manifest,
        seal_manifest,
        write_manifest,
    )

    run = tmp_path / "run"
    train_run(_config(dataset, run, ship_threshold=-1.0, category_gain=False, timesteps=64, eval_every=64, checkpoint_every=64))
    export_run(run, tmp_path / "export", which="final", verify_observations=20)
    out = tmp_path / "old"
    shutil.copytree(tmp_path / "export", out)
    m = read_manifest(out)
    m["policy"]["outputs"]["action"].pop("names")
    (out / "manifest.json").unlink()
    write_manifest(out, seal_manifest(out, {k: v for k, v in m.items() if k not in ("files", "manifest_sha256")}))
    assert load_policy(out).change_names == RESIDUAL_ACTION_NAMES == load_policy(tmp_path / "export").change_names


def test_a_context_lever_run_charts_its_rate_and_no_count_gain(dataset, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train_run(_config(dataset, run, reward_baseline="context_rule", timesteps=64, eval_every=64, checkpoint_every=64))
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    assert "charts/mean_count_gain" not in acc.Tags()["scalars"] and "charts/mean_a_long" in acc.Tags()["scalars"]
    rates = [e.value for e in acc.Scalars("charts/mean_context_rate")]  # its own lever, watched in TensorBoard
    assert rates and all(0.0 <= r <= 1.0 for r in rates)


def test_recorded_names_that_do_not_fit_the_model_its_settings_or_its_reference_are_refused(tmp_path):
    from interestgym.agents.run_folder import run_change_names

    from interestgym.errors import ArtifactError

    def saved(names, reference=REFERENCE, **config):
        return {"config": {"sequence": None, "category_gain": True, "context_lever": True, **config},
                "reference": {"name": reference.name, "params": reference.params}, "action_space": {"names": list(names)}}

    assert run_change_names(tmp_path, saved(GAIN_NAMES), 6) == GAIN_NAMES
    assert run_change_names(tmp_path, saved(CONTEXT_NAMES, CONTEXT_REFERENCE), 6) == CONTEXT_NAMES
    bad = [
        (saved(ENV_ACTION_NAMES[:7]), 6),  # a known layout, but of another width
        (saved(TRACKER_ACTION_NAMES), 6),  # a tracker component, but no tracker
        (saved(CONTEXT_NAMES), 6),  # a context lever on a reference without time-slot profiles
        (saved(GAIN_NAMES, CONTEXT_REFERENCE), 6),  # a gain on a reference without category counts
        (saved(GAIN_NAMES, category_gain=False), 6),  # a gain the run did not train with
    ]
    for case, width in bad:
        with pytest.raises(ArtifactError, match=r"action_space.names .* expected \["):
            run_change_names(tmp_path, case, width)
    with pytest.raises(ArtifactError, match=r"expected \['long_strength', 'short_strength', 'short_weight', "
                       r"'popularity_weight', 'keep_change', 'gain_change'\] \(sequence None, category_gain True"):
        run_change_names(tmp_path, saved(CONTEXT_NAMES), 6)
    # names and settings agree, the model does not: it is the model that is named as not this run's
    with pytest.raises(ArtifactError, match=r"the residual model has 7 outputs; this run's policy changes 6 components "
                                            r"\(long_strength, .*gain_change, from its config.json\): the model was not trained by this run"):
        run_change_names(tmp_path, saved(GAIN_NAMES), 7)
    # runs from before the names were recorded: read from the width (and without the levers)
    old = saved(["long_strength", "short_strength", "short_weight", "popularity_weight"])
    del old["config"]["category_gain"], old["config"]["context_lever"]
    assert run_change_names(tmp_path, old, 5) == RESIDUAL_ACTION_NAMES


def test_compose_refuses_a_change_of_another_width_than_its_names():
    with pytest.raises(ValueError, match="5 components for the 6 names"):
        compose_residual(np.zeros((2, 4), np.float32), np.full((2, 5), 0.5, np.float32), GAIN_NAMES)


def test_the_report_states_and_draws_every_component_the_levers_included(dataset, tmp_path):
    from interestgym.data.dataset import Dataset
    from interestgym.report.build import action_components, differences_from_rule
    from interestgym.report.figures import plot_components

    data = _config(dataset, tmp_path / "unused").replay_data("valid")
    policy = ResidualPolicy(REFERENCE, Change(GAIN_NAMES, gain_change=-0.5, keep_change=-0.3), names=GAIN_NAMES)
    res = evaluate_policy(data, policy, record_features=True, progress=False)
    columns, _ = action_components(policy, REFERENCE, res)
    assert list(columns) == ["a_L", "a_S", "w", "p", "keep", "count gain"]
    assert np.allclose(columns["count gain"][0], 0.5) and np.allclose(columns["keep"][0], 0.6)
    lines = differences_from_rule(policy, REFERENCE, res, Dataset.open(dataset))
    assert "count gain 0.500 vs 1.000 (-0.500)" in lines[0] and "keep 0.600 vs 0.900 (-0.300)" in lines[0]
    path = plot_components(columns, res.features, res.feature_names, tmp_path / "components.png",
                           groups=np.array(["a", "b"] * (len(res.features) // 2) + ["a"] * (len(res.features) % 2)))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000


def test_the_vector_env_reports_the_keep_factor_as_applied(dataset):
    """info["keep"] (charted as charts/mean_keep) is the rule's forgetting moved by the agent's keep change,
    clipped to [0, 1]: here 0.9 + change for the fixed-forgetting reference."""
    env = InterestReplayVecEnv(str(dataset), n_envs=3, split="train", residual_to=REFERENCE, gain_lever=True)
    env.reset()
    keep = GAIN_NAMES.index("keep_change")
    actions = np.zeros((3, len(GAIN_NAMES)), dtype=np.float32)
    actions[:, keep] = [0.0, 0.05, -0.5]
    _, _, _, infos = env.step(actions)
    expected = np.clip(0.9 + actions[:, keep].astype(np.float64), 0.0, 1.0)
    np.testing.assert_allclose([info["keep"] for info in infos], expected, rtol=0, atol=1e-7)
    assert infos[0]["keep"] == 0.9  # a zero change: the rule's own factor, exactly
    plain = InterestReplayVecEnv(str(dataset), n_envs=2, split="train", residual_to=CONTEXT_REFERENCE, context_lever=True)
    plain.reset()
    _, _, _, infos = plain.step(np.zeros((2, len(CONTEXT_NAMES)), dtype=np.float32))
    assert all("keep" not in info for info in infos)  # a rule without category counts has no keep factor


def test_the_components_figure_bins_the_rule_as_it_bins_the_policy(tmp_path, monkeypatch):
    # the rule was drawn as one flat line at its mean: a count gain that follows the value in the rule too looked learnt
    from interestgym.report import figures

    drawn = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: drawn.setdefault("fig", fig) and path)
    rng = np.random.default_rng(0)
    value = rng.uniform(0, 1, 400)
    features = np.column_stack([value, rng.normal(size=400)])
    rule = 0.3 + value  # the rule's own gain rises with the value
    figures.plot_components({"count gain": (rule + 0.01, rule)}, features, ["feedback_value", "other"], tmp_path / "c.png")
    (ax,) = [a for a in drawn["fig"].axes if a.get_title() == "count gain"]
    (dashed,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert np.ptp(dashed.get_ydata()) > 0.7  # binned: it rises with the value as the rule does (was flat)
    (ours,) = [line for line in ax.get_lines() if line.get_linestyle() != "--"]
    np.testing.assert_allclose(np.asarray(ours.get_ydata()) - np.asarray(dashed.get_ydata()), 0.01, atol=1e-12)
