"""``interestgym train``.

Heavy imports (torch, stable-baselines3) happen inside the commands, so ``--help`` stays instant.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from interestgym.core.metrics import METRIC_NAMES_TEXT
from interestgym.errors import InterestGymError, Interrupted
from interestgym.scale.ray_backend import ray_option

if TYPE_CHECKING:
    from interestgym.agents.config import TrainConfig


def _defaults():
    from interestgym.agents.config import TrainConfig

    return TrainConfig(dataset="", run_dir="")


_D = None


def _d(name: str):
    # TrainConfig holds the one copy of every default; the options read it (without importing torch).
    global _D
    if _D is None:
        _D = _defaults()
    return getattr(_D, name)


@click.command("train")
@click.argument("dataset", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="A TOML file (or YAML, with PyYAML installed) of settings, named as the options (or as in the `config` part of RUN/config.json): e.g. `clip_range = 0.1`; paths in it are relative to the file. Options given on the command line win; unknown keys are refused.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Output directory of the run (config, TensorBoard logs, checkpoints, models). Required (here or in --config).")
@click.option("--embeddings", default=None, help="Embedding name in the dataset (default: the only one).")
@click.option("--timesteps", type=int, default=_d("timesteps"), show_default=True, help="Total env steps (decisions) of the run; with --resume, the total to reach. PPO collects whole rollouts (n-envs x n-steps), so it rounds up to the next multiple.")
@click.option("--n-envs", type=int, default=_d("n_envs"), show_default=True, help="Users replayed in lock-step.")
@click.option("--seed", type=int, default=_d("seed"), show_default=True, help="Seed of PPO and of the env's user draws.")
@click.option("--reward", default=_d("reward"), show_default=True, help=f"Reward metric: {METRIC_NAMES_TEXT}.")
@click.option("--reward-baseline", default=_d("reward_baseline"), show_default=True, help="The reference rule: the one a residual agent starts from and learns a change to, the one it must beat to ship, and whose metric at the same scoring points is subtracted from the reward: 'best' (every baseline is tuned on validation users, the best one is used), a baseline name (e.g. context_rule: only that one is tuned), or 'none' for the raw metric.")
@click.option("--tune-users", type=int, default=_d("tune_users"), show_default=True, help="Validation users the baselines are tuned on (a seeded sample of those with a scoring point; 0: all).")
@click.option("--tuned-baselines", type=click.Path(), default=None, help="Reuse a baselines.json, or a run folder's (same metric and protocol, on the same dataset or a copy of its folder), instead of tuning again.")
@click.option("--sequence", type=click.Path(exists=True, file_okay=False), default=None, help="A sequence tracker's run folder (`interestgym train-sequence`, same dataset and embeddings): its standardised score becomes a score term; the best rule mixed with it (weight tuned on validation users) competes as `<rule>+tracker` and, when better, is the reference and the agent scores with the term too.")
@click.option("--tracker-observations/--no-tracker-observations", default=_d("tracker_observations"), show_default=True, help="With --sequence: the agent also observes the tracker (its recent ranking quality for the user, its top-1 probability and entropy), to learn when to trust it.")
@click.option("--category-gain/--no-category-gain", default=_d("category_gain"), show_default=True, help="Residual form, with a reference that scores with the category counts: the agent also sets how much each event adds to its category's count (1 = the rule's, 0 = not counted, up to 2).")
@click.option("--context-lever/--no-context-lever", default=_d("context_lever"), show_default=True, help="Residual form, with a reference that scores with the time-slot profiles: the agent also sets how fast the event's slot profile moves (added to the rule's context rate).")
@click.option("--slot-counts/--no-slot-counts", default=_d("slot_counts"), show_default=True, help="Tune bayesian_category with category counts per time of day too (validation picks their weight, 0 included); --no-slot-counts keeps them out (one row of counts per user instead of five, for catalogues with many categories).")
@click.option("--slot-lever/--no-slot-lever", default=_d("slot_lever"), show_default=True, help="Residual form, with a reference that weighs the category counts per time of day: the agent also scales that weight for the scoring after each decision.")
@click.option("--dtw-observation/--no-dtw-observation", default=_d("dtw_observation"), show_default=True, help="The agent also observes the DTW drift of the user's last 5 decision items from the 5 before (the dtw_refresh rule's signal).")
@click.option("--agent-scoring", type=click.Choice(["reference", "reference-fixed", "plain"]), default=_d("agent_scoring"), show_default=True, help="The agent's fixed score terms: 'reference' = the reference rule's (e.g. its Bayesian category term), with the category counts forgetting by 1 - a_L of the agent's action (so the agent decides when to forget; its a_L starts at 1 - the rule's forgetting); 'reference-fixed' = the rule's terms with its fixed forgetting; 'plain' = none.")
@click.option("--negatives", type=click.Choice(["uniform", "popularity"]), default=_d("negatives"), show_default=True, help="Negative sampling for logs without impressions.")
@click.option("--exclude", type=click.Choice(["auto", "target", "log", "past"]), default=_d("exclude"), show_default=True, help="Negatives leave out: 'target' (the target and that moment's items: honest for logs with repeats), 'log' (the user's whole log: the classic protocol), 'past', or 'auto' (target when training users have repeats).")
@click.option("--n-negatives", type=int, default=_d("n_negatives"), show_default=True, help="Sampled negatives per scoring point (logs without impressions).")
@click.option("--history-negatives", type=int, default=_d("history_negatives"), show_default=True, help="Up to this many of the negatives are drawn from the user's own earlier items (fewer where the user has fewer; logs with repeats, --exclude target): the user's history competes with a repeat target; 0 = all from the catalogue.")
@click.option("--protocol-seed", type=int, default=_d("protocol_seed"), show_default=True, help="Seed of the scoring protocol's sampled negatives (part of the protocol, not of the learner).")
@click.option("--max-events", type=int, default=None, help="Truncate episodes after this many decisions (a user's later decisions are not replayed).")
@click.option("--learning-rate", type=float, default=_d("learning_rate"), show_default=True, help="PPO's Adam learning rate.")
@click.option("--n-steps", type=int, default=_d("n_steps"), show_default=True, help="Steps per env per PPO rollout.")
@click.option("--batch-size", type=int, default=_d("batch_size"), show_default=True, help="PPO minibatch size (at most --n-envs x --n-steps).")
@click.option("--n-epochs", type=int, default=_d("n_epochs"), show_default=True, help="PPO passes over each rollout.")
@click.option("--gamma", type=float, default=_d("gamma"), show_default=True, help="Discount: how much a decision is credited with later rankings (near 0: a bandit).")
@click.option("--gae-lambda", type=float, default=_d("gae_lambda"), show_default=True, help="GAE lambda of PPO's advantages, in [0, 1].")
@click.option("--clip-range", type=float, default=_d("clip_range"), show_default=True, help="PPO's clip range of the policy ratio.")
@click.option("--ent-coef", type=float, default=_d("ent_coef"), show_default=True, help="PPO's entropy bonus (>= 0).")
@click.option("--vf-coef", type=float, default=_d("vf_coef"), show_default=True, help="Weight of the value loss.")
@click.option("--max-grad-norm", type=float, default=_d("max_grad_norm"), show_default=True, help="Gradient clipping norm.")
@click.option("--log-std-init", type=float, default=_d("log_std_init"), show_default=True, help="Initial log standard deviation of the Gaussian policy: how far early actions explore.")
@click.option("--policy-form", type=click.Choice(["residual", "absolute"]), default=_d("policy_form"), show_default=True, help="'residual': the agent changes the reference rule's action (and its category keep factor), starting at exactly the rule; 'absolute': the agent outputs the action itself.")
@click.option("--change-penalty", type=float, default=_d("change_penalty"), show_default=True, help="Residual form: reward minus this times the mean squared change to the rule's action (keeps the agent near the rule unless the ranking pays).")
@click.option("--window", type=int, default=0, show_default=True, help="Residual form: episodes are random windows of this many decisions (the earlier ones replayed with the rule); 0: whole histories.")
@click.option("--ship-threshold", type=float, default=_d("ship_threshold"), show_default=True, help="Ship the learned policy only if the paired 95% CI of its validation gain over the reference has its lower end above this (and it is not proven worse on AUC, MRR or hit@10); else ship the rule.")
@click.option("--init-from-reference/--no-init-from-reference", default=_d("init_from_reference"), show_default=True, help="With --policy-form absolute: start the policy at the reference rule's mean action (the residual form starts at the rule by construction).")
@click.option("--net-arch", default=",".join(map(str, _d("net_arch"))), show_default=True, help="Hidden layer sizes, comma-separated.")
@click.option("--norm-reward/--no-norm-reward", default=_d("norm_reward"), show_default=True, help="Normalise rewards with VecNormalize (observations are always normalised).")
@click.option("--clip-obs", type=float, default=_d("clip_obs"), show_default=True, help="VecNormalize's clip of normalised observations.")
@click.option("--eval-every", type=int, default=_d("eval_every"), show_default=True, help="Validate every N steps (0: at the end only).")
@click.option("--eval-users", type=int, default=_d("eval_users"), show_default=True, help="Validation users for periodic validation (a seeded sample of those with a scoring point; 0: all).")
@click.option("--checkpoint-every", type=int, default=_d("checkpoint_every"), show_default=True, help="Steps between checkpoints that --resume continues from (0: only the one at the end).")
@click.option("--update-threshold", type=float, default=_d("update_threshold"), show_default=True, help="A decision counts as an update (charts/update_rate) when a_L or a_S exceeds this.")
@click.option("--device", default=_d("device"), show_default=True, help="Torch device (cpu is fastest for this MLP).")
@click.option("--torch-threads", type=int, default=_d("torch_threads"), show_default=True, help="Torch CPU threads (1 is fastest for this small MLP).")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its last intact checkpoint (step counter, normalisation and TensorBoard curves continue; it ends with the weights an uninterrupted run ends with). DATASET may be left out: the run's own.")
@click.option("--progress/--no-progress", "progress_bar", default=_d("progress_bar"), show_default=True, help="Progress bar.")
@ray_option
def train(config_file: Path | None, resume: bool, ray: str | None, **options) -> None:
    """Train a PPO profile-update policy on DATASET's training users.

    \b
    Writes into --run-dir: config.json, baselines.json (the tuned baselines), tb/ (TensorBoard:
    `tensorboard --logdir RUN_DIR/tb`), checkpoints/, best/ (best validation metric), final/.
    Every setting can also come from --config FILE (the command line wins).
    Example:
      interestgym prepare synthetic --out data/syn --drift strong
      interestgym encode data/syn --encoder hashing
      interestgym train data/syn --run-dir runs/syn
      interestgym evaluate runs/syn
    """
    from interestgym.agents.config import validate_given
    from interestgym.agents.train import TrainConfig, train_run

    ctx = click.get_current_context()
    given = settings_given(ctx, config_file)
    # the run's own settings, read once: --resume continues on its dataset, to its total, with its options
    saved = _saved_settings(given) if resume else None
    if saved and given.get("dataset", (None, ""))[0] in (None, "") and saved.get("dataset"):
        given["dataset"] = (saved["dataset"], "the run's config.json")
        if not Path(str(saved["dataset"])).is_dir():  # moved since: not "create one with prepare"
            from interestgym.agents.run_folder import missing_dataset

            raise missing_dataset(str(given["run_dir"][0]), saved["dataset"])
    for name, flag in (("dataset", "DATASET"), ("run_dir", "--run-dir")):
        if given.get(name, (None, ""))[0] in (None, ""):
            raise InterestGymError(f"{flag}: missing; give it on the command line or as `{name}` in --config FILE")
    from interestgym.agents.run_folder import baselines_file

    if given.get("tuned_baselines", (None, ""))[0]:  # a run folder stands for its baselines.json
        value, source = given["tuned_baselines"]
        given["tuned_baselines"] = (str(baselines_file(value, source if source.startswith("--") else f"tuned_baselines in {source}")),
                                    source)

    if saved and "timesteps" not in given and saved.get("timesteps"):
        # --resume without --timesteps continues to the run's own total, not to today's default
        given["timesteps"] = (int(saved["timesteps"]), "the run's config.json")
    config = TrainConfig(**{name: value for name, (value, _) in given.items()})
    if saved:
        # first: an option that differs from the run's is the error; then the settings checked are the run's with what
        # was given, what the resumed run trains with (not today's defaults: --n-envs 2 said "--batch-size 512 ...")
        _refuse_changed_options_on_resume(config, given, saved)
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        resumed = TrainConfig(**{**{k: v for k, v in saved.items() if k in known},
                                 **{name: value for name, (value, _) in given.items()}})
        validate_given(resumed, {name: source for name, (_, source) in given.items()})
    else:
        validate_given(config, {name: source for name, (_, source) in given.items()})
    if not saved and config.tuned_baselines:
        if config.reward_baseline:  # (without a reference the file is never read)
            _check_tracker_tuning(Path(config.tuned_baselines), config.sequence)
        # a dataset with logged impressions is replayed on them (protocol auto), where the exposure counts apply
        from interestgym.envs.replay_build import has_impressions, has_varying_values

        _note_older_grids(Path(config.tuned_baselines), Path(config.dataset), config.slot_counts, has_impressions(Path(config.dataset)),
                          has_varying_values(Path(config.dataset)))
    _note_unused_negatives(Path(config.dataset), given)
    try:
        with _terminate_as_interrupt():
            result = train_run(config, resume=resume, ray=ray)
    except KeyboardInterrupt:
        click.echo(_interrupted_note(config), err=True)
        raise Interrupted from None
    _note_idle_levers(Path(config.run_dir), given)
    tuning = f" ({result['tuning_seconds']:.0f} s of it tuning the baselines)" if result.get("tuning_seconds", 0) >= 1 else ""
    this_call = f" ({result['timesteps_this_call']:,} of them now)" if resume else ""
    if not resume and result["num_timesteps"] > config.timesteps:  # PPO collects whole rollouts (steps_to_run)
        this_call = (f" (--timesteps {config.timesteps:,} rounded up to whole rollouts of {config.n_envs} envs x "
                     f"{config.n_steps} steps)")
    if resume and result["timesteps_this_call"] == 0:
        click.echo(f"note: the run was already at step {result['num_timesteps']:,}, at or past --timesteps {config.timesteps:,}: "
                   "nothing was trained; give a larger --timesteps to train further", err=True)
    click.echo(f"trained {result['num_timesteps']:,} steps{this_call} in {result['seconds']:.0f} s{tuning}; "
               f"best validation {result['select_metric']} = {result['best_value']:.4f} at step {result['best_step']:,}")
    shipped = result.get("shipped") or {}
    if shipped:
        what = "its learned model" if shipped.get("policy") == "learned" else f"its reference rule `{(shipped.get('rule') or {}).get('name')}`"
        click.echo(f"the run ships {what}: {shipped.get('reason')}")
    click.echo(f"run directory: {config.run_dir}  (evaluate with: interestgym evaluate {shlex.quote(str(config.run_dir))})")


def _saved_settings(given: dict[str, tuple[object, str]]) -> dict[str, Any] | None:
    """The settings of the run ``--resume`` continues (its ``config.json``), or None when no run folder is given (the
    caller says so). A folder without a run is refused here, before a missing DATASET is: the run is what is missing."""
    from interestgym.agents.train import resumable_run_config

    run_dir = given.get("run_dir", (None, ""))[0]
    if run_dir in (None, ""):
        return None
    return resumable_run_config(Path(str(run_dir)))["config"]


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``timeout``, a batch scheduler, ``docker stop``) ends training as Ctrl-C does: with the line that says
    where the run can resume from. (Only in the main thread, where Python runs signal handlers.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted_note(config: TrainConfig) -> str:
    """What an interrupted `train` left: the last checkpoint to resume from, or nothing to resume."""
    from interestgym.agents.run_folder import (
        CHECKPOINT_DIR,
        CHECKPOINT_STATE,
        CONFIG_FILE,
        read_json_or_none,
    )

    run_dir = Path(config.run_dir)
    again = f"interestgym train {shlex.quote(str(config.dataset))} --run-dir {shlex.quote(str(run_dir))}"
    if not (run_dir / CONFIG_FILE).is_file():  # interrupted while tuning: train removes the unfinished folder
        return "interrupted before training started: nothing to resume; run the same command again (with all its options)"
    state = read_json_or_none(run_dir / CHECKPOINT_DIR / CHECKPOINT_STATE) or {}
    step = state.get("num_timesteps") if isinstance(state, dict) else None
    if not isinstance(step, int):
        every = (f"every {config.checkpoint_every:,} steps" if config.checkpoint_every else "only at the end (--checkpoint-every 0)")
        return (f"interrupted before the first checkpoint ({every}): `{again} --resume` trains the run from step 0, "
                "with its tuned baselines")
    return f"interrupted; the last checkpoint is at step {step:,}: continue with `{again} --resume`"


def settings_given(ctx: click.Context, config_file: Path | None) -> dict[str, tuple[object, str]]:
    """The TrainConfig settings given for this command, each with where it came from: the
    ``--config`` file's, then every option given on the command line over them. Settings given
    nowhere are left out (TrainConfig's default applies)."""
    from click.core import ParameterSource
    from interestgym.agents.config import (
        coerce_setting,
        read_config_file,
        setting_names,
    )

    names = setting_names()
    given: dict[str, tuple[object, str]] = {}
    if config_file is not None:
        given.update({name: (value, f"{config_file}") for name, value in read_config_file(config_file).items()})
    for name, value in ctx.params.items():
        if name not in names or ctx.get_parameter_source(name) in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
            continue
        flag = "DATASET" if name == "dataset" else f"--{name.replace('_', '-')}"
        if name == "progress_bar":
            flag = "--progress"
        if name in ("dataset", "run_dir") and value is not None:
            value = str(value)
        given[name] = (coerce_setting(name, value, flag), flag)
    return given


def _note_unused_negatives(dataset: Path, given: dict[str, tuple[object, str]]) -> None:
    """Say when settings of sampled negatives were given for a dataset of logged impressions (scored on the
    candidates that were shown: nothing is sampled), rather than accept them in silence."""
    from interestgym.envs.replay_build import has_impressions
    from interestgym.envs.replay_data import (
        IGNORED_ON_IMPRESSIONS,
        SAMPLED_NEGATIVES_SETTINGS,
    )

    flags = [source for name, (_, source) in given.items() if name in SAMPLED_NEGATIVES_SETTINGS]
    if flags and has_impressions(dataset):
        click.echo(f"note: {', '.join(sorted(set(flags)))}: {dataset} {IGNORED_ON_IMPRESSIONS}", err=True)


def _check_tracker_tuning(path: Path, sequence: str | None) -> None:
    """Refuse at once a --tuned-baselines file tuned with a tracker for a run without --sequence, or without one for a
    run with it (found before, after the replay data was built: minutes on a large log). Which tracker it was is
    checked with the rest of the protocol when the file is read."""
    import json

    try:
        tracker = (json.loads(path.read_text(encoding="utf-8")).get("protocol") or {}).get("tracker")
    except (OSError, ValueError, AttributeError):
        return  # unreadable or not JSON: the full read says so, naming the file
    if bool(sequence) != bool(tracker):
        raise InterestGymError(f"--tuned-baselines {path}: tuned " + ("without a tracker; this run has --sequence, whose "
                               "rule + tracker mixture must be tuned with it" if sequence else "with a tracker (--sequence); "
                               "this run has none") + ": tune again without --tuned-baselines, or "
                               + ("drop --sequence" if sequence else "give the run the same --sequence"))


def _note_older_grids(path: Path, dataset: Path, slot_counts: bool = True, impressions: bool = True,
                      values_vary: bool = False) -> None:
    """Say when a --tuned-baselines file was tuned over a grid without some of today's parameters: reusing
    it is allowed (and reproduces its runs), but its rules never tried them."""
    import json

    from interestgym.agents.rules import note_grids
    from interestgym.agents.run_folder import dataset_identity
    from interestgym.agents.tuning import grid_params_missing

    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        tuned = saved.get("baselines") or {}
    except (OSError, ValueError, AttributeError):
        return  # the tuning's own reader names what is wrong with the file
    if not isinstance(tuned, dict):
        return  # likewise (another JSON file, such as a run's config.json)
    if saved.get("dataset_identity") not in (None, dataset_identity(dataset)):
        return  # tuned on other data: the tuning's reader refuses it and says so; its grid is beside the point
    grids = note_grids(slot_counts, impressions, values_vary)
    missing = grid_params_missing(tuned, grids)
    if missing:
        what = "; ".join(f"{name} without {', '.join(f'{p} (today: {grids[name][p]})' for p in params)}"
                         for name, params in missing.items())
        click.echo(f"note: {path} was tuned over an older grid: {what}; train without --tuned-baselines to tune them", err=True)


#: A lever switch, the action component it adds, and the reference's state it needs to move anything.
_LEVERS = (("category_gain", "gain_change", "no category counts (beta_cat 0)"),
           ("context_lever", "context_change", "no time-slot profiles (beta_ctx 0)"),
           ("slot_lever", "slot_change", "no category counts per time of day (slot_weight 0)"))


def _note_idle_levers(run_dir: Path, given: dict[str, tuple[object, str]]) -> None:
    """A lever switched on explicitly (command line or --config) that the run's reference gives nothing to
    move is left out of the agent's action: say so, instead of letting the flag pass without a word."""
    from interestgym.agents.run_folder import CONFIG_FILE, read_run_config

    if not (run_dir / CONFIG_FILE).is_file():
        return  # nothing was written (train_run says why, or was replaced, as in tests)
    saved = read_run_config(run_dir)
    names = saved.get("action_space", {}).get("names") or []
    reference = (saved.get("reference") or {}).get("name")
    form = saved.get("action_space", {}).get("form")
    for setting, component, needs in _LEVERS:
        value, source = given.get(setting, (None, ""))
        if value and component not in names:
            why = (f"the reference rule `{reference}` has {needs}" if form == "residual" and reference
                   else "the agent is not residual to a reference rule")
            click.echo(f"note: {source if source.startswith('--') else f'{setting} in {source}'} did nothing: {why}", err=True)


def _refuse_changed_options_on_resume(config, given: dict[str, tuple[object, str]], saved: dict[str, Any]) -> None:
    """--resume trains on with the run's own options (``saved``: its config.json's settings): refuse ones given
    (command line or --config) that differ (they would otherwise be ignored without a word)."""
    from interestgym.agents.config import LEGACY_SETTINGS, resume_conflicts

    run_dir = Path(config.run_dir)
    saved = {**LEGACY_SETTINGS, **saved}  # what an old run did without a setting
    differ = resume_conflicts(given, saved, ("timesteps", "device", "progress_bar"),
                              dataset=config.dataset if "dataset" in given else None)
    if differ:
        raise InterestGymError(f"--resume continues {run_dir} with its own options, but these differ from them: {'; '.join(differ)}; "
                               "drop them (only --timesteps, --device and --progress may change), or train a new --run-dir")
