"""The native vector env as a Gymnasium ``VectorEnv``: ``gymnasium.make_vec`` reaches the fast path.

``gymnasium.make_vec("interestgym/InterestReplay-v0", num_envs=64, dataset=...)`` (the registered
``vector_entry_point``) returns :class:`InterestReplayVectorEnv`: the same lock-step replay on numpy
arrays that PPO trains on (:class:`~interestgym.envs.vector.InterestReplayVecEnv`), with Gymnasium's
vector API. Autoreset is ``SAME_STEP``: when a user's history ends, ``step`` returns the next user's
first observation and puts the finished one's last observation in ``infos["final_obs"]`` and its id in
``infos["final_info"]["user_id"]``. Every step's ``infos`` also hold ``scored``, ``metric`` (the agent's own
metric, NaN where nothing was scored), ``strengths`` (the update strengths applied, (num_envs, 4)) and
``user_id`` (the user each slot replays from now on), each with its ``_key`` mask. ``reset(seed=...)`` takes an
int (a list: its first item seeds every slot's draws); ``options`` are refused (every slot draws its users).

Gymnasium's observation wrappers for vector envs (``NormalizeObservation``, ``FlattenObservation`` ...)
take only ``NEXT_STEP`` or ``DISABLED`` autoreset envs: ``make_vec(..., autoreset_mode="next_step")`` gives them
this env in Gymnasium's ``NEXT_STEP`` form (a slot returns its ended user's last observation, then restarts at the
next step, its action ignored, reward 0; ``final_obs`` / ``final_info`` are not used). ``vectorization_mode="sync"``
/ ``"async"`` run Gymnasium's own vector envs over the single env (slower: one Python step per user).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from interestgym.envs.vector import InterestReplayVecEnv

from interestgym.errors import InterestGymError


class InterestReplayVectorEnv(VectorEnv):
    """``num_envs`` users of a split replayed in lock-step (Gymnasium's vector API).

    :param num_envs: users replayed at once.
    :param autoreset_mode: ``"same_step"`` (default, the fast path's own) or ``"next_step"`` (Gymnasium's default,
        which its vector observation wrappers need): a slot whose user ended returns that user's last observation
        with ``terminated`` / ``truncated``; at the next step it ignores its action and returns the next user's first
        observation with reward 0 (``infos["scored"]`` False, NaN strengths). An ``AutoresetMode`` is taken too.
    Other arguments: those of :class:`~interestgym.envs.vector.InterestReplayVecEnv`: the single env's
    (``dataset``, ``split``, ``protocol``, ``metric``, ``max_events``, ``reward_baseline``, ``scoring``, ...)
    and the vector env's own (``residual_to``, ``gain_lever``, ``context_lever``, ``slot_lever``,
    ``change_penalty``, ``window``, ``seed``), which widen the action space past 4 with a residual
    reference rule; ``gymnasium.make`` (the single env) refuses those.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 8, *, render_mode: str | None = None, autoreset_mode: str | AutoresetMode = "same_step",
                 **kwargs: Any) -> None:
        from interestgym.envs.replay import reject_render_mode

        reject_render_mode(render_mode)
        modes = {"same_step": AutoresetMode.SAME_STEP, "next_step": AutoresetMode.NEXT_STEP}
        mode = modes.get(autoreset_mode.name.lower() if isinstance(autoreset_mode, AutoresetMode) else str(autoreset_mode).lower())
        if mode is None:
            raise InterestGymError(f"autoreset_mode={autoreset_mode!r}: expected 'same_step' or 'next_step'")
        self.metadata = {**type(self).metadata, "autoreset_mode": mode}
        self._next_step = mode is AutoresetMode.NEXT_STEP
        self._pending = np.zeros(num_envs, dtype=bool)  # NEXT_STEP: slots whose user ended at the last step
        self._vec = InterestReplayVecEnv(n_envs=num_envs, **kwargs)
        self.num_envs = num_envs
        self.render_mode = None
        self.single_observation_space = self._vec.observation_space
        self.single_action_space = self._vec.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

    @property
    def data(self) -> Any:
        """The precomputed replay arrays (:class:`~interestgym.envs.replay_data.ReplayData`)."""
        return self._vec.data

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw a user for every slot (``seed`` seeds the draws) and return their first observations."""
        if options:
            raise InterestGymError(f"reset options {sorted(options)}: the vector env takes none (every slot draws its users; "
                                   "the single env's reset(options={'user_id': ...}) picks one)")
        if seed is not None:
            self._vec.seed(seed if isinstance(seed, int) else int(seed[0]))
        obs = self._vec.reset()
        self._pending[:] = False
        user_ids = np.array([info["user_id"] for info in self._vec.reset_infos], dtype=object)
        return obs, {"user_id": user_ids, "_user_id": np.ones(self.num_envs, dtype=bool)}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One decision for every slot; finished users are replaced in the same step (SAME_STEP) or at the next
        (NEXT_STEP: see the class)."""
        vec = self._vec
        vec.step_async(np.asarray(actions, dtype=np.float32))
        # the arrays themselves: no per-slot info dicts to build and take apart again
        step = vec._advance(skip=self._pending if self._pending.any() else None)
        every = np.ones(self.num_envs, dtype=bool)
        out: dict[str, Any] = {
            "scored": step.scored.copy(), "_scored": every,
            # the agent's own metric at a scored step (NaN where nothing was scored; the reward may be relative)
            "metric": np.where(step.scored, step.metric, np.nan).astype(np.float64), "_metric": step.scored.copy(),
            # the update strengths applied (a_L, a_S, w, p), and the user each slot replays from now on
            "strengths": step.strengths.astype(np.float64), "_strengths": every,
            "user_id": np.array(vec.current_user_ids, dtype=object),
            "_user_id": every,
        }
        if self._next_step:
            # the ended users' last observations now; the slots restart (action ignored) at the next step
            obs = step.obs.copy()
            obs[step.finished] = step.final_obs
            out["user_id"][step.finished] = step.final_user_ids  # whose observation it is, until the restart
            self._pending[:] = False
            self._pending[step.finished] = True
            return obs, step.rewards.astype(np.float64), step.terminated.copy(), step.truncated, out
        if len(step.finished):
            dones = np.zeros(self.num_envs, dtype=bool)
            dones[step.finished] = True
            final_obs = np.empty(self.num_envs, dtype=object)
            final_user = np.empty(self.num_envs, dtype=object)
            for slot, last in zip(step.finished.tolist(), step.final_obs):  # one array per finished slot
                final_obs[slot] = last
            final_user[step.finished] = step.final_user_ids
            out["final_obs"], out["_final_obs"] = final_obs, dones.copy()
            # the finished users' ids (Gymnasium's final_info: a dict of the finished slots' values)
            out["final_info"], out["_final_info"] = {"user_id": final_user, "_user_id": dones.copy()}, dones.copy()
        return step.obs, step.rewards.astype(np.float64), step.terminated.copy(), step.truncated, out

    def close(self, **kwargs: Any) -> None:
        self._vec.close()
