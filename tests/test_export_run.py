"""`interestgym export` on a real training run: the graph equals SB3's policy, the manifest describes
everything the runtime needs, and replaying held-out users through the runtime reproduces the
evaluator's metrics exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from export_fixtures import EXTRA_SCORING, TIED_SCORING, trained_export
from interestgym.agents.config import TrainConfig
from interestgym.agents.run_folder import load_run_policy
from interestgym.envs.replay_data import load_replay_data
from interestgym.envs.vector import evaluate_policy

from interestgym.core.features import FEATURE_NAMES, FEATURES
from interestgym.data.dataset import Dataset
from interestgym.export.parity import replay_through_runtime
from interestgym.io import sha256_file
from interestgym.runtime import load_policy

VARIANTS = ["next_positive", "impressions"]


def _run_config(fx) -> TrainConfig:
    return TrainConfig.from_dict(json.loads((fx.run / "config.json").read_text())["config"])


def _recorded_observations(fx, n: int) -> np.ndarray:
    """Observations of real decisions, replayed with the trained policy on every split."""
    config = _run_config(fx)
    parts = []
    for split in ("train", "valid", "test"):
        data = load_replay_data(config.dataset, None, config.protocol_spec(split))
        res = evaluate_policy(data, load_run_policy(fx.run), metric=config.reward, progress=False)
        parts.append(res.features)
    obs = np.concatenate(parts)
    assert len(obs) >= n, f"fixture too small: {len(obs)} decisions"
    return obs[:n]


@pytest.mark.parametrize("variant", VARIANTS)
def test_runtime_actions_equal_sb3_deterministic_actions(tmp_path_factory, variant):
    fx = trained_export(tmp_path_factory, variant)
    obs = _recorded_observations(fx, 1000)
    sb3 = load_run_policy(fx.run)  # VecNormalize + predict(deterministic=True) + clip, as evaluation runs it
    expected = sb3.act(obs)
    policy = load_policy(fx.export)
    got = policy.act(obs)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # the second output is the same action as strengths in [0, 1]
    strengths = policy._session.run(["strengths"], {"observation": obs})[0]
    np.testing.assert_allclose(strengths, (expected + 1.0) / 2.0, atol=1e-5, rtol=0)
    assert strengths.min() >= 0.0 and strengths.max() <= 1.0


@pytest.mark.parametrize("variant,serialise", [("next_positive", "json"), ("impressions", "bytes"), ("impressions_tied", "json")])
def test_replaying_test_users_through_the_runtime_reproduces_evaluation_exactly(tmp_path_factory, variant, serialise):
    fx = trained_export(tmp_path_factory, variant)
    config = _run_config(fx)
    dataset = Dataset.open(config.dataset)
    data = load_replay_data(dataset, None, config.protocol_spec("test"))
    reference = evaluate_policy(data, load_run_policy(fx.run), metric=config.reward, progress=False)
    # the state goes through bytes / JSON after every event, as a service storing it would do
    got = replay_through_runtime(load_policy(fx.export), dataset, data, serialise=serialise)
    assert len(reference.points) > 20
    assert list(got["point_key"]) == list(reference.points["point_key"])
    assert list(got["user_id"]) == list(reference.points["user_id"])
    for metric in reference.metrics:
        # exact: the same update / score / metric code on the same state (the observations: the next test)
        np.testing.assert_array_equal(got[metric].to_numpy(), reference.points[metric].to_numpy(), err_msg=metric)
    per_user = got.groupby("user_id", sort=False)[list(reference.metrics)].mean()
    assert per_user.mean().to_dict() == reference.per_user().mean().to_dict()


@pytest.mark.parametrize("variant", ["next_positive", "impressions"])
def test_the_runtime_feeds_the_policy_the_observations_the_engine_recorded(tmp_path_factory, variant):
    """Every decision's observation in the runtime (``observe`` before the update: log counters, category
    features, running means, last strengths) equals the engine's recorded features. The metric parity above
    cannot show it: a short-trained policy barely reacts to a wrong feature. The last bits may differ (the
    strengths come from ONNX in one and torch in the other)."""
    fx = trained_export(tmp_path_factory, variant)
    config = _run_config(fx)
    dataset = Dataset.open(config.dataset)
    data = load_replay_data(dataset, None, config.protocol_spec("test"))
    reference = evaluate_policy(data, load_run_policy(fx.run), metric=config.reward, record_features=True, progress=False)
    seen: dict[int, np.ndarray] = {}
    replay_through_runtime(load_policy(fx.export), dataset, data, observations=seen)
    assert sorted(seen) == list(range(data.n_decisions)) and data.n_decisions > 50
    got = np.stack([seen[d] for d in range(data.n_decisions)])
    assert got.shape == reference.features.shape
    np.testing.assert_allclose(got, reference.features, rtol=0, atol=1e-5)


def test_manifest_describes_features_actions_scoring_encoder_and_provenance(tmp_path_factory):
    fx = trained_export(tmp_path_factory, "impressions")
    manifest = json.loads((fx.export / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert [f["name"] for f in manifest["observation"]["features"]] == list(FEATURE_NAMES)
    assert manifest["observation"]["features"][0]["definition"] == FEATURES[0].definition
    assert manifest["action"]["names"] == ["long_strength", "short_strength", "short_weight", "popularity_weight"]
    assert manifest["scoring"]["config"] == EXTRA_SCORING.as_dict()
    emb_meta = json.loads((fx.dataset / "embeddings" / "rand.json").read_text())
    assert manifest["encoder"]["dim"] == 16 == emb_meta["dim"]
    assert manifest["encoder"]["name"] == emb_meta["encoder"]
    assert manifest["provenance"]["dataset"]["manifest_sha256"] == sha256_file(fx.dataset / "manifest.json")
    assert manifest["provenance"]["run"]["model"] == "best"
    norm = manifest["policy"]["observation_normalisation"]
    assert len(norm["mean"]) == len(FEATURES) and norm["clip_obs"] == 10.0
    assert manifest["policy"]["verification"]["max_abs_action_diff"] <= 1e-5
    # every file but the manifest is listed with its real checksum
    listed = set(manifest["files"])
    assert listed == {p.name for p in fx.export.iterdir()} - {"manifest.json"}
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256_file(fx.export / name)
    # the popularity vector is the env's, aligned with the dataset's items
    data = load_replay_data(fx.dataset, None, _run_config(fx).protocol_spec("test"))
    np.testing.assert_array_equal(np.load(fx.export / "popularity.npy"), data.item_popularity)
    assert json.loads((fx.export / "item_ids.json").read_text()) == Dataset.open(fx.dataset).items["item_id"].tolist()


def test_two_exports_of_a_run_are_the_same_bytes_under_source_date_epoch(tmp_path_factory, monkeypatch):
    """`created` is the only field that differs between two exports of one run; SOURCE_DATE_EPOCH sets it (the
    reproducible-builds convention), so that the files and `manifest_sha256` are equal; a value that is not whole
    seconds is refused naming it."""
    from interestgym.errors import InterestGymError
    from interestgym.export.run import export_run

    fx = trained_export(tmp_path_factory, "impressions")
    out = tmp_path_factory.mktemp("reproducible")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    for name in ("a", "b"):
        export_run(fx.run, out / name, which="best", verify_observations=50)
    files = sorted(p.name for p in (out / "a").iterdir())
    assert files == sorted(p.name for p in (out / "b").iterdir())
    for name in files:
        assert (out / "a" / name).read_bytes() == (out / "b" / name).read_bytes(), name
    assert json.loads((out / "a" / "manifest.json").read_text())["created"] == "2023-11-14T22:13:20Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(InterestGymError, match="SOURCE_DATE_EPOCH is 'yesterday'; expected whole seconds since 1970"):
        export_run(fx.run, out / "c", which="best", verify_observations=50)


def test_manifest_records_category_forgetting_tied_to_the_action(tmp_path_factory):
    fx = trained_export(tmp_path_factory, "impressions_tied")
    manifest = json.loads((fx.export / "manifest.json").read_text())
    assert manifest["scoring"]["config"] == TIED_SCORING.as_dict()
    assert manifest["scoring"]["config"]["category_forgetting"] is None
    assert manifest["update"]["category_forgetting"] == "1 - a_L (tied to the action)"
    assert load_policy(fx.export).scoring["category_forgetting"] is None


def test_evaluation_metrics_of_the_run_go_into_the_manifest(tmp_path_factory, tmp_path):
    from interestgym.export.run import export_run

    fx = trained_export(tmp_path_factory, "next_positive")
    evaluation = {"header": {"split": "test"},
                  "summary": {"metrics": ["ndcg@10"], "policies": {"ppo": {"kind": "learned", "metrics": {
                      "ndcg@10": {"mean": 0.42, "lo": 0.40, "hi": 0.44}}}}},
                  "per_user": {"ppo": list(range(500))}}
    (fx.run / "evaluation.json").write_text(json.dumps(evaluation))
    try:
        result = export_run(fx.run, tmp_path / "export", verify_observations=50)
    finally:
        (fx.run / "evaluation.json").unlink()
    recorded = result.manifest["evaluation"]
    assert recorded["results"]["summary"]["policies"]["ppo"]["metrics"]["ndcg@10"]["mean"] == 0.42
    assert "per_user" not in recorded["results"] or "ppo" not in recorded["results"]["per_user"]  # long arrays left out
    assert len(recorded["sha256"]) == 64


def test_export_command_writes_a_loadable_export(tmp_path_factory, tmp_path):
    from interestgym.cli import cli

    fx = trained_export(tmp_path_factory, "next_positive")
    out = tmp_path / "cli-export"
    result = CliRunner().invoke(cli, ["export", str(fx.run), "--out", str(out), "--model", "final", "--verify-observations", "50"])
    assert result.exit_code == 0, result.output
    assert "policy.onnx" in result.output and "max |ONNX - SB3|" in result.output
    policy = load_policy(out)
    assert json.loads((out / "manifest.json").read_text())["provenance"]["run"]["model"] == "final"
    assert policy.dim == 16


def test_export_of_a_run_without_the_model_names_the_file(tmp_path, capsys):
    from interestgym.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {}}))
    for args, named in (([], "shipped.json"), (["--model", "best"], "best/model.zip")):
        with pytest.raises(SystemExit) as exit_info:
            main(["export", str(run), "--out", str(tmp_path / "x"), *args])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and named in err  # one line naming the file
        assert not (tmp_path / "x").exists()


def test_runtime_replay_reproduces_interestgym_evaluate_per_user_metrics(tmp_path_factory, tmp_path):
    """The numbers `interestgym evaluate RUN` writes for the trained policy, recomputed by the runtime."""
    from interestgym.core.stats import per_user_means
    from interestgym.evaluation.run import evaluate_run

    fx = trained_export(tmp_path_factory, "impressions")
    evaluate_run(fx.run, out=tmp_path, baselines="static", n_boot=20, progress=False)
    doc = json.loads((tmp_path / "evaluation.json").read_text())
    config = _run_config(fx)
    dataset = Dataset.open(config.dataset)
    data = load_replay_data(dataset, None, config.protocol_spec("test"))
    got = replay_through_runtime(load_policy(fx.export), dataset, data)
    recorded = doc["per_user"]["ppo"]
    checked = 0
    for metric, values in recorded.items():
        if metric not in got.columns:
            continue
        users, means = per_user_means(got["user_id"].to_numpy(), got[metric].to_numpy())
        assert [str(u) for u in users] == doc["users"]
        np.testing.assert_array_equal(means, np.array(values, dtype=np.float64), err_msg=metric)
        checked += 1
    assert checked >= 5


def test_an_export_over_an_earlier_one_says_it_replaced_it(tmp_path_factory, monkeypatch, capsys):
    """`export --out` a folder holding an export: the note names the folder, the old and the new content digests (read
    from the manifests before and after) and that a server serving it keeps the old policy until a swap; the same
    content again is said so; a first export says nothing of the kind."""
    from cli_fixtures import run

    fx = trained_export(tmp_path_factory, "next_positive")
    out = tmp_path_factory.mktemp("replaced") / "export"

    def export(model: str) -> str:
        code, _, stderr = run(["export", str(fx.run), "--out", str(out), "--model", model, "--verify-observations", "10"], capsys)
        assert code == 0, stderr
        return stderr

    assert "replaced the export" not in export("best")
    old = json.loads((out / "manifest.json").read_text())["manifest_sha256"]
    said = export("final")
    new = json.loads((out / "manifest.json").read_text())["manifest_sha256"]
    assert new != old  # another `created` at least
    assert (f"  replaced the export that was in {out} (manifest sha256 {old[:16]}..., now {new[:16]}...); a server already "
            f"serving it keeps the policy it loaded until `POST /v1/admin/policy {{\"path\": \"{out}\"}}` or a restart") in said
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    export("final")
    assert "(the same content)" in export("final")
