"""Request and response bodies of the HTTP API (pydantic: validation, and the OpenAPI page at /docs)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from interestgym.core.clock import TS_MAX
from interestgym.core.log_features import VALUE_MAX
from interestgym.data.columns import control_reason, has_control

#: The longest user or event id a request may carry.
MAX_ID_LENGTH = 256
#: The longest item id (a catalogue's ids may be URLs; the body limit bounds the rest).
MAX_ITEM_ID_LENGTH = 4096


def _printable(value: str) -> str:
    """An id holds no control character: ``"bob\\n"`` would be another user than ``bob`` in the store, but the same
    one in a URL path once a proxy or client trims it (``prepare`` refuses such ids in logs for the same reason)."""
    if (reason := control_reason(value)) is not None:
        raise ValueError(reason)
    return value


def _printable_ids(values: list[str]) -> list[str]:
    """:func:`_printable` for a list of ids, in one regex pass over them all (a ranking's candidates: thousands)."""
    if has_control("".join(values)):
        for pos, value in enumerate(values):
            if (reason := control_reason(value)) is not None:
                raise ValueError(f"item {pos + 1}: {reason}")
    return values


Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(_printable)]
#: An item id: no control character, at most MAX_ITEM_ID_LENGTH characters ("" is taken, as an unknown item).
ItemId = Annotated[str, Field(max_length=MAX_ITEM_ID_LENGTH), AfterValidator(_printable)]
#: Item ids of a list, checked in one pass.
ItemIds = Annotated[list[Annotated[str, Field(max_length=MAX_ITEM_ID_LENGTH)]], AfterValidator(_printable_ids)]


def _not_a_bool(value: Any) -> Any:
    """true / false are not times (pydantic's lax int read true as 1: an event in 1970 that locked the user out of
    every real one). Whole-number floats and digit strings stay accepted: a retry spelling 1000000.0 is the same event."""
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is not a time; expected UTC unix seconds (a JSON integer)")  # noqa: TRY004 (pydantic reports ValueError)
    return value


#: A time in UTC unix seconds.
Seconds = Annotated[int, BeforeValidator(_not_a_bool)]
MAX_BATCH = 1000
MAX_CANDIDATES = 10_000
#: Candidates over all the outcomes of one batch: a batch holds its users' locks (and SQLite's write lock) while it is
#: computed, so its size bounds how long it delays other users' events (1,000 outcomes of 1,600 candidates: ~5 s).
MAX_BATCH_CANDIDATES = 200_000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def repeated_id(items: list[str]) -> str | None:
    """``'i1' is there twice (positions 1 and 3); expected distinct item ids`` for the first id a list repeats, else None."""
    first: dict[str, int] = {}
    for pos, item in enumerate(items):
        if item in first:
            return f"{item!r} is there twice (positions {first[item] + 1} and {pos + 1}); expected distinct item ids"
        first[item] = pos
    return None


def _distinct_ids(items: list[str]) -> list[str]:
    if (repeated := repeated_id(items)) is not None:
        raise ValueError(repeated)
    return items


#: Item ids to rank or shown: distinct (an id there twice would be scored twice, and an outcome's label counted twice).
DistinctIds = Annotated[ItemIds, AfterValidator(_distinct_ids)]


class BehaviourEvent(_Body):
    """Something the user did with an item: updates the user's interest state through the policy."""

    kind: Literal["event"] = "event"
    event_id: Id = Field(description="Unique per user: a retried event with the same id is applied once.")
    user_id: Id
    ts: Seconds = Field(ge=0, lt=TS_MAX, description="UTC unix seconds (before 2100-01-01). A user's events must arrive in time order (equal times are fine).")
    action: str = Field(description="One of the export's actions (click, view, rate, purchase, ...).")
    item_id: ItemId | None = Field(None, description="An item of the catalogue; unknown or absent: counted, not a decision.")
    value: float | None = Field(None, ge=-VALUE_MAX, le=VALUE_MAX, description="Rating / quantity / read fraction (ratings >= the export's positive_rating "
                                "are positive). Required for 'rate' events; otherwise absent counts as 1.0 (and is counted in "
                                "interestgym_events_default_value_total).")
    hour: int | None = Field(None, ge=0, le=23, description="Hour on the dataset's clock; default: from ts.")
    weekday: int | None = Field(None, ge=0, le=6, description="0 = Monday; default: from ts.")


class Outcome(_Body):
    """What the user was shown and clicked: feeds the policy's running ranking statistics (and returns
    the ranking metrics of the user's current profiles on it)."""

    kind: Literal["outcome"]
    event_id: Id
    user_id: Id
    candidates: DistinctIds = Field(min_length=1, max_length=MAX_CANDIDATES, description="Item ids shown (distinct).")
    labels: list[Annotated[int, Field(ge=0, le=1)]] | None = Field(None, description="1 = clicked, one per candidate.")
    clicked: ItemIds | None = Field(None, description="The clicked candidates (instead of labels).")
    ts: Seconds | None = Field(None, ge=0, lt=TS_MAX, description="When it was shown (for the hour, if the score uses time of day).")
    hour: int | None = Field(None, ge=0, le=23, description="Hour of the ranking; default: from ts, else now.")

    @model_validator(mode="after")
    def _labels_or_clicked(self) -> Outcome:
        if (self.labels is None) == (self.clicked is None):
            raise ValueError("give exactly one of labels (one 0/1 per candidate) or clicked (item ids)")
        if self.labels is not None and len(self.labels) != len(self.candidates):
            raise ValueError(f"{len(self.labels)} labels for {len(self.candidates)} candidates; expected one per candidate")
        if self.clicked is not None:
            missing = sorted(set(self.clicked) - set(self.candidates))
            if missing:
                raise ValueError(f"clicked items {missing[:5]} are not among the candidates")
        return self

    def label_list(self) -> list[int]:
        if self.labels is not None:
            return list(self.labels)
        clicked = set(self.clicked or ())
        return [int(c in clicked) for c in self.candidates]


def _kind(value: Any) -> str:
    kind = value.get("kind", "event") if isinstance(value, dict) else getattr(value, "kind", "event")
    return kind if isinstance(kind, str) else "event"  # another name: refused naming the kinds there are


AnyEvent = Annotated[Annotated[BehaviourEvent, Tag("event")] | Annotated[Outcome, Tag("outcome")], Discriminator(_kind)]


class EventsRequest(_Body):
    events: list[AnyEvent] = Field(min_length=1, max_length=MAX_BATCH,
                                   description="Applied whole or not at all, in order per user.")
    late: Literal["refuse", "skip"] = Field(
        "refuse", description="An event older than its user's last applied one (or an outcome older than the ids the "
                              "service still remembers): 'refuse' the whole batch (409 out_of_order, nothing applied), or "
                              "'skip' it (status out_of_order: not applied, its id not recorded) and apply the rest.")

    @model_validator(mode="after")
    def _bounded_candidates(self) -> EventsRequest:
        total = sum(len(e.candidates) for e in self.events if isinstance(e, Outcome))
        if total > MAX_BATCH_CANDIDATES:
            raise ValueError(f"{total:,} candidates over the batch's outcomes; expected at most {MAX_BATCH_CANDIDATES:,} "
                             "(a batch delays other users' events while it is applied: send fewer outcomes per batch)")
        return self


class EventResult(BaseModel):
    event_id: str
    user_id: str
    kind: Literal["event", "outcome"]
    status: Literal["applied", "duplicate", "out_of_order"] = Field(
        description="duplicate: this event id was applied before; nothing changed. out_of_order (late='skip' only): older "
                    "than the user's last applied event; not applied, and its id not recorded.")
    last_event_ts: int | None = Field(None, description="out_of_order: the user's last applied event's time.")
    decision: bool | None = Field(None, description="Event: the policy updated the profiles.")
    item_known: bool | None = Field(None, description="Event: the item is in the catalogue.")
    value_given: bool | None = Field(None, description="Event: it carried a value (false: read as 1.0).")
    scored: bool | None = Field(None, description="Outcome: it had a clicked and an unclicked known candidate after the user's first decision.")
    unknown_candidates: int | None = Field(None, description="Outcome: candidates the catalogue does not hold (left out).")
    metrics: dict[str, float] | None = Field(None, description="Outcome: ranking metrics of the profiles before it.")


class EventsResponse(BaseModel):
    applied: int
    duplicates: int
    out_of_order: int = Field(0, description="Skipped as older than their user's last applied event (late='skip').")
    policy: str = Field(description="sha256 (first 16) of the manifest of the policy that applied them.")
    results: list[EventResult]


class RankRequest(_Body):
    user_id: Id
    candidates: DistinctIds = Field(min_length=1, max_length=MAX_CANDIDATES)
    hour: int | None = Field(None, ge=0, le=23, description="Hour of the ranking; default: from ts, else now.")
    ts: Seconds | None = Field(None, ge=0, lt=TS_MAX)
    top_k: int | None = Field(None, ge=1, description="Return only the best k.")


class RankedItem(BaseModel):
    item_id: str
    score: float


class RankResponse(BaseModel):
    user_id: str
    known_user: bool = Field(description="False: no state yet (a cold start: profiles are empty).")
    ranking: list[RankedItem] = Field(description="Best first; ties keep the request's order.")
    unknown_items: list[str] = Field(description="Candidates the catalogue does not hold (not ranked).")
    policy: str


class ItemIn(_Body):
    item_id: Annotated[ItemId, Field(min_length=1)]
    vector: list[float] | None = Field(None, description="L2-normalised, of the catalogue's dimension.")
    text: str | None = Field(None, description="Encoded with the catalogue's encoder (when it can run here).")
    category: str = ""

    @model_validator(mode="after")
    def _vector_or_text(self) -> ItemIn:
        if (self.vector is None) == (self.text is None):
            raise ValueError("give exactly one of vector or text")
        return self


class ItemsRequest(_Body):
    items: list[ItemIn] = Field(min_length=1, max_length=MAX_CANDIDATES)


class ItemsResponse(BaseModel):
    added: int
    replaced: int
    n_items: int


class PolicySwapRequest(_Body):
    path: str = Field(min_length=1, description="An export directory readable by every worker.")


class ErrorBody(BaseModel):
    error: str
    message: str
    detail: Any = None
