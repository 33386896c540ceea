"""``interestgym search``: a budgeted hyper-parameter search of PPO settings, picked on validation users only.

Each trial is an ordinary ``interestgym train`` run (``DIR/trial-NNN``) of ``--budget-steps`` steps with
one configuration drawn from :data:`SPACE` by a seeded sampler; trial 0 is always the base configuration
(the defaults, or ``--config FILE``), so the table says whether the search beat it. All trials share the
baselines tuned once on validation users (``trial-000/baselines.json``, or ``--tuned-baselines``), so they
compete against the same reference rule on the same users.

A trial's score is the validation metric (the run's reward metric, nDCG@10 by default) of the model the
run selects (its best model, itself chosen by periodic validation), replayed on every validation user: the
number ``RUN/shipped.json`` records, with the paired 95% CI of its gain over the reference rule, and the
paired 95% CI of its per-user gain over trial 0 (the base) on the same validation users. The pick
(``--pick``): ``beats-base`` (default) = the highest-scoring trial whose gain over the base is proven for the
whole search, else the base itself; ``best`` = the highest score. Proven for the whole search: the paired CI
at level ``1 - 0.05 / m`` (Bonferroni over the m trials compared with the base, recomputed as trials are
added) is above 0, so that the chance of picking a trial that is no better than the base stays under 5%
however many trials were run (with 95% CIs each, ten trials no better than the base give one a CI above 0
about 22% of the time). Nothing here opens the test split: test users are
left for ``interestgym evaluate`` on a run trained with the picked configuration. The winner's own
validation score is optimistic (it was picked as the maximum of noisy scores), so it is not an estimate of
its test gain.

Samplers: ``random`` (default; numpy, seeded: trial ``i`` draws from ``default_rng([seed, i])``, so a trial's
configuration does not depend on the others) and ``tpe`` (Optuna's TPE sampler, seeded, when Optuna is
installed; like Optuna's default it draws its first 10 trials at random).

Writes into ``DIR``: ``search.json`` (settings, every trial, the pick; rewritten after each trial, so an
interrupted search continues where it stopped when run again with the same settings, the trial it stopped in from its
last checkpoint (a quarter of the budget apart); run again with a larger
``--trials`` it adds trials, with a smaller one it sets the later finished trials aside in ``search.json``, to be
reused, not trained again, if it grows again), ``trials.csv`` and
``trials.md`` (the table) and ``best.toml`` (the picked settings, for ``interestgym train --config``).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from interestgym.errors import ArtifactError, InterestGymError, Interrupted
from interestgym.scale.ray_backend import ray_option

SEARCH_FILE = "search.json"
TABLE_CSV = "trials.csv"
TABLE_MD = "trials.md"
BEST_TOML = "best.toml"
SAMPLERS = ("random", "tpe")
PICKS = ("beats-base", "best")
#: The search's family-wise error rate for ``beats-base``: all trials' comparisons with the base together.
FAMILY_ALPHA = 0.05
#: A trial's per-user validation values of its selected model (users, values), for the paired test against the base.
VALID_FILE = "search_valid.npz"


@dataclass(frozen=True)
class Param:
    """One searched setting: ``kind`` is ``log`` (log-uniform in [low, high]), ``float`` (uniform) or
    ``choice`` (one of ``choices``, each equally likely). Values are written as a config file writes them
    (``net_arch`` as ``"64,64"``, ``window`` 0 = whole histories) and read through the same coercion."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    def draw(self, rng: np.random.Generator) -> Any:
        if self.kind == "log":
            return _round(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        if self.kind == "float":
            return _round(rng.uniform(self.low, self.high))
        return self.choices[int(rng.integers(len(self.choices)))]

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.choices
        return self.low <= value <= self.high


def _round(x: float) -> float:
    return float(f"{x:.3g}")


#: The default search space: the PPO settings issue 12 names (learning rate, network size, change
#: penalty, window, gamma, initial log-std) plus PPO's clip range and epochs.
SPACE: tuple[Param, ...] = (
    Param("learning_rate", "log", 1e-4, 3e-3),
    Param("net_arch", "choice", choices=("32,32", "64,64", "128,128", "256,256")),
    Param("gamma", "choice", choices=(0.5, 0.8, 0.9, 0.95, 0.99)),
    Param("change_penalty", "choice", choices=(0.0, 0.01, 0.03, 0.1)),
    Param("window", "choice", choices=(0, 10, 20, 50)),
    Param("log_std_init", "float", -2.0, -0.5),
    Param("clip_range", "choice", choices=(0.1, 0.2, 0.3)),
    Param("n_epochs", "choice", choices=(5, 10, 20)),
)
SPACE_NAMES = tuple(p.name for p in SPACE)

#: Settings a search fixes for its trials (so they are not taken from the base into best.toml).
TRIAL_SETTINGS = ("run_dir", "timesteps", "eval_every", "checkpoint_every", "progress_bar", "tuned_baselines")


def select_space(names: Sequence[str] | None) -> tuple[Param, ...]:
    """The searched parameters: all of :data:`SPACE`, or those named (in SPACE's order)."""
    if not names:
        return SPACE
    unknown = [n for n in names if n not in SPACE_NAMES]
    if unknown:
        raise InterestGymError(f"--params {','.join(names)}: unknown {', '.join(map(repr, unknown))}; expected names from "
                               f"{', '.join(SPACE_NAMES)}")
    return tuple(p for p in SPACE if p.name in names)


# ------------------------------------------------------------------------------------- samplers
def random_params(space: Sequence[Param], seed: int, trial: int) -> dict[str, Any]:
    """Trial ``trial``'s draw of the seeded random sampler (independent of every other trial's)."""
    rng = np.random.default_rng([seed, trial])
    return {p.name: p.draw(rng) for p in space}


class RandomSampler:
    def __init__(self, space: Sequence[Param], seed: int):
        self.space, self.seed = tuple(space), seed

    def ask(self, trial: int, base: dict[str, Any]) -> dict[str, Any]:
        return dict(base) if trial == 0 else random_params(self.space, self.seed, trial)

    def tell(self, trial: int, params: dict[str, Any], score: float) -> None:
        pass


class TpeSampler:
    """Optuna's TPE sampler through its ask / tell interface; trial 0 is the base configuration."""

    def __init__(self, space: Sequence[Param], seed: int):
        try:
            import optuna
        except ImportError:
            raise InterestGymError("--sampler tpe needs Optuna (pip install optuna); or use --sampler random") from None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.space = tuple(space)
        self.study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        self.open: dict[int, Any] = {}

    def _distributions(self) -> dict[str, Any]:
        d = self.optuna.distributions
        return {p.name: (d.FloatDistribution(p.low, p.high, log=p.kind == "log") if p.kind != "choice"
                         else d.CategoricalDistribution(list(p.choices))) for p in self.space}

    def ask(self, trial: int, base: dict[str, Any]) -> dict[str, Any]:
        if trial == 0:
            # the base may lie outside the space (a --config value): enqueue only what fits
            self.study.enqueue_trial({k: v for k, v in base.items() if _param(self.space, k).contains(v)})
        t = self.study.ask(self._distributions())
        self.open[trial] = t
        params = {p.name: (t.params[p.name] if p.kind == "choice" else _round(t.params[p.name])) for p in self.space}
        return dict(base) if trial == 0 else params

    def tell(self, trial: int, params: dict[str, Any], score: float) -> None:
        t = self.open.pop(trial)
        if math.isfinite(score):
            self.study.tell(t, score)
        else:
            self.study.tell(t, state=self.optuna.trial.TrialState.FAIL)


def _param(space: Sequence[Param], name: str) -> Param:
    return next(p for p in space if p.name == name)


def make_sampler(kind: str, space: Sequence[Param], seed: int):
    if kind == "random":
        return RandomSampler(space, seed)
    if kind == "tpe":
        return TpeSampler(space, seed)
    raise InterestGymError(f"--sampler {kind!r}: expected one of {', '.join(SAMPLERS)}")


# --------------------------------------------------------------------------------------- search
def base_values(base: dict[str, Any], space: Sequence[Param]) -> dict[str, Any]:
    """The base configuration's value of every searched parameter, as a config file writes it."""
    from interestgym.agents.config import TrainConfig

    config = TrainConfig(**{"dataset": "", "run_dir": "", **base})
    out = {}
    for p in space:
        value = getattr(config, p.name)
        if p.name == "net_arch":
            value = ",".join(map(str, value))
        elif p.name == "window" and value is None:
            value = 0
        out[p.name] = value
    return out


def _check_space_fits(space: Sequence[Param], base: Any) -> None:
    """Refuse a space whose draws the base configuration would refuse in every trial: the residual form's settings
    under ``policy_form = absolute``, windows longer than the base's ``max_events``."""
    from interestgym.agents.config import RESIDUAL_ONLY

    names = [p.name for p in space]
    if base.policy_form != "residual" and (clash := [n for n in names if n in RESIDUAL_ONLY]):
        rest = [n for n in names if n not in RESIDUAL_ONLY]
        raise InterestGymError(f"--params {','.join(clash)} with policy_form {base.policy_form}: they apply to the residual form "
                               f"only; expected --params without them" + (f" (e.g. --params {','.join(rest)})" if rest else ""))
    window = next((p for p in space if p.name == "window"), None)
    if window is not None and base.max_events is not None and max(window.choices) > base.max_events:
        raise InterestGymError(f"--params window (choices {', '.join(map(str, window.choices))}) with max_events "
                               f"{base.max_events}: a longer window would be cut short in every trial that draws it; expected "
                               "--params without window, or max_events >= its largest choice")


def trial_eval_every(budget_steps: int) -> int:
    """A trial's validation cadence: four validations in its budget (its model is the best of them)."""
    return max(1, budget_steps // 4)


def trial_config(base: dict[str, Any], params: dict[str, Any], *, run_dir: Path, budget_steps: int,
                 tuned_baselines: str | None, progress: bool = False):
    """The TrainConfig of one trial: the base settings, the trial's parameters, the budget (``progress``: the
    trial's training shows its progress bar, or log lines when the output is not a terminal)."""
    from interestgym.agents.config import TrainConfig, coerce_setting

    values = dict(base)
    for name, value in params.items():
        values[name] = coerce_setting(name, value, f"search parameter {name}")
    # a checkpoint at each validation: an interrupted search continues the trial it stopped in
    values.update(run_dir=str(run_dir), timesteps=budget_steps, progress_bar=progress, tuned_baselines=tuned_baselines,
                  eval_every=trial_eval_every(budget_steps), checkpoint_every=trial_eval_every(budget_steps))
    return TrainConfig(**values)


def data_identity(dataset: str, embeddings: str | None) -> dict[str, Any]:
    """What the trials learnt from, beyond the dataset's path: the tables' sha256 (as `prepare` recorded them) and the
    vectors' (as `encode` did). A dataset prepared or encoded again at the same path is another search's data."""
    from interestgym.encoders.pipeline import embedding_meta

    from interestgym.data.dataset import Dataset

    ds = Dataset.open(dataset)
    name = ds.resolve_embeddings(embeddings)
    meta = embedding_meta(ds.embeddings_dir / f"{name}.json") or {}
    return {"tables_sha256": ds.manifest.get("tables_sha256"), "embeddings": name, "vectors_sha256": meta.get("matrix_sha256")}


def _save_valid(run_dir: Path, users: Any, values: Any) -> None:
    """A trial's per-user validation values, written whole or not at all."""
    from interestgym.io import atomic_path

    with atomic_path(run_dir / VALID_FILE) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, users=np.asarray(users, dtype=str), values=np.asarray(values, dtype=np.float64))


def _load_valid(run_dir: Path, echo: Callable[[str], None]) -> tuple[np.ndarray, np.ndarray] | None:
    """A trial's per-user validation values; None when the file is missing or damaged (said: it is replayed again)."""
    path = run_dir / VALID_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            users, values = z["users"], z["values"]
        if users.shape != values.shape or users.ndim != 1:
            raise ValueError(f"users {users.shape} and values {values.shape}; expected two equal 1-d arrays")
        return users, values
    except (OSError, ValueError, KeyError, EOFError) as exc:
        echo(f"note: {path}: damaged ({str(exc)[:80]}); replaying the trial's model on the validation users again")
        return None


def trial_score(run_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
    """What a finished trial is ranked by: its selected model's validation score (all validation users,
    from ``shipped.json``) and its paired gain over the reference; without a reference rule the best
    periodic validation value, which :func:`run_search` replaces by the mean over every validation user."""
    from interestgym.agents.run_folder import SHIPPED_FILE, read_json_or_none

    shipped = read_json_or_none(run_dir / SHIPPED_FILE) or {}
    valid = shipped.get("validation")
    if valid:
        diff = valid["diff"]
        return {"score": float(valid["learned"]), "rule": float(valid["rule"]), "diff": float(diff["mean"]),
                "diff_lo": float(diff["lo"]), "diff_hi": float(diff["hi"]), "valid_users": int(valid["users"]),
                "ships": shipped.get("policy"), "reference": shipped.get("rule", {}).get("name")}
    best = result.get("best_value")
    return {"score": float(best) if best is not None else float("nan"), "rule": None, "diff": None, "diff_lo": None,
            "diff_hi": None, "valid_users": None, "ships": shipped.get("policy"), "reference": None}


def replay_valid(config: Any, run_dir: Path, ray: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-user validation values (reward metric) of the model a trial's run selects: the same replay as
    the run's shipping decision, so their mean is the trial's score (``ray``: sharded on that cluster, the same values)."""
    from interestgym.agents.run_folder import best_or_final, load_run_policy

    from interestgym.core.stats import per_user_means
    from interestgym.scale.ray_backend import scaled

    data = config.replay_data("valid")
    policy = load_run_policy(run_dir, best_or_final(run_dir), device=config.device)
    res = scaled(ray).evaluate_policy(data, policy, metric=config.reward, record_features=False, progress=False)
    return per_user_means(res.points["user_id"].to_numpy(), res.points[config.reward].to_numpy())


def pick_trial(records: list[dict[str, Any]], pick: str) -> int:
    """``best``: the highest score (the earlier of equal ones); ``beats-base``: the highest score among the
    trials whose paired gain over trial 0 has a family-wise CI (``vs_base_family``: see the module docstring)
    with its lower end above 0, else trial 0."""
    scores = [r["score"] if math.isfinite(r["score"]) else -math.inf for r in records]
    if pick == "best":
        return int(np.argmax(scores))
    proven = [i for i, r in enumerate(records) if i > 0 and r.get("vs_base_family") is not None and r["vs_base_family"]["lo"] > 0]
    return max(proven, key=lambda i: (scores[i], -i)) if proven else 0


def run_search(dataset: str | None, out_dir: str | Path, *, trials: int, budget_steps: int, sampler: str = "random",
               sampler_seed: int = 0, params: Sequence[str] | None = None, base: dict[str, Any] | None = None,
               tuned_baselines: str | None = None, pick: str = "beats-base", echo: Callable[[str], None] = print,
               train: Callable[..., dict[str, Any]] | None = None,
               replay: Callable[[Any, Path], tuple[np.ndarray, np.ndarray]] = replay_valid, ray: str | None = None,
               sources: dict[str, str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Run (or continue) a search; returns the ``search.json`` document.

    :param progress: each trial's training shows its progress (``search --progress``, the command's default); not
        part of the search's settings.
    :param base: TrainConfig settings every trial starts from (e.g. a ``--config`` file's).
    :param sources: where settings of ``base`` came from (a ``--config`` file, an option), for its errors' messages.
    :param pick: ``beats-base`` or ``best`` (see the module's docstring).
    :param ray: a Ray cluster for the baselines' tuning (trial 0) and every trial's validation replay, sharded by
        user with the same numbers as one process (PPO trains here); not part of the search's settings. It reaches
        the default ``train`` and ``replay``; a caller passing its own passes the cluster to them itself.
    :param train: the training function (``train_run``); a parameter so that tests can watch it.
    :param replay: per-user validation values of a finished trial (:func:`replay_valid`); likewise.
    """
    from interestgym.agents.config import TrainConfig, validate_given
    from interestgym.agents.run_checkpoints import has_checkpoint
    from interestgym.agents.run_folder import refuse_inside_dataset

    from interestgym.core.stats import align_users, paired_bootstrap_diff
    from interestgym.io import write_json_atomic

    if trials < 1:
        raise InterestGymError(f"--trials {trials}: expected an integer >= 1")
    if pick not in PICKS:
        raise InterestGymError(f"--pick {pick!r}: expected one of {', '.join(PICKS)}")
    if budget_steps < 1:
        raise InterestGymError(f"--budget-steps {budget_steps}: expected a positive number of steps")
    if not isinstance(sampler_seed, int) or not 0 <= sampler_seed < 2**32:
        raise InterestGymError(f"--sampler-seed {sampler_seed!r}: expected an integer in [0, 2**32 - 1]")
    if train is None:
        from interestgym.agents.train import train_run

        train = functools.partial(train_run, ray=ray)
    if ray and replay is replay_valid:
        replay = functools.partial(replay_valid, ray=ray)
    base = dict(base or {})
    if dataset is not None:
        base["dataset"] = str(dataset)
    if not base.get("dataset"):
        raise InterestGymError("DATASET: missing; give it on the command line or as `dataset` in --config")
    base["dataset"] = str(Path(base["dataset"]).resolve())
    # settings each trial sets itself: said when the base configuration gave them (timesteps goes on into best.toml)
    replaced = {name: base.pop(name) for name in TRIAL_SETTINGS if name in base}
    shown = {k: v for k, v in replaced.items() if k != "progress_bar"}
    if shown:
        echo(f"note: {', '.join(f'{k} = {v!r}' for k, v in shown.items())} of the base configuration: each trial sets these "
             "itself (--budget-steps, a validation every quarter of it, its own folder, trial 0's tuning)"
             + ("; best.toml keeps your timesteps" if "timesteps" in shown else ""))
    # check the base configuration once, before any training
    checked = TrainConfig(**{**base, "run_dir": str(out_dir), "timesteps": budget_steps})
    validate_given(checked, sources or {})
    rollout = checked.n_envs * checked.n_steps
    if budget_steps < rollout:
        echo(f"note: --budget-steps {budget_steps} is less than one PPO rollout (n_envs x n_steps = {rollout:,}): each trial "
             f"trains one rollout, {rollout:,} steps")
    space = select_space(params)
    _check_space_fits(space, checked)
    out_dir = Path(out_dir)
    refuse_inside_dataset(out_dir, "--run-dir", "a folder for the search")
    for record, what in (("config.json", "a training run"), ("sequence.json", "a tracker run")):
        if (out_dir / record).is_file():
            raise InterestGymError(f"--run-dir {out_dir}: holds {what} ({record} found); expected a new folder for the search "
                                   "(or a search's own, to continue it)")
    settings = {"dataset": base["dataset"], "trials": trials, "budget_steps": budget_steps, "sampler": sampler,
                "sampler_seed": sampler_seed, "params": [p.name for p in space],
                "space": [{"name": p.name, "kind": p.kind, **({"choices": list(p.choices)} if p.kind == "choice" else
                                                               {"low": p.low, "high": p.high})} for p in space],
                "base": {k: v for k, v in base.items()},
                "tuned_baselines": str(Path(tuned_baselines).resolve()) if tuned_baselines else None,
                "selection": "validation users only (the trial's selected model replayed on every validation user); "
                             "the test split is never opened"}
    settings["data"] = data_identity(base["dataset"], base.get("embeddings"))
    doc_path = out_dir / SEARCH_FILE
    done: dict[int, dict[str, Any]] = {}
    if doc_path.is_file():
        try:
            previous = json.loads(doc_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            previous = f"{exc}"
        if not isinstance(previous, dict):
            why = previous if isinstance(previous, str) else f"found {type(previous).__name__}, not an object"
            raise InterestGymError(f"{doc_path}: cannot be read ({why}); expected the search's record as JSON: remove it to "
                                   "start this search again (its trials are trained again), or choose another --run-dir")
        old = {k: v for k, v in previous.get("settings", {}).items() if k != "trials"}
        if "data" not in old:  # a search recorded before the data's identity was: judged by the dataset path alone
            old["data"] = settings["data"]
        if old != {k: v for k, v in settings.items() if k != "trials"}:
            differ = sorted(k for k in set(old) | set(settings) if k != "trials" and old.get(k) != settings.get(k))

            def difference(key: str) -> str:
                was, now = old.get(key), settings.get(key)
                if isinstance(was, dict) and isinstance(now, dict):  # the base settings: the keys that differ
                    keys = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
                    return f"{key}: " + ", ".join(f"{k} {now.get(k)!r} (the folder's: {was.get(k)!r})" for k in keys)
                return f"{key} {now!r} (the folder's: {was!r})"

            raise InterestGymError(f"{doc_path}: a search with other settings is in this folder ({'; '.join(map(difference, differ))}); "
                                   "run it again with its own settings to continue it, or choose another --run-dir")
        done = {int(t["trial"]): t for t in previous.get("trials", []) + previous.get("set_aside", [])
                if t.get("status") == "done"}
    # finished trials past --trials (a search run again with fewer): kept in the record, reused if it grows again
    set_aside = [done[k] for k in sorted(done) if k >= trials]
    if set_aside:
        echo(f"note: {len(set_aside)} finished trial(s) of this folder are past --trials {trials} (trial "
             f"{', '.join(str(t['trial']) for t in set_aside)}): left out of this search's table and pick, kept in "
             f"{SEARCH_FILE} and reused if --trials grows again")
    out_dir.mkdir(parents=True, exist_ok=True)

    smp = make_sampler(sampler, space, sampler_seed)
    start_values = base_values(base, space)
    records: list[dict[str, Any]] = []
    base_valid: tuple[np.ndarray, np.ndarray] | None = None
    gains: list[tuple[np.ndarray, np.ndarray]] = []  # each later trial's (ours, the base's) per-user values
    shared = settings["tuned_baselines"]
    for i in range(trials):
        params_i = smp.ask(i, start_values)
        run_dir = out_dir / f"trial-{i:03d}"
        if i in done and done[i]["params"] == params_i:
            record = done[i]
            echo(f"trial {i}: reusing {run_dir} (score {record['score']:.4f})")
        else:
            config = trial_config(base, params_i, run_dir=run_dir, budget_steps=budget_steps, tuned_baselines=shared,
                                  progress=progress)
            # left by an interrupted search (its record was never written): its training continues from its last
            # checkpoint (the same model as a trial never stopped), or starts again where it wrote none
            resume = run_dir.exists() and (run_dir / "config.json").is_file() and has_checkpoint(run_dir)
            if run_dir.exists() and not resume:
                echo(f"trial {i}: {run_dir} is from an unfinished trial that wrote no checkpoint; training it again")
                shutil.rmtree(run_dir)
            echo(f"trial {i} ({i + 1} of {trials}): {_describe(params_i)}, "
                 + (f"resuming its interrupted training in {run_dir}" if resume else f"training {budget_steps:,} steps in {run_dir}")
                 + (" (tuning the baselines on validation users first)" if i == 0 and shared is None and not resume else ""))
            t0 = time.perf_counter()
            result = None
            if resume:
                try:
                    result = train(config, resume=True)
                except ArtifactError as exc:  # no intact checkpoint after all
                    echo(f"trial {i}: cannot resume {run_dir} ({exc}); training it again")
                    shutil.rmtree(run_dir)
            if result is None:
                result = train(config)
            users, values = replay(config, run_dir)
            _save_valid(run_dir, users, values)
            record = {"trial": i, "status": "done", "params": params_i, "run_dir": str(run_dir),
                      **trial_score(run_dir, result), "best_step": result.get("best_step"),
                      "seconds": round(time.perf_counter() - t0, 1)}
            if record["diff"] is None:  # no reference rule: the same replay on every validation user scores it
                record["score"] = float(np.nanmean(values))
            echo(f"trial {i}: {_describe(params_i)} -> valid {record['score']:.4f}"
                 + (f" ({record['diff']:+.4f} vs {record['reference']})" if record["diff"] is not None else "")
                 + f", {record['seconds']:.0f} s")
        valid_i = _load_valid(run_dir, echo)
        if valid_i is None:  # a trial finished by a search without this file, or a damaged one: replayed again
            users, values = replay(trial_config(base, params_i, run_dir=run_dir, budget_steps=budget_steps,
                                                tuned_baselines=shared), run_dir)
            _save_valid(run_dir, users, values)
            valid_i = (np.asarray(users, dtype=str), np.asarray(values, dtype=np.float64))
        if i == 0:
            base_valid = valid_i
        _common, ours, theirs = align_users(valid_i[0], valid_i[1], base_valid[0], base_valid[1])
        record["vs_base"] = None if i == 0 else paired_bootstrap_diff(ours, theirs, seed=sampler_seed).as_dict()
        if i > 0:
            gains.append((ours, theirs))
            family_confidence = 1.0 - FAMILY_ALPHA / len(gains)  # every trial's, at the level of this many comparisons
            for r, (a, b) in zip(records[1:] + [record], gains):
                r["vs_base_family"] = {**paired_bootstrap_diff(a, b, seed=sampler_seed, confidence=family_confidence).as_dict(),
                                       "confidence": family_confidence}
        if shared is None and (run_dir / "baselines.json").is_file():
            shared = str((run_dir / "baselines.json").resolve())  # every later trial reuses trial 0's tuning
        smp.tell(i, params_i, record["score"])
        records.append(record)
        doc = _document(settings, records, shared, pick, set_aside)
        write_json_atomic(doc_path, doc)
    write_outputs(out_dir, doc, base, {"timesteps": replaced["timesteps"]} if "timesteps" in replaced else None)
    return doc


def step_zero_note(doc: dict[str, Any]) -> str | None:
    """A note when every trial selected its step-0 agent: then no setting was told from another."""
    if len(doc["trials"]) > 1 and all(t.get("best_step") == 0 for t in doc["trials"]):
        return ("note: every trial's selected model is its step-0 agent (a residual agent starts as the reference rule), so no "
                "trial learnt anything that beat it on validation and the scores cannot tell the settings apart: raise "
                "--budget-steps")
    return None


def _describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _document(settings: dict[str, Any], records: list[dict[str, Any]], shared: str | None, pick: str,
              set_aside: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    doc = {"settings": settings, "tuned_baselines_used": shared, "trials": records, "pick": pick,
           "best_trial": pick_trial(records, pick)}
    if set_aside:  # finished trials past --trials: not in this search, kept for a later, larger one
        doc["set_aside"] = set_aside
    return doc


# --------------------------------------------------------------------------------------- outputs
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string


def best_toml(doc: dict[str, Any], base: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    """``best.toml``: the base settings and the picked trial's parameters, as ``train --config`` reads them
    (``extra``: base settings the trials replaced, kept for the real run: ``timesteps``)."""
    from interestgym.agents.config import TrainConfig

    best = doc["trials"][doc["best_trial"]]
    settings = doc["settings"]
    defaults = TrainConfig(dataset="", run_dir="")
    lines = [(f"# interestgym search {settings['sampler']} (seed {settings['sampler_seed']}): trial {best['trial']} of "
              f"{len(doc['trials'])}, {settings['budget_steps']} steps per trial"),
             f"# validation score {best['score']:.4f}"
             + (f", {best['diff']:+.4f} over {best['reference']} [{best['diff_lo']:+.4f}, {best['diff_hi']:+.4f}] "
                f"on {best['valid_users']} validation users"
                + (f" (picked from {len(doc['trials'])} trials: optimistic)" if best["trial"] else "")
                if best["diff"] is not None else ""),
             ("# the base configuration (no trial's paired validation gain over it had a family-wise CI above 0)" if best["trial"] == 0
              and doc.get("pick") == "beats-base" else
              f"# gain over the base (trial 0) on validation users: {best['vs_base']['mean']:+.4f} "
              f"[{best['vs_base']['lo']:+.4f}, {best['vs_base']['hi']:+.4f}] (pick: {doc.get('pick')})" if best.get("vs_base")
              else f"# pick: {doc.get('pick')}"),
             "# picked on validation users only; the test split was never opened. Train and evaluate it with:",
             "#   interestgym train --config best.toml --run-dir RUN && interestgym evaluate RUN",
             "# (timesteps: the base configuration's, else the TrainConfig default, unless given on the command line)",
             # the trial's own length and validation cadence pick its model: a rerun of the trial needs both
             (f"# to rerun the picked trial itself (its length, and its model picked from validations every "
              f"{trial_eval_every(settings['budget_steps']):,} steps): add --timesteps {settings['budget_steps']} "
              f"--eval-every {trial_eval_every(settings['budget_steps'])} --checkpoint-every 0")]
    values: dict[str, Any] = {"dataset": settings["dataset"]}
    if doc.get("tuned_baselines_used"):  # ties the file to this dataset: a hint, not a setting (tuning again gives the same)
        lines.append(f"# to reuse the search's tuning of this dataset's baselines (not another's): tuned_baselines = "
                     f"{_toml_value(doc['tuned_baselines_used'])}")
    if "timesteps" in (extra or {}):  # the base configuration's own, which the trials' budget stood in for
        values["timesteps"] = extra["timesteps"]  # type: ignore[index]
    for name, value in base.items():
        if name in ("dataset", *TRIAL_SETTINGS):
            continue
        if value is None:
            value = {"reward_baseline": "none", "window": 0, "tune_users": 0, "eval_users": 0}.get(name)
            if value is None:
                continue
        values[name] = value
    values.update(best["params"])
    for name in list(values):
        if name in SPACE_NAMES and name not in best["params"] and values[name] == getattr(defaults, name):
            del values[name]
    return "\n".join(lines + [f"{k} = {_toml_value(v)}" for k, v in values.items()]) + "\n"


def table_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for r in doc["trials"]:
        row = {"trial": r["trial"], **{f"{k}": v for k, v in r["params"].items()}, "valid_score": r["score"],
               "rule": r["rule"], "gain": r["diff"], "gain_lo": r["diff_lo"], "gain_hi": r["diff_hi"],
               **{f"vs_base{k}": (r.get("vs_base") or {}).get(m) for k, m in (("", "mean"), ("_lo", "lo"), ("_hi", "hi"))},
               **{f"vs_base_family{k}": (r.get("vs_base_family") or {}).get(m) for k, m in (("_lo", "lo"), ("_hi", "hi"))},
               "best_step": r["best_step"], "ships": r["ships"], "seconds": r["seconds"]}
        rows.append(row)
    return rows


def markdown_table(doc: dict[str, Any]) -> str:
    rows = table_rows(doc)
    names = doc["settings"]["params"]
    best = doc["best_trial"]

    def num(x: Any, sign: bool = False) -> str:
        return "-" if x is None else (f"{x:+.4f}" if sign else f"{x:.4f}")

    head = ["trial", *names, "valid score", "gain over rule [95% CI]", "gain over base [95% CI]", "[family-wise CI]", "best step",
            "ships", "s"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        gain = "-" if row["gain"] is None else f"{row['gain']:+.4f} [{row['gain_lo']:+.4f}, {row['gain_hi']:+.4f}]"
        mark = " (picked)" if row["trial"] == best else (" (base)" if row["trial"] == 0 else "")
        vs_base = "-" if row["vs_base"] is None else f"{row['vs_base']:+.4f} [{row['vs_base_lo']:+.4f}, {row['vs_base_hi']:+.4f}]"
        family = "-" if row["vs_base_family_lo"] is None else f"[{row['vs_base_family_lo']:+.4f}, {row['vs_base_family_hi']:+.4f}]"
        cells = [f"{row['trial']}{mark}", *[str(row[n]) for n in names], num(row["valid_score"]), gain, vs_base, family,
                 str(row["best_step"]), str(row["ships"]), f"{row['seconds']:.0f}"]
        out.append("| " + " | ".join(cells) + " |")
    s = doc["settings"]
    m = len(rows) - 1
    rule = ("the highest validation score" if doc.get("pick") != "beats-base" else
            f"the best trial whose paired gain over the base has its family-wise CI above 0 (level 1 - {FAMILY_ALPHA:g}/{m}: "
            f"Bonferroni over the {m} trials compared with the base), else the base" if m else "the base (no other trial ran)")
    return (f"# Search: {len(rows)} trials x a budget of {s['budget_steps']:,} steps (PPO trains whole rollouts: a trial may "
            f"take a few more), sampler {s['sampler']} (seed {s['sampler_seed']})\n\n"
            f"Data: {s['dataset']}. Scored and picked on validation users only; test users never replayed. "
            f"Pick: {rule}.\n\n"
            + "\n".join(out) + "\n")


def write_outputs(out_dir: Path, doc: dict[str, Any], base: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    from interestgym.io import write_text_atomic

    rows = table_rows(doc)
    buf = io.StringIO()
    fields = list(rows[0])
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out_dir / TABLE_CSV, buf.getvalue())
    write_text_atomic(out_dir / TABLE_MD, markdown_table(doc))
    write_text_atomic(out_dir / BEST_TOML, best_toml(doc, base, extra))


# ------------------------------------------------------------------------------------------- CLI
@click.command("search")
@click.argument("dataset", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder of the search: trial-NNN/ runs, search.json, trials.csv / .md, best.toml.")
@click.option("--trials", type=int, default=12, show_default=True, help="Configurations to train (trial 0 = the base configuration).")
@click.option("--budget-steps", type=int, default=100_000, show_default=True, help="Env steps of each trial's training.")
@click.option("--sampler", type=click.Choice(SAMPLERS), default="random", show_default=True,
              help="'random': seeded random search (numpy); 'tpe': Optuna's TPE (needs `pip install optuna`).")
@click.option("--sampler-seed", type=int, default=0, show_default=True, help="Seed of the sampler.")
@click.option("--params", default=None, help=f"Comma-separated settings to search (default: all of {','.join(SPACE_NAMES)}).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A train --config file of base settings every trial starts from (seed, reward, protocol, ...).")
@click.option("--pick", type=click.Choice(PICKS), default="beats-base", show_default=True,
              help="'beats-base': the best trial whose paired validation gain over trial 0 (the base) has a CI above 0 at "
                   "level 1 - 0.05/m for m trials compared with it (Bonferroni), else the base; 'best': the highest validation score.")
@click.option("--seed", type=int, default=None, help="Seed of PPO and of the env in every trial (default: the base's, 0).")
@click.option("--embeddings", default=None, help="Embedding name in DATASET (default: the base's, else the dataset's only one).")
@click.option("--tuned-baselines", type=click.Path(), default=None,
              help="Reuse a baselines.json, or a run folder's (same metric and protocol); otherwise trial 0 tunes them and every "
                   "later trial reuses its.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Each trial's training progress (a bar on a terminal, log lines otherwise).")
@ray_option
def search(dataset: Path | None, run_dir: Path, trials: int, budget_steps: int, sampler: str, sampler_seed: int,
           params: str | None, config_file: Path | None, pick: str, seed: int | None, embeddings: str | None,
           tuned_baselines: str | None, progress: bool, ray: str | None) -> None:
    """Budgeted hyper-parameter search of PPO settings, scored and picked on VALIDATION users only.

    \b
    Trains --trials short runs (--budget-steps each) in --run-dir/trial-NNN, each with settings drawn
    by a seeded sampler (learning rate, network size, gamma, change penalty, window, initial log-std,
    clip range, epochs), scores each by its selected model's validation metric, and writes the table
    (trials.md, trials.csv) and the best settings as best.toml. Running it again continues an
    interrupted search. Example:
      interestgym search data/syn --run-dir runs/search --trials 12 --budget-steps 100000
      interestgym train --config runs/search/best.toml --run-dir runs/syn-best
      interestgym evaluate runs/syn-best
    With --ray, trial 0's tuning of the baselines and every trial's validation replay run sharded on a
    Ray cluster (the same numbers as one process); PPO trains in this process.
    """
    from interestgym.agents.config import read_config_file

    base = read_config_file(config_file) if config_file is not None else {}
    sources = dict.fromkeys(base, str(config_file))
    if seed is not None:
        base["seed"], sources["seed"] = seed, "--seed"
    if embeddings is not None:
        base["embeddings"], sources["embeddings"] = embeddings, "--embeddings"
    names = [n.strip() for n in params.split(",") if n.strip()] if params else None
    if tuned_baselines:
        from interestgym.agents.run_folder import baselines_file

        tuned_baselines = str(baselines_file(tuned_baselines))
    try:
        doc = run_search(str(dataset) if dataset is not None else None, run_dir, trials=trials, budget_steps=budget_steps,
                         sampler=sampler, sampler_seed=sampler_seed, params=names, base=base,
                         tuned_baselines=tuned_baselines, pick=pick, echo=lambda line: click.echo(line, err=True), ray=ray,
                         sources=sources, progress=progress)
    except KeyboardInterrupt:
        click.echo(f"interrupted: the finished trials are in {run_dir / SEARCH_FILE}; the same command continues the search "
                   "(the unfinished trial from its last checkpoint, a quarter of its budget apart)", err=True)
        raise Interrupted from None
    click.echo(markdown_table(doc))
    if (note := step_zero_note(doc)) is not None:
        click.echo(note, err=True)
    best = doc["trials"][doc["best_trial"]]
    click.echo(f"picked trial {best['trial']} on validation users: {_describe(best['params'])}")
    click.echo(f"settings: {run_dir / BEST_TOML}  (interestgym train --config {run_dir / BEST_TOML} --run-dir RUN)")
    sys.stdout.flush()
