"""PPO training of the profile-update policy on the replay env: one readable file, top to bottom.

``train_run(config)`` is what ``interestgym train`` runs:

1. resolve the dataset, embeddings and env options (:class:`TrainConfig`: every field documented);
2. tune the reference rule for the baseline-subtracted reward on validation users (if asked for;
   a seeded subsample of ``tune_users`` of them);
3. build the native vector env (many training users replayed in lock-step) wrapped in VecMonitor
   (SB3's episode statistics) and VecNormalize (observation normalisation; reward normalisation optional);
4. create PPO (or load the last intact checkpoint with ``resume``) and learn with
   :class:`~interestgym.agents.callbacks.InterestTrainingCallback`: TensorBoard scalars, validation
   on held-out users with the deterministic policy, best model, periodic checkpoints;
5. save the final model.

Everything from the first write to the last happens under the run folder's lock (one process per run).

The run folder's layout and readers: :mod:`interestgym.agents.run_folder`.

Seeding is in one place (:func:`seed_everything`): PPO's torch / numpy seeds and the env's user
sampling all derive from ``config.seed``.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from interestgym.agents.config import LEGACY_SETTINGS, TrainConfig, active_levers
from interestgym.agents.run_checkpoints import has_checkpoint, load_checkpoint
from interestgym.agents.run_folder import (
    BASELINES_FILE,
    CHECKPOINT_DIR,
    CHECKPOINT_STATE,
    CONFIG_FILE,
    INFO_FILE,
    LOCK_FILE,
    MODEL_FILE,
    TENSORBOARD_DIR,
    check_run_dataset,
    check_run_embedding,
    dataset_contents,
    embedding_identity,
    is_quickstart_folder,
    read_json_or_none,
    read_run_config,
    recorded_config,
    refuse_inside_dataset,
    run_reference,
    settle_model_folders,
    write_model_folder,
    write_tuned_baselines,
)
from interestgym.agents.run_lock import RunLock, training_holder
from interestgym.agents.tuning import mean_over_users, subsample_users, tune_reference

from interestgym.core.protocol import ACTION_NAMES
from interestgym.core.stats import FEW_POINTS
from interestgym.errors import InterestGymError
from interestgym.io import write_json_atomic


def seed_everything(seed: int) -> None:
    """The one place where the learner's global seeds are set (the env's user draws are seeded by PPO
    through ``VecEnv.seed``; negatives by ``protocol_seed``)."""
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def agent_scoring_config(mode: str, reference: Any) -> Any:
    """The agent's fixed ScoringConfig for ``--agent-scoring mode`` and the reference rule (or None).

    ``reference``: the rule's config, with the category counts' forgetting tied to the agent's a_L
    (``category_forgetting=None``) when the rule scores with the category term; ``reference-fixed``:
    the rule's config as it is; ``plain`` (or no reference): the default ScoringConfig.
    """
    from interestgym.core.interest import ScoringConfig

    if reference is None or mode == "plain":
        return ScoringConfig()
    scoring = reference.scoring
    if mode == "reference" and scoring.beta_cat != 0:
        return dataclasses.replace(scoring, category_forgetting=None)
    return scoring


def centre_on_reference(model: Any, reference: Any, data: Any, n_users: int = 64) -> np.ndarray:
    """Set the actor's output bias to the reference rule's mean action on training observations.

    SB3 initialises the actor's last layer with tiny orthogonal weights (gain 0.01), so after this the
    untrained policy's mean action is (almost exactly) the reference's mean action everywhere.
    :return: the mean action written into the bias (env units, [-1, 1]).
    """
    import torch
    from interestgym.envs.vector import evaluate_policy

    users = subsample_users(data.user_ids, n_users, seed=0)
    res = evaluate_policy(data, reference, users=users, record_features=True, progress=False)
    mean_action = np.asarray(reference.act(res.features), dtype=np.float64)[:, :4].mean(axis=0)  # the strengths
    with torch.no_grad():
        model.policy.action_net.bias.copy_(torch.as_tensor(mean_action, dtype=model.policy.action_net.bias.dtype))
    return mean_action


def new_agent(config: TrainConfig, venv: Any, residual_to: Any, centre_on: Any, train_data: Any, agent_scoring: Any) -> tuple[Any, Any]:
    """A fresh PPO agent on ``venv`` (wrapped in VecNormalize here) and its initial mean action.

    With ``residual_to`` (a rule; ``venv`` composes the agent's change with it) the action net starts
    at exactly zero: the untrained agent is that rule. Otherwise, with ``centre_on``, the action net's
    bias is the rule's mean action (the absolute form).
    """
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    venv = VecNormalize(venv, norm_obs=True, norm_reward=config.norm_reward, clip_obs=config.clip_obs, gamma=config.gamma)
    model = PPO(
        "MlpPolicy", venv, learning_rate=config.learning_rate, n_steps=config.n_steps, batch_size=config.batch_size,
        n_epochs=config.n_epochs, gamma=config.gamma, gae_lambda=config.gae_lambda, clip_range=config.clip_range,
        ent_coef=config.ent_coef, vf_coef=config.vf_coef, max_grad_norm=config.max_grad_norm, seed=config.seed,
        device=config.device, verbose=0,
        policy_kwargs={"net_arch": {"pi": list(config.net_arch), "vf": list(config.net_arch)},
                       "log_std_init": config.log_std_init},
    )
    if residual_to is not None:
        # a change of exactly zero (PPO's Gaussian mean is the action net's output; its initial weights
        # are tiny, not zero): the untrained agent is the reference rule, to the bit
        with torch.no_grad():
            model.policy.action_net.weight.zero_()
            model.policy.action_net.bias.zero_()
        return model, np.zeros(venv.action_space.shape[0])
    if centre_on is None:
        return model, None
    init_action = centre_on_reference(model, centre_on, train_data)
    fixed_forgetting = centre_on.scoring.category_forgetting
    if agent_scoring.ties_category_forgetting and fixed_forgetting is not None:
        # The rule forgets with a fixed f, the agent with 1 - a_L: start a_L at 1 - f, so that the
        # untrained agent forgets the category counts like the rule (the category term dominates
        # the score; its profile L then moves at 1 - f instead of the rule's a_L).
        init_action[0] = 2.0 * (1.0 - fixed_forgetting) - 1.0
        with torch.no_grad():
            model.policy.action_net.bias[0] = float(init_action[0])
    return model, init_action


# ---------------------------------------------------------------------------------------- shipping
#: Metrics the learned policy must not be proven worse on (paired 95% CI entirely below 0 on validation
#: users) to ship, besides its gain in the reward metric: a top-heavy gain must not hide a loss there.
GUARD_METRICS: tuple[str, ...] = ("auc", "mrr", "hit@10")


def shipping_verdict(diff: dict[str, Any], guards: dict[str, dict[str, Any] | None], threshold: float) -> tuple[bool, list[str]]:
    """(whether the gain passes, the guard metrics it is worse on): it passes when the LOWER end of the gain's paired
    CI exceeds ``threshold`` (a mean above it is not proof), and a guard metric is worse when its CI's upper end is
    below 0 (entirely below: a mean below 0 alone is a tie). Undefined guards (None) are not checked."""
    worse = [m for m, d in guards.items() if d is not None and d["hi"] < 0]
    return bool(diff["lo"] > threshold), worse


def decide_shipping(run_dir: Path, config: TrainConfig, valid_data: Any, reference: Any) -> dict[str, Any]:
    """Ship the learned policy only when it is proven on validation users; else ship the rule.

    The run's best model and the reference rule replay every validation user (the same users and
    candidates); the learned policy ships when the lower end of the paired 95% bootstrap CI of its
    per-user gain in the reward metric exceeds ``config.ship_threshold`` and no :data:`GUARD_METRICS`
    metric has its CI entirely below 0. The decision, with its numbers and reason, goes to
    ``RUN/shipped.json`` (read by evaluate, report and export).
    """
    from interestgym.agents.run_folder import (
        best_or_final,
        load_run_policy,
        model_identity,
        write_shipped,
    )
    from interestgym.envs.replay_data import users_left_out_text
    from interestgym.envs.vector import evaluate_policy

    from interestgym.core.stats import paired_bootstrap_diff, per_user_means

    metric = config.reward
    which = best_or_final(run_dir)
    if reference is None:
        decision = {"policy": "learned", "model": which, "reason": "no reference rule (--reward-baseline none): nothing to compare with",
                    "validated": model_identity(run_dir, which)}
        write_shipped(run_dir, decision)
        return decision
    learned = load_run_policy(run_dir, which, device=config.device)

    def per_user(policy: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        # (a progress line in a log too: both replays of every validation user can take a while after the last step)
        res = evaluate_policy(valid_data, policy, metric=metric, record_features=False, progress=None if config.progress_bar else False)
        user_ids = res.points["user_id"].to_numpy()
        wanted = [metric] + [m for m in GUARD_METRICS if m != metric and m in res.points.columns]
        means = {m: per_user_means(user_ids, res.points[m].to_numpy()) for m in wanted}
        return means[metric][0], {m: values for m, (_, values) in means.items()}

    users, ours = per_user(learned)
    ref_users, theirs = per_user(reference)
    assert np.array_equal(users, ref_users)
    diff = paired_bootstrap_diff(ours[metric], theirs[metric], seed=config.seed).as_dict()
    guards: dict[str, dict[str, Any] | None] = {}
    for m in ours:
        if m != metric:
            d = paired_bootstrap_diff(ours[m], theirs[m], seed=config.seed).as_dict()
            # a metric undefined for every user (NaN) cannot be checked: recorded as null, named in the reason
            guards[m] = d if d["n"] and all(np.isfinite([d["mean"], d["lo"], d["hi"]])) else None
    passes, worse = shipping_verdict(diff, guards, config.ship_threshold)
    undefined = [m for m, d in guards.items() if d is None]
    proven = passes and not worse
    # prepare counts every user in the split: say which of them the comparison left out
    left_out = users_left_out_text(getattr(valid_data, "counts", None) or {}, len(users))
    reason = (f"the {which} model gains {diff['mean']:+.4f} {metric} over `{reference.name}` on {len(users)} validation users"
              + (f" ({left_out})" if left_out else "") + f", paired 95% CI [{diff['lo']:+.4f}, {diff['hi']:+.4f}], "
              + ("above" if passes else "not above") + f" the threshold {config.ship_threshold:g}")
    if which == "best" and config.policy_form == "residual" and _best_step(run_dir) == 0:
        # the untrained residual agent is the rule itself: say that no later model did better
        reason = ("no model after step 0 scored higher on validation, and the step-0 agent is the rule itself: " + reason)
    if worse:
        reason += ("; but it is worse on " if passes else "; and it is worse on ") + ", ".join(
            f"{m} ({guards[m]['mean']:+.4f} [{guards[m]['lo']:+.4f}, {guards[m]['hi']:+.4f}])" for m in worse)  # type: ignore[index]
    if undefined:
        reason += f"; {', '.join(undefined)} undefined on these users (not checked)"
    decision = {
        "policy": "learned" if proven else "rule",
        "model": which if proven else None,
        "rule": reference.describe(),
        "metric": metric,
        "validation": {"users": len(users), "learned": float(np.nanmean(ours[metric])), "rule": float(np.nanmean(theirs[metric])),
                       "diff": diff, "threshold": config.ship_threshold, "guards": guards},
        "reason": reason,
        # the model the decision replayed (folder, step, sha256): a model folder changed since is not what it proved
        "validated": model_identity(run_dir, which),
    }
    write_shipped(run_dir, decision)
    return decision


def _note_unused_tracker(reference: dict[str, Any], tuned: dict[str, Any], reward_baseline: str | None = "best") -> None:
    """With ``--sequence``: say when the rule + tracker mixture did not become the reference (the run then goes on
    without the tracker: the agent neither scores with it nor has its lever), and why, from the tuned numbers."""
    mixes = [name for name in tuned if name.endswith("+tracker")]
    if not mixes or reference["name"] in mixes:
        return
    mix = tuned[mixes[0]]
    weight = (mix.get("params") or {}).get("tracker_weight")
    if weight == 0:
        why = "its tracker's weight tuned to 0 on validation users (the rule alone scored best)"
    elif reward_baseline != "best":  # the reference was named: the mixture never competed for it
        why = (f"--reward-baseline {reward_baseline} names the reference; at tracker weight {weight:g} the mixture scored "
               f"{mix['valid_score']:.4f} on validation against {reference['valid_score']:.4f}: --reward-baseline best lets "
               "it compete")
    else:
        why = (f"at tracker weight {weight:g} it scored {mix['valid_score']:.4f} on validation against "
               f"{reference['valid_score']:.4f} for `{reference['name']}`")
    sys.stderr.write(f"note: --sequence: the mixture `{mixes[0]}` is not the reference ({why}); the run's reference is "
                     f"`{reference['name']}` and the agent does not score with the tracker\n")


#: The reference's score on training users may exceed its score on validation users by this much (absolute, in the
#: reward metric) before `train` says so: sampling alone moves a mean over ~100 users by a few hundredths.
TRAINING_GAP = 0.1


def reference_on_training_users(train_data: Any, reference_policy: Any, metric: str, n_users: int, seed: int) -> dict[str, Any] | None:
    """The reference rule's mean ``metric`` over a seeded sample of ``n_users`` training users (those with a scoring point):
    beside its validation score, how far the world the agent learns in differs from the one it is judged in. None when
    no training user has a scoring point."""
    from interestgym.envs.vector import evaluate_policy

    if not len(train_data.scored_user_ids):
        return None
    users = subsample_users(train_data.scored_user_ids, n_users, seed)
    res = evaluate_policy(train_data, reference_policy, metric=metric, users=users, record_features=False, progress=False)
    return {"score": mean_over_users(res, metric), "users": len(users) if users is not None else len(train_data.scored_user_ids)}


def training_gap_note(name: str, metric: str, train: dict[str, Any], valid: float, valid_users: int) -> str | None:
    """A note when the reference ranks training users far better than validation users (:data:`TRAINING_GAP`), else None."""
    if not train["score"] - valid > TRAINING_GAP:
        return None
    return (f"the reference `{name}` scores {train['score']:.4f} {metric} on {train['users']:,} training users against "
            f"{valid:.4f} on {valid_users:,} validation users: the agent learns where the rule is far better than where it "
            "is judged, and what it learns there may not carry over. A usual cause: something the rule scores with was "
            "fitted on the training users' own events: item vectors (--embeddings cooc, a behaviour-fine-tuned encoder; "
            "vectors of the items' text alone, hashing or minilm, know no user), popularity, or a --sequence tracker "
            "trained without --folds (docs/experiments.md, \"The world the agent learns in\")")


def _best_step(run_dir: Path) -> int | None:
    """The step the run's best model was saved at (None when unknown)."""
    try:
        return int(json.loads((Path(run_dir) / "best" / "info.json").read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ------------------------------------------------------------------------------------------ train
def steps_to_run(remaining: int, n_envs: int, n_steps: int) -> int:
    """The env steps PPO takes to do at least ``remaining``: it collects whole rollouts of
    ``n_envs * n_steps`` steps, so the target rounds up (the progress bar's total, e.g. 4,096 for 3,000)."""
    rollout = n_envs * n_steps
    return -(-max(0, remaining) // rollout) * rollout


def resumable_run_config(run_dir: Path) -> dict[str, Any]:
    """The ``config.json`` of the run ``--resume`` continues in ``run_dir``, or one error saying why there is none: a
    first ``train`` still tuning there, one stopped while tuning (nothing trained), or no run at all."""
    if not (run_dir / CONFIG_FILE).is_file() and (holder := training_holder(run_dir)) is not None:
        # the first `train` of this run is still tuning (config.json comes after): not a run without its config
        raise InterestGymError(f"{run_dir}: another `interestgym train` is writing this run ({holder}; lock {run_dir / LOCK_FILE}) "
                               f"and has not written {CONFIG_FILE} yet; wait for it to end (or stop it), then --resume")
    if run_dir.is_dir() and not (run_dir / CONFIG_FILE).exists() and not is_quickstart_folder(run_dir):
        # a `train` killed while tuning the baselines (config.json comes after): nothing was trained to continue
        raise InterestGymError(f"{run_dir}: no {CONFIG_FILE}: the run was stopped before training started (while tuning the "
                               "baselines); nothing to resume: run the same command without --resume")
    return read_run_config(run_dir)


def train_run(config: TrainConfig, *, resume: bool = False, ray: str | None = None) -> dict[str, Any]:
    """Train (or resume) a PPO run; returns a summary (steps, seconds, best validation value).

    One process per run folder: the run's lock (:class:`~interestgym.agents.run_lock.RunLock`) is
    held from the first write to the last.

    :param ray: tune the baselines on a Ray cluster (``auto``, ``local[:N]`` or an address), sharded by
        validation user: the same tuning as one process (``interestgym.scale``). Where it runs is not part
        of the run: it is not recorded, and a resume may use another.
    """

    run_dir = Path(config.run_dir)
    saved: dict[str, Any] = {}
    if resume:
        saved = resumable_run_config(run_dir)
        # another package's reference rule: installed here at the run's version (said as such, before the settings' checks)
        run_reference(saved, run_dir)
        # The run's own configuration wins; only the target and the presentation may change.
        config = recorded_config({**LEGACY_SETTINGS,  # runs saved before a setting existed did without it
                                  **saved["config"], "timesteps": config.timesteps, "progress_bar": config.progress_bar,
                                  "device": config.device, "run_dir": str(run_dir)}, saved, run_dir)
    elif (run_dir / CONFIG_FILE).exists() or has_checkpoint(run_dir):
        raise InterestGymError(f"{run_dir}: already holds a training run; continue it with --resume or choose a new --run-dir")
    else:  # a run written into a dataset folder would mix run files with the dataset's own
        refuse_inside_dataset(run_dir, "--run-dir", "a new or empty folder for the run")
    config.validate()
    if str(config.device).startswith("cuda"):  # training here (evaluating a CUDA-trained run on a CPU box stays possible)
        from interestgym.agents.sequence.models import pick_device

        pick_device(str(config.device))  # refuses CUDA where there is none, naming why
    if config.sequence and not resume:  # its best weights must not change under the run (checked again at export)
        from interestgym.agents.sequence.folder import (
            check_finished,
            read_folds,
            undertrained_note,
        )

        check_finished(config.sequence, "`train --sequence`")
        if (note := undertrained_note(config.sequence)) is not None:
            sys.stderr.write(f"note: {note}\n")
        if read_folds(config.sequence) is None:
            sys.stderr.write(f"note: --sequence: the tracker {config.sequence} has no out-of-fold trackers, so the agent learns "
                             "on the scores it gives its own training users, which it ranks better than users it never saw; "
                             "`interestgym train-sequence ... --folds 5` trains them (docs/sequence.md)\n")
    # Absolute, so that `evaluate RUN` works from any working directory (the tracker of --sequence too; a resumed run
    # keeps what it recorded).
    config.dataset = str(Path(config.dataset).resolve())
    if config.sequence and not resume:
        config.sequence = str(Path(config.sequence).resolve())
    if resume:  # the data the run learnt from: the same split and vectors (a changed split would train on test users)
        check_run_embedding(run_dir, saved, config)
        if (note := check_run_dataset(run_dir, saved, config)) is not None:
            sys.stderr.write(f"note: {note}\n")
    from interestgym.core.metrics import parse_metric

    parse_metric(config.reward)
    with RunLock(run_dir):
        # Checked again under the lock: another process may have written the run meanwhile.
        if not resume and ((run_dir / CONFIG_FILE).exists() or has_checkpoint(run_dir)):
            raise InterestGymError(f"{run_dir}: already holds a training run; continue it with --resume or choose a new --run-dir")
        if resume and not has_checkpoint(run_dir):
            # Stopped (Ctrl-C, crash) before its first checkpoint: there is nothing to continue, and a
            # plain `train` refuses the folder because config.json is there, so start the same run
            # again from step 0 (like quickstart does); its partial TensorBoard logs would overlap.
            import shutil

            sys.stderr.write(f"note: {run_dir} has no checkpoint yet ({run_dir / CHECKPOINT_DIR / CHECKPOINT_STATE} missing); starting "
                             f"the run again from step 0 with its saved configuration (its partial TensorBoard logs in "
                             f"{run_dir / TENSORBOARD_DIR} are replaced)\n")
            shutil.rmtree(run_dir / TENSORBOARD_DIR, ignore_errors=True)
            resume = False
        try:
            return _train_locked(config, saved, resume, ray)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                raise
            # a folder made read-only or a full disk during the run: one line naming the file
            raise InterestGymError(f"{exc.filename or run_dir}: cannot write it ({exc.strerror}); the run in {run_dir} "
                                   "stopped there (continue it with --resume once the folder is writable)") from None


def _train_locked(config: TrainConfig, saved: dict[str, Any], resume: bool, ray: str | None = None) -> dict[str, Any]:
    """The body of :func:`train_run`, under the run's lock."""

    from interestgym.agents.callbacks import (
        InterestTrainingCallback,
        LogProgressCallback,
        truncate_tensorboard,
    )
    from interestgym.agents.sb3_policy import policy_from_model
    from interestgym.envs.policies import ResidualPolicy
    from interestgym.envs.vector import InterestReplayVecEnv, evaluate_policy
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import VecMonitor

    run_dir = Path(config.run_dir)
    settle_model_folders(run_dir)
    seed_everything(config.seed)
    import torch

    torch.set_num_threads(max(1, config.torch_threads))
    t_start = time.perf_counter()

    train_data = config.replay_data("train")
    valid_data = config.replay_data("valid")
    if valid_data.n_users == 0:
        raise InterestGymError(f"{config.dataset}: the valid split has no user with a positive event; validation needs some")
    if valid_data.n_points == 0:  # nothing to tune, validate or decide what to ship on
        from interestgym.envs.replay_data import targets_without_negatives_text

        unscored = targets_without_negatives_text(valid_data.counts)
        raise InterestGymError(f"{config.dataset}: validation users have no scoring point ({valid_data.n_users:,} users with a "
                               "decision, none ranked after it" + (f"; {unscored}" if unscored else "")
                               + "); tuning, validation and the ship decision need some")
    from interestgym.envs.replay_data import unknown_items_text

    for split, data in (("train", train_data), ("valid", valid_data)):
        if (unknown := unknown_items_text(data.counts)) is not None:
            sys.stderr.write(f"note: {split} users: {unknown}\n")
        if short := int(data.counts.get("points_with_fewer_negatives") or 0):  # the vector env trains without the env's warning
            sys.stderr.write(f"note: {split} users: {short:,} of {data.n_points:,} scoring points have fewer than --n-negatives "
                             f"{config.n_negatives} negatives: the catalogue, less the items the protocol excludes, holds fewer\n")
    if valid_data.n_points < FEW_POINTS:
        sys.stderr.write(f"note: the valid split has {valid_data.n_points:,} scoring point{'s' if valid_data.n_points != 1 else ''} "
                         f"({len(valid_data.scored_user_ids):,} of its {valid_data.n_users:,} users have one): the tuned rule and "
                         "the choice of what the run ships rest on few rankings\n")

    reference = saved.get("reference")
    tuned: dict[str, Any] | None = None
    tuning_seconds = 0.0
    tunes = bool(config.reward_baseline) and reference is None and not config.tuned_baselines
    if ray and not tunes:
        why = ("the run resumes with its tuned reference" if reference is not None else
               "--tuned-baselines gives the tuning" if config.tuned_baselines else "no reference rule is tuned")
        sys.stderr.write(f"note: --ray {ray} has nothing to do here ({why}); PPO trains in this process\n")
    if config.reward_baseline and reference is None:
        t_tune = time.perf_counter()
        # with --ray the tuning is sharded by validation user on a Ray cluster: the same numbers as one process
        from interestgym.scale.ray_backend import scaled

        reference, tuned = tune_reference(config, valid_data, scaled(ray if tunes else None).validation_scorer)
        tuning_seconds = time.perf_counter() - t_tune
        if config.sequence and tuned:
            _note_unused_tracker(reference, tuned, config.reward_baseline)
    reference_policy = run_reference({"reference": reference}, run_dir)  # as the run's config records it (None: no reference)
    # residual form: the agent changes the rule's action and scores with the rule's own terms
    residual = config.policy_form == "residual" and reference_policy is not None
    agent_scoring = reference_policy.scoring if residual else agent_scoring_config(config.agent_scoring, reference_policy)
    if "agent_scoring" in saved:
        # a resumed run keeps the scoring it was trained with (runs from before the tied mode included)
        from interestgym.core.interest import ScoringConfig

        agent_scoring = ScoringConfig(**saved["agent_scoring"])

    eval_users = subsample_users(valid_data.scored_user_ids, config.eval_users, config.seed)
    reference_valid = None
    reference_train = None
    if reference_policy is not None:
        res = evaluate_policy(valid_data, reference_policy, metric=config.reward, users=eval_users, record_features=False, progress=False)
        reference_valid = mean_over_users(res, config.reward)
        n_valid = len(eval_users) if eval_users is not None else len(valid_data.scored_user_ids)
        if not resume:  # said once, when the run starts (a resume keeps what its config recorded)
            reference_train = reference_on_training_users(train_data, reference_policy, config.reward, n_valid, config.seed)
            if reference_train is not None:
                reference_train["valid_score"], reference_train["valid_users"] = reference_valid, n_valid
                note = training_gap_note(reference_policy.name, config.reward, reference_train, reference_valid, n_valid)
                if note is not None:
                    sys.stderr.write(f"note: {note}\n")

    gain_lever, context_lever, slot_lever = (
        active_levers(config.category_gain, config.context_lever, reference_policy.scoring, config.slot_lever)
        if residual else (False, False, False))
    venv = InterestReplayVecEnv(train_data, n_envs=config.n_envs, metric=config.reward, max_events=config.max_events,
                                reward_baseline=reference_policy, scoring=agent_scoring,
                                residual_to=reference_policy if residual else None, gain_lever=gain_lever, context_lever=context_lever,
                                slot_lever=slot_lever, change_penalty=config.change_penalty if residual else 0.0,
                                window=config.window if residual else None, seed=config.seed)
    # SB3's episode statistics (rollout/ep_rew_mean, ep_len_mean) on the raw reward: one episode is one
    # user's replay. Inside VecNormalize, so it sums the env's rewards, not the normalised ones.
    change_names = venv.residual.names if venv.residual is not None else None  # the learned change's components
    venv = VecMonitor(venv)
    if config.embeddings is None:
        # Store the name the dataset's only embedding resolved to, so that evaluate / export of this
        # run still find it after another embedding is added to the dataset.
        config.embeddings = train_data.describe().get("embeddings")
    if not resume:
        write_json_atomic(run_dir / CONFIG_FILE, {
            "config": config.as_dict(),
            "config_complete": True,  # every setting is in "config": one missing there is damage, not a default
            "reference": reference,
            # the reference's score on a sample of training users beside its validation score (the agent's world vs the judge's)
            **({"reference_on_training_users": reference_train} if reference_train is not None else {}),
            "agent_scoring": agent_scoring.as_dict(),
            "protocol": {"train": train_data.describe(), "valid": valid_data.describe()},
            "embedding": embedding_identity(config),
            "dataset_contents": dataset_contents(config),
            "action_space": {"box": [-1.0, 1.0], "strength": "(clip(u, -1, 1) + 1) / 2", "form": config.policy_form if residual else "absolute",
                             "names": list(ACTION_NAMES if change_names is None else change_names)},
            "observation_normalisation": {"kind": "VecNormalize", "clip_obs": config.clip_obs, "norm_reward": config.norm_reward},
            "baselines": "baselines.json: every baseline tuned on validation users",
            "files": {"best": "best/model.zip + best/normaliser.npz (sha256 in best/info.json)",
                      "final": "final/model.zip + final/normaliser.npz (sha256 in final/info.json)",
                      "checkpoints": "checkpoints/state.json names the last complete checkpoint", "tensorboard": "tb/"},
        })

    if tuned is not None:
        write_tuned_baselines(run_dir / BASELINES_FILE, metric=config.reward, tune_users=config.tune_users,
                              protocol=valid_data.describe(), baselines=tuned)

    callback_state = None
    init_action = None
    if resume:
        model, record = load_checkpoint(run_dir, venv, device=config.device, clip_range=config.clip_range,
                                        note=lambda line: sys.stderr.write(line + "\n"))
        callback_state = dict(record.get("callback") or {})
        # SB3's window of finished episodes continues (rollout/ep_rew_mean)
        model.ep_info_buffer.extend({"r": np.float32(e["r"]) if e.get("float32") else e["r"], "l": e["l"], "t": e["t"]}
                                    for e in record.get("episodes") or [])
        best = read_json_or_none(run_dir / "best" / INFO_FILE) or {}
        if isinstance(best.get("value"), (int, float)) and (callback_state.get("best_value") is None or best["value"] > callback_state["best_value"]):
            # resumed from an older checkpoint than best/ (a later one was damaged): best/ stays the best
            callback_state.update(best_value=float(best["value"]), best_step=best.get("step"))
        if callback_state.get("best_step") is not None and not (run_dir / "best" / MODEL_FILE).is_file():
            # the model validation selected is gone: deciding on the final one instead would ship (or refuse) what
            # validation never selected, under the same run
            raise InterestGymError(
                f"{run_dir / 'best' / MODEL_FILE}: missing, but the run's validation selected its model of step "
                f"{callback_state['best_step']:,} ({config.reward} {callback_state.get('best_value', float('nan')):.4f}), and "
                "its shipping decision and best model are that one; expected the run's best/ folder: put it back (from a "
                "copy of the run), or train again in a new --run-dir")
        # Points logged after the checkpoint (a kill between a log and the next checkpoint) would be
        # logged again from here: drop them first.
        truncate_tensorboard(run_dir / TENSORBOARD_DIR, int(model.num_timesteps))
        if config.timesteps != int(saved.get("config", {}).get("timesteps") or 0) and config.timesteps > model.num_timesteps:
            # a resume to another total still ahead makes it the run's total (more steps, or fewer than first asked):
            # what the report and the quick start read as asked. One already reached trains nothing and changes nothing.
            write_json_atomic(run_dir / CONFIG_FILE, {**saved, "config": {**saved["config"], "timesteps": config.timesteps}})
    else:
        model, init_action = new_agent(config, venv, reference_policy if residual else None,
                                       reference_policy if config.init_from_reference else None, train_data, agent_scoring)
    start_timesteps = int(model.num_timesteps)
    # One TensorBoard folder for the whole run: a resumed run adds a new event file to it and, with
    # reset_num_timesteps=False, continues the same step axis.
    model.set_logger(configure(str(run_dir / TENSORBOARD_DIR), ["tensorboard"]))

    def as_policy(current_model: Any) -> Any:
        learned = policy_from_model(current_model, current_model.get_vec_normalize_env(), scoring=agent_scoring)
        return ResidualPolicy(reference_policy, learned, names=change_names) if residual else learned

    def validate(current_model: Any) -> dict[str, float]:
        policy = as_policy(current_model)
        res = evaluate_policy(valid_data, policy, metric=config.reward, users=eval_users, record_features=False, progress=False)
        per_user = res.per_user()
        out = {m: float(per_user[m].mean()) for m in res.metrics}
        if reference_valid is not None:
            out[f"{config.reward}_minus_reference"] = out[config.reward] - reference_valid
        strengths = res.decisions[["long_strength", "short_strength", "short_weight", "popularity_weight"]].to_numpy()
        out["update_rate"] = float(((strengths[:, 0] > config.update_threshold) | (strengths[:, 1] > config.update_threshold)).mean())
        return out

    hyper = {**config.as_dict(), "reference": json.dumps(reference) if reference else "none",
             "reference_valid": reference_valid,
             "initial_mean_action": None if init_action is None else [round(float(a), 4) for a in init_action]}
    callback = InterestTrainingCallback(
        run_dir, validate=validate, select_metric=config.reward, eval_every=config.eval_every or config.timesteps,
        checkpoint_every=config.checkpoint_every, hyperparameters=hyper, update_threshold=config.update_threshold,
        reward_is_metric=reference_policy is None, state=callback_state,
    )
    remaining = config.timesteps - model.num_timesteps
    if remaining > 0:
        # whole rollouts: the real number of steps, so the progress bar's total is what will run
        total = steps_to_run(remaining, config.n_envs, config.n_steps)
        # SB3's bar on a terminal; plain log lines when the output goes to a file (nohup, batch jobs)
        on_terminal = sys.stderr.isatty()
        callbacks = [callback] + ([LogProgressCallback(total)] if config.progress_bar and not on_terminal else [])
        try:
            model.learn(total_timesteps=total, callback=callbacks, reset_num_timesteps=not resume,
                        progress_bar=config.progress_bar and on_terminal)
        except ValueError as exc:
            if "invalid values" not in str(exc):  # torch.distributions' check of the policy's mean and std
                raise
            raise InterestGymError(
                f"training diverged near step {model.num_timesteps:,}: the policy's action distribution became NaN "
                f"(--learning-rate {config.learning_rate:g}, --log-std-init {config.log_std_init:g}, --max-grad-norm "
                f"{config.max_grad_norm:g}); expected smaller steps: lower --learning-rate (default {TrainConfig.learning_rate:g}) "
                f"or --log-std-init (default {TrainConfig.log_std_init:g}) and train again in a new --run-dir ({run_dir} holds "
                "the run up to its last checkpoint, and --resume would diverge again with the same settings)") from None
    else:
        callback.init_callback(model)
    write_model_folder(run_dir / "final", model, model.get_vec_normalize_env(), {"step": int(model.num_timesteps)})
    for fmt in model.logger.output_formats:
        fmt.close()
    shipped = decide_shipping(run_dir, config, valid_data, reference_policy)
    return {
        "num_timesteps": int(model.num_timesteps),
        "timesteps_this_call": int(model.num_timesteps) - start_timesteps,  # a resume's own part of num_timesteps
        "seconds": time.perf_counter() - t_start,
        "tuning_seconds": tuning_seconds,  # of "seconds": tuning the baselines (0 when reused or resumed)
        "select_metric": config.reward,
        "best_value": callback.best_value,
        "best_step": callback.best_step,
        "reference_valid": reference_valid,
        "shipped": shipped,
        "run_dir": str(run_dir),
    }
