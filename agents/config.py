"""The configuration of a training run: every setting in one dataclass, documented field by field.

:class:`TrainConfig` is written to ``RUN/config.json`` (see :mod:`interestgym.agents.run_folder`); the
``train`` command's options and ``--config FILE`` (TOML, or YAML with PyYAML installed) both fill it
(:func:`read_config_file`, :func:`coerce_setting`), and unknown keys are refused rather than dropped.
A config file uses the field names below (``clip_range = 0.1``; dashes work too), the command line's
conventions for "all" and "none" (``eval_users = 0``, ``reward_baseline = "none"``), and paths
relative to the file's folder.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interestgym.errors import InterestGymError

#: Values of ``TrainConfig.agent_scoring`` (see :func:`interestgym.agents.train.agent_scoring_config`).
AGENT_SCORING_MODES = ("reference", "reference-fixed", "plain")
#: Values of ``TrainConfig.policy_form``.
POLICY_FORMS = ("residual", "absolute")
#: Settings of the residual form only (refused with the absolute form, rather than recorded and never used).
RESIDUAL_ONLY = ("change_penalty", "window")
#: --log-std-init's range: exp(2) = 7.4 action units is already seven times the action range; below exp(-20) the
#: policy never explores.
LOG_STD_RANGE = (-20.0, 2.0)
#: What a run saved before a setting existed did, for the settings added since runs were first saved (a
#: missing key in an old ``config.json`` means this, not today's default).
LEGACY_SETTINGS: dict[str, Any] = {"tracker_observations": False, "category_gain": False, "context_lever": False,
                                   "slot_lever": False, "slot_counts": False, "history_negatives": 0}
# A setting added from now on goes here too, with the value a run without it had: runs whose config.json says
# "config_complete" (every run since session 22) must hold every other setting (TrainConfig.from_dict(complete=True)).


def active_levers(category_gain: bool, context_lever: bool, scoring: Any, slot_lever: bool = False) -> tuple[bool, bool, bool]:
    """Which levers a residual agent has: (gain, context, slot). A lever is there when its setting is on
    and the reference's ``scoring`` has the state it moves (category counts: beta_cat; time-slot profiles:
    beta_ctx; category counts per time of day: beta_cat and category_slot_weight); elsewhere the component
    would move nothing. ``scoring`` None (no reference): none."""
    gain = bool(category_gain) and bool(getattr(scoring, "beta_cat", 0.0))
    context = bool(context_lever) and bool(getattr(scoring, "beta_ctx", 0.0))
    slot = bool(slot_lever) and bool(getattr(scoring, "slot_category_counts", False))
    return gain, context, slot


@dataclass
class TrainConfig:
    """Everything a training run depends on (written to ``RUN/config.json``)."""

    dataset: str
    """Path of a prepared dataset directory (``interestgym prepare``)."""
    run_dir: str
    """Output directory of the run."""
    embeddings: str | None = None
    """Embedding name in the dataset (``None``: the only one there is)."""
    timesteps: int = 600_000
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
    sequence: str | None = None
    """A sequence tracker's run folder (``interestgym train-sequence`` on the same dataset and embeddings):
    its standardised score becomes a score term (``ScoringConfig.tracker_weight``). The best tuned rule
    mixed with it at the weight tuned on the same validation users (``<rule>+tracker``) competes as a
    baseline, so it is the reference when it is better, and the agent then scores with that term too."""
    tracker_observations: bool = True
    """With ``sequence``: the agent also observes the tracker (``core.features.TRACKER_FEATURE_NAMES``: its
    recent ranking quality for the user, its top-1 probability and entropy), so that it can learn when to
    trust it. A run saved before this setting existed observed without them (``False``)."""
    category_gain: bool = True
    """Residual form, when the reference scores with the category counts (beta_cat > 0): the agent also
    changes the weight each decision's event adds to its category's count (``gain_change``: 1 for the
    rule, 0 = not counted, up to 2), e.g. to leave out a click the user barely read. A run saved before
    this setting existed had no such component (``False``)."""
    context_lever: bool = True
    """Residual form, when the reference scores with the time-slot profiles (beta_ctx > 0): the agent also
    changes the rate at which the event's slot profile moves (``context_change``, added to the rule's
    ``context_rate`` within [0, 1]). A run saved before this setting existed had no such component."""
    slot_counts: bool = True
    """Tune ``bayesian_category`` with the category counts per time of day too (``slot_weight`` 0, 1, 2,
    4; validation picks). ``False`` (``--no-slot-counts``) keeps them out: each user then keeps one row of
    counts instead of five, for a catalogue with many categories. A run saved before this setting existed
    was tuned without them."""
    slot_lever: bool = True
    """Residual form, when the reference weighs the category counts per time of day (``slot_weight`` > 0):
    the agent also scales that weight (lambda) for the scoring after each decision (``slot_change``:
    ``lambda x clip(1 + change, 0, 2)``; 0 = the user's counts alone). A run saved before this setting
    existed had no such component."""
    dtw_observation: bool = False
    """The agent also observes the DTW drift of the user's last k decision items from the k before
    (``core.features`` ``dtw_drift``; the ``dtw_refresh`` rule's signal)."""
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
    exclude: str = "auto"
    """Which items a scoring point's negatives leave out (logs without impressions): ``target`` (the
    target and the user's items of that moment only: the honest protocol for logs with repeats),
    ``log`` (every item of the user's log: the classic protocol), ``past``, or ``auto`` (``target``
    when the log has repeats, else ``log``)."""
    protocol_seed: int = 0
    """Seed of the scoring protocol (sampled negatives); part of the protocol, not of the learner."""
    history_negatives: int = 0
    """K of the sampled negatives drawn from the user's own earlier items (logs without impressions, exclude
    ``target``; :class:`~interestgym.envs.replay_data.ProtocolSpec`); 0: all from the catalogue."""
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
    policy_form: str = "residual"
    """How the agent acts: ``residual`` (the default) adds a learned change to the reference rule's
    action, plus a fifth component that changes the rule's category keep factor; the change starts at
    exactly zero, so the untrained agent IS the tuned reference rule, to the bit, on every split, and
    it scores with the rule's own terms (``agent_scoring`` does not apply). ``absolute``: the agent
    outputs the action itself (``init_from_reference`` centres it on the rule's mean action: close to
    the rule, not equal)."""
    change_penalty: float = 0.0
    """Residual form: the reward pays ``change_penalty * mean(change^2)`` per decision, so the agent
    leaves its reference rule only where the ranking gain pays for it (0: no penalty)."""
    window: int | None = None
    """Residual form: episodes are random windows of this many decisions of a user's history, the
    decisions before the window replayed with the reference rule (``None``: whole histories from the
    first decision). More varied starting states from the same few training users."""
    ship_threshold: float = 0.0
    """At the end of training the run ships the learned policy only if the lower end of the paired
    95% CI of its gain over the reference on validation users (``reward`` metric, mean over users)
    exceeds this, and no guard metric (``agents.train.GUARD_METRICS``: AUC, MRR, hit@10) has its CI
    entirely below 0; otherwise it ships the reference rule itself (``RUN/shipped.json`` says which and why)."""
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
    def from_dict(cls, values: dict[str, Any], *, complete: bool = False) -> TrainConfig:
        """The inverse of :meth:`as_dict` (a run's ``config.json``). Unknown keys are refused, not
        dropped: a setting silently ignored is a run that differs from what its file says.

        :param complete: every setting must be given (a run's config.json that says it holds them all), not only those
            without a default: a setting missing there is damage, not a default to fill in.
        :raises InterestGymError: naming the unknown or missing keys, or a value of the wrong type (``config: n_envs =
            'abc': expected an integer``; the ranges are :meth:`validate`'s).
        """
        names = setting_names()
        unknown = [k for k in values if k not in names]
        if unknown:
            raise InterestGymError(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                                   f"expected TrainConfig settings ({', '.join(names)})")
        missing = [f.name for f in dataclasses.fields(cls)
                   if (complete or f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
                   and f.name not in values]
        if missing:
            raise InterestGymError(f"setting{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} missing")
        return cls(**{name: coerce_setting(name, value, "config") for name, value in values.items()})

    def validate(self) -> None:
        from interestgym.core.metrics import METRIC_NAMES_TEXT, parse_metric

        try:
            parse_metric(self.reward)
        except InterestGymError:
            raise InterestGymError(f"--reward {self.reward!r}: expected {METRIC_NAMES_TEXT}") from None
        if self.timesteps <= 0:
            raise InterestGymError(f"--timesteps {self.timesteps}: expected a positive number of steps")
        for flag, value in (("--seed", self.seed), ("--protocol-seed", self.protocol_seed)):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**32:
                raise InterestGymError(f"{flag} {value!r}: expected an integer in [0, 2**32 - 1] (numpy's and torch's seeds)")
        if self.n_envs <= 0 or self.n_steps <= 1:
            raise InterestGymError(f"--n-envs {self.n_envs} / --n-steps {self.n_steps}: expected n_envs >= 1 and n_steps >= 2")
        if self.batch_size <= 1 or self.batch_size > self.n_envs * self.n_steps:
            raise InterestGymError(
                f"--batch-size {self.batch_size}: expected 2..n_envs*n_steps ({self.n_envs * self.n_steps})"
            )
        if not 0.0 < self.gamma <= 1.0:
            raise InterestGymError(f"--gamma {self.gamma}: expected a number in (0, 1]")
        # every real-valued setting is finite: an infinite one reaches torch as NaN losses (a traceback
        # after the tuning, and a run folder that --resume cannot continue), or a file the run cannot read back
        for flag, value in (("--learning-rate", self.learning_rate), ("--clip-range", self.clip_range),
                            ("--ent-coef", self.ent_coef), ("--vf-coef", self.vf_coef), ("--max-grad-norm", self.max_grad_norm),
                            ("--log-std-init", self.log_std_init), ("--change-penalty", self.change_penalty),
                            ("--ship-threshold", self.ship_threshold), ("--clip-obs", self.clip_obs)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                hint = (" (-1: the reward metric's gain never stops the learned policy shipping; the guard metrics still can)"
                        if flag == "--ship-threshold" else "")
                raise InterestGymError(f"{flag} {value!r}: expected a finite number{hint}")
        if not self.learning_rate > 0.0:
            raise InterestGymError(f"--learning-rate {self.learning_rate}: expected a positive number")
        if self.learning_rate > 1.0:
            raise InterestGymError(f"--learning-rate {self.learning_rate}: expected at most 1 (Adam's step size; the "
                                   f"default is {TrainConfig.learning_rate:g})")
        if not LOG_STD_RANGE[0] <= self.log_std_init <= LOG_STD_RANGE[1]:
            raise InterestGymError(f"--log-std-init {self.log_std_init}: expected a number in [{LOG_STD_RANGE[0]:g}, "
                                   f"{LOG_STD_RANGE[1]:g}] (the exploration's standard deviation exp(value) in action units, "
                                   "whose range is [-1, 1])")
        if self.torch_threads < 1:
            raise InterestGymError(f"--torch-threads {self.torch_threads}: expected an integer >= 1")
        if self.n_epochs < 1:
            raise InterestGymError(f"--n-epochs {self.n_epochs}: expected an integer >= 1")
        for flag, value, low, high in (("--gae-lambda", self.gae_lambda, 0.0, 1.0), ("--update-threshold", self.update_threshold, 0.0, 1.0)):
            if not low <= value <= high:
                raise InterestGymError(f"{flag} {value}: expected a number in [{low:g}, {high:g}]")
        for flag, value in (("--clip-range", self.clip_range), ("--max-grad-norm", self.max_grad_norm), ("--clip-obs", self.clip_obs)):
            if not value > 0.0:
                raise InterestGymError(f"{flag} {value}: expected a positive number")
        for flag, value in (("--vf-coef", self.vf_coef), ("--ent-coef", self.ent_coef)):
            if not value >= 0.0:
                raise InterestGymError(f"{flag} {value}: expected a number >= 0")
        if self.n_negatives < 1:
            raise InterestGymError(f"--n-negatives {self.n_negatives}: expected an integer >= 1")
        if not 0 <= self.history_negatives <= self.n_negatives:
            raise InterestGymError(f"--history-negatives {self.history_negatives}: expected an integer in [0, --n-negatives "
                                   f"{self.n_negatives}]")
        if self.history_negatives and self.exclude in ("log", "past"):
            raise InterestGymError(f"--history-negatives {self.history_negatives} with --exclude {self.exclude}: that exclusion "
                                   "leaves the user's past items out of the negatives; expected --exclude target (or auto on a "
                                   "log with repeats)")
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
        if self.change_penalty < 0:
            raise InterestGymError(f"--change-penalty {self.change_penalty}: expected a number >= 0")
        if self.window is not None and self.window < 1:
            raise InterestGymError(f"--window {self.window}: expected an integer >= 1, or 0 for whole histories")
        if self.policy_form not in POLICY_FORMS:
            raise InterestGymError(f"--policy-form {self.policy_form!r}: expected one of {', '.join(POLICY_FORMS)}")
        if self.policy_form != "residual":  # the residual form's options would be recorded and never used
            for flag, value in ((f"--{name.replace('_', '-')}", getattr(self, name) or None) for name in RESIDUAL_ONLY):
                if value is not None:
                    raise InterestGymError(f"{flag} {value} with --policy-form {self.policy_form}: it applies to the residual "
                                           "form only; expected --policy-form residual, or no " + flag)
        if self.window is not None and self.max_events is not None and self.max_events < self.window:
            raise InterestGymError(f"--max-events {self.max_events} with --window {self.window}: every window episode would "
                                   f"be cut after {self.max_events} of its {self.window} decisions; expected --max-events >= "
                                   "--window, or one of them")
        if self.exclude not in ("auto", "target", "log", "past"):
            raise InterestGymError(f"--exclude {self.exclude!r}: expected auto, target, log or past")
        if self.negatives not in ("uniform", "popularity"):
            raise InterestGymError(f"--negatives {self.negatives!r}: expected uniform or popularity")
        from interestgym.agents.rules import BASELINE_NAMES, baseline_names

        from interestgym.core.rules import rule_class

        # a built-in name (or best) reads no package; another, only the package that adds it (then every one, to list them)
        if self.reward_baseline is not None and self.reward_baseline not in ("best", *BASELINE_NAMES) and rule_class(self.reward_baseline) is None:
            raise InterestGymError(f"--reward-baseline {self.reward_baseline!r}: expected best, none or one of {', '.join(baseline_names())}")
        if self.agent_scoring not in AGENT_SCORING_MODES:
            raise InterestGymError(f"--agent-scoring {self.agent_scoring!r}: expected one of {', '.join(AGENT_SCORING_MODES)}")

    # ------------------------------------------------------------------------------ protocol
    def protocol_spec(self, split: str):
        """The scoring protocol of ``split`` under the run's options (one object, passed whole)."""
        from interestgym.envs.replay_data import ProtocolSpec

        return ProtocolSpec(split=split, n_negatives=self.n_negatives, negatives=self.negatives, exclude=self.exclude,
                            seed=self.protocol_seed, history_negatives=self.history_negatives)

    def replay_data(self, split: str):
        """Precomputed replay arrays of ``split`` (cached per process by the env package)."""
        from interestgym.envs.replay_data import load_replay_data

        return self.attach_extras(load_replay_data(self.dataset, self.embeddings, self.protocol_spec(split)))

    def attach_extras(self, data):
        """``data`` with what the run's agent scores with and observes: its sequence tracker's scores
        (``--sequence``) and the extra observations it was trained with (tracker observations, DTW drift).
        Each depends on a user's own log only, so it can be attached chunk by chunk of users."""
        if self.sequence:
            from interestgym.agents.sequence.term import (
                attach_tracker,
                cached_folds,
                cached_tracker,
            )

            # the tracker's own training users: scored by the trackers that never saw them, where it has folds
            folds = cached_folds(self.sequence) if data.spec.split == "train" else None
            data = attach_tracker(data, cached_tracker(self.sequence), observe=self.reward if self.tracker_observations else None,
                                  out_of_fold=folds)
        if self.dtw_observation:
            from interestgym.agents.dtw_rule import attach_drift

            data = attach_drift(data)
        return data


# ---------------------------------------------------------------------------------- config files
def setting_names() -> tuple[str, ...]:
    """Every TrainConfig setting, in the dataclass's order."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig))


#: Settings that are paths: relative ones in a config file are taken from the file's folder.
PATH_SETTINGS = ("dataset", "run_dir", "tuned_baselines", "sequence")


def coerce_setting(name: str, value: Any, where: str) -> Any:
    """``value`` for setting ``name`` as TrainConfig holds it, with the command line's conventions:
    ``0`` users means all (None), a ``0`` window whole histories (None), ``"none"`` means no reward
    baseline, ``"64,64"`` is a layer list.

    :param where: the file or option it came from, for the message.
    :raises InterestGymError: for a value of the wrong type.
    """
    hint = typing.get_type_hints(TrainConfig)[name]
    optional = type(None) in typing.get_args(hint)
    base = next((t for t in typing.get_args(hint) if t is not type(None)), hint) if optional else hint

    def wrong(expected: str) -> InterestGymError:
        return InterestGymError(f"{where}: {name} = {value!r}: expected {expected}")

    if name == "reward_baseline" and value in (None, "", "none"):
        return None
    if name in ("eval_users", "tune_users", "window") and value == 0 and not isinstance(value, bool):
        return None
    if value is None:
        if optional:
            return None
        raise wrong(f"a value (it cannot be empty for {name})")
    if base is bool:
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
        return value
    if base is float:
        if isinstance(value, str) and str(where).lower().endswith((".yaml", ".yml")):
            # YAML 1.1 (PyYAML) reads 1e-3 as a string (it wants 1.0e-3): a number written so is still the number
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("a number")
        return float(value)
    if base is str:
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    # net_arch: a list of layer sizes, or the command line's "64,64"
    if isinstance(value, str):
        try:  # an empty entry ("64,,64") is refused, not dropped: a layer meant there would be missing
            value = [int(x) for x in value.split(",")] if value.strip() else []
        except ValueError:
            raise wrong("comma-separated layer sizes, e.g. 64,64") from None
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise wrong("a list of layer sizes, e.g. [64, 64]")
    return list(value)


def validate_given(config: TrainConfig, sources: typing.Mapping[str, str]) -> None:
    """``config.validate()``; an error about a setting that came from elsewhere than its option also says where,
    by the key as a config file spells it: ``--learning-rate -0.001: expected a positive number
    (learning_rate in runs/train.toml)``.

    :param sources: where each setting given came from: its option (``--learning-rate``) or a file.
    """
    import re

    try:
        config.validate()
    except InterestGymError as exc:
        message = str(exc)
        named = []
        for flag in dict.fromkeys(re.findall(r"--[a-z][a-z-]*", message)):
            name = "progress_bar" if flag == "--progress" else flag[2:].replace("-", "_")
            source = sources.get(name)
            if source is not None and source != flag:
                named.append(f"{name} in {source}")
            elif source is None and message.startswith(flag) and hasattr(config, name):  # e.g. the default --batch-size
                named.append(f"{flag} was not given: its default; give one that fits")
        if not named:
            raise
        raise InterestGymError(f"{message} ({'; '.join(named)})") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The settings of a ``--config`` file (TOML; YAML when PyYAML is installed), checked and coerced.

    :raises InterestGymError: naming the file and the key for an unknown key or a bad value, and for
        a file that cannot be read or parsed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InterestGymError(f"--config {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    if suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ImportError:
                raise InterestGymError(f"--config {path}: reading TOML needs Python >= 3.11 or the tomli package") from None
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InterestGymError(f"{path}: not valid TOML ({exc})") from None
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise InterestGymError(f"--config {path}: reading YAML needs PyYAML (pip install pyyaml); or write the file as TOML") from None
        try:
            values = yaml.safe_load(text)  # plain data only: no Python objects from the file
        except yaml.YAMLError as exc:
            raise InterestGymError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
        values = {} if values is None else values
    else:
        raise InterestGymError(f"--config {path}: expected a .toml, .yaml or .yml file")
    if not isinstance(values, dict):
        raise InterestGymError(f"{path}: expected a table of settings (key = value), found a {type(values).__name__}")
    names = setting_names()
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in names:
            import difflib

            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.75)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            raise InterestGymError(f"{path}: unknown setting {key!r}{guess}; expected one of {', '.join(names)}")
        value = coerce_setting(name, value, str(path))
        if name in PATH_SETTINGS and value is not None:
            value = str(path.parent / Path(value).expanduser())
        out[name] = value
    return out


def resume_conflicts(given: dict[str, tuple[Any, str]], saved: dict[str, Any], may_change: tuple[str, ...],
                     dataset: str | None = None) -> list[str]:
    """What a ``--resume`` was given that differs from the run's own settings ``saved``, each as it was asked
    (``--gamma 0.5``, ``--no-category-gain``; where it came from, when not the command line) with the run's value.

    :param given: setting -> (value, where it came from: ``--flag``, or a config file).
    :param may_change: the settings a resume may change (never reported).
    :param dataset: the DATASET given, compared with the run's (both resolved), or None.
    """
    differ = []
    if dataset is not None and Path(str(saved.get("dataset", ""))).resolve() != Path(dataset).resolve():
        differ.append(f"DATASET {dataset} (the run's: {saved.get('dataset')})")
    for name, (value, source) in given.items():
        if name in may_change or name in ("run_dir", "dataset") or name not in saved or value == saved[name]:
            continue
        where = f" in {source}" if not source.startswith(("--", "DATASET")) else ""
        flag = name.replace("_", "-")
        # a switch reads as the flag that was given (--no-category-gain), not as "--category-gain False"
        asked = (f"--{flag}" if value else f"--no-{flag}") if isinstance(value, bool) else f"--{flag} {value!r}"
        differ.append(f"{asked}{where} (the run's: {saved[name]!r})")
    return differ
