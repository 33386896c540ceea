"""Which encoder suits a prepared dataset's item texts: what `prepare` advises as the next step, and what a stage
that finds no embeddings says to run (one answer for both).

cooc when an events log's item texts are only ids (``category 2520377``: a text encoder sees no meaning in them),
tfidf when they are Chinese (minilm is an English model), else minilm.
"""

from __future__ import annotations

import re
from pathlib import Path

#: A token with a digit in it (``2520377``, ``cat_12``, ``SKU-9``) is an id, not a word.
_TOKEN = re.compile(r"\w+")
#: Texts looked at to tell ids from words (evenly spaced over items.parquet).
_TEXT_SAMPLE = 20_000


def id_only_example(texts: list[str]) -> str | None:
    """An item text, when every item's text is ids in one fixed frame (e.g. ``category 2520377``); else None.

    A text's words are its tokens without a digit. When all the items' texts have the same words
    (the literal part of an ``--item-text`` template such as ``category {category}``, or none at
    all), the texts differ only by ids: a text encoder sees no meaning in them.
    """
    if not texts:
        return None
    sample = texts[:: max(1, len(texts) // _TEXT_SAMPLE)]
    frames = {tuple(t for t in _TOKEN.findall(text) if not any(c.isdigit() for c in t)) for text in sample}
    if len(frames) != 1 or not any(any(c.isdigit() for c in text) for text in sample):
        return None
    return sample[0]


def encoder_advice(folder: Path, fmt: str | None) -> tuple[str, str | None]:
    """(the encoder to run on the dataset in ``folder``, why it rather than minilm, or None for minilm itself).

    :param fmt: the dataset's source format (``events``, ``movielens``, ``mind``, ...): only an events log's texts can
        be a template of ids.
    """
    import pandas as pd

    from interestgym.encoders.tokenize import chinese_example

    try:  # items.parquet read once for both questions
        texts = pd.read_parquet(folder / "items.parquet", columns=["text"])["text"].astype(str).tolist()
    except Exception:  # noqa: BLE001 - only a suggestion: never fail a stage for it
        return "minilm", None
    example = id_only_example(texts) if fmt == "events" else None
    if example is not None:
        return "cooc", (f"item texts are only ids (e.g. {example[:40]!r}), no words for minilm; "
                        "cooc learns item vectors from training users' co-occurrence")
    chinese = chinese_example(texts)
    if chinese is not None:
        return "tfidf", (f"item texts are Chinese (e.g. {chinese[:20]!r}); minilm is an English model, "
                         "tfidf segments Chinese words (jieba); a Chinese BERT folder also works: --encoder PATH")
    return "minilm", None
