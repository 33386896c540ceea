"""`interestgym serve`: the HTTP service over SQLite and a real Redis server.

The export is a real trained run (tests/export_fixtures.py, the "impressions" variant: category model,
time-of-day profiles and popularity all in the score); the Redis server is a real `redis-server`
started on a free loopback port (the Redis tests skip, saying why, only when the binary is absent).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import click
import numpy as np
import pytest
from export_fixtures import trained_export

fastapi = importlib.import_module("fastapi")
from fastapi.testclient import TestClient

from interestgym.runtime import Event, UserState, load_policy
from interestgym.runtime.manifest import read_manifest, seal_manifest, write_manifest
from interestgym.serve.app import create_app
from interestgym.serve.catalogue import (
    Catalogue,
    CatalogueError,
    CatalogueMismatchError,
    catalogue_from_dataset,
    load_catalogue,
)
from interestgym.serve.loadgen import ServerProcess, free_port, send_streams
from interestgym.serve.service import InterestService, PolicyMismatchError, ServeConfig
from interestgym.serve.stores import open_store

STORES = ["sqlite", "redis"]


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on a free loopback port, for the whole session."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not on PATH, so the Redis store cannot be tested against a real server "
                    "(CI installs it: apt-get install redis-server)")
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    import redis

    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail(f"redis-server on port {port} did not answer")
    yield f"redis://127.0.0.1:{port}/0"
    client.close()
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def store_url(request, tmp_path):
    """A fresh, empty store of the parametrised kind (a Redis key prefix per test)."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'serve.db'}"
    if kind == "memory":
        return "memory://"
    base = request.getfixturevalue("redis_server")
    return f"{base}?prefix=t{time.monotonic_ns()}:"


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return trained_export(tmp_path_factory, "impressions")


@pytest.fixture(scope="module")
def catalogue_dir(fx, tmp_path_factory):
    """The dataset's items as a catalogue folder: a server process starts faster from it (no pandas)."""
    return catalogue_from_dataset(fx.dataset).save(tmp_path_factory.mktemp("catalogue") / "items")


def _service(fx, store: str, **kw) -> InterestService:
    return InterestService.open(ServeConfig(export=str(fx.export), store=store, items=kw.pop("items", str(fx.dataset)), **kw))


def _client(service: InterestService) -> TestClient:
    return TestClient(create_app(service), raise_server_exceptions=False)


def _event(eid: str, user: str, ts: int, item: str = "i3", action: str = "click", **kw) -> dict:
    return {"event_id": eid, "user_id": user, "ts": ts, "action": action, "item_id": item, **kw}


# ------------------------------------------------------------------------------------ parity
def _replay_requests(dataset, data) -> dict[str, list[dict]]:
    """Per test user, the events and outcomes a service receives when its log is replayed (what
    `replay_through_runtime` feeds the runtime): every event in time order, and after each decision
    the outcomes of the scoring points that follow it (event id = the point's key)."""
    events = dataset.events
    items = dataset.items
    item_ids = items["item_id"].astype(str).to_numpy()
    users = set(map(str, data.user_ids))
    decision_of_row = {int(r): d for d, r in enumerate(data.decision_event_row)}
    out: dict[str, list[dict]] = {u: [] for u in map(str, data.user_ids)}
    for row, e in enumerate(events.itertuples(index=False)):
        user = str(e.user_id)
        if user not in users:
            continue
        out[user].append({"event_id": f"row{row}", "user_id": user, "ts": int(e.ts), "action": str(e.action),
                          "item_id": str(e.item_id), "value": float(e.value), "hour": int(e.hour), "weekday": int(e.weekday)})
        d = decision_of_row.get(row)
        if d is None:
            continue
        for point in range(int(data.decision_point_start[d]), int(data.decision_point_end[d])):
            a, b = int(data.point_offsets[point]), int(data.point_offsets[point + 1])
            cand = data.point_candidates[a:b]
            out[user].append({"kind": "outcome", "event_id": str(data.point_key[point]), "user_id": user,
                              "candidates": item_ids[cand].tolist(), "labels": data.point_labels[a:b].astype(int).tolist(),
                              "hour": int(data.point_slot[point]) * 6})
    return out


@pytest.fixture(scope="module")
def evaluated(fx, tmp_path_factory):
    """`interestgym evaluate`'s numbers for the trained policy, and the per-point reference."""
    from interestgym.agents.config import TrainConfig
    from interestgym.agents.run_folder import load_run_policy
    from interestgym.envs.replay_data import load_replay_data
    from interestgym.envs.vector import evaluate_policy

    from interestgym.data.dataset import Dataset
    from interestgym.evaluation.run import evaluate_run

    out = tmp_path_factory.mktemp("evaluation")
    evaluate_run(fx.run, out=out, baselines="static", n_boot=20, progress=False)
    doc = json.loads((out / "evaluation.json").read_text())
    config = TrainConfig.from_dict(json.loads((fx.run / "config.json").read_text())["config"])
    dataset = Dataset.open(config.dataset)
    data = load_replay_data(dataset, None, config.protocol_spec("test"))
    points = evaluate_policy(data, load_run_policy(fx.run), metric=config.reward, progress=False).points
    return doc, points, _replay_requests(dataset, data)


@pytest.mark.parametrize("store_url", STORES, indirect=True)
def test_replaying_test_users_over_http_gives_exactly_the_metrics_of_interestgym_evaluate(fx, evaluated, store_url):
    from interestgym.core.stats import per_user_means

    doc, reference, requests = evaluated
    users = list(requests)
    got: dict[str, dict] = {}
    with _client(_service(fx, store_url)) as client:
        for k in range(0, len(users), 4):  # several users per batch: their k-th events go through one policy call
            batch = [e for u in users[k:k + 4] for e in requests[u]]
            response = client.post("/v1/events", json={"events": batch})
            assert response.status_code == 200, response.text
            got.update({r["event_id"]: r for r in response.json()["results"] if r["kind"] == "outcome"})
    assert len(reference) > 20
    assert all(got[str(key)]["scored"] for key in reference["point_key"])
    for metric in ("auc", "mrr", "ndcg@5", "ndcg@10", "f1@10", "hit@10"):
        served = np.array([got[str(key)]["metrics"][metric] for key in reference["point_key"]])
        np.testing.assert_array_equal(served, reference[metric].to_numpy(), err_msg=metric)  # per scoring point, to the bit
        user_ids, means = per_user_means(reference["user_id"].to_numpy(), served)
        assert [str(u) for u in user_ids] == doc["users"]
        np.testing.assert_array_equal(means, np.array(doc["per_user"]["ppo"][metric]), err_msg=metric)  # evaluation.json's


# ------------------------------------------------------------------------------------ events
def test_the_memory_store_applies_a_retried_event_once_too(fx):
    """memory:// (one process; the tests' and a demo's store) keeps the promise the durable stores keep: an event id
    applied before is answered `duplicate` and changes nothing, within a batch and across requests."""
    batch = [_event("a", "u1", 1_000_000, "i3"), _event("b", "u1", 1_000_100, "i7"), _event("a", "u1", 1_000_000, "i3")]
    with _client(_service(fx, "memory://")) as client:
        first = client.post("/v1/events", json={"events": batch}).json()
        state = client.get("/v1/users/u1").json()
        assert [r["status"] for r in first["results"]] == ["applied", "applied", "duplicate"]
        again = client.post("/v1/events", json={"events": batch[:2]}).json()
        assert (again["applied"], again["duplicates"]) == (0, 2)
        assert client.get("/v1/users/u1").json() == state and state["events"] == 2


@pytest.mark.parametrize("store_url", STORES, indirect=True)
def test_a_retried_event_is_applied_once(fx, store_url):
    policy = load_policy(fx.export)
    cat = catalogue_from_dataset(fx.dataset)
    batch = [_event("a", "u1", 1_000_000, "i3"), _event("b", "u1", 1_000_100, "i7"), _event("a", "u1", 1_000_000, "i3")]
    with _client(_service(fx, store_url)) as client:
        first = client.post("/v1/events", json={"events": batch}).json()
        assert [r["status"] for r in first["results"]] == ["applied", "applied", "duplicate"]  # a repeat within the batch too
        again = client.post("/v1/events", json={"events": batch[:2]}).json()  # the client retries: nothing changes
        assert (again["applied"], again["duplicates"]) == (0, 2)
        assert client.get("/v1/users/u1").json()["events"] == 2
    blob, n_ids = open_store(store_url).user_info("u1")
    expected = policy.new_state()
    for e in batch[:2]:
        row = cat.rows([e["item_id"]])[0]
        expected = policy.update(expected, Event(e["ts"], "click", item_vector=cat.vectors[row], category=cat.categories[row]))
    assert UserState.from_bytes(blob) == expected and n_ids == 2


@pytest.mark.parametrize("store_url", [*STORES, "memory"], indirect=True)
def test_an_event_id_reused_with_other_content_is_refused_not_dropped(fx, store_url):
    """A retry resends the same event: `duplicate`. The same id with other content (another item, time or action) is
    another event under a used id: 409 event_conflict naming it, nothing of the batch applied, within one batch and
    across requests, on every store; counted in the metrics."""
    with _client(_service(fx, store_url)) as client:
        inside = client.post("/v1/events", json={"events": [_event("a", "u1", 1_000_000, "i3"), _event("a", "u1", 1_000_005, "i7",
                                                                                                        action="purchase")]})
        assert inside.status_code == 409 and inside.json()["error"] == "event_conflict"
        assert inside.json()["detail"] == {"index": 1, "event_id": "a", "user_id": "u1"}
        assert "events[1]: event id 'a' of user 'u1' was applied before (or earlier in this batch) with other content" in \
            inside.json()["message"]
        assert client.get("/v1/users/u1").status_code == 404  # nothing applied: no state yet
        assert client.post("/v1/events", json={"events": [_event("a", "u1", 1_000_000, "i3")]}).json()["applied"] == 1
        retry = client.post("/v1/events", json={"events": [_event("a", "u1", 1_000_000, "i3")]}).json()
        assert retry["duplicates"] == 1
        later = client.post("/v1/events", json={"events": [_event("b", "u1", 1_000_010, "i7"), _event("a", "u1", 1_000_000, "i9")]})
        assert later.status_code == 409 and later.json()["detail"]["index"] == 1
        assert client.get("/v1/users/u1").json()["events"] == 1  # b was not applied either
        assert 'interestgym_events_refused_total{reason="conflict"} 2.0' in client.get("/metrics").text


def _previous_release_store(path: Path) -> Path:
    """A SQLite store as the release before digests and times wrote it, holding one applied id, 'old' of user u1."""
    import sqlite3

    conn = sqlite3.connect(path)
    conn.executescript(
        "PRAGMA journal_mode=WAL;"
        "CREATE TABLE user_states (user_id TEXT PRIMARY KEY, state BLOB NOT NULL, updated_at REAL NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE applied_events (user_id TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (user_id, event_id)) WITHOUT ROWID;"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE items (item_id TEXT PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID;"
        "INSERT INTO meta VALUES ('schema', '1'); INSERT INTO applied_events VALUES ('u1', 'old');")
    conn.close()
    return path


def test_a_store_of_the_previous_release_keeps_working_for_both_releases(fx, tmp_path, redis_server):
    """Digests were added without changing what the previous release reads or writes: on a SQLite file it made (no
    digest table) a new worker answers its ids as retries, whatever is resent, and the previous release's own write
    (two columns into applied_events) still works after a new worker opened the file; on Redis its `ev:ID = 1` keys
    are retries too."""
    import sqlite3

    path = _previous_release_store(tmp_path / "old.db")
    with _client(_service(fx, f"sqlite:///{path}")) as client:
        resent = client.post("/v1/events", json={"events": [_event("old", "u1", 1_000_000, "i9"), _event("new", "u1", 1_000_001)]})
        assert [r["status"] for r in resent.json()["results"]] == ["duplicate", "applied"]
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO applied_events VALUES ('u2', 'by-the-old-release')")  # the previous release's write
    conn.commit()
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == "1"
    assert dict(conn.execute("SELECT event_id, digest FROM event_digests").fetchall()).keys() == {"new"}
    conn.close()

    from redis import Redis

    prefix = f"old{time.monotonic_ns()}:"
    host, port = redis_server.removeprefix("redis://").split("/")[0].split(":")
    Redis(host=host, port=int(port)).hset(f"{prefix}user:u1", mapping={"ev:old": b"1"})  # the previous release's key
    with _client(_service(fx, f"{redis_server}?prefix={prefix}")) as client:
        resent = client.post("/v1/events", json={"events": [_event("old", "u1", 1_000_000, "i9"), _event("new", "u1", 1_000_001)]})
        assert [r["status"] for r in resent.json()["results"]] == ["duplicate", "applied"]


@pytest.mark.parametrize("store_url", [*STORES, "memory"], indirect=True)
def test_a_retry_is_a_duplicate_however_its_client_spells_it(fx, store_url):
    """What an event applies decides, not how a retry spells it: an hour given equal to the one derived or not at all,
    a value of 1.0 or none, an int or a float time, clicked items in another order or as labels are one event."""
    with _client(_service(fx, store_url)) as client:
        first = [_event("a", "u1", 1_000_000, "i3"),
                 {"kind": "outcome", "event_id": "o", "user_id": "u1", "ts": 1_000_010, "candidates": ["i1", "i2", "i3"],
                  "clicked": ["i3", "i1"]}]
        assert client.post("/v1/events", json={"events": first}).json()["applied"] == 2
        again = [_event("a", "u1", 1_000_000.0, "i3", value=1.0, hour=13, weekday=0),
                 {"kind": "outcome", "event_id": "o", "user_id": "u1", "ts": 1_000_010, "candidates": ["i1", "i2", "i3"],
                  "labels": [1, 0, 1]}]
        retry = client.post("/v1/events", json={"events": again})
        assert retry.status_code == 200 and retry.json()["duplicates"] == 2, retry.text
        other = client.post("/v1/events", json={"events": [_event("a", "u1", 1_000_000, "i3", value=0.5)]})
        assert other.status_code == 409  # another value is another event


def _outcome(eid: str, user: str, ts: int | None, clicked: str = "i3") -> dict:
    body = {"kind": "outcome", "event_id": eid, "user_id": user, "candidates": ["i1", "i2", "i3"], "clicked": [clicked]}
    return body if ts is None else {**body, "ts": ts}


@pytest.mark.parametrize("store_url", [*STORES, "memory"], indirect=True)
def test_applied_ids_are_forgotten_past_the_retention_and_a_late_retry_is_never_applied_twice(fx, store_url):
    """--event-id-retention 100: an id is kept while its time is within 100 s of the user's last event. The ids
    expected in the store are computed here from that rule; a retry of a forgotten event is out of order (409), not
    applied again; an outcome whose ts is that old is refused; each forgotten id is counted."""
    retention, t0 = 100, 1_000_000
    times: dict[str, int] = {}  # every id applied, with its time

    def kept(last: int) -> set[str]:
        return {e for e, t in times.items() if t >= last - retention}

    with _client(_service(fx, store_url, event_id_retention_s=retention)) as client:
        service = client.app.state.service
        for eid, dt in (("a", 0), ("b", 50)):
            assert client.post("/v1/events", json={"events": [_event(eid, "u1", t0 + dt)]}).json()["applied"] == 1
            times[eid] = t0 + dt
        assert client.get("/v1/users/u1").json()["applied_event_ids"] == len(kept(t0 + 50)) == 2
        assert client.post("/v1/events", json={"events": [_event("c", "u1", t0 + 120, "i7")]}).json()["applied"] == 1
        times["c"] = t0 + 120
        assert kept(t0 + 120) == {"b", "c"}
        assert service.store.user_info("u1")[1] == 2
        state = client.get("/v1/users/u1").json()
        late = client.post("/v1/events", json={"events": [_event("a", "u1", t0)]})  # a's retry, its id forgotten
        assert late.status_code == 409 and late.json()["error"] == "out_of_order"
        assert "ids forgotten (--event-id-retention), so if this is a retry of one, it was applied then" in late.json()["message"]
        recent = client.post("/v1/events", json={"events": [_event("x", "u1", t0 + 119)]})  # late, but within the window
        assert recent.status_code == 409 and "forgotten" not in recent.json()["message"]
        assert client.get("/v1/users/u1").json() == state  # not applied a second time
        assert client.post("/v1/events", json={"events": [_event("b", "u1", t0 + 50)]}).json()["duplicates"] == 1  # kept
        # outcomes: one within the window is remembered (its retry a duplicate); one with a ts older than it is refused
        assert client.post("/v1/events", json={"events": [_outcome("o1", "u1", t0 + 110)]}).json()["applied"] == 1
        times["o1"] = t0 + 110
        assert client.post("/v1/events", json={"events": [_outcome("o1", "u1", t0 + 110)]}).json()["duplicates"] == 1
        old = client.post("/v1/events", json={"events": [_outcome("o2", "u1", t0 + 19)]})
        assert old.status_code == 409 and "--event-id-retention" in old.json()["message"]
        assert old.json()["detail"] == {"index": 0, "event_id": "o2", "user_id": "u1", "ts": t0 + 19, "last_event_ts": t0 + 120}
        # one batch moving the user far ahead forgets every earlier id, the batch's own first event too
        batch = [_event("d", "u1", t0 + 200), _event("e", "u1", t0 + 500, "i7")]
        assert client.post("/v1/events", json={"events": batch}).json()["applied"] == 2
        times.update(d=t0 + 200, e=t0 + 500)
        assert kept(t0 + 500) == {"e"} and service.store.user_info("u1")[1] == 1
        metrics = client.get("/metrics").text
        assert f"interestgym_event_ids_forgotten_total {float(len(times) - 1)}" in metrics  # a, b, c, o1, d
        assert client.post("/v1/events", json={"events": [_event("d", "u1", t0 + 200)]}).status_code == 409  # never twice
        assert client.get("/v1/users/u1").json()["events"] == 5  # a, b, c, d, e: each applied once
        assert client.delete("/v1/users/u1").status_code == 204
        assert service.store.user_info("u1") == (None, 0)
    if store_url.startswith("redis"):  # the user's sorted set of times went with the user
        from redis import Redis

        prefix = store_url.split("prefix=")[1]
        assert not Redis.from_url(store_url.split("?")[0]).exists(f"{prefix}times:u1")


@pytest.mark.parametrize("store_url", STORES, indirect=True)
@pytest.mark.parametrize("later", [1000, None])
def test_an_outcome_forgotten_under_a_shorter_retention_is_not_applied_again_under_a_longer_one(fx, store_url, later):
    """A worker restarted (or another worker) with a longer --event-id-retention, or forever: an outcome whose id the
    shorter one forgot is refused (409), not applied a second time; the store keeps where its user's ids were cut."""
    t0 = 1_000_000
    with _client(_service(fx, store_url, event_id_retention_s=100)) as client:
        assert client.post("/v1/events", json={"events": [_event("a", "u1", t0), _outcome("o1", "u1", t0)]}).json()["applied"] == 2
        assert client.post("/v1/events", json={"events": [_event("b", "u1", t0 + 500)]}).json()["applied"] == 1
        blob = client.app.state.service.store.user_info("u1")
    assert blob[1] == 1  # a and o1 forgotten
    with _client(_service(fx, store_url, event_id_retention_s=later)) as client:
        retry = client.post("/v1/events", json={"events": [_outcome("o1", "u1", t0)]})
        assert retry.status_code == 409 and retry.json()["error"] == "out_of_order", retry.text
        assert "forgotten" in retry.json()["message"] and retry.json()["detail"]["forgotten_before"] == t0 + 400
        assert client.app.state.service.store.user_info("u1") == blob  # not applied a second time
        assert client.post("/v1/events", json={"events": [_outcome("o2", "u1", t0 + 400)]}).json()["applied"] == 1  # not cut


@pytest.mark.parametrize("store_url", [*STORES, "memory"], indirect=True)
def test_an_outcome_without_ts_of_a_user_ahead_of_the_servers_clock_stays_a_retry(fx, store_url):
    """A user whose events are ahead of the server's clock (within --future-tolerance) by more than the retention: an
    outcome sent without ts is timed at the user's last event, not the server's clock (forgotten at once: its retry
    applied again)."""
    ahead = int(time.time()) + 3600
    with _client(_service(fx, store_url, event_id_retention_s=60)) as client:
        assert client.post("/v1/events", json={"events": [_event("a", "u1", ahead), _outcome("o1", "u1", None)]}).json()["applied"] == 2
        assert client.get("/v1/users/u1").json()["applied_event_ids"] == 2
        assert client.post("/v1/events", json={"events": [_outcome("o1", "u1", None)]}).json()["duplicates"] == 1


@pytest.mark.parametrize("store_url", [*STORES, "memory"], indirect=True)
def test_retention_forever_keeps_every_applied_id(fx, store_url):
    with _client(_service(fx, store_url, event_id_retention_s=None)) as client:
        events = [_event(f"e{k}", "u1", 1_000_000 + k * 10**7) for k in range(4)]  # 10^7 s apart: far past 30 days
        assert client.post("/v1/events", json={"events": events}).json()["applied"] == 4
        assert client.get("/v1/users/u1").json()["applied_event_ids"] == 4
        assert client.post("/v1/events", json={"events": events[:1]}).json()["duplicates"] == 1  # still a retry
        assert client.post("/v1/events", json={"events": [_outcome("o", "u1", 1_000_000)]}).json()["applied"] == 1  # any ts


def test_ids_a_previous_release_stored_without_a_time_are_kept(fx, tmp_path):
    """A SQLite file of the release before times (no event_times table; its ids in applied_events alone): its ids are
    never forgotten (no time to count from) and stay retries, while the new release's own ids are forgotten."""
    path = _previous_release_store(tmp_path / "old.db")
    with _client(_service(fx, f"sqlite:///{path}", event_id_retention_s=10)) as client:
        for eid, ts in (("new", 1_000_000), ("later", 1_000_100)):
            assert client.post("/v1/events", json={"events": [_event(eid, "u1", ts)]}).json()["applied"] == 1
        assert client.get("/v1/users/u1").json()["applied_event_ids"] == 2  # old and later; new was forgotten
        assert client.post("/v1/events", json={"events": [_event("old", "u1", 1_000_100)]}).json()["duplicates"] == 1


@pytest.mark.parametrize("store_url", STORES, indirect=True)
def test_a_user_an_earlier_release_deleted_starts_afresh_without_its_old_times(fx, store_url):
    """An earlier release's DELETE /v1/users/ID (a mixed fleet, or a rollback) removes the user's state and ids but not
    the times it does not know (SQLite: event_times, event_forgotten_before; Redis: the times:ID sorted set): the user's
    next write drops them, so an outcome of the fresh user is not refused as forgotten and nothing of the old user stays."""
    t0 = 1_000_000
    with _client(_service(fx, store_url, event_id_retention_s=100)) as client:
        assert client.post("/v1/events", json={"events": [_event("a", "u1", t0)]}).json()["applied"] == 1
        assert client.post("/v1/events", json={"events": [_event("b", "u1", t0 + 500)]}).json()["applied"] == 1  # a forgotten
    if store_url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        for table in ("user_states", "applied_events", "event_digests"):  # the earlier release's DELETE
            conn.execute(f"DELETE FROM {table} WHERE user_id = 'u1'")
        conn.commit()

        def times() -> set[str]:
            return {r[0] for r in conn.execute("SELECT event_id FROM event_times WHERE user_id = 'u1'")}
    else:
        from redis import Redis

        prefix, redis = store_url.split("prefix=")[1], Redis.from_url(store_url.split("?")[0])
        redis.delete(f"{prefix}user:u1")  # the earlier release's DELETE

        def times() -> set[str]:
            return {e.decode() for e in redis.zrange(f"{prefix}times:u1", 0, -1)}
    with _client(_service(fx, store_url, event_id_retention_s=100)) as client:
        fresh = client.post("/v1/events", json={"events": [_outcome("o1", "u1", t0)]})
        assert fresh.status_code == 200 and fresh.json()["applied"] == 1, fresh.text
    assert times() == {"o1"}


@pytest.mark.parametrize(("text", "seconds"), [("3600", 3600), ("90m", 5400), ("12h", 43_200), ("30d", 2_592_000),
                                                ("0", 0), (" 7D ", 604_800), ("forever", None)])
def test_event_id_retention_reads_seconds_units_and_forever(text, seconds):
    from interestgym.serve.cli import Duration

    assert Duration().convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["1.5d", "-5", "30 days", "d", "", "never", "\u00b2", "\u0663d"])
def test_event_id_retention_refuses_what_is_not_a_duration_saying_what_it_takes(text):
    from interestgym.serve.cli import Duration

    with pytest.raises(click.BadParameter, match="is not a duration; expected whole seconds or a number with s, m, h or d"):
        Duration().convert(text, None, None)


def test_event_id_retention_refuses_a_duration_past_every_time_naming_the_limit():
    """A retention no time can reach is 'forever'; a larger number (SQLite's times are 64-bit) is refused at start."""
    from interestgym.serve.cli import Duration

    with pytest.raises(click.BadParameter, match=r"'99999999999999999999d' is 8639999999999999999913600 s; expected less than "
                                                 r"4102444800 s \(every time an event may have\), or 'forever'"):
        Duration().convert("99999999999999999999d", None, None)


@pytest.mark.parametrize("store_url", STORES, indirect=True)
def test_an_event_older_than_the_users_last_refuses_the_batch_with_409_and_applies_nothing(fx, store_url):
    with _client(_service(fx, store_url)) as client:
        assert client.post("/v1/events", json={"events": [_event("a", "u1", 2_000_000)]}).status_code == 200
        late = [_event("x", "u2", 1_000_000), _event("b", "u1", 2_000_000), _event("c", "u1", 1_999_999)]
        response = client.post("/v1/events", json={"events": late})
        assert response.status_code == 409
        body = response.json()
        assert body["error"] == "out_of_order"
        assert "1999999" in body["message"] and "2000000" in body["message"] and "'c'" in body["message"]
        assert body["detail"] == {"index": 2, "event_id": "c", "user_id": "u1", "ts": 1_999_999, "last_event_ts": 2_000_000}
        # the event it is late against is b, of this batch (applied to nothing yet), not a's in the store
        assert "before event 'b' earlier in this batch (ts 2000000)" in body["message"] and "last applied" not in body["message"]
        assert client.get("/v1/users/u1").json()["events"] == 1  # nothing of the batch was applied, not even u2's
        assert client.get("/v1/users/u2").status_code == 404
        # a new user's batch out of order: nothing of the user was ever applied
        body = client.post("/v1/events", json={"events": [_event("d2", "u3", 1_000_100), _event("d1", "u3", 1_000_000)]}).json()
        assert body["error"] == "out_of_order" and "before event 'd2' earlier in this batch (ts 1000100)" in body["message"]
        assert client.get("/v1/users/u3").status_code == 404
        # against the store's last event, as before
        body = client.post("/v1/events", json={"events": [_event("e", "u1", 1_500_000)]}).json()
        assert "before the user's last applied event at ts 2000000" in body["message"]
        assert client.get("/v1/users/u2").status_code == 404
        # equal times are in order; the batch without the late event goes through
        assert client.post("/v1/events", json={"events": late[:2]}).json()["applied"] == 2
        metrics = client.get("/metrics").text
        assert 'interestgym_events_refused_total{reason="out_of_order"} 3.0' in metrics  # the three batches refused above


@pytest.mark.parametrize("store_url", [*STORES, "memory"], indirect=True)
def test_late_skip_leaves_out_the_late_events_and_applies_the_rest_of_the_batch(fx, store_url):
    """With "late": "skip", each late event is reported out_of_order (with the user's last time) and left out, its id
    not recorded; every other event of the batch (other users', and the late user's own later ones) is applied, to the
    states the same events give without the late ones; counted per event. Without it the batch is refused as before."""
    policy = load_policy(fx.export)
    cat = catalogue_from_dataset(fx.dataset)
    first = [_event("a", "u1", 2_000_000), _event("p", "u2", 1_000_000, "i5")]
    batch = [_event("x", "u2", 1_000_010, "i4"), _event("b", "u1", 1_999_999, "i7"), _event("c", "u1", 2_000_005, "i8"),
             _event("b", "u1", 1_999_999, "i7"), {**_outcome("o", "u1", None)}]
    with _client(_service(fx, store_url)) as client:
        assert client.post("/v1/events", json={"events": first}).json()["applied"] == 2
        refused = client.post("/v1/events", json={"events": batch})
        assert refused.status_code == 409 and '"late": "skip" applies the rest' in refused.json()["message"]
        skipped = client.post("/v1/events", json={"events": batch, "late": "skip"})
        assert skipped.status_code == 200, skipped.text
        body = skipped.json()
        assert (body["applied"], body["duplicates"], body["out_of_order"]) == (3, 0, 2)
        assert [(r["event_id"], r["status"]) for r in body["results"]] == [
            ("x", "applied"), ("b", "out_of_order"), ("c", "applied"), ("b", "out_of_order"), ("o", "applied")]
        assert body["results"][1]["last_event_ts"] == 2_000_000
        # the states: the events without the late one, applied in order
        expected = {"u1": policy.new_state(), "u2": policy.new_state()}
        for e in [*first, batch[0], batch[2]]:
            row = cat.rows([e["item_id"]])[0]
            expected[e["user_id"]] = policy.update(expected[e["user_id"]], Event(e["ts"], "click", item_vector=cat.vectors[row],
                                                                                   category=cat.categories[row]))
        store = client.app.state.service.store
        assert UserState.from_bytes(store.user_info("u2")[0]) == expected["u2"]
        assert UserState.from_bytes(store.user_info("u1")[0]).counter("n_events") == expected["u1"].counter("n_events") == 2
        assert store.user_info("u1")[1] == 3  # a, c, o: b's id was not recorded
        again = client.post("/v1/events", json={"events": batch, "late": "skip"}).json()  # the retry: the same answers
        assert (again["applied"], again["duplicates"], again["out_of_order"]) == (0, 3, 2)
        metrics = client.get("/metrics").text
        assert 'interestgym_events_total{kind="event",result="out_of_order"} 4.0' in metrics
        bad = client.post("/v1/events", json={"events": batch, "late": "drop"})
        assert bad.status_code == 422 and "late" in bad.text


@pytest.mark.parametrize("store_url", [*STORES, "memory"], indirect=True)
def test_late_skip_refuses_a_skipped_id_sent_again_in_the_batch_with_other_content(fx, store_url):
    """A late event left out, then its id again in the same batch with other content: a conflict (409, nothing applied),
    as without the late time. Before, the second copy was applied under the id, and a retry of the very batch that had
    been answered 200 was refused (the first copy now a conflict with the applied one)."""
    t0 = 1_000_000
    batch = [_event("b", "u1", t0 + 10), _event("b", "u1", t0 + 600, "i7"), _event("y", "u2", t0)]
    with _client(_service(fx, store_url)) as client:
        store = client.app.state.service.store
        assert client.post("/v1/events", json={"events": [_event("a", "u1", t0 + 500)]}).json()["applied"] == 1
        before = store.user_info("u1")
        refused = client.post("/v1/events", json={"events": batch, "late": "skip"})
        assert refused.status_code == 409 and refused.json()["error"] == "event_conflict", refused.text
        assert "event id 'b' of user 'u1' came earlier in this batch with other content" in refused.json()["message"]
        assert refused.json()["detail"] == {"index": 1, "event_id": "b", "user_id": "u1"}
        assert store.user_info("u1") == before and store.user_info("u2") == (None, 0)
        # the same copy twice is left out twice; the batch's retry gets the same answers
        same = [batch[0], batch[0], batch[2]]
        for answer in (["out_of_order", "out_of_order", "applied"], ["out_of_order", "out_of_order", "duplicate"]):
            body = client.post("/v1/events", json={"events": same, "late": "skip"}).json()
            assert [r["status"] for r in body["results"]] == answer, body
        assert store.user_info("u1") == before


@pytest.mark.parametrize("store_url", ["sqlite", "memory"], indirect=True)
def test_state_format_dense_writes_the_layout_earlier_releases_read(fx, store_url):
    """A user with no known item yet (an outcome only) has all-zero profiles: the default writes its state sparse (codec
    2), --state-format dense as codec 1, byte for byte the earlier layout; each service reads both; an unknown format is
    refused."""
    import struct

    from interestgym.errors import InterestGymError

    versions = {}
    for fmt in ("sparse", "dense"):
        with _client(_service(fx, store_url, state_format=fmt)) as client:
            user = f"u-{fmt}"
            assert client.post("/v1/events", json={"events": [_outcome("o", user, 1_000_000)]}).json()["applied"] == 1
            blob = client.app.state.service.store.user_info(user)[0]
            versions[fmt] = struct.unpack_from("<H", blob, 4)[0]
            state = UserState.from_bytes(blob)
            assert blob == (state.to_bytes() if fmt == "sparse" else state.to_bytes(sparse=False))
            other = "u-sparse" if fmt == "dense" else None
            if other:  # the dense service reads the sparse one's user (a memory store is per service: sqlite only)
                assert store_url == "memory://" or client.get(f"/v1/users/{other}").status_code == 200
    assert versions == {"sparse": 2, "dense": 1}
    with pytest.raises(InterestGymError, match="state_format 'compact'; expected 'sparse' or 'dense'"):
        ServeConfig(export=str(fx.export), state_format="compact")


def test_sqlite_writers_of_several_processes_queue_on_the_lock_file_beside_the_database(tmp_path):
    """A SQLite store's writes take an advisory lock of PATH.lock (what another process's store holds while it writes):
    while someone else holds it, a write waits, and it goes through as soon as the lock is let go."""
    import fcntl

    from interestgym.serve.stores import SqliteStore, UserWrite

    store = SqliteStore(tmp_path / "s.db")
    lock = tmp_path / "s.db.lock"
    assert lock.is_file() and (lock.stat().st_mode & 0o777) == 0o600
    holder = os.open(lock, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another process's writer, mid-transaction
    done = threading.Event()

    def write() -> None:
        store.transact({"u": ["e1"]}, lambda snap: {"u": UserWrite(b"state", {"e1": "d"}, {"e1": 1})})
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    assert not done.wait(0.5)  # queued behind the holder
    fcntl.flock(holder, fcntl.LOCK_UN)
    assert done.wait(10)
    thread.join()
    os.close(holder)
    assert store.user_info("u") == (b"state", 1)
    store.close()


def test_a_sqlite_write_waits_at_most_its_busy_timeout_in_all_its_queues(tmp_path):
    """One deadline per write: behind a stuck holder of SQLite's lock, writes queued on the process's lock fail each within
    the timeout (not one timeout after another), and so does a write waiting for PATH.lock held by another process (flock
    itself has no timeout). The message names the lock file; writes go through once the holder lets go."""
    import fcntl
    import sqlite3

    from interestgym.serve.stores import SqliteStore, StoreUnavailableError, UserWrite

    timeout = 0.6
    store = SqliteStore(tmp_path / "s.db", busy_timeout_s=timeout)

    def write(user: str) -> tuple[str, float]:
        t = time.monotonic()
        try:
            store.transact({user: ["e1"]}, lambda snap: {user: UserWrite(b"state", {"e1": "d"}, {"e1": 1})})
            outcome = "ok"
        except StoreUnavailableError as exc:
            outcome = str(exc)
        return outcome, time.monotonic() - t

    holder = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's writer, stuck
    out: list[tuple[str, float]] = []
    threads = [threading.Thread(target=lambda u=u: out.append(write(u))) for u in ("a", "b", "c", "d")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(out) == 4 and all(o != "ok" for o, _ in out)
    assert max(seconds for _, seconds in out) < 2.5 * timeout, out  # one after another would be 4 x 0.6 s
    assert any("database is locked" in o for o, _ in out) and any("this process's other writes" in o for o, _ in out), out
    holder.execute("ROLLBACK")
    holder.close()

    lock = os.open(tmp_path / "s.db.lock", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)
    outcome, seconds = write("e")
    assert "s.db.lock" in outcome and f"busy timeout ({timeout:g} s" in outcome and timeout * 0.9 < seconds < 3 * timeout, (outcome, seconds)
    fcntl.flock(lock, fcntl.LOCK_UN)
    os.close(lock)
    assert write("e")[0] == "ok" and store.user_info("e") == (b"state", 1)
    store.close()


@pytest.mark.parametrize("text", ["abc", "0", "-1", "nan", "7200"])
def test_a_sqlite_busy_timeout_that_is_not_seconds_is_refused_naming_the_option(tmp_path, text):
    from interestgym.serve.stores import StoreError

    with pytest.raises(StoreError, match=rf"busy_timeout='{text}'; expected seconds in \(0, 3600\]"):
        open_store(f"sqlite:///{tmp_path / 's.db'}?busy_timeout={text}")
    assert open_store(f"sqlite:///{tmp_path / 's.db'}?busy_timeout=2.5").wait_timeout_s == 2.5


@pytest.mark.parametrize("store_url", STORES, indirect=True)
def test_a_workers_threads_applying_one_users_events_queue_in_the_worker_not_in_the_store(fx, store_url):
    """8 threads of one service post events of the same user at once: every event is applied once, and none of them
    races another in the store (Redis: no WATCH conflict, no retry; before the worker's own per-user lock, ~5 retries
    an event)."""
    from interestgym.serve.schemas import BehaviourEvent

    service = _service(fx, store_url)
    errors: list[BaseException] = []

    def client(k: int) -> None:
        try:
            for j in range(15):
                service.apply([BehaviourEvent(event_id=f"{k}-{j}", user_id="hot", ts=1_000_000, action="click", item_id="i3")])
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    blob, n_ids = service.store.user_info("hot")
    assert UserState.from_bytes(blob).counter("n_events") == n_ids == 8 * 15
    assert sum(s.value for m in service.metrics.store_conflicts.collect() for s in m.samples if s.name.endswith("_total")) == 0
    service.close()


@pytest.mark.parametrize("store_url", STORES, indirect=True)
def test_two_workers_on_one_store_serialise_updates_of_one_user(fx, store_url):
    """Two services (as two worker processes would) hammer the same user: no update is lost."""
    services = [_service(fx, store_url), _service(fx, store_url)]
    n = 30

    def send(k: int) -> None:
        with _client(services[k]) as client:
            for i in range(n):
                r = client.post("/v1/events", json={"events": [_event(f"w{k}-{i}", "hot", 1_000_000, f"i{(i * 7 + k) % 90}")]})
                assert r.status_code == 200, r.text

    threads = [threading.Thread(target=send, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    blob, n_ids = open_store(store_url).user_info("hot")
    state = UserState.from_bytes(blob)
    assert state.counter("n_events") == 2 * n == n_ids


# ------------------------------------------------------------------------------------ catalogue
def test_items_that_do_not_meet_the_exports_expectations_are_refused_naming_the_cause(fx, tmp_path):
    policy = load_policy(fx.export)
    base = catalogue_from_dataset(fx.dataset)

    def variant(name: str, **change) -> Path:
        meta = json.loads(json.dumps(base.meta))
        for key, value in change.pop("meta", {}).items():
            meta[key] = {**meta[key], **value}
        cat = Catalogue(list(base.item_ids), change.get("vectors", base.vectors), base.popularity,
                        change.get("categories", list(base.categories)), meta, name)
        return cat.save(tmp_path / name)

    cases = {
        "other-encoder": (variant("other-encoder", meta={"encoder": {"fingerprint": "f" * 64}}), "encoder fingerprint ffffffffffffffff"),
        "raw-counts": (variant("raw-counts", meta={"popularity": {"definition": "raw positive counts"}}), "popularity defined as 'raw positive counts'"),
        "other-genres": (variant("other-genres", categories=["Drama"] * 45 + ["c1"] * 45), "'Drama': 45 items"),
    }
    for name, (folder, cause) in cases.items():
        with pytest.raises(CatalogueMismatchError) as info:
            _service(fx, "memory://", items=str(folder))
        assert cause in str(info.value), name
        assert str(folder) in str(info.value)
    # a catalogue folder that matches loads, and records how its columns were computed
    ok = load_catalogue(variant("same", meta={}))
    assert ok.meta["popularity"]["definition"] == policy.manifest["scoring"]["popularity"]["definition"]
    assert ok.meta["categories"]["list"] == policy.categories



@pytest.mark.parametrize(("file", "content", "message"), [
    ("item_ids.json", "dict", r"item_ids.json: a JSON object; expected a list of item ids"),
    ("item_ids.json", "number", r"item_ids.json: item id 7 at row 0 is a JSON number; expected a string"),
    ("item_categories.json", "null", r"item_categories.json: category None at row 0 is a JSON null; expected a string"),
    ("item_ids.json", "duplicate", r"item_ids.json: item id 'i1' at rows 0 and 1; expected each item id once"),
])
def test_a_catalogue_whose_id_or_category_lists_are_not_strings_is_refused(fx, tmp_path, file, content, message):
    """A catalogue folder edited with its checksums recomputed: an object of ids loaded as its keys, a number or a null
    as its str ('7', 'None': a category no item has), a repeated id (was refused naming only the folder, not the file or the rows).
    Each is refused naming the file, the row and the value."""
    import hashlib

    folder = catalogue_from_dataset(fx.dataset).save(tmp_path / "items")
    values = json.loads((folder / file).read_text())
    edited = {"dict": dict.fromkeys(values, 0), "number": [7, *values[1:]], "null": [None, *values[1:]],
              "duplicate": [values[1], *values[1:]]}[content]
    (folder / file).write_text(json.dumps(edited))
    meta = json.loads((folder / "catalogue.json").read_text())
    meta["files"][file] = hashlib.sha256((folder / file).read_bytes()).hexdigest()
    (folder / "catalogue.json").write_text(json.dumps(meta))
    with pytest.raises(CatalogueError, match=message):
        load_catalogue(folder)


@pytest.mark.parametrize("value", [float("nan"), -0.25, 1.5])
def test_a_catalogue_popularity_outside_zero_one_is_refused_naming_the_row_and_item(fx, tmp_path, value):
    """popularity.npy edited with its checksum recomputed: a NaN or out-of-range value was refused with the file's shape
    and dtype, which were right; the message names the value, its row and its item."""
    import hashlib

    folder = catalogue_from_dataset(fx.dataset).save(tmp_path / "items")
    ids = json.loads((folder / "item_ids.json").read_text())
    popularity = np.load(folder / "popularity.npy")
    popularity[[2, 5]] = value
    np.save(folder / "popularity.npy", popularity)
    meta = json.loads((folder / "catalogue.json").read_text())
    meta["files"]["popularity.npy"] = hashlib.sha256((folder / "popularity.npy").read_bytes()).hexdigest()
    (folder / "catalogue.json").write_text(json.dumps(meta))
    with pytest.raises(CatalogueError, match=rf"popularity.npy: 2 value\(s\) NaN or outside \[0, 1\], the first {value} at row 2 "
                                             rf"\(item '{ids[2]}'\); expected values in \[0, 1\]"):
        load_catalogue(folder)


def test_a_dataset_of_several_embeddings_serves_the_one_of_the_exports_encoder(fx, tmp_path):
    """After a fine-tune the items' dataset holds two embeddings: serve takes the one the export's encoder wrote
    (an explicit --embeddings of another encoder is still refused as a mismatch)."""
    import shutil

    copy = tmp_path / "ds"
    shutil.copytree(fx.dataset, copy)
    emb = copy / "embeddings"
    (name,) = [p.stem for p in emb.glob("*.npy")]
    shutil.copy(emb / f"{name}.npy", emb / "aaa-other.npy")  # sorts first, from "another encoder"
    (emb / "aaa-other.json").write_text(json.dumps({**json.loads((emb / f"{name}.json").read_text()), "name": "aaa-other",
                                                    "fingerprint": "f" * 64}))
    service = _service(fx, "memory://", items=str(copy))
    assert service.catalogue.meta["encoder"]["embeddings"] == name
    with pytest.raises(CatalogueMismatchError, match="encoder fingerprint ffffffffffffffff"):
        _service(fx, "memory://", items=str(copy), embeddings="aaa-other")
    # none of them the export's encoder's: said so (not "choose one with --embeddings", which would not fit either)
    shutil.copy(emb / "aaa-other.npy", emb / "zzz-other.npy")
    (emb / "zzz-other.json").write_text((emb / "aaa-other.json").read_text())
    for suffix in (".npy", ".json"):
        (emb / f"{name}{suffix}").unlink()
    with pytest.raises(CatalogueError, match=rf"--items {re.escape(str(copy))}: none of its embeddings \(aaa-other, zzz-other\) was "
                                             rf"written by the export's encoder \({load_policy(fx.export).encoder['name']}, d="):
        _service(fx, "memory://", items=str(copy))


def test_ranking_uses_the_catalogues_popularity_not_the_exports_table(fx, tmp_path):
    """The silent mismatch of an export served on another catalogue whose ids overlap: the service
    ranks with the catalogue's popularity, whatever the export's table says for the same ids."""
    policy = load_policy(fx.export)
    base = catalogue_from_dataset(fx.dataset)
    other_pop = base.popularity[::-1].copy()  # same ids, another release's popularity
    other = Catalogue(list(base.item_ids), base.vectors, other_pop, list(base.categories), base.meta, "other-release")
    folder = other.save(tmp_path / "other")
    cands = [f"i{k}" for k in range(0, 90, 3)]
    rows = base.rows(cands)
    with _client(_service(fx, "memory://", items=str(folder))) as client:
        client.post("/v1/events", json={"events": [_event("a", "u", 1_000_000, "i4"), _event("b", "u", 1_000_050, "i8")]})
        ranked = client.post("/v1/rank", json={"user_id": "u", "candidates": cands, "hour": 9}).json()["ranking"]
        state = UserState.from_bytes(client.app.state.service.store.user_info("u")[0])
    got = {r["item_id"]: r["score"] for r in ranked}
    cats = [base.categories[j] for j in rows]
    right = policy.score(state, base.vectors[rows], popularity=other_pop[rows], candidate_categories=cats, hour=9)
    wrong = policy.score(state, base.vectors[rows], candidate_ids=cands, candidate_categories=cats, hour=9)  # the export's table
    assert [got[c] for c in cands] == right.tolist()
    assert not np.allclose(right, wrong)


# ------------------------------------------------------------------------------------ policy swap
def _copy_export(fx, dest: Path, edit=None) -> Path:
    """A copy of the export (a "newer" one: its manifest says so), optionally with the manifest edited."""
    shutil.copytree(fx.export, dest)
    manifest = read_manifest(dest)
    manifest["created"] = "2099-01-01T00:00:00Z"
    if edit:
        edit(manifest)
    body = {k: v for k, v in manifest.items() if k not in ("files", "manifest_sha256")}
    (dest / "manifest.json").unlink()
    write_manifest(dest, seal_manifest(dest, body))
    return dest


@pytest.mark.parametrize("store_url", STORES, indirect=True)
def test_a_policy_swap_is_atomic_for_every_worker_and_refuses_another_feature_table(fx, store_url, tmp_path):
    newer = _copy_export(fx, tmp_path / "newer")
    other_features = _copy_export(fx, tmp_path / "other-features",
                                  lambda m: m["observation"]["features"][0].update(definition="something else"))
    first, second = _service(fx, store_url), _service(fx, store_url)
    with _client(first) as a, _client(second) as b:
        before = a.get("/v1/admin/policy").json()
        response = a.post("/v1/admin/policy", json={"path": str(newer)})
        assert response.status_code == 200, response.text
        assert response.json()["active"]["generation"] == before["generation"] + 1
        # the other worker follows the store before applying anything
        assert b.post("/v1/events", json={"events": [_event("a", "u", 1_000_000)]}).json()["policy"] == response.json()["active"]["manifest_sha256"][:16]
        assert second.policy.directory == newer
        refused = a.post("/v1/admin/policy", json={"path": str(other_features)})
        assert refused.status_code == 409 and refused.json()["error"] == "policy_mismatch"
        assert "feature table" in refused.json()["message"]
        assert a.get("/v1/admin/policy").json()["path"] == str(newer)
        missing = a.post("/v1/admin/policy", json={"path": str(tmp_path / "nowhere")})
        assert missing.status_code == 422 and "nowhere" in missing.json()["message"]
        assert 'interestgym_policy_swaps_total{result="refused"} 2.0' in a.get("/metrics").text
        # a swap to the export already active (same folder) changes nothing and says so
        same = a.post("/v1/admin/policy", json={"path": str(newer)}).json()
        assert same["unchanged"] is True and same["active"]["generation"] == before["generation"] + 1
        assert 'interestgym_policy_swaps_total{result="unchanged"} 1.0' in a.get("/metrics").text
        # ... named by a relative path too (the store records the resolved one)
        relative = os.path.relpath(newer)
        assert not Path(relative).is_absolute()
        assert a.post("/v1/admin/policy", json={"path": relative}).json()["unchanged"] is True
        assert 'interestgym_policy_swaps_total{result="unchanged"} 2.0' in a.get("/metrics").text
        assert 'interestgym_policy_swaps_total{result="swapped"} 1.0' in a.get("/metrics").text
    # a store whose states were written under another contract refuses to start with this export
    with pytest.raises(PolicyMismatchError, match="feature table"):
        InterestService.open(ServeConfig(export=str(other_features), store=store_url, items=str(fx.dataset)))
    # a restart with another export than the one swapped in replaces it, and says so (not silent)
    restarted = _service(fx, store_url)
    assert any(n.startswith(f"this start replaced the store's active policy {newer} (generation") for n in restarted.notes), restarted.notes
    again = _service(fx, store_url)  # the same export again: nothing replaced
    assert not any("replaced" in n for n in again.notes)


def _lose_meta(store) -> None:
    """What a Redis restarted without persistence, or a FLUSHDB, does to the store's active policy and contract."""
    if store.kind == "redis":
        store._r.delete(store._meta_key)
    else:
        import sqlite3

        with sqlite3.connect(store.path) as conn:
            conn.execute("DELETE FROM meta WHERE key IN ('policy', 'contract')")


@pytest.mark.parametrize("store_url", STORES, indirect=True)
def test_a_store_that_lost_its_policy_record_gets_the_workers_back_before_any_write(fx, store_url, tmp_path, caplog):
    """Trial K: after a FLUSHDB the running server wrote states under no contract; a server started next with another
    export took the store over, the first one followed it, and its users' requests failed with 422."""
    other_features = _copy_export(fx, tmp_path / "other-features",
                                  lambda m: m["observation"]["features"][0].update(definition="something else"))
    with _client(_service(fx, store_url)) as client:
        store = client.app.state.service.store
        assert client.post("/v1/events", json={"events": [_event("a", "u", 1_000_000)]}).status_code == 200
        _lose_meta(store)
        with caplog.at_level("WARNING", logger="interestgym.serve"):
            assert client.post("/v1/events", json={"events": [_event("b", "v", 1_000_000)]}).status_code == 200
        assert any("held no active policy record" in r.getMessage() for r in caplog.records)
        assert json.loads(store.read([]).policy)["manifest_sha256"] == read_manifest(fx.export)["manifest_sha256"]
        # the contract is back: a start with an export that keeps other state is refused, as on any store with states
        with pytest.raises(PolicyMismatchError, match="feature table"):
            InterestService.open(ServeConfig(export=str(other_features), store=store_url, items=str(fx.dataset)))
        # had that start come first, the running worker refuses to follow a record that changes the state contract
        _lose_meta(store)
        InterestService.open(ServeConfig(export=str(other_features), store=store_url, items=str(fx.dataset))).close()
        refused = client.post("/v1/events", json={"events": [_event("c", "v", 1_000_001)]})
        assert refused.status_code == 503 and refused.json()["error"] == "policy_unavailable", refused.json()
        assert "keeps other user state" in refused.json()["message"] and "feature table" in refused.json()["message"]


def test_a_restore_leaves_a_record_another_worker_wrote_meanwhile(fx, tmp_path, caplog):
    """A worker that saw no record restores its own only while there is still none: a swap (or another worker's
    restore) that got there first stands (a reviewer: a restore undid an acknowledged swap)."""
    newer = _copy_export(fx, tmp_path / "newer")
    store = f"sqlite:///{tmp_path / 'serve.db'}"
    first, second = _service(fx, store), _service(fx, store)
    with _client(first) as a, _client(second) as b:
        _lose_meta(first.store)
        assert b.post("/v1/admin/policy", json={"path": str(newer)}).status_code == 200
        with caplog.at_level("WARNING", logger="interestgym.serve"):
            first._restore_record()  # what a request of the first worker does on the snapshot it took before the swap
        assert not any("held no active policy record" in r.getMessage() for r in caplog.records)
        assert json.loads(first.store.read([]).policy)["path"] == str(newer.resolve())
        assert first.policy.directory == newer  # it follows the swap instead
        assert a.post("/v1/events", json={"events": [_event("a", "u", 1_000_000)]}).status_code == 200


def test_a_worker_that_cannot_load_the_stores_policy_says_so_in_one_line(fx, tmp_path, caplog, monkeypatch):
    """Trial K: an export written again into the served folder, then a worker killed: each respawn died with a traceback."""
    from interestgym.serve.app import CONFIG_ENV, app_from_env

    served = _copy_export(fx, tmp_path / "served")
    store = f"sqlite:///{tmp_path / 'serve.db'}"
    config = ServeConfig(export=str(served), store=store, items=str(fx.dataset))
    InterestService.open(config).close()  # the store's active policy: served, as it was
    again = _copy_export(fx, tmp_path / "again", lambda m: m.update(created="2100-01-01T00:00:00Z"))
    shutil.rmtree(served)
    shutil.copytree(again, served)  # `interestgym export RUN --out served` over the served folder
    monkeypatch.setenv(CONFIG_ENV, config.to_json())
    with caplog.at_level("ERROR", logger="interestgym.serve"), pytest.raises(SystemExit) as info:
        app_from_env()
    assert info.value.code == 3
    [line] = [r.getMessage() for r in caplog.records]
    assert "cannot start" in line and "replaced in place" in line and "\n" not in line


def test_operators_see_the_live_export_in_metrics_a_liveness_probe_and_times_in_the_log(fx, tmp_path):
    """Trial K: /metrics named the policy only by its generation; /healthz (which writes to the store) was the only
    probe, so a liveness probe on it restarts healthy workers during a store outage; log lines had no time."""
    import logging

    from uvicorn.logging import DefaultFormatter

    from interestgym import __version__
    from interestgym.serve.cli import log_config
    from interestgym.serve.stores import StoreUnavailableError

    newer = _copy_export(fx, tmp_path / "newer")
    with _client(_service(fx, "memory://")) as client:
        sha = read_manifest(fx.export)["manifest_sha256"][:16]
        text = client.get("/metrics").text
        assert f'interestgym_policy_info{{interestgym_version="{__version__}",manifest_sha256="{sha}",path="{fx.export.resolve()}"}} 1.0' in text, text
        assert client.post("/v1/admin/policy", json={"path": str(newer)}).status_code == 200
        text = client.get("/metrics").text
        new_sha = read_manifest(newer)["manifest_sha256"][:16]
        assert f'manifest_sha256="{sha}",path="{fx.export.resolve()}"}} 0.0' in text
        assert f'manifest_sha256="{new_sha}",path="{newer.resolve()}"}} 1.0' in text
        service = client.app.state.service

        def down():
            raise StoreUnavailableError("store down")

        service.store.ping = down
        assert client.get("/healthz").status_code == 503
        live = client.get("/livez")
        assert live.status_code == 200 and live.json()["policy"] == new_sha
    config = log_config("warning")
    assert config["loggers"]["interestgym"] == {"handlers": ["default"], "level": "WARNING"}
    spec = config["formatters"]["default"]
    formatter = DefaultFormatter(fmt=spec["fmt"], datefmt=spec["datefmt"], use_colors=False)
    line = formatter.format(logging.LogRecord("interestgym.serve", logging.WARNING, __file__, 1, "store unavailable", None, None))
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} WARNING: +store unavailable$", line), line
    assert config["formatters"]["access"]["fmt"].startswith("%(asctime)s ")


def test_a_batch_of_many_users_leaves_most_other_users_stripes_free(fx):
    """A batch holds its users' lock stripes while it is computed: with 64 stripes, 1,000 users held every one, and any
    other user's event waited for the whole batch (Trial K: 0.7 s on Redis)."""
    import contextlib
    import threading
    import zlib

    from interestgym.serve.schemas import BehaviourEvent
    from interestgym.serve.service import _USER_STRIPES

    service = _service(fx, "memory://")
    batch = {zlib.crc32(f"user{k}".encode()) % _USER_STRIPES for k in range(1000)}
    assert len(batch) < 0.2 * _USER_STRIPES
    other = next(u for u in (f"other{j}" for j in range(10_000)) if zlib.crc32(u.encode()) % _USER_STRIPES not in batch)
    with contextlib.ExitStack() as held:  # the stripes such a batch holds, held for as long as it takes
        for k in sorted(batch):
            held.enter_context(service._user_stripes[k])
        done = threading.Event()
        worker = threading.Thread(target=lambda: (service.apply([BehaviourEvent(**_event("e", other, 1_000_000))]), done.set()))
        worker.start()
        assert done.wait(30), "an unrelated user's event waited for the batch's stripes"
    worker.join()


def test_a_batch_is_bounded_in_candidates_over_its_outcomes(fx):
    """Trial K: 1,000 outcomes of 1,600 candidates each (under the body limit) held the worker's user locks for ~5 s."""
    from interestgym.serve.schemas import MAX_BATCH_CANDIDATES

    per = MAX_BATCH_CANDIDATES // 100 + 1  # 100 outcomes of this many candidates: one over the bound
    outcomes = [{"kind": "outcome", "event_id": f"o{k}", "user_id": f"u{k}", "ts": 1_000_000,
                 "candidates": [f"c{j}" for j in range(per)], "clicked": ["c0"]} for k in range(100)]
    with _client(_service(fx, "memory://")) as client:
        refused = client.post("/v1/events", json={"events": outcomes})
        assert refused.status_code == 422, refused.json()
        assert f"{100 * per:,} candidates over the batch's outcomes; expected at most {MAX_BATCH_CANDIDATES:,}" in refused.json()["message"]
        assert client.post("/v1/events", json={"events": outcomes[:99]}).status_code == 200


def test_the_policy_info_of_a_dead_worker_leaves_the_metrics(tmp_path, monkeypatch):
    """prometheus-client keeps a dead process's live gauges until told: a crashed worker's export stayed at 1."""
    import subprocess
    import sys

    from interestgym.serve.metrics import ServeMetrics

    code = ("import sys, time; from interestgym.serve.metrics import ServeMetrics; ServeMetrics().serving("
            "{'manifest_sha256': sys.argv[1] * 16, 'path': '/p', 'generation': 1}); print('ready', flush=True); "
            "time.sleep(float(sys.argv[2]))")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code, "a", "0"], env=env, check=True, capture_output=True)
    live = subprocess.Popen([sys.executable, "-c", code, "b", "60"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout.readline().strip() == "ready"
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        lines = [ln for ln in ServeMetrics().exposition().decode().splitlines() if ln.startswith("interestgym_policy_info")]
        version = __import__("interestgym").__version__
        assert lines == [f'interestgym_policy_info{{interestgym_version="{version}",manifest_sha256="{"b" * 16}",path="/p"}} 1.0'], lines
    finally:
        live.kill()
        live.wait()


def test_a_swap_to_an_export_the_catalogue_does_not_fit_is_refused(fx, tmp_path):
    other = _copy_export(fx, tmp_path / "other-encoder", lambda m: m["encoder"].update(fingerprint="e" * 64))
    with _client(_service(fx, "memory://")) as client:
        response = client.post("/v1/admin/policy", json={"path": str(other)})
    assert response.status_code == 409 and response.json()["error"] == "catalogue_mismatch"
    assert "encoder fingerprint" in response.json()["message"]


def test_admin_endpoints_need_the_token_when_one_is_set(fx):
    vec = np.zeros(16)
    vec[0] = 1.0
    items = {"items": [{"item_id": "i1", "vector": vec.tolist(), "category": "c2"}]}
    with _client(_service(fx, "memory://", admin_token="s3cret")) as client:
        assert client.get("/v1/admin/policy").status_code == 403
        assert client.get("/v1/admin/policy", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        # replacing a catalogue item's vector moves every user's ranking: the same token
        refused = client.put("/v1/items", json=items)
        assert refused.status_code == 403 and refused.json()["message"].startswith("PUT /v1/items needs the header")
        # checked before the body: a client without the token learns nothing of what its body lacks
        assert client.put("/v1/items", json={"items": [{"item_id": "x"}]}).status_code == 403
        assert client.post("/v1/admin/policy", json={}).status_code == 403
        assert client.put("/v1/items", json=items, headers={"Authorization": "Bearer s3cret"}).json()["replaced"] == 1


@pytest.mark.parametrize("bad", ["bob\n", "bo\x00b", "b\tob", "bob\x7f"])
def test_ids_with_a_control_character_are_refused_in_bodies_and_paths(fx, bad):
    """"bob\\n" is another key than "bob" in the store, but Starlette's path pattern reads /v1/users/bob%0A as "bob":
    such an id could be written and never read or forgotten, and forgetting it forgot someone else."""
    from urllib.parse import quote

    with _client(_service(fx, "memory://")) as client:
        assert client.post("/v1/events", json={"events": [_event("e1", "bob", 1_000_000, "i5")]}).status_code == 200
        for body in ({"events": [_event("e2", bad, 1_000_000, "i5")]}, {"events": [_event(bad, "bob", 1_000_001, "i5")]},
                     {"events": [_event("e3", "bob", 1_000_001, bad)]}, {"user_id": bad, "candidates": ["i1"]},
                     {"user_id": "bob", "candidates": ["i1", bad]}):
            path = "/v1/rank" if "candidates" in body else "/v1/events"
            response = client.post(path, json=body)
            assert response.status_code == 422, body
            control = next(c for c in bad if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F)
            assert f"holds the control character U+{ord(control):04X}" in response.json()["message"]
        for method in (client.get, client.delete):
            response = method(f"/v1/users/{quote(bad)}")
            assert response.status_code == 422 and "control character" in response.json()["message"]
        # bob is still there: nothing above touched him
        assert client.get("/v1/users/bob").status_code == 200
        too_long = client.get("/v1/users/" + "u" * 257)
        assert too_long.status_code == 422 and "at most 256" in too_long.json()["message"]
        # item ids are capped too (a 100,000-character item id was taken), higher than user ids (a catalogue's may be URLs);
        # an empty one is still an unknown item, as before
        for body, path in (({"events": [_event("e4", "bob", 1_000_001, "i" * 4097)]}, "/v1/events"),
                           ({"user_id": "bob", "candidates": ["i" * 4097]}, "/v1/rank")):
            response = client.post(path, json=body)
            assert response.status_code == 422 and "4096" in response.json()["message"], response.json()
        empty = client.post("/v1/events", json={"events": [_event("e5", "bob", 1_000_001, "")]})
        assert empty.status_code == 200 and empty.json()["results"][0]["item_known"] is False
        assert client.post("/v1/rank", json={"user_id": "bob", "candidates": ["", "i" * 300]}).json()["unknown_items"] == ["", "i" * 300]


# ------------------------------------------------------------------------------------ API
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_items_added_through_the_api_are_ranked_and_seen_by_every_worker(fx, store_url):
    rng = np.random.default_rng(0)
    vec = rng.standard_normal(16)
    vec /= np.linalg.norm(vec)
    base = catalogue_from_dataset(fx.dataset)
    popular = base.item_ids[int(np.argmax(base.popularity))]
    first, second = _service(fx, store_url), _service(fx, store_url)
    with _client(first) as a, _client(second) as b:
        response = a.put("/v1/items", json={"items": [{"item_id": "new-1", "vector": vec.tolist(), "category": "c2"},
                                                      {"item_id": popular, "vector": vec.tolist(), "category": "c2"}]})
        assert response.json() == {"added": 1, "replaced": 1, "n_items": 91}
        b.post("/v1/events", json={"events": [_event("a", "u", 1_000_000, "i5")]})
        ranked = b.post("/v1/rank", json={"user_id": "u", "candidates": ["new-1", popular, "nope"]}).json()
        # the other worker knows both; same vector and category, so only the popularity term differs:
        # the replaced item keeps its popularity, the new one has 0
        assert [r["item_id"] for r in ranked["ranking"]] == [popular, "new-1"]
        assert ranked["unknown_items"] == ["nope"] and ranked["known_user"] is True
        bad = a.put("/v1/items", json={"items": [{"item_id": "x", "vector": [1.0] * 16, "category": "c2"}]})
        assert bad.status_code == 422 and "L2 norm 4" in bad.json()["message"]
        wrong_dim = a.put("/v1/items", json={"items": [{"item_id": "x", "vector": [1.0, 0.0], "category": "c2"}]})
        assert wrong_dim.status_code == 422 and "expected 16" in wrong_dim.json()["message"]
        unknown_cat = a.put("/v1/items", json={"items": [{"item_id": "x", "vector": vec.tolist(), "category": "Drama"}]})
        assert unknown_cat.status_code == 422 and "'Drama'" in unknown_cat.json()["message"]
        assert "give one of them, or serve an export trained on data that has this category" in unknown_cat.json()["message"]
        no_cat = a.put("/v1/items", json={"items": [{"item_id": "x", "vector": vec.tolist()}]})
        assert no_cat.status_code == 422 and no_cat.json()["message"].startswith(
            "items[0] ('x'): no category given, and the export scores with its category model (")
        text = a.put("/v1/items", json={"items": [{"item_id": "x", "text": "a film", "category": "c2"}]})
        assert text.status_code == 422 and "'random'" in text.json()["message"]  # the fixture's encoder cannot run here
        first.catalogue.meta["encoder"] = {**first.catalogue.encoder, "name": "cooc", "kind": "cooc"}  # a behaviour encoder's catalogue
        text = a.put("/v1/items", json={"items": [{"item_id": "x", "text": "a film", "category": "c2"}]})
        assert "was fitted on the training data and cannot encode new texts here; send each item's vector" in text.json()["message"]


def test_requests_are_validated_with_clear_json_errors_and_no_traceback(fx):
    service = _service(fx, "memory://")
    with _client(service) as client:
        r = client.post("/v1/events", json={"events": [{"event_id": "a", "user_id": "u", "ts": "soon", "action": "click"}]})
        assert r.status_code == 422 and r.json()["error"] == "invalid_request" and "events[0].ts is 'soon'" in r.json()["message"]
        r = client.post("/v1/events", json={"events": [_event("a", "u", 1, action="teleport")]})
        assert r.status_code == 422 and "'teleport'" in r.json()["message"] and "click" in r.json()["message"]
        r = client.post("/v1/events", json={"events": [{"kind": "outcome", "event_id": "o", "user_id": "u", "candidates": ["i1"], "clicked": ["i2"]}]})
        assert r.status_code == 422 and "not among the candidates" in r.json()["message"]
        assert client.post("/v1/events", json={"events": []}).status_code == 422
        assert client.get("/v1/users/ghost").json()["error"] == "not_found"
        assert client.delete("/v1/users/ghost").status_code == 404

        def boom(*a, **k):
            raise RuntimeError("secret internals")

        service.rank = boom
        r = client.post("/v1/rank", json={"user_id": "u", "candidates": ["i1"]})
        assert r.status_code == 500 and r.json() == {"error": "internal_error", "message": "internal error; the server's log has the details",
                                                     "detail": None}
        assert "secret" not in r.text and "Traceback" not in r.text
        assert client.get("/docs").status_code == 200 and "/v1/events" in client.get("/openapi.json").text


def test_user_summary_forget_health_and_metrics(fx):
    with _client(_service(fx, "memory://")) as client:
        client.post("/v1/events", json={"events": [_event("a", "u", 1_000_000, "i3"), _event("b", "u", 1_000_010, "i4", action="impression"),
                                                   _event("c", "u", 1_000_020, "unknown-item")]})
        user = client.get("/v1/users/u", params={"top": 3}).json()
        assert (user["events"], user["decisions"], user["applied_event_ids"]) == (3, 1, 3)
        assert user["categories"] == [{"category": "c3", "decisions": 1}]
        assert user["profiles"]["long_term"]["nearest_items"][0]["item_id"] == "i3"  # L moved toward i3 only
        assert set(user["last_strengths"]) == {"long_strength", "short_strength", "short_weight", "popularity_weight"}
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["catalogue"]["popularity"]["definition"].startswith("log1p")
        categories = client.app.state.service.catalogue.category_list  # a probe's answer: their count and a few
        assert health["catalogue"]["categories"]["n"] == len(categories) and health["catalogue"]["categories"]["first"] == categories[:10]
        assert "list" not in health["catalogue"]["categories"]
        refused = client.post("/v1/events", json={"events": [{"event_id": "x", "user_id": "u", "ts": "soon", "action": "click"}]})
        assert refused.status_code == 422  # refused by the schema: counted with the runtime's refusals
        text = client.get("/metrics").text
        for line in ('interestgym_events_total{kind="event",result="applied"} 3.0', "interestgym_decisions_total 1.0",
                     "interestgym_events_unknown_item_total 1.0", 'interestgym_http_requests_total{method="POST",route="/v1/events",status="200"} 1.0',
                     'interestgym_http_request_seconds_bucket{le="0.5",method="GET",route="/v1/users/{user_id:path}"}',
                     "interestgym_store_seconds_count", "interestgym_catalogue_items 90.0",
                     'interestgym_events_refused_total{reason="invalid"} 1.0'):
            assert line in text, line
        assert client.delete("/v1/users/u").status_code == 204
        assert client.get("/v1/users/u").status_code == 404


@pytest.mark.parametrize("store_url", STORES, indirect=True)
def test_a_damaged_stored_state_is_a_500_corrupt_state_logged_naming_the_user_and_counted(fx, store_url, caplog):
    from interestgym.serve.stores import UserWrite

    with _client(_service(fx, store_url)) as client:
        assert client.post("/v1/events", json={"events": [_event("a", "u", 1_000_000)]}).status_code == 200
        store = client.app.state.service.store
        blob = bytearray(store.user_info("u")[0])
        blob[len(blob) // 2] ^= 0xFF  # one flipped byte: the state's checksum no longer holds
        store.transact({"u": ["damage"]}, lambda snapshot: {"u": UserWrite(bytes(blob), {"damage": ""})})
        requests = [("post", "/v1/events", {"json": {"events": [_event("b", "u", 1_000_010)]}}),
                    ("post", "/v1/rank", {"json": {"user_id": "u", "candidates": ["i1", "i2"]}}),
                    ("get", "/v1/users/u", {})]
        for method, path, kw in requests:
            caplog.clear()
            with caplog.at_level("WARNING", logger="interestgym.serve"):
                response = getattr(client, method)(path, **kw)
            assert response.status_code == 500, (path, response.text)
            body = response.json()
            assert body["error"] == "corrupt_state" and "'u'" in body["message"] and body["detail"] == {"user_id": "u"}, body
            assert [r.levelname for r in caplog.records] == ["ERROR"] and "user 'u'" in caplog.records[0].getMessage(), path
        kind = store.kind
        text = client.get("/metrics").text
        assert f'interestgym_store_errors_total{{op="transaction",store="{kind}"}} 1.0' in text
        assert f'interestgym_store_errors_total{{op="read",store="{kind}"}} 2.0' in text
        assert client.delete("/v1/users/u").status_code == 204  # forgetting it is the way out
        assert client.post("/v1/events", json={"events": [_event("b", "u", 1_000_010)]}).status_code == 200


def test_a_store_outage_is_logged_with_its_cause_once_and_again_when_it_ends(fx, tmp_path, caplog, monkeypatch):
    from interestgym.serve.stores import StoreUnavailableError

    with _client(_service(fx, f"sqlite:///{tmp_path / 'serve.db'}")) as client:
        store = client.app.state.service.store

        def full(*args, **kw):
            raise StoreUnavailableError(f"sqlite store {store.path}: transaction failed (database or disk is full)")

        with caplog.at_level("WARNING", logger="interestgym.serve"):
            monkeypatch.setattr(store, "transact", full)
            for i in range(3):
                assert client.post("/v1/events", json={"events": [_event(f"e{i}", "u", 1_000_000 + i)]}).status_code == 503
                # reads still answer while writes fail (a full disk): they neither end the outage nor start a new one
                assert client.post("/v1/rank", json={"user_id": "u", "candidates": ["i1"]}).status_code == 200
            during = [r.getMessage() for r in caplog.records]
            monkeypatch.undo()
            assert client.post("/v1/events", json={"events": [_event("e3", "u", 1_000_003)]}).status_code == 200
            assert client.post("/v1/events", json={"events": [_event("e4", "u", 1_000_004)]}).status_code == 200
        assert len(during) == 1 and "store unavailable" in during[0] and "database or disk is full" in during[0], during
        after = [r.getMessage() for r in caplog.records][1:]
        assert len(after) == 1 and "answers again after 3 failed operations" in after[0], after


def test_the_user_routes_read_the_id_under_a_mount_or_root_path(fx):
    """The id comes from the request's path with the app's root path left out (a reviewer: mounted at /ig, GET
    /ig/v1/users/bob looked up the user '/ig/v1/users/bob')."""
    from fastapi import FastAPI

    outer = FastAPI()
    outer.mount("/ig", create_app(_service(fx, "memory://")))
    with TestClient(outer, raise_server_exceptions=False) as client:
        assert client.post("/ig/v1/events", json={"events": [_event("a", "bob", 1_000_000, "i5")]}).status_code == 200
        assert client.get("/ig/v1/users/bob").json()["user_id"] == "bob"
        assert client.delete("/ig/v1/users/bob").status_code == 204
        assert client.get("/ig/v1/users/bob").status_code == 404


def test_a_sqlite_file_removed_or_replaced_while_serving_refuses_writes(fx, tmp_path):
    """The open connection keeps writing to the unlinked file: events were acknowledged and /healthz said ok, and a restart
    found none of them. Every write checks that the path still names the file the store opened."""
    from concurrent.futures import ThreadPoolExecutor

    from interestgym.serve.stores import StoreUnavailableError

    path = tmp_path / "serve.db"
    with _client(_service(fx, f"sqlite:///{path}")) as client:
        assert client.post("/v1/events", json={"events": [_event("e0", "u", 1_000_000)]}).status_code == 200
        for name in ("serve.db", "serve.db-wal", "serve.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        health = client.get("/healthz")
        assert health.status_code == 503 and "was removed" in health.json()["message"], health.json()
        refused = client.post("/v1/events", json={"events": [_event("e1", "u", 1_000_001)]})
        assert refused.status_code == 503 and refused.json()["error"] == "store_unavailable"
        # a thread's first connection does not create the file again (it would be empty, and readable by others)
        store = client.app.state.service.store
        with ThreadPoolExecutor(1) as pool, pytest.raises(StoreUnavailableError, match="was removed"):
            pool.submit(store.ping).result()
        assert not path.exists()
        path.write_bytes(b"")  # another file at the path: not the one this store opened either
        health = client.get("/healthz")
        assert health.status_code == 503 and "replaced" in health.json()["message"], health.json()


def test_serve_command_refuses_mismatched_items_in_one_line(fx, tmp_path, capsys):
    from interestgym.cli import main

    base = catalogue_from_dataset(fx.dataset)
    meta = {**base.meta, "encoder": {**base.meta["encoder"], "dim": 8}}
    folder = Catalogue(base.item_ids, base.vectors[:, :8] / np.linalg.norm(base.vectors[:, :8], axis=1, keepdims=True),
                       base.popularity, base.categories, meta, "x").save(tmp_path / "dim8")
    with pytest.raises(SystemExit) as info:
        main(["serve", str(fx.export), "--store", "memory://", "--items", str(folder)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dimension 8" in err and "dimension 16" in err


def test_a_start_that_cannot_listen_leaves_the_stores_active_policy_alone(fx, tmp_path, capsys):
    import socket

    from interestgym.cli import main

    store = f"sqlite:///{tmp_path / 'serve.db'}"
    _service(fx, store).close()  # the store's active policy: fx.export
    newer = _copy_export(fx, tmp_path / "newer")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:  # what a running server holds
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as info:
            main(["serve", str(newer), "--store", store, "--items", str(fx.dataset), "--host", "127.0.0.1", "--port", str(port)])
    reopened = open_store(store)
    try:  # every server running on the store still follows fx.export
        assert json.loads(reopened.update_meta(lambda m: {})["policy"])["path"] == str(fx.export.resolve())
    finally:
        reopened.close()
    assert info.value.code == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"127.0.0.1:{port}" in err and "in use" in err, err


def test_a_memory_store_with_several_workers_is_refused_at_start_in_one_line(fx, catalogue_dir):
    import os
    import signal
    import sys

    # a process group of its own, bounded: were it accepted, it and its workers would serve until killed
    proc = subprocess.Popen([sys.executable, "-m", "interestgym.cli", "serve", str(fx.export), "--store", "memory://", "--workers", "2",
                             "--items", str(catalogue_dir), "--host", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("`serve --store memory:// --workers 2` started serving; expected it refused at start")
    err = err.strip()
    assert proc.returncode == 2, err
    assert len(err.splitlines()) == 1 and "--store memory:// with --workers 2" in err and "--workers 1" in err, err


# ------------------------------------------------------------------------------------ kill -9
# A real `interestgym serve` process under a bounded loopback load, killed with SIGKILL and restarted
# (a smaller run of `benchmarks/serve.py`'s crash check).
def _streams(dataset, users: int, per_user: int) -> dict[str, list[dict]]:
    """The first ``per_user`` events of ``users`` users of the dataset, in time order, as request items."""
    events = dataset.events
    out: dict[str, list[dict]] = {}
    for row, e in enumerate(events.itertuples(index=False)):
        user = str(e.user_id)
        if user not in out and len(out) == users:
            continue
        mine = out.setdefault(user, [])
        if len(mine) < per_user:
            mine.append({"event_id": f"r{row}", "user_id": user, "ts": int(e.ts), "action": str(e.action), "item_id": str(e.item_id),
                         "value": float(e.value), "hour": int(e.hour), "weekday": int(e.weekday)})
    return out


def expected_states(policy, catalogue, streams) -> dict[str, UserState]:
    """Each user's state after its events, computed by the runtime in-process, once each."""
    out = {}
    for user, events in streams.items():
        state = policy.new_state()
        for e in events:
            row = catalogue.rows([e["item_id"]])[0]
            state = policy.update(state, Event(e["ts"], e["action"], item_vector=catalogue.vectors[row] if row >= 0 else None,
                                               value=e["value"], category=catalogue.categories[row] if row >= 0 else "",
                                               hour=e["hour"], weekday=e["weekday"]))
        out[user] = state
    return out


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_kill_9_during_load_then_restart_loses_no_acknowledged_event_and_applies_none_twice(fx, catalogue_dir, kind, tmp_path, request):
    from interestgym.data.dataset import Dataset

    store = f"sqlite:///{tmp_path / 'serve.db'}" if kind == "sqlite" else request.getfixturevalue("redis_server") + "?prefix=kill:"
    streams = _streams(Dataset.open(fx.dataset), users=12, per_user=25)
    total = sum(map(len, streams.values()))
    server = ServerProcess(fx.export, store, args=["--items", str(catalogue_dir)], log=tmp_path / "server.log").start()
    kill_at = threading.Event()
    try:
        def killer() -> None:
            kill_at.wait()
            server.kill9()  # mid-load: requests in flight are lost with the process
            server.start()

        thread = threading.Thread(target=killer)
        thread.start()
        result = send_streams(server.url, streams, clients=3, deadline_s=120,
                              on_ack=lambda n: kill_at.set() if n >= total // 3 else None)
        thread.join()
    finally:
        server.stop()
    assert not result.errors, result.errors[:3]
    assert result.acked == total  # every event was eventually acknowledged (applied, or duplicate of an applied one)
    assert result.failed_attempts > 0  # the kill did hit requests
    policy = load_policy(fx.export)
    expected = expected_states(policy, catalogue_from_dataset(fx.dataset), streams)
    reopened = open_store(store)
    for user, events in streams.items():
        blob, n_ids = reopened.user_info(user)
        state = UserState.from_bytes(blob)
        assert state.counter("n_events") == len(events) == n_ids, user  # none lost, none twice
        assert state == expected[user], user  # and the very state of applying each event once, in order


def _children(pid: int) -> list[int]:
    """The pids of a process's children (Linux's /proc)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")  # a zombie has exited


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the workers' pids from Linux's /proc")
def test_workers_stop_when_the_serve_process_is_killed_and_a_restart_gets_the_port(fx, catalogue_dir, tmp_path):
    """A review's find: after kill -9 of `serve --workers 2`, the two workers, adopted by init, kept serving on the port,
    and the restart the README describes could not listen on it. Each worker now stops when its serve process is gone."""
    import httpx

    store = f"sqlite:///{tmp_path / 'serve.db'}"
    server = ServerProcess(fx.export, store, args=["--items", str(catalogue_dir), "--workers", "2"],
                           log=tmp_path / "server.log").start()
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while len(workers) < 2 and time.monotonic() < deadline:  # the two workers (and multiprocessing's helper)
            workers = _children(server.proc.pid)
            time.sleep(0.1)
        assert len(workers) >= 2, workers
        server.kill9()
        deadline = time.monotonic() + 20
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, workers)), "the workers kept running after their serve process was killed"
        server.start()  # the same port
        assert httpx.post(f"{server.url}/v1/events", json={"events": [_event("e1", "u", 1_000_000)]}, timeout=10).json()["applied"] == 1
    finally:
        server.stop()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_during_a_store_stall_writes_fail_within_their_own_timeout_and_the_liveness_probe_answers(fx, catalogue_dir, tmp_path):
    """A review's finds, on a real server: another process holds the SQLite store's write lock and 50 requests wait on
    it. /livez and /metrics answered only once the 40 threads of the worker's pool were free again (a liveness probe
    would restart a healthy worker during the outage), and the k-th queued write of a user failed only after k busy
    timeouts. Now the probes answer at once and every write gets its 503 within its own timeouts."""
    import sqlite3
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    db = tmp_path / "serve.db"
    timeout_s = 3.0
    server = ServerProcess(fx.export, f"sqlite:///{db}?busy_timeout={timeout_s:g}", args=["--items", str(catalogue_dir)],
                           log=tmp_path / "server.log").start()
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process's writer, stuck mid-transaction

        def post(i: int) -> tuple[int, float]:
            t = time.monotonic()
            r = httpx.post(f"{server.url}/v1/events", json={"events": [_event(f"s{i}", f"u{i % 5}", 1_000_000 + i)]}, timeout=60)
            return r.status_code, time.monotonic() - t

        with ThreadPoolExecutor(50) as pool:
            futures = [pool.submit(post, i) for i in range(50)]
            time.sleep(1.0)  # the requests are in, every thread of the server's pool waits on the store
            for path in ("/livez", "/metrics"):
                t = time.monotonic()
                assert httpx.get(f"{server.url}{path}", timeout=timeout_s).status_code == 200
                assert time.monotonic() - t < 1.5, path
            results = [f.result() for f in futures]
        assert {code for code, _ in results} == {503}
        # each within its own timeouts (the wait behind its user's other requests, then the store's; the last 10 also
        # queue for a thread of the pool: 50 requests on 40), not one timeout after another (10 a user here: ~30 s)
        assert max(seconds for _, seconds in results) < 4 * timeout_s, sorted(seconds for _, seconds in results)
        holder.execute("ROLLBACK")
        assert httpx.post(f"{server.url}/v1/events", json={"events": [_event("after", "u0", 2_000_000)]}, timeout=10).json()["applied"] == 1
    finally:
        holder.close()
        server.stop()


def test_several_worker_processes_share_the_store_the_policy_swap_and_the_metrics(fx, catalogue_dir, tmp_path):
    import httpx

    newer = _copy_export(fx, tmp_path / "newer")
    server = ServerProcess(fx.export, f"sqlite:///{tmp_path / 'serve.db'}", args=["--items", str(catalogue_dir), "--workers", "2"],
                           log=tmp_path / "server.log").start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            swapped = http.post("/v1/admin/policy", json={"path": str(newer)}).json()["active"]["manifest_sha256"][:16]
            # whichever worker answers, it applies with the swapped policy
            for i in range(12):
                body = http.post("/v1/events", json={"events": [_event(f"e{i}", "u", 1_000_000 + i)]}).json()
                assert body["policy"] == swapped and body["applied"] == 1
            assert http.get("/v1/users/u").json()["events"] == 12
            metrics = http.get("/metrics").text  # the workers' counters, summed
            assert 'interestgym_http_requests_total{method="POST",route="/v1/events",status="200"} 12.0' in metrics
    finally:
        server.stop()


def test_the_listening_socket_says_tcp_so_accepted_connections_get_no_nagle_delay():
    """asyncio sets TCP_NODELAY on an accepted connection only when its socket's protocol is IPPROTO_TCP (it is what
    the listening socket was created with); uvicorn's own multi-worker socket had protocol 0, and every request after
    the first on a kept-alive connection waited out a delayed ACK (~40 ms, uvicorn #3149)."""
    import socket

    from interestgym.serve.cli import listen

    server = listen("127.0.0.1", 0)
    client = socket.create_connection(server.getsockname()[:2], timeout=5)
    try:
        accepted, _ = server.accept()
        assert server.proto == accepted.proto == socket.IPPROTO_TCP
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # inherited from the listening socket (Linux)
        accepted.close()
    finally:
        client.close()
        server.close()


def test_several_workers_answer_requests_on_a_kept_alive_connection(fx, catalogue_dir, tmp_path):
    """Two workers sharing the listening socket answer every request of one kept-alive connection (how fast is
    benchmarks/serve.py's business; the Nagle delay is the test above's)."""
    import http.client

    server = ServerProcess(fx.export, f"sqlite:///{tmp_path / 'serve.db'}", args=["--items", str(catalogue_dir), "--workers", "2"],
                           log=tmp_path / "server.log").start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        for i in range(11):  # one connection, kept alive: the first request opens it
            body = json.dumps({"events": [_event(f"e{i}", "u", 1_000_000 + i)]})
            connection.request("POST", "/v1/events", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            assert response.status == 200, response.read()
            assert json.loads(response.read())["applied"] == 1
        connection.close()
    finally:
        server.stop()


def test_items_given_as_text_are_encoded_with_the_catalogues_encoder(fx, tmp_path):
    from interestgym.encoders.registry import build_encoder

    encoder = build_encoder("hashing", dim=16)
    described = {"name": "hashing", "kind": "hashing", "embeddings": "hashing", "dim": 16, "fingerprint": encoder.fingerprint}
    export = _copy_export(fx, tmp_path / "hashing-export", lambda m: m["encoder"].update(described))
    base = catalogue_from_dataset(fx.dataset)
    folder = Catalogue(base.item_ids, encoder.encode([f"item {i}" for i in range(len(base))], progress=False), base.popularity,
                       base.categories, {**base.meta, "encoder": described}, "hashed").save(tmp_path / "hashed")
    service = InterestService.open(ServeConfig(export=str(export), store="memory://", items=str(folder)))
    with _client(service) as client:
        response = client.put("/v1/items", json={"items": [{"item_id": "new", "text": "a brand new item", "category": "c1"}]})
        assert response.status_code == 200, response.text
    row = service.catalogue.rows(["new"])[0]
    np.testing.assert_array_equal(service.catalogue.vectors[row], encoder.encode(["a brand new item"], progress=False)[0])


def test_the_health_probe_is_a_write_so_a_store_refusing_writes_is_unhealthy(tmp_path, redis_server):
    """/healthz answered 200 from SELECT 1 / PING while every event failed (a read-only, full or write-locked
    SQLite; a Redis refusing writes): the probe now writes, and fails where a write would."""
    import sqlite3

    import redis

    from interestgym.serve.stores import SqliteStore, StoreUnavailableError

    store = SqliteStore(tmp_path / "probe.db", busy_timeout_s=0.2)
    store.ping()
    holder = sqlite3.connect(tmp_path / "probe.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock: reads go on, writes wait and fail
    try:
        assert store.read(["u"]).users["u"].state is None  # what the old probe (a read) saw: a store that answers
        with pytest.raises(StoreUnavailableError, match=r"sqlite store .*probe.db: ping failed \(database is locked\)"):
            store.ping()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.ping()

    url = f"{redis_server}?prefix=probe{time.monotonic_ns()}:"
    store = open_store(url)
    store.ping()
    admin = redis.Redis.from_url(redis_server)
    admin.config_set("min-replicas-to-write", 1)  # no replica: Redis refuses every write (NOREPLICAS), answers PING
    try:
        assert admin.ping()
        with pytest.raises(StoreUnavailableError, match=r"redis store .*: ping failed, writes are refused \(.*NOREPLICAS"):
            store.ping()
    finally:
        admin.config_set("min-replicas-to-write", 0)
        admin.close()
    store.ping()


@pytest.mark.parametrize(("host", "token", "warned"), [
    ("127.0.0.1", None, False), ("localhost", None, False), ("::1", None, False), ("127.0.0.2", None, False),
    ("0.0.0.0", None, True), ("10.1.2.3", None, True), ("::", None, True), ("serve.internal", None, True),
    ("0.0.0.0", "s3cret", False),
])
def test_serve_warns_when_the_admin_api_is_open_to_other_machines(host, token, warned):
    from interestgym.serve.cli import open_admin_warning

    warning = open_admin_warning(host, token)
    assert (warning is not None) == warned
    if warned:
        assert warning.startswith(f"--host {host} without --admin-token: /v1/admin/policy and PUT /v1/items are open")
        assert "INTERESTGYM_ADMIN_TOKEN" in warning


def test_a_new_sqlite_store_is_readable_by_its_owner_only(tmp_path):
    """It holds users' profiles: created 0600 whatever the umask (SQLite gives its -wal / -shm files the database's mode);
    an existing store keeps its own mode."""
    import os
    import stat

    from interestgym.serve.stores import SqliteStore

    old = os.umask(0o022)
    try:
        store = SqliteStore(tmp_path / "new.db")
        store.ping()  # a write: the WAL file exists now
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        assert modes["new.db"] == modes["new.db-wal"] == 0o600, modes
        store.close()
        (tmp_path / "shared.db").touch(mode=0o640)
        os.chmod(tmp_path / "shared.db", 0o640)
        SqliteStore(tmp_path / "shared.db").close()
        assert stat.S_IMODE((tmp_path / "shared.db").stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_serve_listens_on_an_ipv6_address_written_in_brackets():
    import socket

    from interestgym.serve.cli import listen

    if not socket.has_ipv6:
        pytest.skip("this machine has no IPv6")
    try:
        server = listen("[::1]", 0)
    except click.ClickException as exc:  # a host without ::1 configured
        if "Cannot assign requested address" in str(exc.message):
            pytest.skip("::1 is not configured here")
        raise
    try:
        assert server.family == socket.AF_INET6 and server.getsockname()[0] == "::1"
    finally:
        server.close()


def test_start_up_notes_are_logged_once_or_left_to_the_caller_who_shows_them(fx, monkeypatch, caplog):
    """A note of the start (e.g. a policy replaced, a catalogue caveat) is a WARNING of the service's log; `interestgym
    serve` prints it among its start-up lines instead (log_notes=False), so that a terminal does not show it twice."""
    import logging

    import interestgym.serve.service as service_module

    monkeypatch.setattr(service_module, "check_catalogue", lambda catalogue, policy: ["a caveat of this catalogue"])
    for log_notes, logged in ((True, 1), (False, 0)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="interestgym.serve"):
            service = InterestService.open(ServeConfig(export=str(fx.export), store="memory://", items=str(fx.dataset)),
                                           log_notes=log_notes)
        assert service.notes == ["a caveat of this catalogue"]
        assert [r.getMessage() for r in caplog.records].count("a caveat of this catalogue") == logged
