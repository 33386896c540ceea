"""`interestgym serve`: a request the schema refuses and one the runtime refuses get the same JSON error.

Both are ``{"error": "invalid_request", "message": "PATH is FOUND; expected WHAT", "detail": ...}``
with status 422; the schema's message names the field as the client wrote it (``events[0].ts``, not
pydantic's ``events.0.event.ts``) and what was found.
"""

from __future__ import annotations

import importlib
import json

import pytest
from export_fixtures import trained_export

importlib.import_module("fastapi")
from fastapi.testclient import TestClient

from interestgym.serve.app import create_app, validation_message
from interestgym.serve.service import InterestService, ServeConfig

KEYS = {"error", "message", "detail"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    fx = trained_export(tmp_path_factory, "impressions")
    service = InterestService.open(ServeConfig(export=str(fx.export), store="memory://", items=str(fx.dataset)))
    with TestClient(create_app(service), raise_server_exceptions=False) as c:
        yield c


def _event(**kw) -> dict:
    return {"event_id": "a", "user_id": "u", "ts": 1_000_000, "action": "click", "item_id": "i3", **kw}


def test_schema_and_runtime_errors_have_one_shape(client):
    schema = client.post("/v1/events", json={"events": [_event(ts="soon")]})  # pydantic refuses it
    runtime = client.post("/v1/events", json={"events": [_event(action="teleport")]})  # the runtime refuses it
    assert schema.status_code == runtime.status_code == 422
    assert set(schema.json()) == set(runtime.json()) == KEYS
    assert schema.json()["error"] == runtime.json()["error"] == "invalid_request"
    # the same words: "PATH is FOUND; expected WHAT"
    assert runtime.json()["message"].startswith("events[0].action is 'teleport'; expected one of ")
    assert schema.json()["message"].startswith("events[0].ts is 'soon'; expected a valid integer")
    assert schema.json()["detail"]["errors"] == [
        {"path": "events[0].ts", "message": schema.json()["message"], "type": "int_parsing"}]


@pytest.mark.parametrize(("method", "path", "body", "message"), [
    ("post", "/v1/events", {"events": [{"kind": "outcome", "event_id": "o", "user_id": "u", "candidates": ["i1"], "labels": [2]}]},
     "events[0].labels[0] is 2; expected less than or equal to 1"),
    ("post", "/v1/events", {"events": [{"kind": "outcome", "event_id": "o", "user_id": "u", "candidates": ["i1"], "clicked": ["i2"]}]},
     "events[0]: clicked items ['i2'] are not among the candidates"),
    ("post", "/v1/events", {"events": []}, "events has 0 items; expected at least 1"),
    ("post", "/v1/events", {"events": [_event(event_id=f"e{k}") for k in range(1001)]}, "events has 1001 items; expected at most 1000"),
    ("post", "/v1/events", {"events": [_event(ts=1511544070000)]},
     "events[0].ts is 1511544070000; expected less than 4102444800 (unix seconds: this looks like milliseconds; divide by 1000)"),
    ("post", "/v1/events", {"events": [_event(ts="11/12/2019 2:14:46 PM")]},
     ("events[0].ts is '11/12/2019 2:14:46 PM'; expected a valid integer, unable to parse string as an integer (UTC unix "
      "seconds, e.g. 1704825930; convert a date and time to them)")),
    ("post", "/v1/events", {"events": [_event(kind="click")]}, "events[0].kind is 'click'; expected 'event' or 'outcome'"),
    # past float32's range: refused by the schema, with its path (the runtime's "Event.value=..." had none)
    ("post", "/v1/events", {"events": [_event(value=1e300)]},
     "events[0].value is 1e+300; expected a finite number within float32's range (|value| <= 3.403e+38)"),
    ("post", "/v1/events", {"events": [_event(value=-1e39)]},
     "events[0].value is -1e+39; expected a finite number within float32's range (|value| <= 3.403e+38)"),
    ("post", "/v1/events", {"events": [_event(ts=10**26)]}, "events[0].ts is 100000000000000000000000000; expected less than 4102444800"),
    ("post", "/v1/rank", {"user_id": "u", "candidates": ["i1"], "ts": 2**63}, "ts is 9223372036854775808; expected less than 4102444800"),
    ("post", "/v1/events", {"events": [_event(event_id="")]}, "events[0].event_id is ''; expected at least 1 character"),
    ("post", "/v1/rank", {"user_id": "u", "candidates": ["i1"], "top_k": 0}, "top_k is 0; expected greater than or equal to 1"),
    ("post", "/v1/rank", {"user_id": "u", "candidates": ["i1", "i2", "i1"]},
     "candidates: 'i1' is there twice (positions 1 and 3); expected distinct item ids"),
    ("post", "/v1/events", {"events": [_event(ts="1511544070000")]},
     "events[0].ts is '1511544070000'; expected less than 4102444800 (unix seconds: this looks like milliseconds; divide by 1000)"),
    # true / false are not times: pydantic's lax int applied true as 1 (1970), locking the user out of every real event
    ("post", "/v1/events", {"events": [_event(ts=True)]}, "events[0].ts: true is not a time; expected UTC unix seconds (a JSON integer)"),
    ("post", "/v1/rank", {"user_id": "u", "candidates": ["i1"], "ts": False}, "ts: false is not a time; expected UTC unix seconds (a JSON integer)"),
    ("post", "/v1/events", {"events": [{"kind": "outcome", "event_id": "o", "user_id": "u", "candidates": ["i1"], "labels": [1], "ts": True}]},
     "events[0].ts: true is not a time; expected UTC unix seconds (a JSON integer)"),
    ("post", "/v1/rank", {"user_id": "u", "candidates": ["i1"], "k": 3},
     "k is not a field of this request (found 3); expected only the fields listed at /docs"),
    ("post", "/v1/rank", {"candidates": ["i1"]}, "user_id is missing; expected a value (required field)"),
    ("put", "/v1/items", {"items": [{"item_id": "x", "category": "c2"}]}, "items[0]: give exactly one of vector or text"),
    ("get", "/v1/users/u?top=500", None, "top (query parameter) is '500'; expected less than or equal to 100"),
    # the events sent as a bare array, without {"events": ...}: said as such, not echoed as Python's repr
    ("post", "/v1/events", [_event(), _event(event_id="e2")],
     ('body is a JSON array (2 items); expected a JSON object: POST /v1/events takes {"events": [...]}, the other routes the '
      "fields listed at /docs")),
])
def test_schema_errors_name_the_field_what_was_found_and_what_is_expected(client, method, path, body, message):
    response = getattr(client, method)(path, json=body) if body is not None else getattr(client, method)(path)
    assert response.status_code == 422
    got = response.json()
    assert set(got) == KEYS and got["error"] == "invalid_request"
    assert got["message"] == message
    assert [e["message"] for e in got["detail"]["errors"]] == [message]


def test_every_problem_is_listed_and_the_message_counts_them(client):
    got = client.post("/v1/rank", json={"candidates": [], "top_k": 0}).json()
    assert set(got) == KEYS
    paths = [e["path"] for e in got["detail"]["errors"]]
    assert set(paths) == {"user_id", "candidates", "top_k"}
    assert got["message"] == got["detail"]["errors"][0]["message"] + " (and 2 more: see detail.errors)"


def test_a_body_that_is_not_json_gets_the_same_shape(client):
    response = client.post("/v1/events", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    got = response.json()
    assert set(got) == KEYS and got["error"] == "invalid_request"
    assert got["message"].startswith("body is not valid JSON at character 1 (") and got["message"].endswith("; expected a JSON object")
    assert got["detail"]["errors"][0]["path"] == "body"


def test_runtime_refusals_keep_their_shape(client):
    missing = client.get("/v1/users/ghost")
    assert missing.status_code == 404 and set(missing.json()) == KEYS and missing.json()["error"] == "not_found"
    wrong_dim = client.put("/v1/items", json={"items": [{"item_id": "x", "vector": [1.0, 0.0], "category": "c2"}]})
    assert wrong_dim.status_code == 422 and set(wrong_dim.json()) == KEYS
    assert wrong_dim.json()["message"].startswith("items[0] ('x'): vector of length 2; expected 16")


def test_validation_message_without_errors_still_says_something():
    message, detail = validation_message([])
    assert "schema" in message and detail == {"errors": []}


def test_a_value_past_float32_is_refused_in_the_same_shape_with_its_path(client):
    got = client.post("/v1/events", json={"events": [_event(event_id="big", user_id="v", value=1e300)]})
    assert got.status_code == 422 and set(got.json()) == KEYS and got.json()["error"] == "invalid_request"
    assert got.json()["message"].startswith("events[0].value is 1e+300; expected a finite number")
    assert got.json()["detail"]["errors"][0]["path"] == "events[0].value"  # the runtime's own refusal had no path


def test_a_rating_without_its_value_is_refused_and_nothing_is_applied(client):
    # a 'rate' event read as value 1.0 would never reach the export's positive rating: refused, not guessed
    got = client.post("/v1/events", json={"events": [_event(event_id="r0", user_id="rater", action="click"),
                                                     _event(event_id="r1", user_id="rater", action="rate")]})
    assert got.status_code == 422 and got.json()["error"] == "invalid_request"
    assert got.json()["message"].startswith("events[1].value is missing: a 'rate' event needs its rating")
    assert got.json()["detail"] == {"index": 1, "event_id": "r1"}
    assert client.get("/v1/users/rater").status_code == 404  # the batch's click was not applied either
    rated = client.post("/v1/events", json={"events": [_event(event_id="r1", user_id="rater", action="rate", value=4.0)]})
    assert rated.status_code == 200 and rated.json()["results"][0]["value_given"] is True


def test_an_event_without_a_value_is_read_as_one_said_and_counted(client):
    def defaulted() -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith("interestgym_events_default_value_total "):
                return float(line.split()[1])
        raise AssertionError("interestgym_events_default_value_total is not exposed")

    before = defaulted()
    got = client.post("/v1/events", json={"events": [_event(event_id="d1", user_id="nov"),
                                                     _event(event_id="d2", user_id="nov", ts=1_000_001, value=1.0)]})
    assert got.status_code == 200
    assert [r["value_given"] for r in got.json()["results"]] == [False, True]
    assert defaulted() == before + 1
    # read as 1.0: the same state as the event sent with value 1.0 (a fresh user each way)
    client.post("/v1/events", json={"events": [_event(event_id="e1", user_id="one"), _event(event_id="e2", user_id="one", ts=1_000_001)]})
    client.post("/v1/events", json={"events": [_event(event_id="e1", user_id="two", value=1.0),
                                               _event(event_id="e2", user_id="two", ts=1_000_001, value=1.0)]})
    one, two = client.get("/v1/users/one").json(), client.get("/v1/users/two").json()
    assert {k: v for k, v in one.items() if k != "user_id"} == {k: v for k, v in two.items() if k != "user_id"}


def test_an_outcome_with_a_repeated_candidate_is_refused_as_a_ranking_is(client):
    outcome = {"kind": "outcome", "event_id": "rep", "user_id": "rep", "candidates": ["i3", "i3", "i2"], "clicked": ["i3"]}
    response = client.post("/v1/events", json={"events": [outcome]})
    assert response.status_code == 422, response.text
    assert response.json()["message"] == "events[0].candidates: 'i3' is there twice (positions 1 and 2); expected distinct item ids"
    assert client.get("/v1/users/rep").status_code == 404  # nothing applied


def test_an_event_far_in_the_future_is_refused_naming_the_field_the_value_and_the_limit(client):
    import dataclasses
    import time

    future = 4_070_908_800  # 2099-01-01: every real event after it would be out of order
    response = client.post("/v1/events", json={"events": [_event(user_id="later", event_id="f0", ts=int(time.time())),
                                                          _event(user_id="later", event_id="f1", ts=future)]})
    assert response.status_code == 422, response.text
    message = response.json()["message"]
    assert message.startswith("events[1].ts is 4070908800 (2099-01-01T00:00:00Z); expected at most "), message
    assert "clock plus 86400 s" in message and "nothing in this batch was applied" in message
    assert client.get("/v1/users/later").status_code == 404
    soon = _event(user_id="later", event_id="f2", ts=int(time.time()) + 3600)  # a client's clock an hour ahead: within the tolerance
    assert client.post("/v1/events", json={"events": [soon]}).status_code == 200
    service = client.app.state.service
    default = service.config
    service.config = dataclasses.replace(default, future_tolerance_s=0)  # --future-tolerance 0
    try:
        refused = client.post("/v1/events", json={"events": [{**soon, "event_id": "f3", "ts": int(time.time()) + 3600}]})
    finally:
        service.config = default
    assert refused.status_code == 422 and "clock plus 0 s" in refused.json()["message"], refused.text


def test_a_body_over_the_limit_is_refused_with_413_before_it_is_parsed(client):
    import dataclasses

    service = client.app.state.service
    default = service.config
    assert default.max_body_bytes == 16 * 2**20  # the documented default (--max-body-mb 16)
    service.config = dataclasses.replace(default, max_body_bytes=1000)
    body = json.dumps({"events": [_event(user_id="big", event_id=f"b{i}", ts=1_000_000 + i) for i in range(30)]}).encode()
    assert len(body) > 1000
    try:
        declared = client.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
        streamed = client.post("/v1/events", content=iter([body[:600], body[600:]]), headers={"Content-Type": "application/json"})
        small = client.post("/v1/events", json={"events": [_event(user_id="small", event_id="s0")]})
    finally:
        service.config = default
    assert declared.status_code == 413, declared.text
    assert declared.json() == {"error": "body_too_large", "detail": {"max_bytes": 1000}, "message":
                               f"the request body is {len(body):,} bytes (its Content-Length); expected at most 1,000 bytes "
                               "(--max-body-mb 0.000953674): send fewer events or items per request"}
    assert streamed.status_code == 413, streamed.text  # sent without Content-Length: refused as it passes the limit
    assert streamed.json()["message"].startswith("the request body is over 1,000 bytes (sent without Content-Length)")
    assert small.status_code == 200, small.text
    assert client.get("/v1/users/big").status_code == 404  # nothing applied


def test_the_service_refuses_a_repeated_rank_candidate_from_python_too(client):
    """The schema refuses a repeated candidate over HTTP; the service behind it refuses it for Python callers, in the
    same words (it ranked the id twice)."""
    from interestgym.serve.service import InvalidRequestError

    service = client.app.state.service
    with pytest.raises(InvalidRequestError, match=r"candidates: 'i1' is there twice \(positions 1 and 3\); expected distinct item ids"):
        service.rank("u", ["i1", "i2", "i1"])


@pytest.mark.parametrize(("body", "message"), [
    (b'{"events": [{"event_id": "\xff"}]}', "body is not UTF-8 (byte 26: invalid start byte); expected a JSON object in UTF-8"),
    (b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "body nests arrays or objects too deeply to be read; expected a JSON object of the API's shape (see /docs)"),
])
def test_a_body_that_cannot_be_read_as_json_is_a_422_in_the_same_shape(client, body, message):
    """FastAPI answers 400 http_error "There was an error parsing the body" for these: the service answers them as
    every other unreadable request, 422 invalid_request saying what was found and expected."""
    response = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    got = response.json()
    assert set(got) == KEYS and got["error"] == "invalid_request" and got["message"] == message


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/x-www-form-urlencoded"])
def test_a_json_body_not_sent_as_json_is_a_415_saying_which_header_to_send(client, content_type):
    """FastAPI reads a body as JSON only under a JSON Content-Type; otherwise the schema saw text and the answer was
    "expected a valid dictionary", which sent users looking at their JSON instead of their header."""
    headers = {} if content_type is None else {"content-type": content_type}
    response = client.post("/v1/rank", content=b'{"user_id": "u", "candidates": ["i1"]}', headers=headers)
    assert response.status_code == 415, response.text
    got = response.json()
    assert set(got) == KEYS and got["error"] == "unsupported_media_type"
    assert got["message"] == (f"body sent with Content-Type {content_type or '(none)'!r}; expected 'application/json' "
                              "(curl: -H 'Content-Type: application/json')")
    assert client.post("/v1/rank", content=b'{"user_id": "u", "candidates": ["i1"]}',
                       headers={"content-type": "application/json; charset=utf-8"}).status_code == 200
