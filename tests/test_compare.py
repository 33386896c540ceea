"""`interestgym compare A B`: two evaluations of the same users (here one dataset, two embeddings), row by row, paired
over users; refused when they do not score the same users at the same points."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from agents_fixtures import tiny_synthetic
from cli_fixtures import run

from interestgym.errors import InterestGymError

BASELINES = "ema,static,popularity"


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory):
    from interestgym.cli import main
    from interestgym.evaluation.run import evaluate_run

    root = tmp_path_factory.mktemp("compare")
    data = tiny_synthetic(root / "data")
    try:
        main(["encode", str(data), "--encoder", "hashing", "--dim", "16", "--name", "words"])
    except SystemExit as exc:
        assert not exc.code
    for name, emb in (("a", "topic16"), ("b", "words")):
        evaluate_run(data, out=root / name, baselines=BASELINES, n_boot=50, progress=False, embeddings=emb)
    return root / "a", root / "b"


def _per_user(folder: Path, row: str, metric: str = "ndcg@10") -> dict[str, float]:
    doc = json.loads((folder / "evaluation.json").read_text())
    return dict(zip(doc["users"], doc["per_user"][row][metric]))


def test_each_row_is_b_minus_a_over_the_same_users_whatever_their_order(evaluations, tmp_path, capsys):
    from interestgym.evaluation.compare import compare_evaluations

    a, b = evaluations
    result = compare_evaluations(a, b, n_boot=200)
    assert result["metric"] == "ndcg@10" and result["differs"]["encoder"] == ["topic16", "words"]
    rows = {r["row"]: r for r in result["rows"]}
    assert set(BASELINES.split(",")) <= set(rows)
    for name in BASELINES.split(","):
        va, vb = _per_user(a, name), _per_user(b, name)
        expected = np.mean([vb[u] - va[u] for u in va])  # by user id, computed here
        assert rows[name]["diff"]["mean"] == pytest.approx(expected, abs=1e-12)
        assert rows[name]["a"]["mean"] == pytest.approx(np.mean(list(va.values())), abs=1e-12)
    ref_a = json.loads((a / "evaluation.json").read_text())["summary"]["reference"]
    ref_b = json.loads((b / "evaluation.json").read_text())["summary"]["reference"]
    ref_row = next(r for r in result["rows"] if r["row"].startswith("reference (each's own)"))
    va, vb = _per_user(a, ref_a), _per_user(b, ref_b)
    assert ref_row["diff"]["mean"] == pytest.approx(np.mean([vb[u] - va[u] for u in va]), abs=1e-12)

    # B's users in another order: the same pairs, the same numbers
    shuffled = tmp_path / "shuffled"
    shutil.copytree(b, shuffled)
    doc = json.loads((shuffled / "evaluation.json").read_text())
    order = np.random.default_rng(0).permutation(len(doc["users"]))
    doc["users"] = [doc["users"][i] for i in order]
    doc["per_user"] = {row: {m: [v[i] for i in order] for m, v in metrics.items()} for row, metrics in doc["per_user"].items()}
    (shuffled / "evaluation.json").write_text(json.dumps(doc))
    assert compare_evaluations(a, shuffled, n_boot=200)["rows"] == result["rows"]

    code, out, err = run(["compare", str(a), str(b), "--n-boot", "200", "--out", str(tmp_path / "cmp")], capsys)
    assert code == 0, err
    ema = rows["ema"]
    assert f"| ema | {ema['a']['mean']:.4f} [" in out and f"| {ema['diff']['mean']:+.4f} [" in out
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"] == json.loads(json.dumps(result["rows"]))


def test_evaluations_of_other_points_or_users_are_refused(evaluations, tmp_path, capsys):
    from interestgym.evaluation.compare import compare_evaluations

    a, b = evaluations
    other = tmp_path / "other"
    shutil.copytree(b, other)
    doc = json.loads((other / "evaluation.json").read_text())
    doc["header"]["protocol_seed"] = 7
    (other / "evaluation.json").write_text(json.dumps(doc))
    with pytest.raises(InterestGymError, match=r"protocol_seed 0 vs 7; expected the same split, candidates, protocol_seed, "
                                               r"scoring_points"):
        compare_evaluations(a, other)
    doc["header"]["protocol_seed"] = 0
    doc["users"] = doc["users"][:-1] + ["someone else"]
    (other / "evaluation.json").write_text(json.dumps(doc))
    with pytest.raises(InterestGymError, match=r"1 only in the first, .*1 only in the second, e.g. \['someone else'\]\); expected "
                                               r"the same users"):
        compare_evaluations(a, other)
    code, _, err = run(["compare", str(a), str(tmp_path)], capsys)
    assert code == 2 and err == (f"error: {tmp_path}: no evaluation.json; expected an `interestgym evaluate` output (its --out "
                                 "folder, a run folder evaluated in place, or the file)\n")
    code, _, err = run(["compare", str(a), str(b), "--metric", "ndcg@11"], capsys)
    assert code == 2 and "has no per-user 'ndcg@11'" in err


def test_rows_of_one_side_only_are_listed_and_a_metric_no_user_has_is_null(evaluations, tmp_path):
    """A row only one evaluation lists is named, not dropped in silence; a row whose metric is null for every user is
    written as null in compare.json (strict JSON) and '-' in the table."""
    from interestgym.evaluation.compare import compare_evaluations, markdown

    a, b = evaluations
    other = tmp_path / "other"
    shutil.copytree(b, other)
    doc = json.loads((other / "evaluation.json").read_text())
    dropped = doc["per_user"].pop("popularity")
    doc["per_user"]["ema"]["ndcg@10"] = [None] * len(dropped["ndcg@10"])
    (other / "evaluation.json").write_text(json.dumps(doc))
    result = compare_evaluations(a, other, n_boot=50)
    assert result["only_in_a"] == ["popularity"] and result["only_in_b"] == []
    ema = next(r for r in result["rows"] if r["row"] == "ema")
    assert ema["b"]["mean"] is None and ema["diff"]["mean"] is None
    json.loads(json.dumps(result), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    text = markdown(result)
    assert "\nOnly in A (not compared): popularity\n" in text
    assert next(line for line in text.splitlines() if line.startswith("| ema |")).endswith("| - | - | - |")


def test_each_runs_learned_row_is_paired_under_its_own_name(evaluations, tmp_path):
    """A run evaluated as shipped (its rule: `shipped:ema`) against its best model (`ppo`): the one learned row of
    each is paired, B - A by user id, and neither is listed as only on one side."""
    from interestgym.evaluation.compare import POLICY_ROW, compare_evaluations

    a, b = evaluations
    sides = {}
    for name, src, row, source_row in (("shipped", a, "shipped:ema", "ema"), ("best", b, "ppo", "static")):
        folder = tmp_path / name
        shutil.copytree(src, folder)
        doc = json.loads((folder / "evaluation.json").read_text())
        doc["per_user"][row] = doc["per_user"][source_row]
        doc["summary"]["policies"][row] = {**doc["summary"]["policies"][source_row], "kind": "learned"}
        (folder / "evaluation.json").write_text(json.dumps(doc))
        sides[name] = folder
    result = compare_evaluations(sides["shipped"], sides["best"], n_boot=50)
    row = next(r for r in result["rows"] if r["row"].startswith(POLICY_ROW))
    assert row["row"] == f"{POLICY_ROW}: shipped:ema / ppo"
    va, vb = _per_user(a, "ema"), _per_user(b, "static")
    assert row["diff"]["mean"] == pytest.approx(np.mean([vb[u] - va[u] for u in va]), abs=1e-12)
    assert "shipped:ema" not in result["only_in_a"] and "ppo" not in result["only_in_b"]


def test_a_row_of_one_name_defined_otherwise_is_said_and_other_users_are_named_as_the_cause(evaluations, tmp_path):
    """A rule row tuned otherwise (or from another package version) in B is said above the table with both definitions,
    from the files' own tuned parameters; evaluations of other users are refused for their users, the cause, even when
    their scoring points differ too."""
    from interestgym.evaluation.compare import compare_evaluations, markdown

    a, _ = evaluations
    other = tmp_path / "other"
    shutil.copytree(a, other)
    doc = json.loads((other / "evaluation.json").read_text())
    tuned_a = doc["tuned_baselines"]["ema"]
    doc["tuned_baselines"]["ema"] = {**tuned_a, "params": {**tuned_a["params"], "rate": 0.77},
                                     "provider": {"distribution": "my-rules", "version": "0.2", "source_sha256": "ab" * 32}}
    (other / "evaluation.json").write_text(json.dumps(doc))
    result = compare_evaluations(a, other, n_boot=50)
    assert list(result["row_differs"]) == ["ema"]  # every other row is the same policy in both
    params_a = ", ".join(f"{k} {v}" for k, v in tuned_a["params"].items())
    params_b = ", ".join(f"{k} {v}" for k, v in {**tuned_a["params"], "rate": 0.77}.items())
    assert result["row_differs"]["ema"] == [f"tuned to {params_a}", f"tuned to {params_b}; my-rules 0.2"]
    assert f"\n  - ema: A tuned to {params_a} / B tuned to {params_b}; my-rules 0.2\n" in markdown(result)
    assert "rows of one name" not in markdown(compare_evaluations(a, a, n_boot=50))
    # a source digest only one file records (an evaluation from before digests) is no difference; two that differ are
    provider = {"distribution": "my-rules", "version": "0.2"}
    for digest_a, digest_b, differs in ((None, "ab" * 32, False), ("cd" * 32, "ab" * 32, True)):
        for side, digest in ((a, digest_a), (other, digest_b)):
            doc = json.loads((a / "evaluation.json").read_text())
            doc["tuned_baselines"]["ema"]["provider"] = {**provider, **({"source_sha256": digest} if digest else {})}
            (tmp_path / side.name).mkdir(exist_ok=True)
            (tmp_path / side.name / "evaluation.json").write_text(json.dumps(doc))
        got = compare_evaluations(tmp_path / a.name, tmp_path / other.name, n_boot=50)["row_differs"]
        assert ("ema" in got) == differs, got

    doc = json.loads((a / "evaluation.json").read_text())
    doc["users"] = doc["users"][:-1] + ["someone else"]
    doc["header"]["scoring_points"] = 1
    (other / "evaluation.json").write_text(json.dumps(doc))
    with pytest.raises(InterestGymError, match=r"expected the same users \(evaluations of one dataset and split: another dataset, "
                                               r"or one prepared with another split seed, has other users\)"):
        compare_evaluations(a, other)


def test_one_dataset_given_two_ways_is_said_as_such_and_a_missing_run_is_said_in_words(evaluations, tmp_path, monkeypatch):
    from interestgym.evaluation.compare import compare_evaluations, markdown

    a = evaluations[0]
    doc = json.loads((a / "evaluation.json").read_text())
    data = Path(doc["header"]["data"]).resolve()
    monkeypatch.chdir(data.parent)
    relative = tmp_path / "relative"
    shutil.copytree(a, relative)
    other = json.loads((relative / "evaluation.json").read_text())
    other["header"]["data"] = data.name  # as `evaluate data --out ...` run from the dataset's parent folder writes it
    other["header"]["run"], other["header"]["model"] = "runs/r", "shipped"  # a run's evaluation of the same users
    (relative / "evaluation.json").write_text(json.dumps(other))
    result = compare_evaluations(a, relative, n_boot=50)
    assert result["differs"]["data"] == [doc["header"]["data"], data.name]  # said, not hidden: the relative path is
    assert result["differs"]["run"] == [None, "runs/r"]  # relative to where that evaluate ran, which compare cannot know
    text = markdown(result)
    assert f"- data: A {doc['header']['data']} / B {data.name} (one folder from here: the same dataset if both evaluations ran here)" in text
    assert "- run: A none (an evaluation of a dataset, no run) / B runs/r" in text
    assert "- model: A none (no run) / B shipped" in text and "None" not in text
    other["header"]["data"] = "elsewhere"  # another folder: said
    (relative / "evaluation.json").write_text(json.dumps(other))
    result = compare_evaluations(a, relative, n_boot=50)
    assert result["differs"]["data"] == [doc["header"]["data"], "elsewhere"] and "one folder from here" not in markdown(result)
