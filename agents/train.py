"""PPO training of the profile-update policy on the replay env: one readable file, top to bottom.

``train_run(config)`` is what ``interestgym train`` runs:

1. resolve the dataset, embeddings and env options (:class:`TrainConfig`: every field documented);
2. tune the reference rule for the baseline-subtracted reward on validation users (if asked for;
   a seeded subsample of ``tune_users`` of them);
3. build the native vector env (many training users replayed in lock-step) wrapped in VecNormalize
   (observation normalisation; reward normalisation optional);
4. create PPO (or load the last checkpoint with ``resume``) and learn with
   :class:`~interestgym.agents.callbacks.InterestTrainingCallback`: TensorBoard scalars, validation
   on held-out users with the deterministic policy, best model, periodic checkpoints;
5. save the final model.

Run directory layout::

    RUN/config.json                 resolved configuration (+ tuned reference rule, agent scoring, protocol)
    RUN/baselines.json              the baselines tuned on validation users (when the reward has a baseline)
    RUN/tb/                         TensorBoard event files (one run; a resumed run appends to it)
    RUN/checkpoints/state.json      the last complete checkpoint: step, file names, callback state
    RUN/checkpoints/model_<step>.zip, vecnormalize_<step>.pkl
    RUN/best/model.zip, vecnormalize.pkl, info.json   best validation metric so far
    RUN/final/model.zip, vecnormalize.pkl, info.json  end of training

Seeding is in one place (:func:`seed_everything`): PPO's torch / numpy seeds and the env's user
sampling all derive from ``config.seed``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interestgym.errors import InterestGymError
from interestgym.io import write_json_atomic

CONFIG_FILE = "config.json"
DATASET_MANIFEST = "manifest.json"  # interestgym.data.dataset.MANIFEST: marks a dataset folder
BASELINES_FILE = "baselines.json"
#: Values of ``TrainConfig.agent_scoring`` (see :func:`agent_scoring_config`).
AGENT_SCORING_MODES = ("reference", "reference-fixed", "plain")


@dataclass
class TrainConfig:
    """Everything a training run depends on (written to ``RUN/config.json``)."""

    dataset: str
    """Path of a prepared dataset directory (``interestgym prepare``)."""
    run_dir: str
    """Output directory of the run."""
    embeddings: str | None = None
    """Embedding name in the dataset (``None``: the only one there is)."""
    timesteps: int = 300_000
    """Total env steps (decisions) of the run; a resumed run continues up to this total."""
    n_envs: int = 64
    """Users replayed in lock-step by the vector env (one PPO rollout = n_envs x n_steps decisions)."""
    seed: int = 0
    """Seed of PPO (torch, numpy) and of the env's user sampling."""
    reward: str = "ndcg@10"
    """Reward metric at the scoring points: ndcg@K, click@K, mrr, auc, f1@K, hit@K, precision@K, recall@K."""
    reward_baseline: str | None = "best"
    """Rule whose metric on the same scoring points is subtracted from the reward (variance
    reduction; tuned on validation users first): a baseline name, ``best`` (every baseline is tuned
    and the best on validation users is used), or ``None`` for the raw metric."""
    tune_users: int | None = 100
    """Validation users the baselines are tuned on (a seeded subsample; ``None``: all). Tuning replays
    every grid point, so this bounds its cost on large datasets."""
    tuned_baselines: str | None = None
    """A ``baselines.json`` from an earlier run / evaluation to reuse instead of tuning again (its
    metric, validation protocol, ``tune_users`` and baselines must match this run's; otherwise an error)."""
    agent_scoring: str = "reference"
    """Fixed scoring terms of the agent: ``reference`` (the reward baseline's ScoringConfig, e.g. the
    tuned Bayesian category term, so the agent competes on the update decisions; when that includes
    the category term (beta_cat > 0) the agent's category counts forget with ``1 - a_L`` of ITS
    action, ``category_forgetting=None``, whatever the rule's forgetting: otherwise the agent could
    not touch the state that decides the ranking), ``reference-fixed`` (exactly the reference's
    ScoringConfig, its forgetting included) or ``plain`` (profiles and p only)."""
    negatives: str = "uniform"
    """Negative sampling for logs without impressions: ``uniform`` or ``popularity``."""
    n_negatives: int = 99
    """Sampled negatives per scoring point (logs without impressions)."""
    protocol_seed: int = 0
    """Seed of the scoring protocol (sampled negatives); part of the protocol, not of the learner."""
    max_events: int | None = None
    """Truncate every episode after this many decisions; the next episode starts a newly drawn user
    at their first decision, so later decisions of longer histories are never replayed in training
    (``None``: whole histories)."""
    learning_rate: float = 3e-4
    """Adam learning rate of PPO."""
    n_steps: int = 64
    """Steps per env per rollout."""
    batch_size: int = 512
    """PPO minibatch size."""
    n_epochs: int = 10
    """PPO epochs over each rollout."""
    gamma: float = 0.9
    """Discount: an update mostly matters for the next few scoring points."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_range: float = 0.2
    """PPO clip range."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value-loss coefficient."""
    max_grad_norm: float = 0.5
    """Gradient clipping."""
    log_std_init: float = -1.0
    """Initial log standard deviation of the Gaussian policy (exp(-1) = 0.37 in action units, i.e.
    0.18 in strength units)."""
    init_from_reference: bool = True
    """Start the policy's mean action at the reference rule's mean action (residual learning: the
    untrained policy already acts like the tuned rule, PPO learns when to deviate from it). When the
    agent's category forgetting is tied to its a_L and the rule's is a fixed f, a_L starts at 1 - f
    instead, so that the untrained agent forgets the category counts like the rule."""
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden layers of the actor and of the critic (separate networks)."""
    norm_reward: bool = True
    """Also normalise rewards by VecNormalize (the baseline-subtracted reward is small: ~0.01)."""
    clip_obs: float = 10.0
    """VecNormalize's clip of normalised observations."""
    eval_every: int = 50_000
    """Validate on held-out users every this many steps (0: only at the end)."""
    eval_users: int | None = 300
    """Validation users used for periodic validation (``None``: all)."""
    checkpoint_every: int = 50_000
    """Checkpoint every this many steps (always at the end too)."""
    update_threshold: float = 0.05
    """A decision counts as an update (``charts/update_rate``) when a_L or a_S exceeds this."""
    device: str = "cpu"
    """Torch device for PPO (an MLP this small is fastest on the CPU)."""
    torch_threads: int = 1
    """Torch CPU threads. One is fastest for a 64x64 MLP: measured 3,300 steps/s with 1 thread and
    450 with 2 on a busy 2-core machine (threads of tiny ops spin and contend)."""
    progress_bar: bool = True
    """Show a progress bar (SB3's, rich / tqdm)."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def validate(self) -> None:
        if self.timesteps <= 0:
            raise InterestGymError(f"--timesteps {self.timesteps}: expected a positive number of steps")
        if self.n_envs <= 0 or self.n_steps <= 1:
            raise InterestGymError(f"--n-envs {self.n_envs} / --n-steps {self.n_steps}: expected n_envs >= 1 and n_steps >= 2")
        if self.batch_size <= 1 or self.batch_size > self.n_envs * self.n_steps:
            raise InterestGymError(
                f"--batch-size {self.batch_size}: expected 2..n_envs*n_steps ({self.n_envs * self.n_steps})"
            )
        if not 0.0 < self.gamma <= 1.0:
            raise InterestGymError(f"--gamma {self.gamma}: expected a number in (0, 1]")
        if not self.learning_rate > 0.0:
            raise InterestGymError(f"--learning-rate {self.learning_rate}: expected a positive number")
        if self.n_epochs < 1:
            raise InterestGymError(f"--n-epochs {self.n_epochs}: expected an integer >= 1")
        for flag, value in (("--tune-users", self.tune_users), ("--eval-users", self.eval_users), ("--max-events", self.max_events)):
            # None means "all users" / "no cut"; the CLI maps 0 users to None, so what is left must be >= 1.
            if value is not None and value < 1:
                expected = "an integer >= 1" if flag == "--max-events" else "an integer >= 1, or 0 for all"
                raise InterestGymError(f"{flag} {value}: expected {expected}")
        for flag, value in (("--eval-every", self.eval_every), ("--checkpoint-every", self.checkpoint_every)):
            if value < 0:
                raise InterestGymError(f"{flag} {value}: expected an integer >= 0 (0: at the end only)")
        if not self.net_arch or any(size < 1 for size in self.net_arch):
            raise InterestGymError(f"--net-arch {','.join(map(str, self.net_arch))!r}: expected positive layer sizes, e.g. 64,64")
        import torch

        try:
            torch.device(self.device)
        except (RuntimeError, ValueError):
            raise InterestGymError(f"--device {self.device!r}: expected a torch device such as cpu, cuda or cuda:0") from None
        if self.negatives not in ("uniform", "popularity"):
            raise InterestGymError(f"--negatives {self.negatives!r}: expected uniform or popularity")
        from interestgym.agents.baselines import BASELINE_NAMES

        if self.reward_baseline is not None and self.reward_baseline not in ("best", *BASELINE_NAMES):
            raise InterestGymError(f"--reward-baseline {self.reward_baseline!r}: expected best, none or one of {', '.join(BASELINE_NAMES)}")
        if self.agent_scoring not in AGENT_SCORING_MODES:
            raise InterestGymError(f"--agent-scoring {self.agent_scoring!r}: expected one of {', '.join(AGENT_SCORING_MODES)}")


# ------------------------------------------------------------------------------------ replay data
def protocol_spec(config: TrainConfig, split: str):
    """The scoring protocol of ``split`` under the run's options."""
    from interestgym.envs.replay_data import ProtocolSpec

    return ProtocolSpec(split=split, n_negatives=config.n_negatives, negatives=config.negatives, seed=config.protocol_seed)


def replay_data(config: TrainConfig, split: str):
    """Precomputed replay arrays of ``split`` (cached per process by the env package)."""
    from interestgym.envs.replay_data import load_replay_data

    return load_replay_data(config.dataset, config.embeddings, protocol_spec(config, split))


def mean_over_users(result: Any, metric: str) -> float:
    """Mean over users of the per-user mean of ``metric`` (the headline aggregate)."""
    return float(result.per_user()[metric].mean())


def validation_scorer(data: Any, metric: str, users: list[str] | None = None) -> Any:
    """``policies -> [mean over validation users of metric]``: the objective of baseline tuning."""
    from interestgym.envs.vector import evaluate_policy

    def score(policies: list[Any]) -> list[float]:
        return [mean_over_users(evaluate_policy(data, p, metric=metric, users=users, record_features=False, progress=False), metric)
                for p in policies]

    return score


def seed_everything(seed: int) -> None:
    """The one place where the learner's global seeds are set (the env's user draws are seeded by PPO
    through ``VecEnv.seed``; negatives by ``protocol_seed``)."""
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def subsample_users(user_ids: np.ndarray, n: int | None, seed: int) -> list[str] | None:
    """At most ``n`` user ids, drawn with ``seed`` (None = all users)."""
    if n is None or n >= len(user_ids):
        return None
    rng = np.random.default_rng(seed)
    return sorted(map(str, rng.choice(np.asarray(user_ids), size=n, replace=False)))


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
    mean_action = np.asarray(reference.act(res.features), dtype=np.float64).mean(axis=0)
    with torch.no_grad():
        model.policy.action_net.bias.copy_(torch.as_tensor(mean_action, dtype=model.policy.action_net.bias.dtype))
    return mean_action


# ------------------------------------------------------------------------------------------ train
def read_run_config(run_dir: Path) -> dict[str, Any]:
    """``RUN/config.json`` as written by :func:`train_run` (the one reader of it: train --resume,
    evaluate and export)."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InterestGymError(f"{path}: missing; expected a run directory written by `interestgym train`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InterestGymError(f"{path}: corrupt run configuration: {exc}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise InterestGymError(f"{path}: no 'config' object; expected the config.json written by `interestgym train`")
    return saved


def embedding_identity(config: TrainConfig) -> dict[str, Any]:
    """Name, fingerprint and dimension of the embedding a run uses (recorded in ``config.json``)."""
    from interestgym.data.dataset import Dataset

    dataset = Dataset.open(config.dataset)
    name = dataset.resolve_embeddings(config.embeddings)
    matrix, meta = dataset.load_embeddings(name)
    return {"name": name, "fingerprint": meta.get("fingerprint"), "dim": int(matrix.shape[1])}


def check_run_embedding(run_dir: Path, saved: dict[str, Any], config: TrainConfig) -> None:
    """Refuse to evaluate / export a run whose embedding was re-encoded differently after training:
    its policy would see vectors from another space without any other sign of it."""
    recorded = saved.get("embedding")
    if not recorded:
        return  # runs from before the identity was recorded
    now = embedding_identity(config)
    if (now["fingerprint"], now["dim"]) != (recorded.get("fingerprint"), recorded.get("dim")):
        raise InterestGymError(
            f"{run_dir / CONFIG_FILE}: the run was trained on embeddings {recorded.get('name')!r} with fingerprint "
            f"{str(recorded.get('fingerprint'))[:16]}... (dim {recorded.get('dim')}); the dataset's {now['name']!r} now has "
            f"fingerprint {str(now['fingerprint'])[:16]}... (dim {now['dim']}): it was re-encoded after training. "
            "Re-encode with the original options, or train again"
        )


def tune_reference(config: TrainConfig, valid_data: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tune the reward-baseline rule(s) on validation users.

    :return: (the reference's description: name, params, valid score, metric; every tuned baseline).
    """
    from interestgym.agents.baselines import (
        BASELINE_NAMES,
        best_baseline,
        tune_baselines,
    )

    names = list(BASELINE_NAMES) if config.reward_baseline == "best" else [config.reward_baseline]
    tuned = None
    if config.tuned_baselines:
        path = Path(config.tuned_baselines)
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InterestGymError(f"{path}: cannot read tuned baselines: {exc}") from None
        if not isinstance(saved, dict) or not isinstance(saved.get("baselines"), dict):
            raise InterestGymError(f"{path}: no 'baselines' object; expected a baselines.json written by `interestgym train` or `evaluate`")
        if saved.get("metric") == config.reward and saved.get("protocol") == valid_data.describe() and saved.get(
                "tune_users") == config.tune_users and all(
                n in saved.get("baselines", {}) for n in names):
            tuned = saved["baselines"]
        else:
            raise InterestGymError(f"{path}: tuned with another metric, protocol or set of baselines than this run "
                                   f"(metric {saved.get('metric')!r}, expected {config.reward!r}); tune again without --tuned-baselines")
    if tuned is None:
        users = subsample_users(valid_data.user_ids, config.tune_users, config.seed)
        tuned = tune_baselines(validation_scorer(valid_data, config.reward, users), names)
    name = best_baseline(tuned) if config.reward_baseline == "best" else config.reward_baseline
    entry = tuned[name]
    reference = {"name": name, "params": entry["params"], "valid_score": entry["valid_score"], "metric": config.reward}
    return reference, tuned


def train_run(config: TrainConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train (or resume) a PPO run; returns a summary (steps, seconds, best validation value)."""
    from interestgym.agents.baselines import make_baseline
    from interestgym.agents.callbacks import (
        InterestTrainingCallback,
        save_model_atomic,
        save_vecnormalize_atomic,
    )
    from interestgym.agents.sb3_policy import policy_from_model
    from interestgym.envs.vector import InterestReplayVecEnv, evaluate_policy
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import VecNormalize

    run_dir = Path(config.run_dir)
    state_path = run_dir / "checkpoints" / "state.json"
    saved: dict[str, Any] = {}
    if resume:
        saved = read_run_config(run_dir)
        # The run's own configuration wins; only the target and the presentation may change.
        config = TrainConfig.from_dict({**saved["config"], "timesteps": config.timesteps, "progress_bar": config.progress_bar,
                                        "device": config.device, "run_dir": str(run_dir)})
        if not state_path.is_file():
            # Stopped (Ctrl-C, crash) before its first checkpoint: there is nothing to continue, and a
            # plain `train` refuses the folder because config.json is there, so start the same run
            # again from step 0 (like quickstart does); its partial TensorBoard logs would overlap.
            import shutil
            import sys

            sys.stderr.write(f"note: {run_dir} has no checkpoint yet ({state_path} missing); starting the run again from "
                             f"step 0 with its saved configuration (its partial TensorBoard logs in {run_dir / 'tb'} are replaced)\n")
            shutil.rmtree(run_dir / "tb", ignore_errors=True)
            resume = False
    elif (run_dir / CONFIG_FILE).exists() or state_path.exists():
        raise InterestGymError(f"{run_dir}: already holds a training run; continue it with --resume or choose a new --run-dir")
    elif (run_dir / DATASET_MANIFEST).exists():
        # A run written into a dataset folder would mix run files with the dataset's own.
        raise InterestGymError(f"--run-dir {run_dir}: is a dataset directory ({DATASET_MANIFEST} found); expected a new or empty folder for the run")
    config.validate()
    # Absolute, so that `evaluate RUN` works from any working directory.
    config.dataset = str(Path(config.dataset).resolve())
    from interestgym.core.metrics import parse_metric

    parse_metric(config.reward)
    seed_everything(config.seed)
    import torch

    torch.set_num_threads(max(1, config.torch_threads))
    t_start = time.perf_counter()

    train_data = replay_data(config, "train")
    valid_data = replay_data(config, "valid")
    if valid_data.n_users == 0:
        raise InterestGymError(f"{config.dataset}: the valid split has no user with a positive event; validation needs some")

    reference = saved.get("reference")
    tuned: dict[str, Any] | None = None
    if config.reward_baseline and reference is None:
        reference, tuned = tune_reference(config, valid_data)
    reference_policy = make_baseline(reference["name"], **reference["params"]) if reference else None
    agent_scoring = agent_scoring_config(config.agent_scoring, reference_policy)
    if "agent_scoring" in saved:
        # a resumed run keeps the scoring it was trained with (runs from before the tied mode included)
        from interestgym.core.interest import ScoringConfig

        agent_scoring = ScoringConfig(**saved["agent_scoring"])

    eval_users = subsample_users(valid_data.user_ids, config.eval_users, config.seed)
    reference_valid = None
    if reference_policy is not None:
        res = evaluate_policy(valid_data, reference_policy, metric=config.reward, users=eval_users, record_features=False, progress=False)
        reference_valid = mean_over_users(res, config.reward)

    venv = InterestReplayVecEnv(train_data, n_envs=config.n_envs, metric=config.reward, max_events=config.max_events,
                                reward_baseline=reference_policy, scoring=agent_scoring, seed=config.seed)
    if config.embeddings is None:
        # Store the name the dataset's only embedding resolved to, so that evaluate / export of this
        # run still find it after another embedding is added to the dataset.
        config.embeddings = train_data.describe().get("embeddings")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        write_json_atomic(run_dir / CONFIG_FILE, {
            "config": config.as_dict(),
            "reference": reference,
            "agent_scoring": agent_scoring.as_dict(),
            "protocol": {"train": train_data.describe(), "valid": valid_data.describe()},
            "embedding": embedding_identity(config),
            "action_space": {"box": [-1.0, 1.0], "strength": "(clip(u, -1, 1) + 1) / 2",
                             "names": ["long_strength", "short_strength", "short_weight", "popularity_weight"]},
            "observation_normalisation": {"kind": "VecNormalize", "clip_obs": config.clip_obs, "norm_reward": config.norm_reward},
            "baselines": "baselines.json: every baseline tuned on validation users",
            "files": {"best": "best/model.zip + best/vecnormalize.pkl", "final": "final/model.zip + final/vecnormalize.pkl",
                      "checkpoints": "checkpoints/state.json names the last complete checkpoint", "tensorboard": "tb/"},
        })

    if tuned is not None:
        write_json_atomic(run_dir / BASELINES_FILE, {"metric": config.reward, "split": "valid", "tune_users": config.tune_users,
                                                     "protocol": valid_data.describe(), "baselines": tuned})

    callback_state = None
    if resume:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        venv = VecNormalize.load(str(run_dir / "checkpoints" / state["vecnormalize"]), venv)
        venv.training = True
        model = PPO.load(str(run_dir / "checkpoints" / state["model"]), env=venv, device=config.device)
        callback_state = state.get("callback")
    else:
        venv = VecNormalize(venv, norm_obs=True, norm_reward=config.norm_reward, clip_obs=config.clip_obs, gamma=config.gamma)
        model = PPO(
            "MlpPolicy", venv, learning_rate=config.learning_rate, n_steps=config.n_steps, batch_size=config.batch_size,
            n_epochs=config.n_epochs, gamma=config.gamma, gae_lambda=config.gae_lambda, clip_range=config.clip_range,
            ent_coef=config.ent_coef, vf_coef=config.vf_coef, max_grad_norm=config.max_grad_norm, seed=config.seed,
            device=config.device, verbose=0,
            policy_kwargs={"net_arch": {"pi": list(config.net_arch), "vf": list(config.net_arch)},
                           "log_std_init": config.log_std_init},
        )
    if not resume and reference_policy is not None and config.init_from_reference:
        init_action = centre_on_reference(model, reference_policy, train_data)
        fixed_forgetting = reference_policy.scoring.category_forgetting
        if agent_scoring.ties_category_forgetting and fixed_forgetting is not None:
            # The rule forgets with a fixed f, the agent with 1 - a_L: start a_L at 1 - f, so that the
            # untrained agent forgets the category counts like the rule (the category term dominates
            # the score; its profile L then moves at 1 - f instead of the rule's a_L).
            import torch

            init_action[0] = 2.0 * (1.0 - fixed_forgetting) - 1.0
            with torch.no_grad():
                model.policy.action_net.bias[0] = float(init_action[0])
    else:
        init_action = None
    # One TensorBoard folder for the whole run: a resumed run appends a new event file to it and,
    # with reset_num_timesteps=False, continues the same step axis.
    model.set_logger(configure(str(run_dir / "tb"), ["tensorboard"]))

    def validate(current_model: Any) -> dict[str, float]:
        policy = policy_from_model(current_model, current_model.get_vec_normalize_env(), scoring=agent_scoring)
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
        state=callback_state,
    )
    remaining = config.timesteps - model.num_timesteps
    if remaining > 0:
        model.learn(total_timesteps=remaining, callback=callback, reset_num_timesteps=not resume,
                    progress_bar=config.progress_bar)
    else:
        callback.init_callback(model)
    final = run_dir / "final"
    save_model_atomic(model, final / "model.zip")
    save_vecnormalize_atomic(model.get_vec_normalize_env(), final / "vecnormalize.pkl")
    write_json_atomic(final / "info.json", {"step": int(model.num_timesteps)})
    for fmt in model.logger.output_formats:
        fmt.close()
    return {
        "num_timesteps": int(model.num_timesteps),
        "seconds": time.perf_counter() - t_start,
        "select_metric": config.reward,
        "best_value": callback.best_value,
        "best_step": callback.best_step,
        "reference_valid": reference_valid,
        "run_dir": str(run_dir),
    }
