"""The canonical dataset: the one contract between ``prepare`` and every later stage.

A dataset is a directory::

    manifest.json        schema version, source files + sha256, counts, split, validation report,
                         action weights, creation command
    items.parquet        one row per item; row order is the item index used by embeddings
    events.parquet       one row per behaviour event, sorted by (user_id, ts, seq)
    impressions.parquet  optional: logged impressions (candidates + click labels)
    users.parquet        user_id -> split ("train" / "valid" / "test")
    truth.npy            optional (synthetic data): true interest of the user at every event,
                         float32 (n_events, n_topics), aligned with events.parquet rows
    synthetic_users.parquet  optional (synthetic data): each user's type and true mixture
    rejects.jsonl        one JSON object per rejected row: file, line, reason, raw
    embeddings/          written by ``encode``: NAME.npy (float32, rows aligned with items) + NAME.json
    cache/               written by ``encode``: the embedding cache (and ``onnx/`` for ``--backend onnx``)

Columns (dtype):

* items: ``item_id`` (str), ``text`` (str), ``category`` (str, "" if unknown), ``subcategory`` (str),
  extra source fields are allowed after these.
* events: ``user_id`` (str), ``ts`` (int64, UTC unix seconds), ``item_id`` (str), ``action`` (str, one
  of :data:`ACTIONS`), ``value`` (float32: rating, quantity, or 1.0), ``hour`` (int8, 0-23, UTC shifted by
  ``--tz-offset`` hours), ``weekday`` (int8, 0 = Monday), ``seq`` (int64, source order: the stable tie
  rule), optional ``late`` (bool, with ``--time-split``), optional context columns (``device`` ...).
* impressions: ``impression_id`` (str), ``user_id`` (str), ``ts`` (int64), ``candidates`` (list<str>),
  ``labels`` (list<int8>, 1 = clicked).
* users: ``user_id`` (str), ``split`` (str).
"""

from __future__ import annotations

SCHEMA_VERSION = 1

#: Every action type the product understands: the seed's explicit and implicit feedback.
ACTIONS: tuple[str, ...] = (
    "impression",
    "click",
    "view",
    "like",
    "share",
    "comment",
    "search",
    "add_to_cart",
    "purchase",
    "rate",
)
ACTION_INDEX = {name: i for i, name in enumerate(ACTIONS)}

#: How much one event of each type says about the user's interest (later stages read the copy in
#: the manifest, which a user may edit). An impression alone says nothing; a purchase says most.
#: An event is positive feedback (a decision of the replay) when its weight is > 0 and, for ``rate``
#: events, its value is >= the manifest's ``positive_rating`` (:data:`DEFAULT_POSITIVE_RATING`); a
#: rating's value is not folded into the weight: it reaches the policy as the ``feedback_value``
#: observation feature.
DEFAULT_ACTION_WEIGHTS: dict[str, float] = {
    "impression": 0.0,
    "click": 1.0,
    "view": 0.5,
    "like": 1.5,
    "share": 2.0,
    "comment": 1.5,
    "search": 0.5,
    "add_to_cart": 2.0,
    "purchase": 3.0,
    "rate": 1.0,
}

#: Ratings at or above this value are positive feedback (MovieLens: 4 and 5 of 5).
DEFAULT_POSITIVE_RATING = 4.0

ITEM_COLUMNS = ("item_id", "text", "category", "subcategory")
EVENT_COLUMNS = ("user_id", "ts", "item_id", "action", "value", "hour", "weekday", "seq")
IMPRESSION_COLUMNS = ("impression_id", "user_id", "ts", "candidates", "labels")
USER_COLUMNS = ("user_id", "split")
SPLITS = ("train", "valid", "test")
