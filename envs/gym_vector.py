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
take only ``NEXT_STEP`` or ``DISABLED`` autoreset envs and refuse this one; SB3's ``VecNormalize`` over
:class:`~interestgym.envs.vector.InterestReplayVecEnv` is the product's way to normalise observations
(``interestgym train`` uses it), and ``gymnasium.make_vec(..., vectorization_mode="sync")`` gives Gymnasium's
own ``NEXT_STEP`` vector env over the single env (slower: one Python step per user).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from interestgym.envs.vector import InterestReplayVecEnv


class InterestReplayVectorEnv(VectorEnv):
    """``num_envs`` users of a split replayed in lock-step (Gymnasium's vector API).

    :param num_envs: users replayed at once.
    Other arguments: those of :class:`~interestgym.envs.vector.InterestReplayVecEnv`: the single env's
    (``dataset``, ``split``, ``protocol``, ``metric``, ``max_events``, ``reward_baseline``, ``scoring``, ...)
    and the vector env's own (``residual_to``, ``gain_lever``, ``context_lever``, ``slot_lever``,
    ``change_penalty``, ``window``, ``seed``), which widen the action space past 4 with a residual
    reference rule; ``gymnasium.make`` (the single env) refuses those.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 8, *, render_mode: str | None = None, **kwargs: Any) -> None:
        from interestgym.envs.replay import reject_render_mode

        reject_render_mode(render_mode)
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
            from interestgym.errors import InterestGymError

            raise InterestGymError(f"reset options {sorted(options)}: the vector env takes none (every slot draws its users; "
                                   "the single env's reset(options={'user_id': ...}) picks one)")
        if seed is not None:
            self._vec.seed(seed if isinstance(seed, int) else int(seed[0]))
        obs = self._vec.reset()
        user_ids = np.array([info["user_id"] for info in self._vec.reset_infos], dtype=object)
        return obs, {"user_id": user_ids, "_user_id": np.ones(self.num_envs, dtype=bool)}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One decision for every slot; finished users are replaced in the same step (SAME_STEP)."""
        vec = self._vec
        vec.step_async(np.asarray(actions, dtype=np.float32))
        step = vec._advance()  # the arrays themselves: no per-slot info dicts to build and take apart again
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
