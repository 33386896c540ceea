"""Training callbacks: TensorBoard scalars of the product, periodic validation, checkpoints.

SB3 writes its own scalars (``rollout/``, ``train/``, ``time/``); these callbacks add the product's,
under stable names (CleanRL style), all on the step axis ``num_timesteps`` so that a resumed run
continues the same curves:

==============================  =================================================================
``charts/mean_reward``          mean raw (un-normalised) env reward over the last rollout
``charts/mean_metric``          mean of the reward metric (e.g. nDCG@10) at scored steps
``charts/scored_fraction``      fraction of decisions followed by at least one scoring point
``charts/update_rate``          fraction of decisions with a_L or a_S above ``update_threshold``
``charts/mean_a_long``          mean long-term update strength a_L in [0, 1] (as applied)
``charts/mean_a_short``         mean short-term update strength a_S
``charts/mean_mix_weight``      mean weight w of the short-term profile in the score
``charts/mean_pop_weight``      mean popularity weight p
``charts/steps_per_second``     env steps per wall-clock second over the last rollout + update
``eval/<metric>``               validation-user metric of the deterministic policy (mean over users)
``eval/best_<metric>``          best validation value so far (the model saved as ``best_model``)
==============================  =================================================================

Checkpoints (model + VecNormalize statistics + callback state) are written at rollout boundaries
(after the PPO update), so a resumed run restarts exactly where the saved model's step counter
says, and written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import io
import json
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import TensorBoardOutputFormat
from stable_baselines3.common.vec_env import VecNormalize

from interestgym.core.protocol import action_to_strengths
from interestgym.io import write_bytes_atomic, write_json_atomic

ACTION_NAMES = ("a_long", "a_short", "mix_weight", "pop_weight")


def hyperparameter_markdown(params: dict[str, Any]) -> str:
    """The CleanRL hyper-parameter table: ``|param|value|`` rows, in the given order."""
    rows = "\n".join(f"|{k}|{json.dumps(v) if not isinstance(v, str) else v}|" for k, v in params.items())
    return "|param|value|\n|-|-|\n" + rows


def tensorboard_writer(logger: Any):
    """The SummaryWriter behind SB3's logger, or None when TensorBoard output is off."""
    for fmt in getattr(logger, "output_formats", []):
        if isinstance(fmt, TensorBoardOutputFormat):
            return fmt.writer
    return None


def save_model_atomic(model: Any, path: Path) -> None:
    """``model.save`` into memory, then one atomic write (no half-written zip on a kill)."""
    buf = io.BytesIO()
    model.save(buf)
    write_bytes_atomic(path, buf.getvalue())


def save_vecnormalize_atomic(vecnorm: VecNormalize | None, path: Path) -> None:
    if vecnorm is None:
        return
    # VecNormalize.__getstate__ leaves out the wrapped env; VecNormalize.load re-attaches one.
    write_bytes_atomic(path, pickle.dumps(vecnorm))


class InterestTrainingCallback(BaseCallback):
    """Logs the product's rollout scalars, validates periodically, keeps best / periodic checkpoints.

    :param run_dir: the run directory (``checkpoints/``, ``best/`` and ``state.json`` go there).
    :param validate: callable returning ``{metric_name: value}`` for the current model on validation
        users (None: no validation).
    :param select_metric: key of ``validate``'s result that decides the best model.
    :param eval_every: validate every this many env steps (checked at rollout boundaries).
    :param checkpoint_every: checkpoint every this many env steps (checked at rollout boundaries).
    :param hyperparameters: written once as a text table at the start of a fresh run.
    :param update_threshold: a decision counts as an update when a_L or a_S exceeds this.
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
        self.keep_checkpoints = max(1, int(keep_checkpoints))
        state = state or {}
        self.best_value: float = float(state.get("best_value", -np.inf))
        self.best_step: int | None = state.get("best_step")
        self.last_eval_step: int = int(state.get("last_eval_step", 0))
        self.last_checkpoint_step: int = int(state.get("last_checkpoint_step", 0))
        self.eval_history: list[dict[str, Any]] = list(state.get("eval_history", []))
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
        }

    # ------------------------------------------------------------------ rollout statistics
    def _reset_rollout_stats(self) -> None:
        self._actions: list[np.ndarray] = []
        self._rewards: list[np.ndarray] = []
        self._metric: list[float] = []
        self._scored = 0
        self._decisions = 0

    def _on_training_start(self) -> None:
        writer = tensorboard_writer(self.logger)
        if writer is not None and self.hyperparameters is not None and self.num_timesteps == 0:
            writer.add_text("hyperparameters", hyperparameter_markdown(self.hyperparameters), 0)
            writer.flush()
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
        actions = self.locals.get("clipped_actions")
        if actions is not None:
            self._actions.append(action_to_strengths(actions))
        infos = self.locals.get("infos", [])
        raw = []
        for info in infos:
            self._decisions += 1
            if "raw_reward" in info:
                raw.append(info["raw_reward"])
            if info.get("scored"):
                self._scored += 1
                metric = info.get("metric")
                if metric is not None:
                    self._metric.append(float(metric))
        if raw:
            self._rewards.append(np.asarray(raw, dtype=np.float64))
        elif "rewards" in self.locals and self.locals["rewards"] is not None:
            vecnorm = self.model.get_vec_normalize_env()
            rew = vecnorm.get_original_reward() if vecnorm is not None else self.locals["rewards"]
            self._rewards.append(np.asarray(rew, dtype=np.float64))
        return True

    def _on_rollout_end(self) -> None:
        if self._actions:
            acts = np.concatenate(self._actions, axis=0)
            updated = (acts[:, 0] > self.update_threshold) | (acts[:, 1] > self.update_threshold)
            self.logger.record("charts/update_rate", float(updated.mean()))
            for j, name in enumerate(ACTION_NAMES[: acts.shape[1]]):
                self.logger.record(f"charts/mean_{name}", float(acts[:, j].mean()))
        if self._rewards:
            self.logger.record("charts/mean_reward", float(np.concatenate(self._rewards).mean()))
        if self._metric:
            self.logger.record("charts/mean_metric", float(np.mean(self._metric)))
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

    def _on_training_end(self) -> None:
        self._maybe_validate(force=True)
        self.save_checkpoint()
        # the final values must reach TensorBoard although no rollout follows
        self.logger.dump(step=self.num_timesteps)

    # ------------------------------------------------------------------ validation / saving
    def _maybe_validate(self, force: bool = False, at_start: bool = False) -> None:
        if self.validate is None or not self.eval_every:
            return
        due = self.num_timesteps - self.last_eval_step >= self.eval_every
        if not due and not at_start and not (force and self.num_timesteps != self.last_eval_step):
            return
        self.last_eval_step = self.num_timesteps
        results = self.validate(self.model)
        for key, value in results.items():
            self.logger.record(f"eval/{key}", float(value))
        value = float(results[self.select_metric])
        self.eval_history.append({"step": int(self.num_timesteps), **{k: float(v) for k, v in results.items()}})
        if value > self.best_value:
            self.best_value = value
            self.best_step = int(self.num_timesteps)
            best = self.run_dir / "best"
            save_model_atomic(self.model, best / "model.zip")
            save_vecnormalize_atomic(self.model.get_vec_normalize_env(), best / "vecnormalize.pkl")
            write_json_atomic(best / "info.json", {"step": self.best_step, "metric": self.select_metric, "value": value})
        self.logger.record(f"eval/best_{self.select_metric}", self.best_value)
        # Dump now so that the validation values sit at the step of the model they measured.
        self.logger.dump(step=self.num_timesteps)
        if self.verbose:
            print(f"step {self.num_timesteps}: validation {self.select_metric}={value:.4f} (best {self.best_value:.4f})")

    def save_checkpoint(self) -> None:
        """Write ``checkpoints/last`` (model, VecNormalize, state.json) atomically; keep a numbered copy."""
        self.last_checkpoint_step = int(self.num_timesteps)
        ck = self.run_dir / "checkpoints"
        save_model_atomic(self.model, ck / f"model_{self.num_timesteps}.zip")
        save_vecnormalize_atomic(self.model.get_vec_normalize_env(), ck / f"vecnormalize_{self.num_timesteps}.pkl")
        # state.json is written last: it names the checkpoint, so a kill between files leaves the
        # previous complete checkpoint in charge.
        write_json_atomic(ck / "state.json", {"num_timesteps": int(self.num_timesteps),
                                              "model": f"model_{self.num_timesteps}.zip",
                                              "vecnormalize": f"vecnormalize_{self.num_timesteps}.pkl",
                                              "callback": self.state_dict()})
        # keep the newest `keep_checkpoints` numbered checkpoints
        steps = sorted(int(p.stem.split("_")[1]) for p in ck.glob("model_*.zip") if p.stem.split("_")[1].isdigit())
        for old in steps[: max(0, len(steps) - self.keep_checkpoints)]:
            for name in (f"model_{old}.zip", f"vecnormalize_{old}.pkl"):
                (ck / name).unlink(missing_ok=True)
