"""A PPO model (+ its observation normaliser) as a Policy, and how both are stored without pickle.

Loading one from a run folder (file names, checksums): :func:`interestgym.agents.run_folder.load_run_policy`.

The env's action box is [-1, 1]^4 (component u means the strength (u + 1) / 2), so SB3's Gaussian
starts at strength 0.5 and "clip to the box" is the whole action transform. A policy from a run
applies, like SB3's ``predict``: VecNormalize's observation normalisation (frozen statistics), the
deterministic actor (Gaussian mean), clipping to the box.

Run folders get shared between people, and a pickle runs code when it is loaded, so nothing here
unpickles:

* the normaliser is VecNormalize's statistics as plain arrays in an ``.npz`` (:class:`Normaliser`),
  read with ``allow_pickle=False``;
* the model is SB3's own zip (``model.save``: a JSON ``data`` file plus torch state dicts). SB3
  cloudpickles a few entries of ``data`` (classes, spaces, schedules, the last observation);
  :func:`load_ppo` hands SB3 a replacement for every one of them (``custom_objects``), rebuilt here
  from what a run of this package always has, so SB3 never unpickles them; an entry not known here
  is refused. The torch files are read with ``weights_only=True`` (tensors only), checked here
  whatever SB3 version is installed.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from interestgym.envs.policies import ModelPolicy
from stable_baselines3.common.vec_env import VecNormalize

from interestgym.core.interest import ScoringConfig
from interestgym.errors import ArtifactError, InterestGymError


def policy_from_model(model: Any, vecnorm: Any | None, *, name: str = "ppo", deterministic: bool = True,
                      scoring: ScoringConfig | None = None) -> ModelPolicy:
    """Wrap a PPO model (+ its observation normaliser: a VecNormalize or a :class:`Normaliser`) as a Policy."""
    transform = vecnorm.normalize_obs if vecnorm is not None and vecnorm.norm_obs else None
    return ModelPolicy(model, deterministic=deterministic, obs_transform=transform, name=name, scoring=scoring)


# ------------------------------------------------------------------------------------ normaliser
#: Version of the arrays in a normaliser ``.npz`` (bumped if the set of arrays changes).
NORMALISER_FORMAT = 1
_NORMALISER_SCALARS = ("obs_count", "ret_mean", "ret_var", "ret_count", "clip_obs", "clip_reward", "epsilon", "gamma")
#: The arrays of a normaliser ``.npz``, and nothing else.
NORMALISER_ARRAYS = ("format", "obs_mean", "obs_var", *_NORMALISER_SCALARS, "norm_obs", "norm_reward")


@dataclass
class RunningStats:
    """Mean, variance and count of a stream (SB3's ``RunningMeanStd`` as plain numbers)."""

    mean: np.ndarray
    var: np.ndarray
    count: float


@dataclass
class Normaliser:
    """VecNormalize's statistics and settings as plain arrays: what a run stores, and a frozen
    observation normaliser for inference with VecNormalize's attribute names (``norm_obs``,
    ``obs_rms.mean / .var``, ``epsilon``, ``clip_obs``, ``normalize_obs``), which the policy wrapper
    and the ONNX export read."""

    obs_rms: RunningStats
    ret_rms: RunningStats
    clip_obs: float
    clip_reward: float
    epsilon: float
    gamma: float
    norm_obs: bool
    norm_reward: bool
    #: VecNormalize's flag: statistics are never updated through this object.
    training: bool = False

    @classmethod
    def from_vecnormalize(cls, vecnorm: VecNormalize) -> Normaliser:
        if isinstance(getattr(vecnorm, "obs_rms", None), dict):
            raise ArtifactError("VecNormalize holds per-key statistics (Dict observations); expected a single Box")
        # VecNormalize creates obs_rms only when it normalises observations (always, in training here)
        obs = getattr(vecnorm, "obs_rms", None)
        obs_stats = (RunningStats(np.zeros(0), np.zeros(0), 0.0) if obs is None
                     else RunningStats(np.array(obs.mean, dtype=np.float64), np.array(obs.var, dtype=np.float64), float(obs.count)))
        ret = vecnorm.ret_rms
        return cls(obs_rms=obs_stats,
                   ret_rms=RunningStats(np.array(ret.mean, dtype=np.float64), np.array(ret.var, dtype=np.float64), float(ret.count)),
                   clip_obs=float(vecnorm.clip_obs), clip_reward=float(vecnorm.clip_reward), epsilon=float(vecnorm.epsilon),
                   gamma=float(vecnorm.gamma), norm_obs=bool(vecnorm.norm_obs), norm_reward=bool(vecnorm.norm_reward))

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "format": np.array(NORMALISER_FORMAT, dtype=np.int64),
            "obs_mean": self.obs_rms.mean, "obs_var": self.obs_rms.var, "obs_count": np.array(self.obs_rms.count),
            "ret_mean": np.asarray(self.ret_rms.mean, dtype=np.float64).reshape(()),
            "ret_var": np.asarray(self.ret_rms.var, dtype=np.float64).reshape(()), "ret_count": np.array(self.ret_rms.count),
            "clip_obs": np.array(self.clip_obs), "clip_reward": np.array(self.clip_reward), "epsilon": np.array(self.epsilon),
            "gamma": np.array(self.gamma), "norm_obs": np.array(self.norm_obs), "norm_reward": np.array(self.norm_reward),
        }

    def to_bytes(self) -> bytes:
        """An ``.npz`` (uncompressed zip of ``.npy`` arrays, no pickle) with fixed timestamps, so that
        the same statistics always give the same bytes (and the same checksum)."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, array in self.arrays().items():
                with zf.open(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w") as fh:
                    np.lib.format.write_array(fh, np.asarray(array), allow_pickle=False)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, where: Any) -> Normaliser:
        """Read :meth:`to_bytes`'s ``.npz`` (``allow_pickle=False``: an object array is refused, not unpickled).

        :raises ArtifactError: naming ``where`` for anything but the arrays written by training.
        """
        expected = set(NORMALISER_ARRAYS)
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                if not hasattr(npz, "files") or set(npz.files) != expected:
                    found = sorted(getattr(npz, "files", [])) or "a single array"
                    raise ArtifactError(f"{where}: holds {found}; expected the arrays {sorted(expected)}")
                a = {name: npz[name] for name in npz.files}
        except ArtifactError:
            raise
        except Exception as exc:  # noqa: BLE001 - zip / npy / pickle-refused errors all mean "not our file"
            raise ArtifactError(f"{where}: cannot be read as the .npz of normalisation statistics written by "
                                f"`interestgym train` ({exc})") from None
        if a["format"].dtype.kind not in "iu" or a["format"].shape != () or int(a["format"]) != NORMALISER_FORMAT:
            raise ArtifactError(f"{where}: format {a['format']!r}; this interestgym reads format {NORMALISER_FORMAT}")
        mean, var = a["obs_mean"], a["obs_var"]
        bad = [n for n in ("obs_mean", "obs_var", *_NORMALISER_SCALARS) if a[n].dtype.kind != "f" or not np.isfinite(a[n]).all()]
        bad += [n for n in ("norm_obs", "norm_reward") if a[n].dtype != np.bool_ or a[n].shape != ()]
        if bad or mean.ndim != 1 or var.shape != mean.shape or (var < 0).any() or any(a[n].shape != () for n in _NORMALISER_SCALARS):
            raise ArtifactError(f"{where}: arrays {', '.join(bad) or 'obs_mean / obs_var'} are not the finite statistics "
                                "training writes (1-d float mean and non-negative variance, float scalars, bool flags)")
        return cls(obs_rms=RunningStats(mean.astype(np.float64), var.astype(np.float64), float(a["obs_count"])),
                   ret_rms=RunningStats(a["ret_mean"].astype(np.float64), a["ret_var"].astype(np.float64), float(a["ret_count"])),
                   clip_obs=float(a["clip_obs"]), clip_reward=float(a["clip_reward"]), epsilon=float(a["epsilon"]),
                   gamma=float(a["gamma"]), norm_obs=bool(a["norm_obs"]), norm_reward=bool(a["norm_reward"]))

    def normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        """Exactly ``VecNormalize.normalize_obs`` (float64 statistics, then float32)."""
        if not self.norm_obs:
            return np.array(obs, copy=True)
        rms = self.obs_rms
        return np.clip((obs - rms.mean) / np.sqrt(rms.var + self.epsilon), -self.clip_obs, self.clip_obs).astype(np.float32)

    def to_vecnormalize(self, venv: Any) -> VecNormalize:
        """A live VecNormalize around ``venv`` that continues from these statistics (``--resume``)."""
        vecnorm = VecNormalize(venv, training=True, norm_obs=self.norm_obs, norm_reward=self.norm_reward, clip_obs=self.clip_obs,
                               clip_reward=self.clip_reward, gamma=self.gamma, epsilon=self.epsilon)
        if self.norm_obs:
            if vecnorm.obs_rms.mean.shape != self.obs_rms.mean.shape:
                raise ArtifactError(f"normalisation statistics of shape {self.obs_rms.mean.shape}; the env observes {vecnorm.obs_rms.mean.shape}")
            vecnorm.obs_rms.mean, vecnorm.obs_rms.var = self.obs_rms.mean.copy(), self.obs_rms.var.copy()
            vecnorm.obs_rms.count = self.obs_rms.count
        vecnorm.ret_rms.mean, vecnorm.ret_rms.var = self.ret_rms.mean.copy(), self.ret_rms.var.copy()
        vecnorm.ret_rms.count = self.ret_rms.count
        return vecnorm


# ------------------------------------------------------------------------------------ PPO model
#: A memory address in a repr (``<function ActorCriticPolicy.forward at 0x7fd5c2b4b9c0>``), dropped from the zip's data.
_ADDRESS = re.compile(rb" at 0x[0-9a-f]+>")
#: The date every member of a model zip carries (the zip format's earliest): the same model, the same bytes.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def model_bytes(model: Any) -> bytes:
    """SB3's zip of ``model`` (``model.save`` into memory), canonical: two runs that end with the same model write the
    same bytes, so its sha256 (``info.json``, ``shipped.json``) can confirm a reproduction. SB3 also stores the wall
    clock (the training's ``start_time``, each finished episode's time in ``ep_info_buffer``, each member's date) and
    the process's memory addresses (in the readable reprs beside its pickled classes), none of which loading reads
    (:func:`load_ppo` replaces the episode buffers; ``learn`` sets a new start time and start step): they are written
    as 0, empty windows of the same size, :data:`ZIP_DATE` and no address. The model itself is left as it was."""
    kept = model.start_time, model.ep_info_buffer, model.ep_success_buffer, model._num_timesteps_at_start
    window = getattr(model, "_stats_window_size", 100)
    try:
        # (and the step this learn() call started at, which learn() sets again: a resumed run's zip is the uninterrupted's)
        model.start_time, model.ep_info_buffer, model.ep_success_buffer = 0, deque(maxlen=window), deque(maxlen=window)
        model._num_timesteps_at_start = 0
        buf = io.BytesIO()
        model.save(buf)
    finally:
        model.start_time, model.ep_info_buffer, model.ep_success_buffer, model._num_timesteps_at_start = kept
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=ZIP_DATE)
            fixed.compress_type, fixed.external_attr = info.compress_type, info.external_attr
            content = src.read(info.filename)
            if info.filename == "data":  # the readable reprs SB3 writes beside each pickled class hold memory addresses
                content = _ADDRESS.sub(b">", content)
            dst.writestr(fixed, content)
    return out.getvalue()


#: ``data`` entries SB3 stores cloudpickled in a PPO zip, each replaced on loading by
#: :func:`_replacements` (never unpickled). The last observation and the episode buffers are
#: dropped: SB3 resets the env before training on, and ``--resume`` refills the episode buffer
#: from the checkpoint's JSON record.
SERIALIZED_ENTRIES = ("policy_class", "observation_space", "action_space", "rollout_buffer_class", "clip_range", "lr_schedule",
                      "_last_obs", "_last_episode_starts", "_last_original_obs", "ep_info_buffer", "ep_success_buffer")


def _shape(entry: Any, default: tuple[int, ...]) -> tuple[int, ...]:
    # SB3 writes a space's JSON-able attributes next to its pickle ("_shape": [26]): read that, not the pickle.
    shape = entry.get("_shape") if isinstance(entry, dict) else None
    if isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int) and shape[0] > 0:
        return (shape[0],)
    return default


def _replacements(data: dict[str, Any], env: Any, clip_range: float) -> dict[str, Any]:
    import gymnasium as gym
    from stable_baselines3.common.buffers import RolloutBuffer
    from stable_baselines3.common.policies import ActorCriticPolicy

    from interestgym.core.features import FEATURE_HIGH, FEATURE_LOW, N_FEATURES

    window = data.get("_stats_window_size") if isinstance(data.get("_stats_window_size"), int) else 100
    if env is not None:
        obs_space, act_space = env.observation_space, env.action_space
    else:
        obs_shape = _shape(data.get("observation_space"), (N_FEATURES,))
        # the replay env's bounds; a model of another feature count keeps its shape (export names the mismatch)
        obs_space = (gym.spaces.Box(FEATURE_LOW.copy(), FEATURE_HIGH.copy(), (N_FEATURES,), dtype=np.float32) if obs_shape == (N_FEATURES,)
                     else gym.spaces.Box(-np.inf, np.inf, obs_shape, dtype=np.float32))
        act_space = gym.spaces.Box(-1.0, 1.0, _shape(data.get("action_space"), (4,)), dtype=np.float32)
    return {
        "policy_class": ActorCriticPolicy,  # what "MlpPolicy" means for PPO
        "observation_space": obs_space, "action_space": act_space,
        "rollout_buffer_class": RolloutBuffer,
        # SB3 rebuilds both schedules from these constants (_setup_model): lr from the JSON learning_rate
        "clip_range": float(clip_range), "lr_schedule": None,
        "_last_obs": None, "_last_episode_starts": None, "_last_original_obs": None,
        # empty windows of finished episodes (SB3 keeps them across learn(reset_num_timesteps=False))
        "ep_info_buffer": deque(maxlen=window), "ep_success_buffer": deque(maxlen=window),
    }


class InferenceOnlyOptimizer:
    """The optimizer of a PPO model loaded for inference (``load_ppo`` without ``env``): SB3 builds one with the
    policy, and constructing a torch optimizer imports ``torch._dynamo`` (~1.5 s, a sixth of the quick start's
    ``evaluate``). This one keeps the saved optimizer state as it was loaded and refuses to train."""

    def __init__(self, params: Any, **kwargs: Any) -> None:
        self._state: Any = None

    def load_state_dict(self, state: Any, **kwargs: Any) -> None:
        self._state = state

    def state_dict(self) -> Any:
        return self._state

    def __getattr__(self, name: str) -> Any:  # step, zero_grad, param_groups ...: training
        if name.startswith("__"):  # pickling and copying (a model sent to Ray workers) look these up: Python's defaults
            raise AttributeError(name)
        raise InterestGymError(f"this PPO model was loaded for inference (no env given to load_ppo), without an optimizer "
                               f"(optimizer.{name}); load it with env= to train it on")


def load_ppo(raw: bytes, where: Any, *, env: Any = None, device: str = "cpu", clip_range: float = 0.2) -> Any:
    """A PPO model from the bytes of its SB3 zip, without unpickling anything.

    :param where: the file, for messages.
    :param env: the (VecNormalize-wrapped) env to continue training on, or None for inference.
    :param clip_range: the run's PPO clip range (SB3 stores it as a pickled schedule; inference ignores it).
    :raises ArtifactError: for a damaged zip, a torch file that is not plain tensors, or a pickled
        entry this module does not rebuild.
    """
    import torch
    from stable_baselines3 import PPO

    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            data = json.loads(archive.read("data").decode("utf-8"))
            for name in archive.namelist():
                if name.endswith(".pth"):
                    # tensors only, whatever SB3 version reads it next (a full unpickler would run code)
                    torch.load(io.BytesIO(archive.read(name)), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - zip, JSON and torch errors all mean a damaged or foreign file
        raise ArtifactError(f"{where}: cannot be read as a stable-baselines3 model zip ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{where}: its 'data' is not a JSON object; expected a model written by `interestgym train`")
    unknown = [k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v and k not in SERIALIZED_ENTRIES]
    if unknown:
        raise ArtifactError(f"{where}: pickled entries {', '.join(map(repr, unknown))} in the model's 'data' that interestgym does "
                            "not rebuild; refusing to unpickle them (a pickle can run code). Expected a model written by `interestgym train`")
    custom = _replacements(data, env, clip_range)
    if env is None and isinstance(data.get("policy_kwargs"), dict) and ":serialized:" not in data["policy_kwargs"]:
        # inference: no torch optimizer (building one imports torch._dynamo, ~1.5 s of every evaluate / export / report)
        custom["policy_kwargs"] = {**data["policy_kwargs"], "optimizer_class": InferenceOnlyOptimizer}
    try:
        return PPO.load(io.BytesIO(raw), env=env, device=device, custom_objects=custom)
    except Exception as exc:  # noqa: BLE001 - a mismatching or damaged model: one message naming the file
        raise ArtifactError(f"{where}: cannot load the PPO model ({type(exc).__name__}: {exc})") from None
