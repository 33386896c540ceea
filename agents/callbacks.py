"""Training callbacks: TensorBoard scalars of the product, periodic validation, checkpoints.

SB3 writes its own scalars (``rollout/``, ``train/``, ``time/``) once per rollout at the step the
rollout ended (``train/*`` of an update at the next rollout's step; the last update's are not
written, as in plain SB3); these callbacks add the product's, under stable names (CleanRL style),
all on the step axis ``num_timesteps`` so that a resumed run continues the same curves. Every tag
has at most one point per step:

======================================  ===========================================================
``charts/mean_reward``                  mean raw (un-normalised) env reward over the last rollout
``charts/mean_metric``                  mean of the reward metric (e.g. nDCG@10) at scored steps
                                        (runs without ``--reward-baseline``, or an env that reports
                                        ``info["metric"]``)
``charts/mean_metric_minus_reference``  with a reward baseline: mean of the reward (metric minus the
                                        reference rule's) at scored steps
``charts/scored_fraction``              fraction of decisions followed by at least one scoring point
``charts/update_rate``                  fraction of decisions with a_L or a_S above ``update_threshold``
``charts/mean_a_long``                  mean long-term update strength a_L in [0, 1] (as applied)
``charts/mean_a_short``                 mean short-term update strength a_S
``charts/mean_mix_weight``              mean weight w of the short-term profile in the score
``charts/mean_pop_weight``              mean popularity weight p
``charts/mean_tracker_weight``          with ``--sequence``: mean weight of the tracker's term in the score
``charts/mean_count_gain``              with the gain lever: mean of what an event adds to its category's count
``charts/mean_context_rate``            with the context lever: mean rate of the time-slot profile's update
``charts/mean_slot_weight``             with the time-of-day lever: mean lambda of the per-slot category counts
``charts/mean_keep``                    a residual agent over a category rule: mean keep factor of the category
                                        counts as applied (the rule's forgetting plus the agent's change)
``charts/steps_per_second``             env steps per wall-clock second over the last rollout + update
``time/fps``                            SB3's: env steps per second since the start of this process
``rollout/ep_rew_mean``, ``ep_len_mean``  SB3's: summed raw reward and length of the last 100 finished
                                        users (episodes), from the VecMonitor the env is wrapped in
``eval/<metric>``                       validation-user metric of the deterministic policy (mean over users)
``eval/best_<metric>``                  best validation value so far (the model saved in ``best/``)
======================================  ===========================================================

plus the hyper-parameters, as a text table (``hyperparameters``) and in the HParams plugin (with
``eval/<metric>`` as its metric), at the start of a fresh run.

Validation values are written straight to the event file at the step of the model they measured:
dumping SB3's logger there (as before) also wrote the pending ``train/*`` values, which SB3 then
wrote again at its own dump of that step.

Checkpoints (model + normalisation statistics + callback state, :func:`~interestgym.agents.run_checkpoints.write_checkpoint`)
are written at rollout boundaries (after the PPO update), so a resumed run restarts exactly where
the saved model's step counter says; the event file is flushed first, so everything logged up to a
checkpoint's step is on disk when the checkpoint names that step. A resumed run drops the points
after its checkpoint (:func:`truncate_tensorboard`) before logging again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from interestgym.agents.run_checkpoints import write_checkpoint
from interestgym.agents.run_folder import write_model_folder
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HParam, TensorBoardOutputFormat

from interestgym.core.protocol import action_to_strengths
from interestgym.io import atomic_path

ACTION_NAMES = ("a_long", "a_short", "mix_weight", "pop_weight")
#: The levers the vector env reports as applied (``info[key]``), charted as ``charts/mean_<key>``.
LEVER_INFOS = ("tracker_weight", "count_gain", "context_rate", "slot_weight", "keep")


def hyperparameter_markdown(params: dict[str, Any]) -> str:
    """The CleanRL hyper-parameter table: ``|param|value|`` rows, in the given order."""
    rows = "\n".join(f"|{k}|{json.dumps(v) if not isinstance(v, str) else v}|" for k, v in params.items())
    return "|param|value|\n|-|-|\n" + rows


def hparam_values(params: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """``params`` as the HParams plugin takes them: numbers, bools and strings (lists as JSON, None as "none")."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in params.items():
        if value is None:
            out[key] = "none"
        elif isinstance(value, (bool, int, float, str)):
            out[key] = value
        else:
            out[key] = json.dumps(value)
    return out


def tensorboard_writer(logger: Any):
    """The SummaryWriter behind SB3's logger, or None when TensorBoard output is off."""
    for fmt in getattr(logger, "output_formats", []):
        if isinstance(fmt, TensorBoardOutputFormat):
            return fmt.writer
    return None


def truncate_tensorboard(tb_dir: str | Path, step: int) -> int:
    """Drop every event logged after ``step`` from the event files in ``tb_dir`` (each file rewritten
    atomically, only when it has such events); returns the number of events dropped.

    A run killed between a log and its checkpoint has points past the checkpoint it resumes from;
    the resumed run logs those steps again, so without this TensorBoard would show both. (TensorBoard's
    own ``purge_step`` marker is not honoured by every reader; removing the points is.)
    """
    from tensorboard.backend.event_processing.event_file_loader import (
        RawEventFileLoader,
    )
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    dropped = 0
    for path in sorted(Path(tb_dir).glob("events.out.tfevents.*")):
        # a kill can cut the last record short: the loader stops there, and the rewrite leaves it out
        records = list(RawEventFileLoader(str(path)).Load())
        keep = [r for r in records if Event.FromString(r).step <= step]
        if len(keep) == len(records) and path.stat().st_size == sum(len(r) + 16 for r in records):
            continue
        dropped += len(records) - len(keep)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            writer = RecordWriter(fh)
            for record in keep:
                writer.write(record)
    return dropped


class InterestTrainingCallback(BaseCallback):
    """Logs the product's rollout scalars, validates periodically, keeps best / periodic checkpoints.

    :param run_dir: the run directory (``checkpoints/``, ``best/`` go there).
    :param validate: callable returning ``{metric_name: value}`` for the current model on validation
        users (None: no validation).
    :param select_metric: key of ``validate``'s result that decides the best model.
    :param eval_every: validate every this many env steps (checked at rollout boundaries).
    :param checkpoint_every: checkpoint every this many env steps (checked at rollout boundaries).
    :param hyperparameters: written once (text table + HParams) at the start of a fresh run.
    :param update_threshold: a decision counts as an update when a_L or a_S exceeds this.
    :param reward_is_metric: the env's reward is the metric itself (no reward baseline), so the
        reward at scored steps gives ``charts/mean_metric``.
    :param state: callback state restored from a checkpoint (best value, last eval / checkpoint step).
    :param keep_checkpoints: numbered checkpoints kept on disk (older ones are deleted).
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        validate: Callable[[Any], dict[str, float]] | None = None,
        select_metric: str = "ndcg@10",
        eval_every: int = 0,
        checkpoint_every: int = 0,
        hyperparameters: dict[str, Any] | None = None,
        update_threshold: float = 0.05,
        reward_is_metric: bool = False,
        state: dict[str, Any] | None = None,
        keep_checkpoints: int = 3,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        self.run_dir = Path(run_dir)
        self.validate = validate
        self.select_metric = select_metric
        self.eval_every = int(eval_every)
        self.checkpoint_every = int(checkpoint_every)
        self.hyperparameters = hyperparameters
        self.update_threshold = update_threshold
        self.reward_is_metric = reward_is_metric
        self.keep_checkpoints = max(1, int(keep_checkpoints))
        state = state or {}
        best = state.get("best_value")
        self.best_value: float = float(best) if best is not None else -np.inf
        self.best_step: int | None = state.get("best_step")
        self.last_eval_step: int = int(state.get("last_eval_step", 0))
        self.last_checkpoint_step: int = int(state.get("last_checkpoint_step", 0))
        self.eval_history: list[dict[str, Any]] = list(state.get("eval_history", []))
        self._pending_scalars: dict[str, float] = dict(state.get("pending_scalars") or {})
        self._reset_rollout_stats()
        self._t_rollout = time.perf_counter()
        self._steps_at_rollout = 0

    # ------------------------------------------------------------------ state (for --resume)
    def state_dict(self) -> dict[str, Any]:
        return {
            "best_value": self.best_value if np.isfinite(self.best_value) else None,
            "best_step": self.best_step,
            "last_eval_step": self.last_eval_step,
            "last_checkpoint_step": self.last_checkpoint_step,
            "eval_history": self.eval_history,
            # SB3 records an update's train/* after its dump and writes them at the next one: keep
            # them with the checkpoint, so that a resumed run writes them where an uninterrupted one would
            "pending_scalars": {k: float(v) for k, v in getattr(self.logger, "name_to_value", {}).items()
                                if k.startswith("train/") and "tensorboard" not in self.logger.name_to_excluded.get(k, ())},
        }

    # ------------------------------------------------------------------ rollout statistics
    def _reset_rollout_stats(self) -> None:
        self._actions: list[np.ndarray] = []
        self._levers: dict[str, list[float]] = {key: [] for key in LEVER_INFOS}
        self._rewards: list[np.ndarray] = []
        self._metric: list[float] = []
        self._metric_minus_reference: list[float] = []
        self._scored = 0
        self._decisions = 0

    def _on_training_start(self) -> None:
        writer = tensorboard_writer(self.logger)
        if writer is not None and self.hyperparameters is not None and self.num_timesteps == 0:
            writer.add_text("hyperparameters", hyperparameter_markdown(self.hyperparameters), 0)
            # The HParams plugin: the run's settings next to its validation metric (tags logged below).
            metrics = {f"eval/{self.select_metric}": 0.0, f"eval/best_{self.select_metric}": 0.0, "rollout/ep_rew_mean": 0.0}
            self.logger.record("hparams", HParam(hparam_values(self.hyperparameters), metrics),
                               exclude=("stdout", "log", "json", "csv"))
            self.logger.dump(step=0)  # nothing else is pending before the first rollout
        if self.num_timesteps > 0:
            for key, value in self._pending_scalars.items():
                self.logger.record(key, value)  # written at the first dump of the resumed run
        self._t_rollout = time.perf_counter()
        self._steps_at_rollout = self.num_timesteps
        if self.num_timesteps == 0 and self.validate is not None and self.eval_every:
            # Validate the untrained policy too (with init_from_reference it is the reference rule), so
            # that the best model is never worse on validation users than where training started.
            self._maybe_validate(force=True, at_start=True)

    def _on_rollout_start(self) -> None:
        # A rollout starts after the previous PPO update: the right moment to validate and
        # checkpoint (the model and its step counter agree; nothing is half-collected).
        if self.num_timesteps == 0:
            return
        self._maybe_validate()
        if self.checkpoint_every and self.num_timesteps - self.last_checkpoint_step >= self.checkpoint_every:
            self.save_checkpoint()

    def _on_step(self) -> bool:
        infos = self.locals.get("infos") or []
        if infos and all("strengths" in info for info in infos):
            # the strengths the env applied (for a residual agent, the rule's action plus the learned change)
            self._actions.append(np.stack([info["strengths"] for info in infos]))
            for key, values in self._levers.items():
                if all(key in info for info in infos):
                    values.extend(info[key] for info in infos)
        else:
            actions = self.locals.get("clipped_actions")
            if actions is not None:
                self._actions.append(action_to_strengths(actions))
        vecnorm = self.model.get_vec_normalize_env()
        # the env's own reward (VecNormalize hands PPO a normalised one)
        raw = vecnorm.get_original_reward() if vecnorm is not None else self.locals.get("rewards")
        if raw is None:
            return True
        raw = np.asarray(raw, dtype=np.float64)
        self._rewards.append(raw)
        for i, info in enumerate(self.locals.get("infos", [])):
            self._decisions += 1
            if not info.get("scored"):
                continue
            self._scored += 1
            if info.get("metric") is not None:
                self._metric.append(float(info["metric"]))
            elif self.reward_is_metric:
                self._metric.append(float(raw[i]))  # unscored steps have reward 0; scored ones the metric
            if not self.reward_is_metric:
                self._metric_minus_reference.append(float(raw[i]))
        return True

    def _on_rollout_end(self) -> None:
        if self._actions:
            acts = np.concatenate(self._actions, axis=0)
            updated = (acts[:, 0] > self.update_threshold) | (acts[:, 1] > self.update_threshold)
            self.logger.record("charts/update_rate", float(updated.mean()))
            for j, name in enumerate(ACTION_NAMES[: acts.shape[1]]):
                self.logger.record(f"charts/mean_{name}", float(acts[:, j].mean()))
        for key, values in self._levers.items():
            if values:
                self.logger.record(f"charts/mean_{key}", float(np.mean(values)))
        if self._rewards:
            self.logger.record("charts/mean_reward", float(np.concatenate(self._rewards).mean()))
        if self._metric:
            self.logger.record("charts/mean_metric", float(np.mean(self._metric)))
        if self._metric_minus_reference:
            self.logger.record("charts/mean_metric_minus_reference", float(np.mean(self._metric_minus_reference)))
        if self._decisions:
            self.logger.record("charts/scored_fraction", self._scored / self._decisions)
        now = time.perf_counter()
        steps = self.num_timesteps - self._steps_at_rollout
        if now > self._t_rollout and steps > 0:
            # measured from the previous rollout end: includes the PPO update, i.e. the real rate
            self.logger.record("charts/steps_per_second", steps / (now - self._t_rollout))
        self._t_rollout = now
        self._steps_at_rollout = self.num_timesteps
        self._reset_rollout_stats()
        # SB3 dumps the logger right after this (one point per tag at this step)

    def _on_training_end(self) -> None:
        self._maybe_validate(force=True)
        self.save_checkpoint()
        # No logger.dump here: SB3 has dumped this step already after the last rollout; what is left
        # (the last update's train/*) would repeat it.

    # ------------------------------------------------------------------ validation / saving
    def _write_scalars(self, values: dict[str, float]) -> None:
        """Scalars at the current step, straight into the event file (see the module docstring)."""
        writer = tensorboard_writer(self.logger)
        if writer is None:
            for key, value in values.items():
                self.logger.record(key, value)
            return
        for key, value in values.items():
            writer.add_scalar(key, value, self.num_timesteps)
        writer.flush()

    def _maybe_validate(self, force: bool = False, at_start: bool = False) -> None:
        if self.validate is None or not self.eval_every:
            return
        due = self.num_timesteps - self.last_eval_step >= self.eval_every
        if not due and not at_start and not (force and self.num_timesteps != self.last_eval_step):
            return
        self.last_eval_step = self.num_timesteps
        results = self.validate(self.model)
        value = float(results[self.select_metric])
        self.eval_history.append({"step": int(self.num_timesteps), **{k: float(v) for k, v in results.items()}})
        if value > self.best_value:
            self.best_value = value
            self.best_step = int(self.num_timesteps)
            write_model_folder(self.run_dir / "best", self.model, self.model.get_vec_normalize_env(),
                               {"step": self.best_step, "metric": self.select_metric, "value": value})
        self._write_scalars({**{f"eval/{k}": float(v) for k, v in results.items()},
                             f"eval/best_{self.select_metric}": self.best_value})
        if self.verbose:
            print(f"step {self.num_timesteps}: validation {self.select_metric}={value:.4f} (best {self.best_value:.4f})")

    def save_checkpoint(self) -> None:
        """Write the numbered checkpoint and state.json (:func:`~interestgym.agents.run_checkpoints.write_checkpoint`)."""
        self.last_checkpoint_step = int(self.num_timesteps)
        writer = tensorboard_writer(self.logger)
        if writer is not None:
            writer.flush()  # every point up to this step on disk before a checkpoint names the step
        # SB3's window of finished episodes (rollout/ep_rew_mean), so a resumed run continues it
        # (VecMonitor's returns are float32: recorded as such, so the resumed mean adds the same float32 values)
        episodes = [{"r": float(e["r"]), "l": int(e["l"]), "t": float(e["t"]), **({"float32": True} if isinstance(e["r"], np.float32) else {})}
                    for e in (self.model.ep_info_buffer or [])]
        write_checkpoint(self.run_dir, self.last_checkpoint_step, self.model, self.model.get_vec_normalize_env(),
                         {"callback": self.state_dict(), "episodes": episodes}, keep=self.keep_checkpoints)


class LogProgressCallback(BaseCallback):
    """Training progress as plain log lines (:class:`interestgym.progress.LogProgress`) when the output is
    not a terminal: SB3's bar goes to a terminal only, and a job under nohup would show nothing."""

    def __init__(self, total: int) -> None:
        super().__init__()
        from interestgym.progress import LogProgress

        self.bar = LogProgress(total, desc="training", unit="step")

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()
