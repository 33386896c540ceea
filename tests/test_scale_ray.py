"""Sharding by user / text: the same numbers from one process and from a 2-worker local Ray instance.

The shard helpers are tested without Ray; the Ray tests skip, with the reason, where Ray is not
installed (it is the optional extra ``interestgym[ray]``, not part of ``test``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from agents_fixtures import tiny_synthetic
from interestgym.agents.config import TrainConfig
from interestgym.agents.rules import make_baseline
from interestgym.agents.tuning import tune_baselines, validation_scorer
from interestgym.envs.vector import evaluate_policy

from interestgym import heap
from interestgym.scale.shards import merge_evaluations, text_shards, user_shards


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tiny_synthetic(tmp_path_factory.mktemp("ray") / "tiny", users=24, events_per_user=14)
    return TrainConfig(dataset=str(path), run_dir="").replay_data("test")


def _same(a, b) -> None:
    assert a.points.equals(b.points) and a.decisions.equals(b.decisions)
    assert (a.features is None) == (b.features is None)
    if a.features is not None:
        np.testing.assert_array_equal(a.features, b.features)


def test_user_shards_merge_into_the_single_process_result(data):
    shards = user_shards(data, 3)
    assert [u for s in shards for u in s] == [str(u) for u in data.user_ids] and len(shards) == 3
    # given users in any order come back in replay order
    assert [u for s in user_shards(data, 2, list(reversed(shards[0]))) for u in s] == shards[0]
    policy = make_baseline("context_rule")
    whole = evaluate_policy(data, policy, progress=False)
    parts = [evaluate_policy(data, policy, users=s, progress=False) for s in shards]
    _same(merge_evaluations(parts), whole)
    assert text_shards(10, 3, 4) == [(0, 4), (4, 8), (8, 10)] and text_shards(5, 4, 16384) == [(0, 5)]


@pytest.mark.parametrize("address", ["local:0", "local:", "local:two", "bogus", "host:99999", "ray://host", "a/b:6379", ""])
def test_an_address_ray_cannot_take_is_refused_before_ray_starts(address):
    """`--ray local:0` used to start a Ray of no CPUs and wait for ever, and `--ray bogus` ended in Ray's
    traceback; both are refused, Ray or not, by every command's option and by connect."""
    from click.testing import CliRunner

    from interestgym.cli import cli
    from interestgym.errors import InterestGymError
    from interestgym.scale.ray_backend import check_address, connect

    with pytest.raises(InterestGymError, match=r"expected auto, local, local:N with N >= 1 CPUs, or a cluster address \(HOST:PORT"):
        connect(address)
    for command in (["evaluate"], ["train"], ["encode"]):  # refused while parsing: before any dataset is read
        result = CliRunner().invoke(cli, [*command, "no-such-folder", "--ray", address])
        assert result.exit_code == 2 and "Invalid value for '--ray': expected auto, local" in result.output, (command, result.output)
        assert f"; found {address!r}" in result.output  # what was given, beside what was expected
    for fine in ("auto", "local", "local:2", "localhost:6379", "10.0.0.5:6379", "ray://head.example:10001", "[::1]:6379"):
        assert check_address(fine) == fine


@pytest.fixture(scope="module")
def backend():
    ray = importlib.import_module("ray")
    import io

    from interestgym.scale.ray_backend import connect

    with pytest.MonkeyPatch.context() as patch:
        # `local` starts an instance of its own even where another is named (RAY_ADDRESS, or the one `ray start` left on
        # the machine): connecting to it instead failed ("num_cpus ... must not be provided") or used another cluster
        patch.setenv("RAY_ADDRESS", "127.0.0.1:9")
        err = io.StringIO()
        patch.setattr(sys, "stderr", err)
        # as after the interestgym command kept its heap: the workers get the same settings (and every result below
        # is still the single process's)
        patch.setattr(heap, "_KEPT_MB", 64)
        backend = connect("local:2", shards=2)
    assert ray.cluster_resources().get("CPU") == 2
    assert "--ray local:2: started a local Ray instance (2 CPUs)\n" in err.getvalue()  # the command says Ray is used
    yield backend
    ray.shutdown()


def test_the_workers_get_the_heap_the_command_keeps(backend):
    ray = importlib.import_module("ray")

    @ray.remote
    def glibc_settings() -> tuple[str | None, str | None]:
        return os.environ.get("MALLOC_TOP_PAD_"), os.environ.get("MALLOC_MMAP_THRESHOLD_")

    assert set(ray.get([glibc_settings.remote() for _ in range(4)])) == {(str(64 << 20), str(32 << 20))}


def test_ray_evaluation_is_identical(data, backend):
    from interestgym.scale import ray_backend

    # a plain rule, and the two that need optional engine state (time-slot profiles, category counts)
    for name in ("ema_two_profile", "context_rule", "bayesian_category"):
        policy = make_baseline(name)
        _same(ray_backend.evaluate_policy(data, policy, backend=backend), evaluate_policy(data, policy, progress=False))


def test_ray_tuning_is_identical(data, backend):
    from interestgym.scale import ray_backend

    names = ["static", "context_rule"]
    local = tune_baselines(validation_scorer(data, "ndcg@10"), names)
    sharded = tune_baselines(ray_backend.validation_scorer(data, "ndcg@10", backend=backend), names)
    for name in local:
        for key in ("params", "valid_score", "grid"):
            assert sharded[name][key] == local[name][key], (name, key)


def test_ray_encoding_is_identical(backend):
    from interestgym.encoders.registry import build_encoder

    from interestgym.scale import ray_backend

    texts = [f"news {i} about topic {i % 7} and more" for i in range(301)]
    encoder = build_encoder("hashing")
    sharded = ray_backend.sharded_encoder(encoder, backend)
    assert sharded.dim == encoder.dim and sharded.name == encoder.name
    np.testing.assert_array_equal(sharded.encode(texts), encoder.encode(texts))
    # an encoder fitted on the driver: its fitted state travels to the workers
    fitted = build_encoder("tfidf", dim=16)
    fitted.fit(texts)
    np.testing.assert_array_equal(ray_backend.sharded_encoder(fitted, backend).encode(texts), fitted.encode(texts))


def test_evaluate_with_ray_writes_the_same_table(data, backend, tmp_path):
    """`interestgym evaluate DATASET --ray ...`: the same evaluation.json numbers as one process."""
    import json

    from interestgym.evaluation.run import evaluate_run

    dataset = data.dataset_path
    evaluate_run(dataset, out=tmp_path / "one", baselines="static,context_rule", n_boot=50, progress=False)
    evaluate_run(dataset, out=tmp_path / "ray", baselines="static,context_rule", n_boot=50, progress=False, ray="auto")
    one, sharded = (json.loads((tmp_path / d / "evaluation.json").read_text()) for d in ("one", "ray"))
    assert one["per_user"] == sharded["per_user"] and one["summary"]["policies"] == sharded["summary"]["policies"]


def test_train_and_encode_with_ray_give_what_one_process_gives(data, backend, tmp_path):
    """`interestgym encode --ray` and `interestgym train --ray` (its tuning sharded by validation user): the same
    embeddings and the same tuned baselines as one process; where it ran is not recorded in the run."""
    import json
    import shutil

    from click.testing import CliRunner

    from interestgym.cli import cli

    dataset = tmp_path / "ds"
    shutil.copytree(data.dataset_path, dataset)
    runner = CliRunner()
    for args in (["--name", "one"], ["--name", "sharded", "--ray", "auto"]):
        result = runner.invoke(cli, ["encode", str(dataset), "--encoder", "hashing", "--dim", "32", "--no-cache", *args])
        assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(dataset / "embeddings" / "one.npy"), np.load(dataset / "embeddings" / "sharded.npy"))
    for run, args in (("one", []), ("sharded", ["--ray", "auto"])):
        result = runner.invoke(cli, ["train", str(dataset), "--run-dir", str(tmp_path / run), "--embeddings", "one",
                                     "--timesteps", "64", "--n-envs", "4", "--n-steps", "16", "--batch-size", "32",
                                     "--n-epochs", "1", "--no-progress", *args])
        assert result.exit_code == 0, result.output
    one, sharded = (json.loads((tmp_path / run / "baselines.json").read_text())["baselines"] for run in ("one", "sharded"))
    def timeless(tuned):  # every field of every tuned baseline but how long its tuning took
        return {name: {k: v for k, v in entry.items() if k != "seconds"} for name, entry in tuned.items()}

    assert timeless(one) == timeless(sharded)
    assert "ray" not in json.loads((tmp_path / "sharded" / "config.json").read_text())["config"]


def test_quickstart_with_ray_gives_what_one_process_gives(backend, tmp_path, monkeypatch):
    """`interestgym quickstart --ray ...`: encoding, tuning and evaluation sharded on the cluster; the same
    embeddings, tuned baselines and evaluation as one process (PPO and the report run in the driver either way)."""
    import json

    from click.testing import CliRunner
    from test_quickstart import TINY

    from interestgym.cli import cli
    from interestgym.scale import ray_backend

    jobs: list[str] = []  # the functions run on the cluster, by name
    real_run = ray_backend.RayBackend.run
    monkeypatch.setattr(ray_backend.RayBackend, "run", lambda self, fn, calls: jobs.append(fn.__name__) or real_run(self, fn, calls))
    for name, args in (("one", []), ("sharded", ["--ray", "auto"])):
        result = CliRunner().invoke(cli, ["quickstart", "--out", str(tmp_path / name), *TINY, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert bool(jobs) == bool(args)
    assert {"_encode_shard", "_score_shard", "_evaluate_shard"} <= set(jobs), jobs
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    np.testing.assert_array_equal(np.load(one / "data" / "embeddings" / "hashing.npy"),
                                  np.load(sharded / "data" / "embeddings" / "hashing.npy"))
    tuned = [{name: {k: v for k, v in entry.items() if k != "seconds"}  # every field but how long the tuning took
              for name, entry in json.loads((d / "run" / "baselines.json").read_text())["baselines"].items()}
             for d in (one, sharded)]
    assert tuned[0] == tuned[1] and tuned[0]
    evaluations = [json.loads((d / "run" / "evaluation.json").read_text()) for d in (one, sharded)]
    assert evaluations[0]["per_user"] == evaluations[1]["per_user"]
    assert evaluations[0]["summary"]["policies"] == evaluations[1]["summary"]["policies"]


def test_search_with_ray_gives_what_one_process_gives(data, backend, tmp_path, monkeypatch):
    """`interestgym search --ray ...`: trial 0's tuning and every trial's validation replay sharded on the cluster;
    the same trials, scores and pick as one process; --ray is not one of the search's settings."""
    import json

    from click.testing import CliRunner

    from interestgym.cli import cli
    from interestgym.scale import ray_backend

    jobs: list[str] = []
    real_run = ray_backend.RayBackend.run
    monkeypatch.setattr(ray_backend.RayBackend, "run", lambda self, fn, calls: jobs.append(fn.__name__) or real_run(self, fn, calls))
    ray = importlib.import_module("ray")
    put: list[object] = []  # the objects themselves: kept alive, their ids cannot be reused
    real_put = ray.put
    monkeypatch.setattr(ray, "put", lambda value, **kw: put.append(value) or real_put(value, **kw))
    docs = []
    for name, args in (("one", []), ("sharded", ["--ray", "auto"])):
        result = CliRunner().invoke(cli, ["search", str(data.dataset_path), "--run-dir", str(tmp_path / name), "--trials", "2",
                                          "--budget-steps", "64", "--params", "learning_rate", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert bool(jobs) == bool(args)
        docs.append(json.loads((tmp_path / name / "search.json").read_text()))
    assert "_score_shard" in jobs and jobs.count("_evaluate_shard") == 2, jobs  # trial 0's tuning; each trial's replay
    assert put and len({id(v) for v in put}) == len(put)  # the validation data goes to the cluster once, not once per trial
    def outcome(doc):  # every trial's settings, score and paired gains, and the pick; not where it ran or how long
        return [{k: v for k, v in t.items() if k not in ("seconds", "run_dir")} for t in doc["trials"]], doc["best_trial"]

    assert outcome(docs[0]) == outcome(docs[1])
    assert {k: v for k, v in docs[0]["settings"].items()} == docs[1]["settings"]


def test_a_cluster_address_where_nothing_answers_is_refused_at_once():
    """Ray retries a silent address for minutes with only its own timeouts; a port where nothing listens (one this
    test just had and closed) is refused within the probe's seconds, naming the address, before Ray is asked."""
    import socket
    import time

    from interestgym.errors import InterestGymError
    from interestgym.scale.ray_backend import connect

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t0 = time.perf_counter()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(InterestGymError, match=rf"--ray {re.escape(address)}: nothing answers at 127.0.0.1:{port} within 5 s"):
            connect(address)
    assert time.perf_counter() - t0 < 30


@contextlib.contextmanager
def _listener(reply: bytes | None):
    """A loopback server that answers every connection's first bytes with ``reply`` and closes it (None: says nothing
    and keeps it open until the test ends); yields its address."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            if reply is None:
                held.append(conn)
                continue
            with conn:
                conn.recv(64)
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        for conn in held:
            conn.close()


#: An HTTP/2 server's first frame: an empty SETTINGS frame (what a gRPC server, Ray's head among them, sends at once).
SETTINGS_FRAME = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def test_an_address_where_something_else_listens_is_refused_within_seconds(monkeypatch):
    """Ray waited minutes on a port where a web server (or anything but Ray) listens; the probe greets it as a gRPC
    client and refuses what does not answer as one, naming what it found."""
    import time

    from interestgym.errors import InterestGymError
    from interestgym.scale import ray_backend

    monkeypatch.setattr(ray_backend, "PROBE_SECONDS", 1.0)
    t0 = time.perf_counter()
    with _listener(b"HTTP/1.1 400 Bad Request\r\n\r\n") as address, pytest.raises(
            InterestGymError, match=rf"--ray {address}: something listens at {address} but it is not a Ray "
                                    r"cluster \(the answer b'HTTP/1.1 400 Bad Request\\r\\n\\r\\n' to a gRPC"):
        ray_backend.connect(address)
    with _listener(None) as address, pytest.raises(
            InterestGymError, match=r"not a Ray cluster \(no answer within 1 s to a gRPC client's greeting"):
        ray_backend.connect(address)
    assert time.perf_counter() - t0 < 10
    with _listener(None) as address:  # with TLS the greeting is not plain: only the TCP connection is checked
        monkeypatch.setenv("RAY_USE_TLS", "1")
        ray_backend._probe(address)
    monkeypatch.delenv("RAY_USE_TLS")
    with _listener(SETTINGS_FRAME) as address:  # a gRPC server's answer passes the probe
        ray_backend._probe(address)


def test_a_ray_head_passes_the_probe(backend):
    ray = importlib.import_module("ray")
    from interestgym.scale.ray_backend import _probe

    _probe(ray.get_runtime_context().gcs_address)  # the fixture's own head: a real Ray answers the greeting


def test_a_process_holding_ray_refuses_another_cluster_address(backend):
    """A process that joined Ray through one --ray value is not quietly kept on it when asked for another cluster's
    address (something that answers as a gRPC server listens there: this test's own socket); auto and local reuse it, as
    a command's later steps do."""
    from interestgym.errors import InterestGymError
    from interestgym.scale.ray_backend import connect

    with _listener(SETTINGS_FRAME) as address, pytest.raises(
            InterestGymError, match=rf"--ray {address}: this process already holds Ray from --ray local:2"):
        connect(address)
    assert connect("auto").shards >= 1 and connect("local:2").shards >= 1


def test_each_task_runs_with_the_drivers_threads_at_the_time_of_the_call(backend):
    # the task's thread count was the driver's when it connected: `evaluate` pins one thread after connecting, and its
    # tasks ran with the machine's default
    import torch

    before = torch.get_num_threads()
    try:
        seen = {}
        for n in (1, 2):
            torch.set_num_threads(n)
            seen[n] = backend.run(lambda: __import__("torch").get_num_threads(), [()])[0]
        assert seen == {1: 1, 2: 2}
    finally:
        torch.set_num_threads(before)


def test_the_backend_holds_only_the_last_object_it_put(backend):
    # every chunk's replay data stayed in the driver and the object store until the command ended (evaluate
    # --chunk-users promises one chunk's)
    import gc
    import weakref

    from interestgym.scale.ray_backend import connect

    first = np.arange(1000.0)
    gone = weakref.ref(first)
    ref = backend.put(first)
    assert backend.put(first) is ref  # the same object again goes once
    # through another backend of the process too (a search connects again for every trial's validation replay, and
    # shipped the same validation data each time)
    assert connect("auto").put(first) is ref
    backend.put(np.ones(10))
    del first, ref
    gc.collect()
    assert gone() is None


def test_a_cluster_without_a_cpu_is_refused_not_waited_on(backend, monkeypatch):
    # a head started with --num-cpus 0 and no worker: every task waited for a CPU forever, the command said "1 CPUs"
    ray = importlib.import_module("ray")
    from interestgym.errors import InterestGymError
    from interestgym.scale.ray_backend import connect

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"memory": 1e9})
    with pytest.raises(InterestGymError, match=r"--ray auto: the cluster offers no CPU to run tasks on \(found 0;"):
        connect("auto")


def test_a_reference_put_in_an_earlier_ray_session_is_not_handed_out_in_the_next(backend, monkeypatch):
    # the last object put was remembered across ray.shutdown(): the next session got the old reference for the same
    # (cached) replay data, and Ray refused it ("an application is trying to access a Ray object whose owner is unknown").
    # The last test of the module: it ends the fixture's session and starts another.
    ray = importlib.import_module("ray")
    from interestgym.scale.ray_backend import connect

    value = np.arange(100.0)
    first = backend.put(value)
    ray.shutdown()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")  # as the fixture: a local instance of its own
    again = connect("local:1")
    second = again.put(value)
    assert second is not first
    np.testing.assert_array_equal(ray.get(second), value)
