"""`interestgym report`: figures (non-empty PNGs of plausible size), summary numbers = evaluation.json."""

from __future__ import annotations

import base64
import json
import re
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from agents_fixtures import tiny_synthetic
from interestgym.agents.train import TrainConfig, train_run

from interestgym.cli import cli
from interestgym.evaluation.run import evaluate_run
from interestgym.report.build import build_report
from interestgym.report.figures import can_render, plot_timeline
from interestgym.report.scalars import read_scalars
from interestgym.report.timelines import (
    UserTimeline,
    choose_timeline_users,
    implied_mix,
)

BASELINES = "ema,static,mean_history"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG header, checking the signature (independent of matplotlib)."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def assert_plausible_png(path: Path, min_bytes: int = 15_000) -> None:
    assert path.is_file(), path
    size = path.stat().st_size
    width, height = png_size(path)
    assert size >= min_bytes, f"{path.name}: only {size} bytes"
    assert 500 <= width <= 3000 and 300 <= height <= 3000, (path.name, width, height)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("report")
    data = tiny_synthetic(root / "tiny")
    config = TrainConfig(dataset=str(data), run_dir=str(root / "run"), timesteps=256, n_envs=4, n_steps=16,
                         batch_size=32, n_epochs=2, eval_every=64, checkpoint_every=0, eval_users=None,
                         progress_bar=False, reward_baseline="ema", net_arch=[16, 16])
    train_run(config)
    evaluate_run(root / "run", baselines=BASELINES, n_boot=300, progress=False, which_model="best")
    return root / "run", data


@pytest.fixture(scope="module")
def report(run):
    run_dir, _ = run
    return build_report(run_dir, timeline_users=2, progress=False)


def _md_table(text: str) -> tuple[list[str], list[list[str]]]:
    """The first pipe table of a Markdown text: (header cells, body rows)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    split = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    assert set("".join(split[1])) <= set("-:"), "second table line must be the rule"
    return split[0], split[2:]


def _interval(cell: str) -> tuple[float, float]:
    lo, hi = re.fullmatch(r"\[([-+0-9.]+), ([-+0-9.]+)\]", cell).groups()
    return float(lo), float(hi)


def test_report_writes_every_figure_as_a_real_png(run, report):
    run_dir, _ = run
    out = run_dir / "report"
    assert report.out == out
    names = {p.name for p in report.figures.values()}
    # a learned residual policy differs from its rule: its components are drawn too
    assert {"learning_curves.png", "policies.png", "actions.png", "components.png"} <= names
    timelines = sorted(out.glob("timeline_*.png"))
    assert len(timelines) == 2
    for path in report.figures.values():
        assert_plausible_png(path)
    assert report.skipped == []
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))  # atomic writes leave nothing behind
    md = report.markdown.read_text()
    html = report.html.read_text()
    for path in report.figures.values():  # every figure is shown by both summaries (the HTML embeds it)
        assert f"]({path.name})" in md
    assert html.count('src="data:image/png;base64,') == len(report.figures)


def test_html_report_is_self_contained_with_the_written_pngs(run, report):
    """report.html embeds every figure as a data URI (no link to a PNG file); the embedded bytes are the PNGs on disk."""
    html = report.html.read_text()
    assert "data:image/png;base64," in html
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources and not [s for s in sources if not s.startswith("data:")]
    assert not re.search(r'src="[^"]*\.png"', html)
    embedded = [base64.b64decode(s.removeprefix("data:image/png;base64,"), validate=True) for s in sources]
    first = next(iter(report.figures.values()))  # the summary shows the figures in report.figures' order
    assert embedded[0] == first.read_bytes()
    assert embedded == [p.read_bytes() for p in report.figures.values()]


def test_summary_table_numbers_match_evaluation_json(run, report):
    run_dir, _ = run
    doc = json.loads((run_dir / "evaluation.json").read_text())
    summary = doc["summary"]
    metric = doc["header"]["selection_metric"]
    ref = summary["reference"]
    header, rows = _md_table(report.markdown.read_text())
    col = {h: i for i, h in enumerate(header)}
    assert [r[0] for r in rows] == list(summary["policies"])  # every policy, in the evaluation's order
    for row in rows:
        entry = summary["policies"][row[col["policy"]]]
        ci = entry["metrics"][metric]
        assert float(row[col[metric]]) == pytest.approx(ci["mean"], abs=5e-5)
        lo, hi = _interval(row[col["95% CI"]])
        assert (lo, hi) == (pytest.approx(ci["lo"], abs=5e-5), pytest.approx(ci["hi"], abs=5e-5))
        assert float(row[col["AUC"]]) == pytest.approx(entry["metrics"]["auc"]["mean"], abs=5e-5)
        assert float(row[col["MRR"]]) == pytest.approx(entry["metrics"]["mrr"]["mean"], abs=5e-5)
        diff_cell = row[col[f"diff vs {ref}"]]
        if row[0] == ref:
            assert diff_cell == "-" and row[col["kind"]] == "reference"
        else:
            d = entry["diff_vs_reference"][metric]
            assert float(diff_cell.rstrip("*")) == pytest.approx(d["mean"], abs=5e-5)
            assert diff_cell.endswith("*") == (d["lo"] > 0 or d["hi"] < 0)
            dlo, dhi = _interval(row[col["diff 95% CI"]])
            assert (dlo, dhi) == (pytest.approx(d["lo"], abs=5e-5), pytest.approx(d["hi"], abs=5e-5))
        frac = entry["fraction_of_oracle"][metric]
        assert float(row[col[f"% of oracle {metric}"]]) == pytest.approx(100 * frac, abs=0.05)
        track = entry["extra"].get("tracking_error")
        cell = row[col["tracking error"]]
        assert cell == "-" if track is None else float(cell) == pytest.approx(track["mean"], abs=5e-5)
        weight = entry["extra"].get("profile_weight")
        cell = row[col["profile weight"]]
        assert cell == "-" if weight is None else float(cell) == pytest.approx(weight["mean"], abs=5e-4)
    # the independent check of the per-user values: the learned policy's mean is the mean over users
    ppo_mean = float(np.mean(doc["per_user"]["ppo"][metric]))
    assert float(rows[0][col[metric]]) == pytest.approx(ppo_mean, abs=5e-5)

    # the HTML carries the same table
    html = report.html.read_text()
    cells = re.findall(r"<tr class=\"(\w+)\">(.*?)</tr>", html)
    assert [re.findall(r"<td>(.*?)</td>", body) for _, body in cells] == rows


def test_report_cli_prints_the_table(run, tmp_path):
    run_dir, _ = run
    result = CliRunner().invoke(cli, ["report", str(run_dir), "--out", str(tmp_path / "rep"), "--timeline-users", "1"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "| ppo " in result.output and "report.html" in result.output
    assert len(list((tmp_path / "rep").glob("timeline_*.png"))) == 1


def test_report_without_evaluation_draws_the_rest_and_says_why(tmp_path):
    data = tiny_synthetic(tmp_path / "tiny", users=24, events_per_user=16)
    config = TrainConfig(dataset=str(data), run_dir=str(tmp_path / "run"), timesteps=64, n_envs=2, n_steps=16,
                         batch_size=16, n_epochs=1, eval_every=32, checkpoint_every=0, eval_users=None,
                         progress_bar=False, reward_baseline=None, net_arch=[8])
    train_run(config)
    result = build_report(tmp_path / "run", timeline_users=1, progress=False)
    assert "policies" not in result.figures and result.table == []
    assert len(result.skipped) == 1 and "interestgym evaluate" in result.skipped[0]
    assert {"learning_curves", "actions"} <= set(result.figures)
    assert "## Not drawn" in result.markdown.read_text()


def test_read_scalars_orders_steps_and_keeps_the_resumed_value(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    first = SummaryWriter(str(tmp_path), filename_suffix=".a")
    for step, value in ((0, 1.0), (10, 2.0), (20, 3.0)):
        first.add_scalar("charts/mean_reward", value, step)
    first.close()
    # Event files are read in name order: <seconds>.<host>.<pid>.<a per-process counter><suffix>. In one
    # process within one second the counter decides, unpadded ("...10.b" sorts before "...9.a") after
    # other tests' writers: start the resumed file in the next second, as a resumed run (a new process) does.
    time.sleep(1.05 - time.time() % 1.0)
    resumed = SummaryWriter(str(tmp_path), filename_suffix=".b")  # a resumed run appends a second file
    for step, value in ((20, 30.0), (30, 40.0)):
        resumed.add_scalar("charts/mean_reward", value, step)
    resumed.close()
    steps, values = read_scalars(tmp_path)["charts/mean_reward"]
    assert steps.tolist() == [0, 10, 20, 30]
    assert values.tolist() == [1.0, 2.0, 30.0, 40.0]


def test_latin_labels_render_with_the_default_font():
    assert can_render(["politics", "Children's", "(none)", "sci-fi 2"])


def test_implied_mix_is_the_normalised_positive_cosine():
    centroids = np.eye(3)
    direction = np.array([[0.6, 0.8, 0.0], [0.6, -0.8, 0.0], [0.0, 0.0, 0.0]])
    mix = implied_mix(direction, centroids)
    np.testing.assert_allclose(mix[0], [0.6 / 1.4, 0.8 / 1.4, 0.0])
    np.testing.assert_allclose(mix[1], [1.0, 0.0, 0.0])  # negative cosines count as no interest
    np.testing.assert_allclose(mix[2], [0.0, 0.0, 0.0])  # an empty profile implies nothing


def test_timeline_users_one_per_synthetic_type_longest_first(run):
    _, data_dir = run
    config = TrainConfig(dataset=str(data_dir), run_dir="")
    data = config.replay_data("test")
    import pandas as pd

    types = pd.read_parquet(data_dir / "synthetic_users.parquet")
    user_types = dict(zip(types["user_id"].astype(str), types["user_type"].astype(str)))
    chosen = choose_timeline_users(data, 3, user_types)
    lengths = dict(zip(map(str, data.user_ids), data.user_decision_end - data.user_decision_start))
    present = [t for t in ("switcher", "drifting", "bursty", "context", "noisy", "stable")
               if any(user_types.get(str(u)) == t and lengths[str(u)] > 1 for u in data.user_ids)]
    assert [label for _, label in chosen][: min(3, len(present))] == [f"{t} user" for t in present[:3]]
    for uid, label in chosen:
        t = label.split()[0]
        same_type = [lengths[str(u)] for u in data.user_ids if user_types.get(str(u)) == t]
        assert lengths[uid] == max(same_type)  # the longest history of its type
    assert choose_timeline_users(data, 3, user_types) == chosen  # deterministic


def test_category_timeline_for_real_data(tmp_path):
    rng = np.random.default_rng(0)
    n, t = 30, 5
    clicked = rng.integers(0, t, n)
    observed = np.zeros((n, t))
    observed[np.arange(n), clicked] = 1.0
    tl = UserTimeline(user_id="u/1", label="", topic_names=[f"cat{k}" for k in range(t)], observed=observed,
                      observed_kind="categories", implied=rng.dirichlet(np.ones(t), n), strengths=rng.random((n, 4)),
                      ts=np.arange(n) * 3600, clicked=clicked, step_metric=rng.random(n))
    path = plot_timeline(tl, tmp_path / "timeline.png")
    assert_plausible_png(path)


def test_report_of_a_run_on_real_style_data_uses_categories(tmp_path, monkeypatch):
    """No truth.npy, no impressions (next positive + sampled negatives): category timelines, no oracle column;
    category names no installed font can draw are numbered in the figures and listed in the summary."""
    from env_fixtures import make_dataset

    data = make_dataset(tmp_path / "logs", n_users=24, n_items=60, n_categories=5)
    config = TrainConfig(dataset=str(data), run_dir=str(tmp_path / "run"), timesteps=64, n_envs=2, n_steps=16,
                         batch_size=16, n_epochs=1, eval_every=32, checkpoint_every=0, eval_users=None,
                         progress_bar=False, reward_baseline=None, net_arch=[8], n_negatives=20)
    train_run(config)
    evaluate_run(tmp_path / "run", baselines="ema,static", n_boot=200, progress=False)
    import interestgym.report.build as report_module

    monkeypatch.setattr(report_module, "can_render", lambda labels: False)
    result = build_report(tmp_path / "run", timeline_users=1, progress=False)
    assert result.skipped == []
    assert any("#0 = c0" in n and "#4 = c4" in n for n in result.notes)
    assert "#0 = c0" in result.markdown.read_text() and "#0 = c0" in result.html.read_text()
    timeline = [p for k, p in result.figures.items() if k.startswith("timeline_")]
    assert len(timeline) == 1
    for path in result.figures.values():
        assert_plausible_png(path)
    header, rows = _md_table(result.markdown.read_text())
    assert not any("oracle" in h or "tracking" in h for h in header)
    assert sorted(r[0] for r in rows) == ["ema", "ppo", "static"]


def test_a_run_that_ships_its_rule_shows_that_row_as_the_shipped_rule():
    from interestgym.evaluation.tables import kind_label

    assert kind_label("shipped:bayesian_category", "learned") == "rule (shipped)"
    assert kind_label("ppo", "learned") == "learned"
    assert kind_label("shipped:ema", "baseline") == "baseline"  # only the run's own row


def test_the_learned_row_of_an_evaluation_of_the_shipped_model_says_it_is_shipped():
    """An evaluation of what a run ships (``--model shipped``, the default) labels its learned row ``learned (shipped)``,
    as it labels a shipped rule ``rule (shipped)``; an evaluation of ``--model best`` / ``final`` keeps ``learned``."""
    from interestgym.evaluation.tables import markdown_tables

    ci = {"mean": 0.5, "lo": 0.4, "hi": 0.6}
    summary = {"metrics": ["ndcg@10"], "reference": "ema",
               "policies": {"ppo": {"kind": "learned", "metrics": {"ndcg@10": ci}, "diff_vs_reference": {}, "extra": {}},
                            "ema": {"kind": "baseline", "metrics": {"ndcg@10": ci}, "extra": {}}}}
    kinds = {}
    for shipped in (True, False):
        rows = [line.split(" | ") for line in markdown_tables(summary, shipped_model=shipped).splitlines()[2:4]]
        kinds[shipped] = {row[0].lstrip("| "): row[1] for row in rows}
    assert kinds == {True: {"ppo": "learned (shipped)", "ema": "baseline"}, False: {"ppo": "learned", "ema": "baseline"}}
    # the report's and the quick start's table (table_cells) read the evaluation's header the same way
    from interestgym.report.tables import table_cells

    for model, expected in (("shipped", "learned (shipped)"), ("best", "learned")):
        _, cells = table_cells({"header": {"selection_metric": "ndcg@10", "model": model}, "summary": summary})
        assert {row[0]: row[1] for row in cells} == {"ppo": expected, "ema": "reference"}


# ---------------------------------------------------------------------------------- what a new user hit
def _said(result) -> str:
    """What a command said: its output, and the message of the InterestGymError it ended with (which
    `interestgym`'s main prints as one line); any other exception fails the test."""
    from interestgym.errors import InterestGymError

    exc = result.exception
    assert exc is None or isinstance(exc, (InterestGymError, SystemExit)), repr(exc)
    return result.output + ("" if exc is None or isinstance(exc, SystemExit) else str(exc))


def _copy_run(run_dir: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("report"))
    return dest


@pytest.mark.parametrize(("damage", "message"), [
    (lambda e: e["summary"]["policies"]["static"].pop("metrics"),
     r"field 'summary.policies.static.metrics' is missing; expected an object of metric"),
    (lambda e: e["summary"]["policies"]["static"]["metrics"]["ndcg@10"].update(mean="high"),
     r"field 'summary.policies.static.metrics.ndcg@10.mean' is \"high\"; expected a number"),
    (lambda e: e["summary"].update(policies={}), r"field 'summary.policies' is \{\}; expected an object with one entry per policy"),
    (lambda e: e["summary"]["policies"]["ppo"]["diff_vs_reference"]["auc"].pop("lo"),
     r"field 'summary.policies.ppo.diff_vs_reference.auc.lo' is missing; expected a number"),
    (lambda e: e.update(summary=[]), r"field 'summary' is \[\], not an object"),
])
def test_an_evaluation_damaged_inside_is_refused_naming_the_field(run, tmp_path, damage, message):
    """Valid JSON with a broken structure used to end in a KeyError / TypeError / ValueError traceback."""
    run_dir, _ = run
    doc = json.loads((run_dir / "evaluation.json").read_text())
    damage(doc)
    bad = tmp_path / "evaluation.json"
    bad.write_text(json.dumps(doc))
    result = CliRunner().invoke(cli, ["report", str(run_dir), "--evaluation", str(bad), "--out", str(tmp_path / "r"),
                                      "--timeline-users", "0"])
    assert result.exit_code != 0
    assert re.search(re.escape(str(bad)) + ": " + message, _said(result)), _said(result)


def test_an_out_path_under_a_file_is_refused_before_any_work(run, tmp_path):
    run_dir, _ = run
    (tmp_path / "afile").write_text("x")
    for command in (["report", str(run_dir), "--timeline-users", "0"], ["evaluate", str(run_dir), "--baselines", "static"]):
        result = CliRunner().invoke(cli, [*command, "--out", str(tmp_path / "afile" / "sub")])
        said = _said(result)
        assert result.exit_code != 0 and f"--out {tmp_path / 'afile' / 'sub'}: {tmp_path / 'afile'} is a file, not a folder" in said, said
        assert "tuned" not in said and "replayed" not in said  # refused before the work


def test_the_report_says_when_its_table_is_not_of_what_its_figures_show(run, tmp_path):
    """Another run's evaluation, a transfer evaluation's dataset, another model or split: each is said in Notes;
    captions and the Full tables link follow the split and file actually summarised."""
    run_dir, data = run
    doc = json.loads((run_dir / "evaluation.json").read_text())
    doc["header"].update(run=str(tmp_path / "other-run"), train_seed=7, data=str(tmp_path / "other-data"), split="valid")
    other = tmp_path / "elsewhere" / "evaluation.json"
    other.parent.mkdir()
    other.write_text(json.dumps(doc))
    said: list[str] = []
    result = build_report(run_dir, out=tmp_path / "r", evaluation_path=other, which_model="final", split="test",
                          timeline_users=1, progress=False, log=said.append)
    md = result.markdown.read_text()
    notes = md.split("## Notes", 1)[1]
    assert f"`{other}` evaluated the run `{tmp_path / 'other-run'}`, not `{run_dir}` (train seed 7; this run's is 0)" in notes
    # another run's evaluation on other data: no transfer evaluation of this run (`--dataset`) is implied
    assert f"The Results table is on `{tmp_path / 'other-data'}`; the learning curves" in notes
    # said on the console as the report is made, not only at the end of report.md
    assert f"note: `{other}` evaluated the run `{tmp_path / 'other-run'}`, not `{run_dir}` (train seed 7; this run's is 0)" \
        ": the Results table is that run's; the other sections are this run's." in said
    # this run's own transfer evaluation (evaluate RUN --dataset OTHER --out DIR) is said to be one
    doc["header"].update(run=str(run_dir))
    other.write_text(json.dumps(doc))
    transfer = build_report(run_dir, out=tmp_path / "t", evaluation_path=other, timeline_users=0, progress=False)
    assert f"The Results table is on `{tmp_path / 'other-data'}` (evaluated with `--dataset`)" in transfer.markdown.read_text()
    assert f"of the run's own dataset `{data}`" in notes
    assert "The figures show the run's **final** model; the Results table evaluated its **best** model." in notes
    assert "The figures replay test users; the Results table is of valid users." in notes
    assert "**Caution**: these are the validation users" in md
    assert "Mean over valid users with bootstrap" in md and "a decision of a test user" in md and "## Timelines of test users" in md
    assert f"Full tables (every metric): `{other.parent / 'evaluation.md'}`; numbers: `{other}`." in md
    # the run's own evaluation: none of these notes
    own = build_report(run_dir, out=tmp_path / "own", timeline_users=0, progress=False).markdown.read_text()
    assert "evaluated the run" not in own and "Results table is on" not in own and "Caution**: these are" not in own
    # the fixture's points rank 8 candidates: the one caution left is that a metric at 10 says little there
    assert [line for line in own.splitlines() if "Caution" in line] == [
        ("- **Caution**: no scoring point ranks more than 8 candidates: hit@10 and recall@10 are 1 whatever the policy, and "
         "nDCG@10 is high; compare AUC and MRR")]
    assert f"Full tables (every metric): `{run_dir / 'evaluation.md'}`" in own


def test_a_report_without_evaluation_says_what_the_run_ships_and_why(run, tmp_path):
    run_dir, _ = run
    copy = _copy_run(run_dir, tmp_path / "run")
    (copy / "evaluation.json").unlink()
    decision = json.loads((copy / "shipped.json").read_text())
    md = build_report(copy, timeline_users=0, progress=False).markdown.read_text()
    what = "its learned model (`best`)" if decision["policy"] == "learned" else f"its reference rule `{decision['rule']['name']}`"
    assert f"The run ships {what}: {decision['reason']} (`{copy / 'shipped.json'}`)." in md


def test_a_missing_shipped_model_leaves_the_rest_of_the_report(run, tmp_path):
    import shutil

    run_dir, _ = run
    copy = _copy_run(run_dir, tmp_path / "run")
    shipped = json.loads((copy / "shipped.json").read_text())
    gone = shipped.get("model") or "best" if shipped["policy"] == "learned" else "best"
    shutil.rmtree(copy / gone)
    result = build_report(copy, which_model="shipped" if shipped["policy"] == "learned" else "best", timeline_users=1,
                          progress=False)
    assert {"learning_curves", "policies"} <= set(result.figures) and "actions" not in result.figures
    assert any(s.startswith("timelines and actions:") and str(copy / gone) in s for s in result.skipped), result.skipped
    (copy / "shipped.json").unlink()
    result = build_report(copy, which_model="shipped", timeline_users=0, progress=False)
    assert f"timelines and actions: the run has no shipped policy ({copy / 'shipped.json'} is missing)" in result.skipped


def test_a_rerun_removes_the_figures_it_no_longer_draws(run, tmp_path):
    run_dir, _ = run
    out = tmp_path / "r"
    first = build_report(run_dir, out=out, timeline_users=2, progress=False)
    assert len(list(out.glob("timeline_*.png"))) == 2
    (out / "notes.txt").write_text("mine")  # not a figure of the report's: kept
    second = build_report(run_dir, out=out, timeline_users=0, progress=False)
    assert not list(out.glob("timeline_*.png")) and (out / "notes.txt").is_file()
    assert {p.name for p in out.glob("*.png")} == {p.name for p in second.figures.values()}
    assert set(first.figures) - set(second.figures) == {k for k in first.figures if k.startswith("timeline_")}


def test_a_tensorboard_log_cut_short_is_said(run, tmp_path):
    run_dir, _ = run
    copy = _copy_run(run_dir, tmp_path / "run")
    (event,) = (copy / "tb").glob("events.out.tfevents.*")
    info = json.loads((copy / "final" / "info.json").read_text())
    raw = event.read_bytes()

    def last_step(cut: int) -> int:  # the reader stops at the cut, as at a damaged record
        event.write_bytes(raw[:cut])
        return max((int(v[0].max()) for v in read_scalars(copy / "tb").values() if len(v[0])), default=0)

    # cut where the log keeps its start but loses at least two rollouts (64 steps each) of its end
    cut = next(c for c in range(len(raw) * 2 // 3, 0, -16) if 0 < last_step(c) <= info["step"] - 128)
    steps = last_step(cut)
    result = build_report(copy, timeline_users=0, progress=False)
    assert any(f"the log ends at step {steps:,}, but the run's models were saved at step {info['step']:,}" in n
               for n in result.notes), result.notes
    whole = build_report(run_dir, out=tmp_path / "whole", timeline_users=0, progress=False)
    assert not any("the log ends at step" in n for n in whole.notes)


def test_a_moved_dataset_a_quickstart_folder_and_a_user_of_another_split_get_their_hint(run, tmp_path):
    run_dir, data = run
    copy = _copy_run(run_dir, tmp_path / "qs" / "run")
    conf = json.loads((copy / "config.json").read_text())
    conf["config"]["dataset"] = str(tmp_path / "gone")
    (copy / "config.json").write_text(json.dumps(conf))
    result = CliRunner().invoke(cli, ["evaluate", str(copy), "--baselines", "static"])
    assert result.exit_code != 0
    assert (f"{copy / 'config.json'}: the run was trained on the dataset {tmp_path / 'gone'}, which is not there (moved or "
            "removed?)") in _said(result), _said(result)
    report = build_report(copy, timeline_users=0, progress=False)  # what needs no dataset is still drawn
    assert "learning_curves" in report.figures and any("which is not there" in s for s in report.skipped)
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "qs")])
    assert f"looks like a quick start's folder: its run is {tmp_path / 'qs' / 'run'}" in _said(result), _said(result)
    import pandas as pd

    users = pd.read_parquet(Path(data) / "users.parquet")
    train_user = str(users.loc[users["split"] == "train", "user_id"].iloc[0])
    with pytest.raises(Exception, match=rf"--user {train_user}: no decision in split 'test' .*that user is in split 'train' "
                                        r"\(give --split train\)"):
        build_report(run_dir, out=tmp_path / "u", users=[train_user], progress=False)


def test_the_policies_legend_names_a_shipped_rule_as_such():
    from interestgym.report.figures import legend_labels

    rule = [{"policy": "shipped:bayesian_category", "kind": "learned"}, {"policy": "bayesian_category", "kind": "reference"}]
    assert legend_labels(rule, "bayesian_category") == {"learned": "shipped rule", "reference": "best tuned rule (bayesian_category)"}
    learned = [{"policy": "ppo", "kind": "learned"}, {"policy": "static", "kind": "baseline"}]
    assert legend_labels(learned, "ema") == {"learned": "learned policy", "baseline": "baseline rule"}


def test_the_timelines_say_when_the_profiles_carry_little_of_the_score():
    from interestgym.report.build import profile_share_note

    note = profile_share_note(np.array([0.95, 0.97, 0.96]))
    assert note is not None and "gives the profiles 4% of its score on average (1 - p)" in note
    assert profile_share_note(np.array([0.5, 0.7])) is None and profile_share_note(np.zeros(0)) is None


def test_timeline_file_names_never_collide():
    """Ids a file name cannot hold as they are (Chinese nicknames, slashes, very long ids) get a hash of the whole id:
    two users never share a timeline figure; plain ids keep their name."""
    from interestgym.report.build import _safe_name

    assert _safe_name("u042") == "u042" and _safe_name("user.7_b-3") == "user.7_b-3"
    ids = ["用户026", "读者026", "张三", "李四", "a/b", "a_b", "a b", "x" * 61, "x" * 62, ""]
    names = [_safe_name(u) for u in ids]
    assert len(set(names)) == len(ids), names
    assert all(re.fullmatch(r"[A-Za-z0-9._-]{1,60}", n) for n in names), names
    assert names[0].startswith("_026-") and names[5] == "a_b"


def test_a_user_id_no_installed_font_draws_is_written_with_escapes_in_the_figure():
    """A timeline's title would show empty boxes (and matplotlib warn) for a Chinese id without a CJK font: the figure
    writes the characters no font draws as escapes; ids a font draws stay as they are."""
    from interestgym.report.figures import can_render, drawable

    assert drawable("u042 (stable user)") == "u042 (stable user)"
    if can_render(["用户"]):
        pytest.skip("a CJK font is installed here: the figure draws the id itself")
    assert drawable("用户026") == "\\u7528\\u6237026" and can_render([drawable("用户026")])


def test_a_report_does_not_replay_a_run_on_its_dataset_split_again(run, tmp_path):
    """A review's find: evaluate, export and train --resume refuse a run whose dataset was split again since training (its
    test users may be users the policy trained on); report replayed the new split's "test users" without a word. It now
    draws the rest and says why it did not replay."""
    import shutil

    import pandas as pd
    from env_fixtures import write_users

    run_dir, data = run
    copy = _copy_run(run_dir, tmp_path / "run")
    moved = tmp_path / "data"
    shutil.copytree(data, moved)
    conf = json.loads((copy / "config.json").read_text())
    conf["config"]["dataset"] = str(moved)
    (copy / "config.json").write_text(json.dumps(conf))
    assert "actions" in build_report(copy, out=tmp_path / "same", timeline_users=0, progress=False).figures  # the same split
    users = pd.read_parquet(moved / "users.parquet")
    users["split"] = users["split"].map({"train": "test", "test": "train", "valid": "valid"})
    write_users(moved, users)  # as prepare with another split writes it
    result = build_report(copy, out=tmp_path / "other", timeline_users=0, progress=False)
    assert "actions" not in result.figures and "learning_curves" in result.figures
    assert any(s.startswith("timelines and actions: not replayed (") and "its users are split differently" in s
               for s in result.skipped), result.skipped


def test_an_evaluation_of_a_run_given_relatively_is_that_runs_from_any_folder(run, tmp_path, monkeypatch):
    # the run was recorded as typed ("R"): a report run from another folder said the evaluation was of "another run"
    from interestgym.report.build import evaluation_mismatches

    run_dir, _ = run
    monkeypatch.chdir(run_dir.parent)
    out = tmp_path / "eval"
    evaluate_run(run_dir.name, baselines=BASELINES, n_boot=20, progress=False, which_model="best", out=out)
    header = json.loads((out / "evaluation.json").read_text())["header"]
    assert header["run"] == str(run_dir.resolve()) and Path(header["data"]).is_absolute()
    monkeypatch.chdir(tmp_path)
    conf = json.loads((run_dir / "config.json").read_text())
    assert not any("evaluated the run" in s for s in evaluation_mismatches(run_dir, conf, header, out / "evaluation.json",
                                                                         "best", "test"))
