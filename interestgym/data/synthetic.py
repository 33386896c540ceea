r"""Synthetic behaviour logs with known true interests: the product's built-in default data.

``interestgym prepare synthetic --out D`` writes a canonical dataset (:mod:`interestgym.data.schema`)
in which every click was drawn from the user's **true interest** :math:`\theta_t` -- a probability
vector over the :math:`T = 12` topics -- and :math:`\theta_t` is stored for every event
(``truth.npy``), so later stages can score tracking error and compute an oracle. The same seed gives
the same bytes. The data mixes user types that want different update rules (slow for stable users,
fast after a switch, short-term only for bursts, hour-dependent for context users, none for noise
clicks), so that no single fixed rule is best for everybody, yet each type can be recognised from the
past clicks.

Generative model
----------------
Every random number comes from one ``numpy.random.default_rng(seed)``, in a fixed order.

**Topics and items.** The 12 topics of :data:`~interestgym.data.synthetic_vocab.TOPIC_KEYS`
(politics, sports, technology, finance, health, entertainment, travel, food, science, education,
games, autos; in Chinese 时政, 体育, 科技, 财经, 健康, 娱乐, 旅游, 美食, 科学, 教育, 游戏, 汽车) each
have ``items_per_topic`` items; item *j* of a topic belongs to its sub-topic *j* mod 4. A title is a
template of the language (drawn uniformly) whose slots are filled from the topic's vocabulary
(:mod:`interestgym.data.synthetic_vocab`): sub-topic nouns, topic nouns, and adjectives / verbs that
are the topic's own with probability 0.6 or else shared by all topics, plus shared place names. A few
nouns belong to two or three topics, so topics overlap a little. A title that already exists is
drawn again. Item popularity :math:`p_i \sim \mathrm{LogNormal}(0, \sigma_p)` with
``popularity_sigma`` :math:`\sigma_p = 1`; :math:`z_i` is its standardised log. The catalogue is
shuffled and ids ``i00000 ...`` follow the shuffled order; ``category`` is the topic's name,
``subcategory`` the sub-topic's (both empty with ``item_categories=False``).

**Mixtures.** A long-term mixture has 2 or 3 *main topics* :math:`M` (uniform), weights
:math:`w \sim \mathrm{Dirichlet}(2, \dots, 2)` on them and a background :math:`b = 0.05` spread over
all topics: :math:`\pi = (1 - b) \sum_k w_k e_{M_k} + b / T`. A mixture *away from* :math:`\pi` is
drawn the same way with its main topics among the topics not in :math:`M`.

**User types.** Each user gets one type; the counts are ``fractions x users`` rounded by largest
remainder (so every type with a positive fraction is present once there are enough users) and
assigned by a random permutation. With :math:`t = 0 \dots n-1` the user's impressions, :math:`s(t)`
the session of impression :math:`t` and :math:`h_t` its hour of day (fractional, UTC):

============  =====================================================================================
type          true interest :math:`\theta_t`
============  =====================================================================================
stable        :math:`\pi` (a fixed mixture: slow updates are best)
noisy         :math:`\pi`, but a fraction ``noisy_noise`` of the clicks are noise (best ignored)
drifting      :math:`(1 - d\,u_t)\,\pi + d\,u_t\,\pi'` with :math:`u_t = t / (n - 1)`, :math:`\pi'` away
              from :math:`\pi`, :math:`d` = ``drift_amount`` (gradual drift)
switcher      :math:`\pi^{(r)}` where :math:`r` counts the switch sessions up to :math:`s(t)`; the
              switch sessions are ``n_switches`` distinct sessions after the first (fewer if the user
              has fewer sessions), and :math:`\pi^{(r+1)}` is away from :math:`\pi^{(r)}` (abrupt)
bursty        :math:`(1 - \beta)\,\pi + \beta\,e_{b_s}` in a burst session, else :math:`\pi`; each
              session after the first is a burst with probability ``burst_prob``, its topic
              :math:`b_s` uniform among topics not in :math:`M`; :math:`\beta` = ``burst_weight``
              (short bursts that revert)
context       :math:`(1 - \gamma (m_t + v_t))\,\pi + \gamma\,m_t\,\mu + \gamma\,v_t\,\nu` with
              :math:`m_t = \exp(-\delta(h_t, 8)^2 / 2 \cdot 2.5^2)` (morning),
              :math:`v_t = \exp(-\delta(h_t, 21)^2 / 2 \cdot 2.5^2)` (evening), :math:`\delta` the
              circular distance in hours, :math:`\gamma (m_t + v_t)` capped at 1, :math:`\mu`
              uniform over 1-2 news-like topics (politics, finance, technology, science, health,
              education), :math:`\nu` uniform over 1-2 entertainment-like topics (entertainment,
              games, sports, travel, food, autos), :math:`\gamma` = ``context_weight`` (the seed's
              "news in the morning, entertainment at night")
============  =====================================================================================

The background keeps every :math:`\theta_t[k] > 0`. ``drift`` picks the preset of these parameters
and the default type fractions (``user_types`` overrides the fractions):

================  ==================================================  ======  ======  ======
parameter         meaning                                             none    mild    strong
================  ==================================================  ======  ======  ======
stable            fraction of users of this type                      1       .40     .20
drifting          fraction of users of this type                      0       .15     .15
switcher          fraction of users of this type                      0       .15     .20
bursty            fraction of users of this type                      0       .10     .20
context           fraction of users of this type                      0       .10     .15
noisy             fraction of users of this type                      0       .10     .10
base_noise        noise share :math:`\rho` of every type but noisy    .05     .05     .10
noisy_noise       noise share :math:`\rho` of noisy users             .05     .25     .40
drift_amount      :math:`d`                                           0       .6      1
n_switches        switch sessions per switcher                        0       1       3
burst_prob        probability that a session is a burst              0       .25     .50
burst_weight      :math:`\beta`                                       0       .6      .85
context_weight    :math:`\gamma`                                      0       .5      .9
================  ==================================================  ======  ======  ======

**Sessions and time.** A user makes :math:`n = \max(1, \mathrm{round}(U \cdot
\mathrm{events\_per\_user} / E))` impressions, :math:`U \sim \mathrm{Uniform}(0.5, 1.5)`, :math:`E`
the expected number of event rows per impression (so ``events_per_user`` is the mean number of rows
per user in ``events.parquet``). Sessions hold :math:`1 + \mathrm{Poisson}(\lambda_s - 1)`
impressions, :math:`\lambda_s` = ``session_impressions``. The first session starts on a day drawn
uniformly from the 14 days after ``start_date``; each next one :math:`\mathrm{Poisson}(0.8)` days
after the day the previous one ended (at least 30 minutes later; a day is added if needed). A
session's start hour follows :data:`HOUR_ACTIVITY` (peaks 7-9 h and 19-22 h, quiet at night), its
minute and second are uniform; impressions within a session are :math:`20 + \mathrm{Exp}(100)`
seconds apart (integer seconds).

**Impressions.** Each impression shows ``candidates`` = :math:`K` distinct items; each slot is drawn
with probability ``popular_fraction`` proportionally to :math:`p_i`, else uniformly (a row with a
repeated item is drawn again; after 20 tries, uniformly).

**Clicks.** An impression has :math:`c = \min(K, 1 + \mathrm{Poisson}(\lambda_c))` clicks,
:math:`\lambda_c` = ``extra_clicks`` -- at least one, so no user is without clicks and none is
dropped. :math:`c_0 \sim \mathrm{Binomial}(c, \rho_u)` of them are *noise clicks*, :math:`\rho_u` the
user's noise share; the other :math:`c - c_0` are drawn without replacement with probability
proportional to :math:`\exp(\kappa \log \theta_t[k_j] + \eta z_j)` (Gumbel top-k), :math:`k_j` the
topic of candidate :math:`j`, :math:`\kappa` = ``click_sharpness``, :math:`\eta` =
``popularity_effect``; the noise clicks are uniform among the remaining candidates.

**Feedback events.** Every click is an event ``click`` at the impression's ``ts`` whose ``value`` is
the *read fraction* (dwell), rounded to 0.01 in [0.01, 1]: for an interest click
:math:`\mathrm{Beta}(2 + 4 r, 2)` with :math:`r = \theta_t[k_j] / \max_k \theta_t[k]` (mean 0.5 to
0.75), for a noise click :math:`\mathrm{Beta}(1.2, 5)` (mean 0.19) -- so short reads hint at noise,
as dwell time does in real logs. An interest click is followed (same ``ts``, next ``seq``) by a
``share`` with probability :data:`SHARE_PROB` or else a ``like`` with probability :data:`LIKE_PROB`; a
noise click by a ``like`` with probability :data:`NOISE_LIKE_PROB`. Likes and shares have value 1.0.
Within an impression, clicks follow the candidates' order.

Files and ground-truth fields
-----------------------------
Besides the canonical tables (events carry an ``impression_id`` column linking each click to the
impression it came from):

* ``truth.npy``: float32 :math:`(n_\mathrm{events}, T)`, row *i* = :math:`\theta_t` of event *i*
  (aligned with ``events.parquet``; columns in the order of ``manifest["synthetic"]["topics"]``, the
  topic keys; ``manifest["synthetic"]["topic_names"]`` are the same topics as the items' ``category``).
* events columns ``user_type``, ``true_topic`` (the clicked item's topic key, from
  :data:`~interestgym.data.synthetic_vocab.TOPIC_KEYS` in every language) and ``noise`` (bool: a
  noise click, or a like that followed one); items columns ``true_topic`` and ``true_popularity``.
* ``synthetic_users.parquet``: per user its type, noise share, base mixture :math:`\pi`, main,
  morning and evening topics, and counts of impressions, sessions, switches and bursts.

These fields are ground truth for evaluation (tracking error, oracle, break-down by type); they are
listed under ``manifest["synthetic"]["ground_truth_columns"]`` and a policy must never observe them.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interestgym.data.dataset import SplitSpec, write_dataset
from interestgym.data.synthetic_vocab import (
    EVENING_TOPICS,
    LANGUAGES,
    MORNING_TOPICS,
    TOPIC_KEYS,
    TOPIC_WORD_PROB,
    LanguageVocab,
)
from interestgym.data.validate import RejectLog
from interestgym.errors import InterestGymError
from interestgym.progress import progress_bar

#: Version of the generative model; bump it when the same config would give different data.
GENERATOR_VERSION = 1

USER_TYPES: tuple[str, ...] = ("stable", "drifting", "switcher", "bursty", "context", "noisy")

#: Relative activity of each UTC hour: when sessions start (morning and evening peaks).
HOUR_ACTIVITY = np.array(
    [0.15, 0.1, 0.1, 0.1, 0.1, 0.2, 0.6, 1.6, 1.6, 1.6, 0.8, 0.8,
     1.0, 1.0, 0.7, 0.7, 0.7, 0.7, 1.0, 1.8, 1.8, 1.8, 1.8, 0.8]
)

BACKGROUND = 0.05  # interest share spread over all topics: keeps every topic possible
MAIN_TOPIC_CONCENTRATION = 2.0  # Dirichlet parameter of the weights on the main topics
MORNING_HOUR, EVENING_HOUR, CONTEXT_WIDTH_HOURS = 8.0, 21.0, 2.5
START_SPREAD_DAYS = 14  # first sessions spread over this many days
SESSION_GAP_DAYS = 0.8  # Poisson mean of whole days between sessions
MIN_SESSION_GAP_S = 1800
STEP_GAP_MIN_S, STEP_GAP_MEAN_S = 20, 100.0
LIKE_PROB, SHARE_PROB, NOISE_LIKE_PROB = 0.15, 0.05, 0.02
#: Read fraction of an interest click ~ Beta(A0 + A1 * r, B), r = theta[topic] / max(theta) (mean .5 to .75) ...
READ_BETA_A0, READ_BETA_A1, READ_BETA_B = 2.0, 4.0, 2.0
#: ... and of a noise click ~ Beta(1.2, 5) (mean .19).
NOISE_READ_BETA = (1.2, 5.0)


@dataclass(frozen=True)
class DynamicsPreset:
    """The interest dynamics selected by ``SyntheticConfig.drift`` (see the module's table)."""

    fractions: tuple[tuple[str, float], ...]
    base_noise: float
    noisy_noise: float
    drift_amount: float
    n_switches: int
    burst_prob: float
    burst_weight: float
    context_weight: float


PRESETS: dict[str, DynamicsPreset] = {
    "none": DynamicsPreset(
        fractions=(("stable", 1.0),), base_noise=0.05, noisy_noise=0.05, drift_amount=0.0,
        n_switches=0, burst_prob=0.0, burst_weight=0.0, context_weight=0.0,
    ),
    "mild": DynamicsPreset(
        fractions=(("stable", 0.4), ("drifting", 0.15), ("switcher", 0.15), ("bursty", 0.1), ("context", 0.1), ("noisy", 0.1)),
        base_noise=0.05, noisy_noise=0.25, drift_amount=0.6, n_switches=1, burst_prob=0.25, burst_weight=0.6,
        context_weight=0.5,
    ),
    "strong": DynamicsPreset(
        fractions=(("stable", 0.2), ("drifting", 0.15), ("switcher", 0.2), ("bursty", 0.2), ("context", 0.15), ("noisy", 0.1)),
        base_noise=0.1, noisy_noise=0.4, drift_amount=1.0, n_switches=3, burst_prob=0.5, burst_weight=0.85,
        context_weight=0.9,
    ),
}


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines a synthetic dataset (with the split seed). Every field has a default."""

    #: Number of users.
    users: int = 200
    #: Seed of the single random generator everything is drawn from.
    seed: int = 0
    #: Language of the item titles: "en" or "zh".
    lang: str = "en"
    #: Strength of the interest dynamics: "none" (stable users only), "mild" or "strong".
    drift: str = "strong"
    #: Mean number of rows per user in events.parquet (clicks, likes, shares); per user x U(0.5, 1.5).
    events_per_user: int = 60
    #: Items shown per impression (K).
    candidates: int = 15
    #: Items per topic (12 topics).
    items_per_topic: int = 64
    #: Fractions of user types, e.g. (("stable", 0.5), ("switcher", 0.5)); None: the drift preset's.
    user_types: tuple[tuple[str, float], ...] | None = None
    #: Share of an impression's slots filled by popularity; the others uniformly.
    popular_fraction: float = 0.5
    #: Spread (sigma of the log) of item popularity.
    popularity_sigma: float = 1.0
    #: Weight of standardised log popularity in the click score (small: interest dominates).
    popularity_effect: float = 0.3
    #: Exponent on the true interest in the click score (1: click odds proportional to interest).
    click_sharpness: float = 2.0
    #: Poisson mean of the clicks per impression beyond the first.
    extra_clicks: float = 0.4
    #: Mean number of impressions per session.
    session_impressions: float = 5.0
    #: UTC date (YYYY-MM-DD) of the earliest possible session.
    start_date: str = "2024-01-01"
    #: Write each item's topic / sub-topic as its category / subcategory. False leaves them empty, so
    #: only the titles tell topics apart (category counts then cannot read the true topic directly).
    item_categories: bool = True

    def __post_init__(self) -> None:
        def bad(field: str, found: Any, expected: str) -> InterestGymError:
            return InterestGymError(f"synthetic option {field}={found!r}: expected {expected}")

        for name in ("users", "events_per_user", "candidates", "items_per_topic"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise bad(name, v, "an integer >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise bad("seed", self.seed, "an integer >= 0")
        if self.lang not in LANGUAGES:
            raise bad("lang", self.lang, f"one of {', '.join(LANGUAGES)}")
        if self.drift not in PRESETS:
            raise bad("drift", self.drift, f"one of {', '.join(PRESETS)}")
        n_items = self.items_per_topic * len(TOPIC_KEYS)
        if not 2 <= self.candidates <= n_items // 4:
            # Drawing K distinct items by rejection needs a catalogue well above K.
            raise bad("candidates", self.candidates, f"an integer in [2, {n_items // 4}] (a quarter of the {n_items} items)")
        if not 0.0 <= self.popular_fraction <= 1.0:
            raise bad("popular_fraction", self.popular_fraction, "a number in [0, 1]")
        for name in ("popularity_sigma", "popularity_effect", "extra_clicks"):
            if not getattr(self, name) >= 0:
                raise bad(name, getattr(self, name), "a number >= 0")
        if not self.click_sharpness > 0:
            raise bad("click_sharpness", self.click_sharpness, "a number > 0")
        if not isinstance(self.item_categories, bool):
            raise bad("item_categories", self.item_categories, "True or False")
        if not self.session_impressions >= 1:
            raise bad("session_impressions", self.session_impressions, "a number >= 1")
        try:
            _dt.date.fromisoformat(self.start_date)
        except (TypeError, ValueError):
            raise bad("start_date", self.start_date, "a date YYYY-MM-DD") from None
        if self.user_types is not None:
            fractions = _as_fractions(self.user_types)
            unknown = [t for t, _ in fractions if t not in USER_TYPES]
            if unknown:
                raise bad("user_types", unknown[0], f"user types among {', '.join(USER_TYPES)}")
            if any(f < 0 for _, f in fractions) or sum(f for _, f in fractions) <= 0:
                raise bad("user_types", self.user_types, "non-negative fractions with a positive sum")

    @property
    def preset(self) -> DynamicsPreset:
        return PRESETS[self.drift]

    @property
    def type_fractions(self) -> tuple[tuple[str, float], ...]:
        """(type, fraction) in :data:`USER_TYPES` order, normalised to sum to 1."""
        given = dict(_as_fractions(self.user_types if self.user_types is not None else self.preset.fractions))
        total = sum(given.values())
        return tuple((t, given.get(t, 0.0) / total) for t in USER_TYPES)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["user_types"] = None if self.user_types is None else [[t, float(f)] for t, f in _as_fractions(self.user_types)]
        return d


def _as_fractions(spec: Any) -> tuple[tuple[str, float], ...]:
    """Accept ((type, fraction), ...) or a mapping; keep the given order."""
    items = spec.items() if isinstance(spec, dict) else spec
    try:
        return tuple((str(t), float(f)) for t, f in items)
    except (TypeError, ValueError):
        raise InterestGymError(f"synthetic option user_types={spec!r}: expected (type, fraction) pairs") from None


# ---------------------------------------------------------------------------------------------- items
_SLOT = re.compile(r"(\{[ANSVP]\})")


def _title(rng: np.random.Generator, vocab: LanguageVocab, topic: int, subtopic: int) -> str:
    tv = vocab.topics[topic]
    nouns_s = tv.subtopics[subtopic][1]
    template = vocab.templates[rng.integers(len(vocab.templates))]
    parts: list[str] = []
    for piece in _SLOT.split(template):
        if piece == "{S}":
            parts.append(nouns_s[rng.integers(len(nouns_s))])
        elif piece == "{N}":
            parts.append(tv.nouns[rng.integers(len(tv.nouns))])
        elif piece in ("{A}", "{V}"):
            own, shared = (tv.adjectives, vocab.adjectives) if piece == "{A}" else (tv.verbs, vocab.verbs)
            pool = own if rng.random() < TOPIC_WORD_PROB else shared
            parts.append(pool[rng.integers(len(pool))])
        elif piece == "{P}":
            parts.append(vocab.places[rng.integers(len(vocab.places))])
        else:
            parts.append(piece)
    title = "".join(parts)
    return title[:1].upper() + title[1:] if vocab.capitalize else title


def generate_items(rng: np.random.Generator, cfg: SyntheticConfig) -> pd.DataFrame:
    """The catalogue: ``item_id, text, category, subcategory, true_topic, true_popularity``."""
    vocab = LANGUAGES[cfg.lang]
    texts: list[str] = []
    topics: list[int] = []
    subtopics: list[int] = []
    seen: set[str] = set()  # membership only: no iteration, so order cannot leak in
    for topic in range(len(TOPIC_KEYS)):
        for j in range(cfg.items_per_topic):
            sub = j % len(vocab.topics[topic].subtopics)
            for _attempt in range(100):
                text = _title(rng, vocab, topic, sub)
                if text not in seen:
                    break
            else:  # only with a tiny vocabulary and a huge catalogue
                raise InterestGymError(
                    f"synthetic option items_per_topic={cfg.items_per_topic}: too many items for the "
                    f"{cfg.lang} vocabulary of topic {TOPIC_KEYS[topic]} to give unique titles; expected fewer"
                )
            seen.add(text)
            texts.append(text)
            topics.append(topic)
            subtopics.append(sub)
    n = len(texts)
    popularity = rng.lognormal(0.0, cfg.popularity_sigma, n)
    order = rng.permutation(n)
    topic_arr = np.asarray(topics)[order]
    sub_arr = np.asarray(subtopics)[order]
    width = max(5, len(str(n - 1)))
    return pd.DataFrame({
        "item_id": [f"i{i:0{width}d}" for i in range(n)],
        "text": [texts[k] for k in order],
        "category": [vocab.topics[t].name if cfg.item_categories else "" for t in topic_arr],
        "subcategory": [vocab.topics[t].subtopics[s][0] if cfg.item_categories else "" for t, s in zip(topic_arr, sub_arr)],
        "true_topic": [TOPIC_KEYS[t] for t in topic_arr],
        "true_popularity": popularity[order].astype(np.float32),
    })


# ---------------------------------------------------------------------------------------------- users
def _type_counts(fractions: tuple[tuple[str, float], ...], users: int) -> list[int]:
    """Largest-remainder rounding of fractions x users (ties go to the earlier type)."""
    exact = np.array([f for _, f in fractions]) * users
    counts = np.floor(exact).astype(int)
    rest = users - counts.sum()
    remainder = exact - counts
    for k in np.argsort(-remainder, kind="stable")[:rest]:
        counts[k] += 1
    return counts.tolist()


def _mixture(rng: np.random.Generator, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A long-term mixture whose 2-3 main topics are drawn from ``allowed``; returns (pi, main)."""
    T = len(TOPIC_KEYS)
    n_main = int(rng.integers(2, 4))
    main = np.sort(rng.choice(allowed, size=min(n_main, len(allowed)), replace=False))
    weights = rng.dirichlet(np.full(len(main), MAIN_TOPIC_CONCENTRATION))
    pi = np.full(T, BACKGROUND / T)
    pi[main] += (1.0 - BACKGROUND) * weights
    return pi, main


def _away(main: np.ndarray) -> np.ndarray:
    return np.setdiff1d(np.arange(len(TOPIC_KEYS)), main)


def _timeline(rng: np.random.Generator, cfg: SyntheticConfig, n_steps: int, start_epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps (int64 seconds) and session index of each of a user's impressions."""
    hour_p = HOUR_ACTIVITY / HOUR_ACTIVITY.sum()
    ts = np.empty(n_steps, dtype=np.int64)
    session = np.empty(n_steps, dtype=np.int64)
    t, s, prev_end = 0, 0, None
    while t < n_steps:
        length = min(n_steps - t, 1 + int(rng.poisson(cfg.session_impressions - 1.0)))
        hour = int(rng.choice(24, p=hour_p))
        second = int(rng.integers(3600))
        if prev_end is None:
            day = start_epoch + int(rng.integers(START_SPREAD_DAYS)) * 86400
        else:
            day = (prev_end // 86400 + int(rng.poisson(SESSION_GAP_DAYS))) * 86400
        begin = day + hour * 3600 + second
        while prev_end is not None and begin < prev_end + MIN_SESSION_GAP_S:
            begin += 86400
        gaps = STEP_GAP_MIN_S + np.floor(rng.exponential(STEP_GAP_MEAN_S, length - 1)).astype(np.int64)
        ts[t : t + length] = begin + np.concatenate([[0], np.cumsum(gaps)])
        session[t : t + length] = s
        prev_end = int(ts[t + length - 1])
        t += length
        s += 1
    return ts, session


def _circular_hours(a: np.ndarray, b: float) -> np.ndarray:
    d = np.abs(a - b) % 24.0
    return np.minimum(d, 24.0 - d)


@dataclass
class _User:
    user_id: str
    user_type: str
    noise_rate: float
    ts: np.ndarray  # (n,) int64
    theta: np.ndarray  # (n, T) float64
    meta: dict[str, Any]


def _simulate_user(rng: np.random.Generator, cfg: SyntheticConfig, user_id: str, user_type: str,
                   n_steps: int, start_epoch: int) -> _User:
    """One user's impression times and true interest at each impression."""
    p = cfg.preset
    T = len(TOPIC_KEYS)
    ts, session = _timeline(rng, cfg, n_steps, start_epoch)
    n_sessions = int(session[-1]) + 1
    pi, main = _mixture(rng, np.arange(T))
    theta = np.broadcast_to(pi, (n_steps, T)).copy()
    meta: dict[str, Any] = {"n_switches": 0, "n_burst_sessions": 0, "morning_topics": [], "evening_topics": []}
    if user_type == "drifting":
        pi_end, _ = _mixture(rng, _away(main))
        u = np.arange(n_steps) / max(n_steps - 1, 1) * p.drift_amount
        theta = (1.0 - u)[:, None] * pi + u[:, None] * pi_end
    elif user_type == "switcher":
        k = min(p.n_switches, n_sessions - 1)
        switch_sessions = np.sort(rng.choice(np.arange(1, n_sessions), size=k, replace=False)) if k > 0 else np.array([], int)
        current, current_main = pi, main
        regimes = [current]
        for _ in range(k):
            current, current_main = _mixture(rng, _away(current_main))
            regimes.append(current)
        regime = np.searchsorted(switch_sessions, session, side="right")  # switches passed by each step
        theta = np.stack(regimes)[regime]
        meta["n_switches"] = int(k)
    elif user_type == "bursty":
        is_burst = rng.random(n_sessions) < p.burst_prob
        is_burst[0] = False  # the first session shows the long-term interest
        burst_topic = rng.choice(_away(main), size=n_sessions)
        for s in np.flatnonzero(is_burst):
            rows = session == s
            theta[rows] = (1.0 - p.burst_weight) * pi + p.burst_weight * np.eye(T)[burst_topic[s]]
        meta["n_burst_sessions"] = int(is_burst.sum())
    elif user_type == "context":
        morning_keys = np.array([TOPIC_KEYS.index(k) for k in MORNING_TOPICS])
        evening_keys = np.array([TOPIC_KEYS.index(k) for k in EVENING_TOPICS])
        morning = np.sort(rng.choice(morning_keys, size=int(rng.integers(1, 3)), replace=False))
        evening = np.sort(rng.choice(evening_keys, size=int(rng.integers(1, 3)), replace=False))
        mu = np.zeros(T)
        mu[morning] = 1.0 / len(morning)
        nu = np.zeros(T)
        nu[evening] = 1.0 / len(evening)
        hour = (ts % 86400) / 3600.0
        width2 = 2.0 * CONTEXT_WIDTH_HOURS**2
        m = np.exp(-_circular_hours(hour, MORNING_HOUR) ** 2 / width2)
        v = np.exp(-_circular_hours(hour, EVENING_HOUR) ** 2 / width2)
        g = np.minimum(p.context_weight * (m + v), 1.0)
        share_m = np.divide(m, m + v, out=np.zeros_like(m), where=(m + v) > 0)
        theta = (1.0 - g)[:, None] * pi + (g * share_m)[:, None] * mu + (g * (1.0 - share_m))[:, None] * nu
        meta["morning_topics"] = [TOPIC_KEYS[k] for k in morning]
        meta["evening_topics"] = [TOPIC_KEYS[k] for k in evening]
    theta = theta / theta.sum(axis=1, keepdims=True)
    noise_rate = p.noisy_noise if user_type == "noisy" else p.base_noise
    meta.update({
        "base_interest": pi.astype(np.float32),
        "main_topics": [TOPIC_KEYS[k] for k in main],
        "n_impressions": int(n_steps),
        "n_sessions": n_sessions,
    })
    return _User(user_id, user_type, float(noise_rate), ts, theta, meta)


# ------------------------------------------------------------------------------------ impressions
def _draw_candidates(rng: np.random.Generator, cfg: SyntheticConfig, n_rows: int, popularity: np.ndarray) -> np.ndarray:
    """(n_rows, K) item indices, distinct within each row."""
    n_items, K = len(popularity), cfg.candidates
    pop_p = popularity / popularity.sum()

    def draw(n: int, popular_fraction: float) -> np.ndarray:
        by_pop = rng.random((n, K)) < popular_fraction
        return np.where(by_pop, rng.choice(n_items, size=(n, K), p=pop_p), rng.integers(0, n_items, size=(n, K)))

    cand = draw(n_rows, cfg.popular_fraction)
    for attempt in range(1000):
        s = np.sort(cand, axis=1)
        dup = np.flatnonzero((s[:, 1:] == s[:, :-1]).any(axis=1))
        if len(dup) == 0:
            return cand
        # A very skewed popularity could make distinct popular slots rare: fall back to uniform draws,
        # which succeed quickly since K is at most a quarter of the catalogue.
        cand[dup] = draw(len(dup), cfg.popular_fraction if attempt < 20 else 0.0)
    raise AssertionError("could not draw distinct candidates; the config check should have prevented this")


def _ranks_desc(keys: np.ndarray) -> np.ndarray:
    """Rank of each entry within its row, 0 = largest."""
    order = np.argsort(-keys, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(keys.shape[1])[None, :].repeat(keys.shape[0], 0), axis=1)
    return ranks


@dataclass
class SyntheticData:
    """A generated dataset in memory (what :func:`prepare_synthetic` writes)."""

    items: pd.DataFrame
    events: pd.DataFrame
    impressions: pd.DataFrame
    #: float32 (n_events, n_topics), aligned with ``events`` rows.
    truth: np.ndarray
    #: Per-user ground truth (type, mixtures, counts).
    users: pd.DataFrame
    #: Topic keys: truth's columns, the values of the ``true_topic`` columns.
    topics: list[str]
    #: The same topics' names in the title language (the items' ``category``).
    topic_names: list[str]
    config: SyntheticConfig


def generate_synthetic(cfg: SyntheticConfig | None = None, *, progress: bool | None = None) -> SyntheticData:
    """Draw a whole synthetic dataset (see the module docstring for the model)."""
    cfg = cfg or SyntheticConfig()
    p = cfg.preset
    rng = np.random.default_rng(cfg.seed)
    vocab = LANGUAGES[cfg.lang]
    T = len(TOPIC_KEYS)

    items = generate_items(rng, cfg)
    item_topic = np.array([TOPIC_KEYS.index(k) for k in items["true_topic"]])
    popularity = items["true_popularity"].to_numpy(np.float64)
    log_pop = np.log(popularity)
    pop_z = (log_pop - log_pop.mean()) / (log_pop.std() or 1.0)

    # Users: types by exact counts, shuffled; ids zero-padded so string order is generation order.
    fractions = cfg.type_fractions
    counts = _type_counts(fractions, cfg.users)
    types = np.repeat(np.array([t for t, _ in fractions], dtype=object), counts)[rng.permutation(cfg.users)]
    width = max(4, len(str(cfg.users - 1)))
    start_epoch = int(_dt.datetime.combine(_dt.date.fromisoformat(cfg.start_date), _dt.time(), _dt.timezone.utc).timestamp())

    sim_users: list[_User] = []
    # (a plain line every 15 s in a log: tqdm's disable=None went silent there, minutes at 100,000 users)
    with progress_bar(total=cfg.users, desc="synthetic users", unit="user", enabled=progress) as bar:
        for u in range(cfg.users):
            noise = p.noisy_noise if types[u] == "noisy" else p.base_noise
            # Expected event rows per impression: clicks, plus likes/shares after interest or noise clicks.
            per_click = 1.0 + (1.0 - noise) * (LIKE_PROB + SHARE_PROB) + noise * NOISE_LIKE_PROB
            expected = (1.0 + cfg.extra_clicks) * per_click
            n_steps = max(1, round(rng.uniform(0.5, 1.5) * cfg.events_per_user / expected))
            sim_users.append(_simulate_user(rng, cfg, f"u{u:0{width}d}", str(types[u]), n_steps, start_epoch))
            bar.update(1)

    # Impressions of all users at once.
    row_user = np.concatenate([np.full(len(su.ts), k) for k, su in enumerate(sim_users)])
    row_step = np.concatenate([np.arange(len(su.ts)) for su in sim_users])
    row_ts = np.concatenate([su.ts for su in sim_users])
    theta = np.concatenate([su.theta for su in sim_users])
    row_noise = np.array([su.noise_rate for su in sim_users])[row_user]
    N, K = len(row_ts), cfg.candidates

    cand = _draw_candidates(rng, cfg, N, popularity)
    n_clicks = np.minimum(K, 1 + rng.poisson(cfg.extra_clicks, N))
    n_noise = rng.binomial(n_clicks, row_noise)
    n_interest = n_clicks - n_noise
    cand_theta = np.take_along_axis(theta, item_topic[cand], axis=1)
    score = cfg.click_sharpness * np.log(np.maximum(cand_theta, 1e-12)) + cfg.popularity_effect * pop_z[cand]
    interest = _ranks_desc(score + rng.gumbel(size=(N, K))) < n_interest[:, None]
    noise_keys = rng.random((N, K))
    noise_keys[interest] = -1.0  # interest clicks rank last for the noise draw
    noise = (_ranks_desc(noise_keys) < n_noise[:, None]) & ~interest
    clicked = interest | noise
    follow_up = rng.random((N, K))
    # Read fraction of each clicked item (the click's value): long for items of high interest, short
    # for noise clicks -- the implicit-feedback signal (dwell time) real logs carry.
    relative_interest = cand_theta / theta.max(axis=1, keepdims=True)
    read_fraction = np.where(
        noise,
        rng.beta(NOISE_READ_BETA[0], NOISE_READ_BETA[1], size=(N, K)),
        rng.beta(READ_BETA_A0 + READ_BETA_A1 * relative_interest, READ_BETA_B),
    )
    read_fraction = np.clip(np.round(read_fraction, 2), 0.01, 1.0)

    # Events: each click, then its like/share; ordered by (impression, candidate position, kind).
    r, c = np.nonzero(clicked)
    is_noise = noise[r, c]
    u_f = follow_up[r, c]
    kind = np.where(is_noise, np.where(u_f < NOISE_LIKE_PROB, 1, 0),
                    np.where(u_f < SHARE_PROB, 2, np.where(u_f < SHARE_PROB + LIKE_PROB, 1, 0)))
    extra = kind > 0
    ev_row = np.concatenate([r, r[extra]])
    ev_col = np.concatenate([c, c[extra]])
    ev_kind = np.concatenate([np.zeros(len(r), int), kind[extra]])
    ev_noise = np.concatenate([is_noise, is_noise[extra]])
    order = np.lexsort((ev_kind > 0, ev_col, ev_row))
    ev_row, ev_col, ev_kind, ev_noise = ev_row[order], ev_col[order], ev_kind[order], ev_noise[order]
    ev_item = cand[ev_row, ev_col]
    ev_ts = row_ts[ev_row]

    user_ids = np.array([su.user_id for su in sim_users], dtype=object)
    user_types = np.array([su.user_type for su in sim_users], dtype=object)
    item_ids = items["item_id"].to_numpy(dtype=object)
    topic_names = np.array(TOPIC_KEYS, dtype=object)
    impression_ids = np.array([f"{user_ids[u]}-{s:05d}" for u, s in zip(row_user, row_step)], dtype=object)
    events = pd.DataFrame({
        "user_id": user_ids[row_user[ev_row]],
        "ts": ev_ts.astype(np.int64),
        "item_id": item_ids[ev_item],
        "action": np.array(["click", "like", "share"], dtype=object)[ev_kind],
        "value": np.where(ev_kind == 0, read_fraction[ev_row, ev_col], 1.0).astype(np.float32),
        "hour": ((ev_ts // 3600) % 24).astype(np.int8),
        "weekday": ((ev_ts // 86400 + 3) % 7).astype(np.int8),  # 1970-01-01 was a Thursday (3)
        "seq": np.arange(len(ev_row), dtype=np.int64),
        "impression_id": impression_ids[ev_row],
        "user_type": user_types[row_user[ev_row]],
        "true_topic": topic_names[item_topic[ev_item]],
        "noise": ev_noise.astype(bool),
    })
    truth = theta[ev_row].astype(np.float32)

    impressions = pd.DataFrame({
        "impression_id": impression_ids,
        "user_id": user_ids[row_user],
        "ts": row_ts.astype(np.int64),
        "candidates": item_ids[cand].tolist(),
        "labels": [row for row in clicked.astype(np.int8)],
    })
    users = pd.DataFrame({
        "user_id": user_ids,
        "user_type": user_types,
        "noise_rate": np.array([su.noise_rate for su in sim_users], dtype=np.float32),
        **{k: [su.meta[k] for su in sim_users] for k in (
            "main_topics", "base_interest", "morning_topics", "evening_topics",
            "n_impressions", "n_sessions", "n_switches", "n_burst_sessions")},
    })
    return SyntheticData(items=items, events=events, impressions=impressions, truth=truth, users=users,
                         topics=list(TOPIC_KEYS), topic_names=[vocab.topics[k].name for k in range(T)], config=cfg)


# ------------------------------------------------------------------------------------------- write
SYNTHETIC_USERS_FILE = "synthetic_users.parquet"


def prepare_synthetic(
    out_dir: str | Path,
    cfg: SyntheticConfig | None = None,
    *,
    split: SplitSpec | None = None,
    command: list[str] | None = None,
    deterministic: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Generate a synthetic dataset and write it to ``out_dir`` through :func:`write_dataset`.

    :param out_dir: dataset directory to create or overwrite.
    :param cfg: the generator's configuration (defaults: 200 users, seed 0, English, strong drift).
    :param split: the user split (default :class:`SplitSpec` with ``seed=cfg.seed``).
    :param command: the command line to record in the manifest.
    :param deterministic: leave the creation time out of the manifest (fully byte-identical reruns).
    :param progress: the user simulation's progress (None: a bar on a terminal, lines in a log; False: none).
    :return: the manifest.
    """
    cfg = cfg or SyntheticConfig()
    split = split if split is not None else SplitSpec(seed=cfg.seed)
    data = generate_synthetic(cfg, progress=progress)
    out = Path(out_dir)

    # No source files: the "validation" counts generated rows, all kept, so the report has the same shape.
    rejects = RejectLog()
    for name, n in (("synthetic:items", len(data.items)), ("synthetic:events", len(data.events)),
                    ("synthetic:impressions", len(data.impressions))):
        rejects.read(name, n)
        rejects.keep(name, n)
    rejects.note(f"synthetic data: generated {cfg.users} users with drift={cfg.drift!r}, lang={cfg.lang!r}, "
                 f"seed={cfg.seed}; every impression has at least one click, so no user is dropped")

    preset = cfg.preset
    type_counts = data.users["user_type"].value_counts()
    extra = {
        "synthetic": {
            "generator_version": GENERATOR_VERSION,
            "config": cfg.as_dict(),
            "dynamics": asdict(preset) | {"fractions": [[t, f] for t, f in cfg.type_fractions]},
            # Topic keys: the ids of truth.npy's columns and of the true_topic columns, in every language;
            # topic_names: the same topics as the items' category (the title language).
            "topics": list(TOPIC_KEYS),
            "topic_names": data.topic_names,
            "truth": "truth.npy: float32 (n_events, n_topics), the user's true topic interest at each event; "
                     "columns in the order of 'topics' (the keys used by the true_topic columns)",
            "users_file": SYNTHETIC_USERS_FILE,
            "ground_truth_columns": {"events": ["user_type", "true_topic", "noise"],
                                     "items": ["true_topic", "true_popularity"]},
            "user_types": {t: int(type_counts.get(t, 0)) for t in USER_TYPES},
            "noise_clicks": int((data.events["noise"] & (data.events["action"] == "click")).sum()),
        }
    }
    return write_dataset(
        out,
        source_format="synthetic",
        source_files=[],
        items=data.items,
        events=data.events,
        impressions=data.impressions,
        truth=data.truth,
        rejects=rejects,
        split=split,
        extra_manifest=extra,
        extra_tables={SYNTHETIC_USERS_FILE: data.users},
        command=command,
        deterministic=deterministic,
    )
