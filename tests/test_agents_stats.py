"""Bootstrap CIs and paired differences agree with independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from interestgym.core.stats import (
    align_users,
    bootstrap_mean_ci,
    paired_bootstrap_diff,
    per_user_means,
)


def test_per_user_means_match_a_python_groupby():
    rng = np.random.default_rng(1)
    users = rng.choice(np.array(["u1", "u2", "u3", "u4"]), size=200)
    values = rng.random(200)
    values[::17] = np.nan
    got_users, got_means = per_user_means(users, values)
    for u, m in zip(got_users, got_means):
        vals = [v for uu, v in zip(users, values) if uu == u and not np.isnan(v)]
        assert m == pytest.approx(sum(vals) / len(vals))
    assert list(got_users) == sorted(set(users))


def test_bootstrap_ci_matches_normal_approximation_on_a_large_sample():
    rng = np.random.default_rng(0)
    x = rng.exponential(scale=2.0, size=5000)
    ci = bootstrap_mean_ci(x, n_boot=4000, seed=3)
    half = 1.959964 * x.std(ddof=1) / np.sqrt(len(x))
    assert ci.mean == pytest.approx(x.mean())
    assert ci.lo == pytest.approx(x.mean() - half, abs=0.15 * half)
    assert ci.hi == pytest.approx(x.mean() + half, abs=0.15 * half)


def test_bootstrap_ci_matches_scipy_percentile_bootstrap_on_a_small_skewed_sample():
    rng = np.random.default_rng(5)
    x = rng.lognormal(size=40)
    ours = bootstrap_mean_ci(x, n_boot=20000, seed=1)
    ref = sps.bootstrap((x,), np.mean, n_resamples=20000, method="percentile", confidence_level=0.95,
                        random_state=np.random.default_rng(2)).confidence_interval
    width = ref.high - ref.low
    assert ours.lo == pytest.approx(ref.low, abs=0.05 * width)
    assert ours.hi == pytest.approx(ref.high, abs=0.05 * width)


def test_paired_difference_is_tighter_than_independent_and_detects_a_small_shift():
    rng = np.random.default_rng(7)
    user_effect = rng.normal(0.5, 0.2, size=300)  # shared by both policies
    a = user_effect + 0.01 + rng.normal(0, 0.01, size=300)
    b = user_effect
    diff = paired_bootstrap_diff(a, b, seed=0)
    assert diff.mean == pytest.approx(np.mean(a - b))
    assert diff.lo > 0 and diff.excludes_zero()
    # the unpaired intervals overlap heavily: only pairing reveals the difference
    ca, cb = bootstrap_mean_ci(a, seed=0), bootstrap_mean_ci(b, seed=0)
    assert ca.lo < cb.hi
    assert (diff.hi - diff.lo) < 0.2 * (ca.hi - ca.lo)


def test_degenerate_samples():
    assert np.isnan(bootstrap_mean_ci(np.array([np.nan])).mean)
    one = bootstrap_mean_ci(np.array([0.3]))
    assert (one.mean, one.lo, one.hi, one.n) == (0.3, 0.3, 0.3, 1)
    with pytest.raises(ValueError):
        paired_bootstrap_diff(np.zeros(3), np.zeros(4))


def test_align_users_pairs_by_id():
    common, va, vb = align_users(np.array([3, 1, 2]), np.array([30.0, 10, 20]), np.array([2, 3, 5]), np.array([2.0, 3, 5]))
    assert list(common) == [2, 3] and list(va) == [20, 30] and list(vb) == [2, 3]


def test_the_evaluation_tables_star_every_difference_whose_ci_excludes_zero_on_either_side():
    """`*` marks a paired difference whose CI lies entirely above 0 or entirely below it (a policy significantly
    worse than the reference is starred as much as one significantly better); a CI across 0 is not."""
    from interestgym.evaluation.tables import markdown_tables

    def ci(mean, lo, hi):
        return {"mean": mean, "lo": lo, "hi": hi, "n": 50}

    summary = {"metrics": ["ndcg@10"], "reference": "ref", "policies": {
        "ref": {"kind": "baseline", "metrics": {"ndcg@10": ci(0.5, 0.45, 0.55)}, "diff_vs_reference": {}, "extra": {}},
        "better": {"kind": "learned", "metrics": {"ndcg@10": ci(0.6, 0.55, 0.65)}, "diff_vs_reference": {"ndcg@10": ci(0.1, 0.05, 0.15)},
                   "extra": {}},
        "worse": {"kind": "baseline", "metrics": {"ndcg@10": ci(0.4, 0.35, 0.45)}, "diff_vs_reference": {"ndcg@10": ci(-0.1, -0.15, -0.05)},
                  "extra": {}},
        "tie": {"kind": "baseline", "metrics": {"ndcg@10": ci(0.5, 0.45, 0.55)}, "diff_vs_reference": {"ndcg@10": ci(0.0, -0.02, 0.02)},
                "extra": {}},
    }}
    text = markdown_tables(summary)
    assert "+0.1000 [+0.0500, +0.1500]*" in text and "-0.1000 [-0.1500, -0.0500]*" in text
    assert "| tie | +0.0000 [-0.0200, +0.0200] |" in text


def test_a_row_whose_auc_ci_reaches_one_half_gets_a_chance_caution():
    """The learned rows and the reference get a caution when their AUC's CI reaches 0.5 (a random order): per-user AUCs
    drawn around 0.5 do, ones around 0.8 do not; rows not asked about, and rows without AUC, get none."""
    from interestgym.evaluation.tables import PolicyScores, chance_lines, summarise

    rng = np.random.default_rng(0)
    users = np.array([f"u{i}" for i in range(40)])
    rows = [PolicyScores(name=name, kind=kind, users=users, per_user={"auc": np.clip(rng.normal(mean, 0.1, 40), 0, 1)})
            for name, kind, mean in (("ppo", "learned", 0.8), ("rule", "baseline", 0.5), ("other", "baseline", 0.4))]
    summary = summarise(rows, ["auc"], reference="rule", n_boot=200)
    auc = summary["policies"]["rule"]["metrics"]["auc"]
    assert auc["lo"] <= 0.5 < summary["policies"]["ppo"]["metrics"]["auc"]["lo"]  # the draws are what the test needs
    assert chance_lines(summary, ["ppo", "rule"]) == [(
        f"- caution: `rule` is not shown to rank better than chance here: AUC {auc['mean']:.4f} [{auc['lo']:.4f}, "
        f"{auc['hi']:.4f}] reaches 0.5, a random order of the candidates (few or unrepresentative scoring points, or items "
        "whose text says little of what is clicked)")]
    assert chance_lines(summary, ["ppo"]) == []
    worse = summary["policies"]["other"]["metrics"]["auc"]
    assert worse["hi"] < 0.5  # the draws around 0.4
    assert chance_lines(summary, ["other"]) == [(
        f"- caution: `other` ranks worse than a random order of the candidates here: AUC {worse['mean']:.4f} "
        f"[{worse['lo']:.4f}, {worse['hi']:.4f}] lies below 0.5 (few or unrepresentative scoring points, or items whose "
        "text says little of what is clicked)")]
    assert chance_lines(summarise(rows, [], reference="rule", n_boot=10), ["rule"]) == []  # no AUC measured


def test_the_bootstrap_draws_its_resamples_in_blocks_with_the_whole_matrixs_numbers(monkeypatch):
    """Resamples are drawn a block of rows at a time (memory bounded whatever the users): the CI is, to the bit, the
    percentile interval of the means of the rows of the one (n_boot, n) matrix the seed gives, computed here at once."""
    from interestgym.core import stats

    x = np.random.default_rng(5).normal(size=1001)
    idx = np.random.default_rng(3).integers(0, len(x), size=(500, len(x)))
    means = x[idx].mean(axis=1)
    alpha = (1.0 - 0.95) / 2.0  # as the CI's own code computes it (0.025000000000000022)
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    monkeypatch.setattr(stats, "_BOOT_BLOCK", 7 * len(x) + 3)  # blocks of 7 rows: 71 full ones and a last of 3
    got = stats.bootstrap_mean_ci(x, n_boot=500, seed=3)
    assert (got.lo, got.hi, got.mean) == (float(lo), float(hi), float(x.mean()))
    monkeypatch.setattr(stats, "_BOOT_BLOCK", 1)  # one row at a time
    assert stats.bootstrap_mean_ci(x, n_boot=500, seed=3) == got


def test_the_confidence_intervals_say_their_progress_in_a_log(monkeypatch, capsys):
    """A large evaluation's bootstraps take a minute after the replay's last progress line: off a terminal they write
    their own lines (progress=None); progress=False (the default, and --no-progress) writes none."""
    import sys

    import interestgym.progress
    from interestgym.evaluation.tables import PolicyScores, summarise

    users = np.array(["u1", "u2", "u3"])
    rows = [PolicyScores(name=n, kind="baseline", users=users, per_user={"ndcg@10": np.array([0.1, 0.2, v])}) for n, v in
            (("a", 0.3), ("b", 0.4))]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    monkeypatch.setattr(interestgym.progress, "LOG_EVERY_SECONDS", 0.0)
    quiet = summarise(rows, ["ndcg@10"], reference="a", n_boot=50)
    assert capsys.readouterr().err == ""
    assert summarise(rows, ["ndcg@10"], reference="a", n_boot=50, progress=None) == quiet
    assert "confidence intervals: 2/2 rows (100%)" in capsys.readouterr().err
