"""Text -> features for the model-free encoders (``hashing`` and ``tfidf``).

The seed's preprocessing: normalise, segment (jieba for Chinese, a Unicode word pattern otherwise),
remove stop words, then bag-of-words features. On top of the words we add word bigrams and
sub-word character n-grams, so that short titles that share a stem ("guitar" / "guitars", "足球" /
"足球赛") still overlap.

Feature strings carry a prefix saying what they are (``w|`` word, ``b|`` word bigram, ``c|`` char
n-gram), so a word and a character gram that happen to be equal stay distinct features.

Changing anything here changes the vectors of ``hashing`` and ``tfidf``: bump :data:`TOKENIZER_VERSION`
(it is part of their fingerprints, so caches are rebuilt).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

#: Part of the fingerprint of every encoder that uses these features.
TOKENIZER_VERSION = 1

# CJK Unified Ideographs (+ extension A and compatibility ideographs): text with any of these is
# segmented with jieba.
_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# A "word" outside CJK text: a run of letters / digits (underscore and punctuation split words).
_WORD = re.compile(r"[^\W_]+")
# A token that carries meaning: has at least one letter, digit or ideograph.
_MEANINGFUL = re.compile(r"[^\W_]")

#: A small built-in Chinese stop-word list (function words, pronouns, particles, common adverbs),
#: as in the seed's example ("的", "是", "在" ...). Punctuation is dropped separately.
CHINESE_STOP_WORDS: frozenset[str] = frozenset(
    """
    的 了 是 在 和 与 及 或 也 就 都 而 且 并 但 却 又 还 被 把 对 从 向 给 让 为 为了 以 以及 于 之 其 此 这 那
    这个 那个 这些 那些 这样 那样 这种 那种 这里 那里 什么 怎么 怎样 如何 为何 为什么 哪 哪些 谁 吗 呢 吧 啊 呀
    嘛 哦 哈 嗯 着 过 地 得 所 所以 因为 因此 如果 虽然 但是 而且 然而 不过 只是 还是 或者 以及 及其 等 等等 之一
    一个 一些 一种 一下 一直 已 已经 曾 曾经 将 将要 会 能 可 可以 可能 要 应 应该 需要 我 我们 你 你们 他 他们
    她 她们 它 它们 自己 大家 人家 别人 有 没有 没 不 无 非 很 太 更 最 再 又 才 只 仅 就是 即 即使 即便 便 则
    上 下 中 内 外 里 前 后 时 时候 之后 之前 以后 以前 当 当时 目前 如此 如何 个 位 次 些 每 各 某 另 另外 其他
    其它 其中 由 由于 根据 按照 通过 关于 对于 至于 比 比如 例如 像 似乎 好像 一样 非常 十分 特别 尤其 甚至 几乎
    """.split()  # noqa: SIM905 - a word list reads better as text
)


@lru_cache(maxsize=1)
def english_stop_words() -> frozenset[str]:
    """scikit-learn's English stop-word list (its contents go into the fingerprint)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def stop_words_sha256() -> str:
    """Hash of both stop-word lists: a different sklearn list must change the fingerprints."""
    words = sorted(CHINESE_STOP_WORDS) + ["\x00"] + sorted(english_stop_words())
    return hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()


@lru_cache(maxsize=1)
def _jieba():
    """Import jieba once, silenced: it logs "Building prefix dict ..." to stderr on first use."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def jieba_version() -> str:
    try:
        from importlib.metadata import version

        return version("jieba")
    except Exception:  # noqa: BLE001  # pragma: no cover - jieba is a dependency
        return "missing"


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


#: Texts looked at by :func:`chinese_example` (evenly spaced).
CJK_SAMPLE = 2000


def chinese_example(texts: Sequence[str]) -> str | None:
    """One of ``texts`` when most of them (an evenly spaced sample) hold CJK ideographs; else None. Where the
    product tells users that an English encoder does not fit their item texts (prepare's next step, encode)."""
    sample = [str(t) for t in texts[:: max(1, len(texts) // CJK_SAMPLE)]]
    chinese = [t for t in sample if has_cjk(t)]
    return chinese[0] if sample and len(chinese) * 2 > len(sample) else None


def normalise_text(text: str) -> str:
    """NFKC (full-width -> half-width, compatibility forms) and lower case."""
    return unicodedata.normalize("NFKC", text).lower()


def words(text: str) -> list[str]:
    """Segmented words with stop words and punctuation removed (text already normalised)."""
    if has_cjk(text):
        raw = _jieba().lcut(text)
    else:
        raw = _WORD.findall(text)
    english = english_stop_words()
    out = []
    for w in raw:
        w = w.strip()
        if not w or _MEANINGFUL.search(w) is None:
            continue
        if w in CHINESE_STOP_WORDS or w in english:
            continue
        out.append(w)
    return out


def _char_grams(word: str) -> list[str]:
    """Sub-word grams: char bigrams of a CJK word, char 3-grams of a padded Latin word."""
    if has_cjk(word):
        return [word[i : i + 2] for i in range(len(word) - 1)] if len(word) > 2 else []
    if len(word) < 4:
        return []
    padded = f"<{word}>"
    return [padded[i : i + 3] for i in range(len(padded) - 2)]


def weighted_features(text: str) -> dict[str, float]:
    """Feature -> weight: words 1, bigrams 0.5, each word's char grams 0.5 in total.

    A text with no meaningful token (empty, only punctuation or stop words) gets the single
    feature ``e|`` so that every text has a non-zero vector (all such texts get the same one).
    """
    tokens = words(normalise_text(text))
    feats: dict[str, float] = {}
    for w in tokens:
        feats[f"w|{w}"] = feats.get(f"w|{w}", 0.0) + 1.0
        grams = _char_grams(w)
        for g in grams:
            feats[f"c|{g}"] = feats.get(f"c|{g}", 0.0) + 0.5 / len(grams)
    for a, b in itertools.pairwise(tokens):
        feats[f"b|{a} {b}"] = feats.get(f"b|{a} {b}", 0.0) + 0.5
    if not feats:
        feats["e|"] = 1.0
    return feats


def features(text: str) -> list[str]:
    """The same features as a bag (for scikit-learn vectorisers' ``analyzer``)."""
    tokens = words(normalise_text(text))
    out = [f"w|{w}" for w in tokens]
    out += [f"c|{g}" for w in tokens for g in _char_grams(w)]
    out += [f"b|{a} {b}" for a, b in itertools.pairwise(tokens)]
    return out or ["e|"]
