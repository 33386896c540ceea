"""What a training checkpoint keeps besides the weights and the normaliser, so that a resumed run continues exactly
as the uninterrupted one would have, to the bit.

A checkpoint is written at the start of a rollout (``InterestTrainingCallback``): after a PPO update, before the next
steps are collected. Continuing from there needs, besides the model (weights, optimiser, step and update counters:
SB3's zip) and the observation / reward statistics (``normaliser_<step>.npz``):

* the training env where it is: every slot's replay (:meth:`InterestReplayVecEnv.state`: the engine's per-row arrays,
  the episode step counts, the last observation) and the random state that draws the next users;
* the wrappers' running parts: VecNormalize's discounted returns per env (they feed the reward statistics) and last
  raw observation and reward, VecMonitor's returns and lengths of the episodes under way;
* SB3's own ``_last_obs`` / ``_last_episode_starts`` (without them ``learn`` resets the env: every slot would start a
  new user);
* the random states of torch (action sampling), numpy's global generator (PPO's minibatch order) and Python's
  ``random`` (loading a model reseeds all three).

The torch generator saved is the CPU's, which samples the actions of a run on the CPU (``--device cpu``, the default);
a run on a GPU samples with the GPU's generator, which is not saved, so its resumes are not exact.

They are one compressed ``.npz`` (arrays, plus one JSON string for the random states and counters; no pickle), written and
checked like the checkpoint's other files. A checkpoint written before this file existed resumes as it always did:
from its weights and statistics, with the env reset, so the resumed run is a valid continuation but not the
uninterrupted run's twin.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from interestgym.errors import ArtifactError, InterestGymError

#: Version of the file's layout.
FORMAT = 1


def _wrappers(model: Any) -> tuple[Any, Any, Any]:
    """(the InterestReplayVecEnv, its VecMonitor or None, the VecNormalize or None) of the model's training env."""
    from interestgym.envs.vector import InterestReplayVecEnv
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    env, monitor, norm = model.get_env(), None, None
    while not isinstance(env, InterestReplayVecEnv):
        if isinstance(env, VecMonitor):
            monitor = env
        elif isinstance(env, VecNormalize):
            norm = env
        if not hasattr(env, "venv"):
            raise InterestGymError(f"the model's training env is {type(env).__name__}, not an InterestReplayVecEnv inside "
                                   "SB3's vector wrappers; its state cannot be saved")
        env = env.venv
    return env, monitor, norm


def capture(model: Any) -> bytes:
    """The state above, as the bytes of an ``.npz`` file."""
    import torch

    base, monitor, norm = _wrappers(model)
    arrays, values = base.state()  # new dicts: added to below
    if monitor is not None:
        arrays["monitor.episode_returns"] = monitor.episode_returns
        arrays["monitor.episode_lengths"] = monitor.episode_lengths
        values["monitor.episode_count"] = int(monitor.episode_count)
    if norm is not None:
        for name in ("returns", "old_obs", "old_reward"):
            arrays[f"normaliser.{name}"] = np.asarray(getattr(norm, name))
    arrays["model.last_obs"] = np.asarray(model._last_obs)
    arrays["model.last_episode_starts"] = np.asarray(model._last_episode_starts)
    if model._last_original_obs is not None:
        arrays["model.last_original_obs"] = np.asarray(model._last_original_obs)
    arrays["rng.torch"] = torch.get_rng_state().numpy()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    arrays["rng.numpy_keys"] = keys
    values["rng.numpy"] = [kind, int(pos), int(has_gauss), float(cached)]
    values["rng.python"] = random.getstate()
    values["num_timesteps"] = int(model.num_timesteps)
    arrays["values"] = np.array(json.dumps({"format": FORMAT, **values}))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # mostly zeros on a large catalogue (the per-row category counts)
    return buf.getvalue()


def restore(model: Any, data: bytes, where: Path) -> str | None:
    """Put :func:`capture`'s state back into ``model`` (just loaded from the same checkpoint, on an env built with the
    run's settings) and the process's random generators.

    :return: None, or a note when the state was taken on other replay data (the dataset's events changed under the same
        split, which ``train --resume`` allows with a note): nothing is restored then (the slots' cursors would index
        other decisions), and the run continues from the checkpoint's weights with the env started afresh.
    :raises ArtifactError: naming ``where`` when the file is not such a state, or one of another step, dataset, env
        count or scoring.
    """
    import torch

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        values = json.loads(str(arrays.pop("values")))
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{where}: not a training state file ({exc})") from None
    if values.get("format") != FORMAT:
        raise ArtifactError(f"{where}: format {values.get('format')!r}; this interestgym reads {FORMAT}")
    if values.get("num_timesteps") != int(model.num_timesteps):
        raise ArtifactError(f"{where}: the state of step {values.get('num_timesteps')}; its checkpoint's model is at step "
                            f"{int(model.num_timesteps)}")
    base, monitor, norm = _wrappers(model)
    if values.get("replay") is not None and values["replay"] != base.replay_fingerprint():
        return (f"{where}: taken on other replay data (the dataset's events changed since the checkpoint); the run continues "
                "from the checkpoint's weights with every env slot starting a new user (not exactly as the uninterrupted run)")
    try:
        base.load_state({k: v for k, v in arrays.items() if k.startswith(("engine.", "env."))}, values, str(where))
        if monitor is not None:
            monitor.episode_returns = arrays["monitor.episode_returns"].copy()
            monitor.episode_lengths = arrays["monitor.episode_lengths"].copy()
            monitor.episode_count = int(values["monitor.episode_count"])
        if norm is not None:
            for name in ("returns", "old_obs", "old_reward"):
                setattr(norm, name, arrays[f"normaliser.{name}"].copy())
        model._last_obs = arrays["model.last_obs"].copy()
        model._last_episode_starts = arrays["model.last_episode_starts"].copy()
        if "model.last_original_obs" in arrays:
            model._last_original_obs = arrays["model.last_original_obs"].copy()
        torch.set_rng_state(torch.from_numpy(arrays["rng.torch"].copy()))
        kind, pos, has_gauss, cached = values["rng.numpy"]
        np.random.set_state((kind, arrays["rng.numpy_keys"], pos, has_gauss, cached))
        version, internal, gauss = values["rng.python"]
        random.setstate((version, tuple(internal), gauss))
    except KeyError as exc:
        raise ArtifactError(f"{where}: {exc.args[0]} is missing (a training state of another kind of run?)") from None
    except InterestGymError as exc:
        raise ArtifactError(str(exc)) from None
    return None
