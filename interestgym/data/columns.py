"""Common names of the event-log columns, and the checks on id values.

Real logs rarely use interestgym's own column names: a MovieLens ``ratings.csv`` has
``userId,movieId,rating,timestamp``, RetailRocket ``timestamp,visitorid,event,itemid``, many exports
``user,item,action,time``. When a required column is missing under its canonical name, the
``prepare events`` reader takes a column with one of the unambiguous names listed in
:data:`ALIASES` instead, and says so in the validation notes. Names are compared ignoring case,
``_``, ``-`` and spaces (``userId``, ``user_id``, ``User ID`` are one name). Two candidate columns
for one field (``date`` and ``time``) are an error naming both: guessing could read the wrong one.
A column is never taken by its alias when the canonical name is present, nor when ``--map`` named
it (``--map NEW=OLD`` always decides), and the action column is not looked for under other names
when ``--default-action`` says the log has none. Of the optional columns only the category is looked for
under its common names (``category_id``, ``categoryId``, ``cat_id`` ...: names that can mean nothing else,
in the events and in an items file); the others (``value``, ``text`` ...) are not guessed: a ``rating``
column stays a context column unless mapped (its scale is the user's to say).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from interestgym.errors import DataError

#: canonical field -> other names it is often given (compared by :func:`name_key`).
ALIASES: dict[str, tuple[str, ...]] = {
    "user_id": ("user", "userId", "visitorid", "customer_id"),
    "item_id": ("item", "itemId", "movieId", "product_id", "news_id", "article_id"),
    "ts": ("timestamp", "time", "datetime", "date", "event_time", "event_timestamp", "unix_time", "created_at"),
    "action": ("behavior_type", "behaviour_type", "behavior", "behaviour", "event", "event_type", "action_type"),
    "category": ("category_id", "cat_id", "cate_id", "item_category", "category_name"),
}

#: Optional fields looked for under their common names too (when a column of that name is absent).
OPTIONAL_ALIAS_FIELDS = ("category",)

#: Fields whose aliases an items file may use (its other columns are item attributes).
ITEM_FILE_FIELDS = ("item_id", *OPTIONAL_ALIAS_FIELDS)


def name_key(name: str) -> str:
    """A column name compared loosely: lower case, without ``_``, ``-``, ``.`` and spaces."""
    return re.sub(r"[\s_.\-]", "", name).lower()


def expected_names(field: str) -> str:
    """``ts or one of timestamp, time, ...`` for a missing-column message."""
    return f"{field} or one of {', '.join(ALIASES[field])}" if ALIASES.get(field) else field


def resolve_aliases(names: Iterable[str], where: str, fields: Iterable[str] = tuple(ALIASES),
                    fixed: Iterable[str] = ()) -> dict[str, str]:
    """Column name -> canonical field for each missing field that exactly one column names by an alias.

    :param names: the file's column names (after ``--map``).
    :param where: the file, for the error message.
    :param fields: the canonical fields to look for.
    :param fixed: names that ``--map`` produced: the user chose them, they are not taken as aliases.
    :raises DataError: when two columns are candidates for one field.
    """
    names = [n for n in names if n]
    fixed = set(fixed)
    found: dict[str, str] = {}
    for canonical in fields:
        if canonical in names:
            continue
        # The canonical name spelled otherwise (``User_ID``) counts as a common name too.
        keys = {name_key(canonical)} | {name_key(a) for a in ALIASES.get(canonical, ())}
        candidates = [n for n in names if n not in fixed and n not in found and name_key(n) in keys]
        if len(candidates) > 1 and canonical in OPTIONAL_ALIAS_FIELDS:
            continue  # an optional field two columns could be (category_id and category_name): neither is guessed
        if len(candidates) > 1:
            raise DataError(
                f"{where}: columns {' and '.join(repr(c) for c in candidates)} could both be the {canonical} column; "
                f"expected one (choose with --map {canonical}={candidates[0]})"
            )
        if candidates:
            found[candidates[0]] = canonical
    return found


def alias_note(where: str, aliases: dict[str, str]) -> str:
    """The validation note that says which columns were taken by their common names."""
    taken = ", ".join(f"{old!r} as {new}" for old, new in aliases.items())
    return f"{where}: column{'s' if len(aliases) > 1 else ''} {taken} (a common name for it; --map NEW=OLD chooses another)"


# ------------------------------------------------------------------------------------------- ids
#: Control characters (Unicode category Cc: C0, DEL and C1). An id holding one is a damaged row
#: (a NUL from a broken export, a stray escape code): taken as is, it would be a new, unseen user.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def json_shown(value: Any) -> str | None:
    """A typed cell (JSON Lines, Parquet) that is a boolean, an array or an object, as JSON writes it (``true``,
    ``["u1"]``, ``{"s": 1}``): how a reject reason shows it; None for text and numbers (shown as they are)."""
    if isinstance(value, (bool, list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return None


def has_control(text: str) -> bool:
    """True when ``text`` holds a control character (C0, DEL or C1): what :func:`control_reason` names."""
    return _CONTROL.search(text) is not None


def control_reason(value: str) -> str | None:
    """``'bob\\n' holds the control character U+000A at position 4; expected printable text`` for a value with a
    control character, else None."""
    bad = _CONTROL.search(value)
    if bad is None:
        return None
    return f"{value!r} holds the control character U+{ord(bad.group()):04X} at position {bad.start() + 1}; expected printable text"


def id_reason(value: str, field: str) -> str | None:
    """Reject reason for an id that holds a control character, else None."""
    reason = control_reason(value)
    return None if reason is None else f"bad {field}: {reason}"
