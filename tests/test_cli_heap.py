"""The ``interestgym`` command keeps glibc's freed heap (M_TOP_PAD, M_MMAP_THRESHOLD), unless the user chose otherwise."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from interestgym import heap


class FakeLibc:
    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def mallopt(self, option: int, value: int) -> int:
        self.calls.append((option, value))
        return self.answer


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(heap, "_KEPT_MB", 0)  # what this test process set: each test starts from glibc's own


@pytest.fixture
def libc(monkeypatch):
    fake = FakeLibc()
    monkeypatch.setattr(ctypes, "CDLL", lambda name: fake)
    return fake


THRESHOLD = (-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD is mallopt option -3 in glibc's malloc.h, M_TOP_PAD -2


def test_the_command_sets_m_top_pad_to_64_mb_by_default_and_passes_it_to_workers(libc):
    assert heap.worker_environment() == {}
    assert heap.keep_freed_heap({}) == 64
    assert libc.calls == [THRESHOLD, (-2, 64 * 1024 * 1024)]
    assert heap.worker_environment() == {"MALLOC_TOP_PAD_": str(64 << 20), "MALLOC_MMAP_THRESHOLD_": str(32 << 20)}


def test_the_command_sets_it_at_start_and_a_call_of_main_in_process_does_not(libc, monkeypatch, capsys):
    """`interestgym ...` (main() without argv) keeps the heap; main(argv), as the tests and benchmarks call it, leaves
    the calling process's allocator alone."""
    from interestgym import cli

    monkeypatch.delenv("MALLOC_TOP_PAD_", raising=False)
    monkeypatch.delenv("INTERESTGYM_MALLOC_TOP_PAD_MB", raising=False)
    cli.main(["--version"])
    assert libc.calls == []
    monkeypatch.setattr(sys, "argv", ["interestgym", "--version"])
    cli.main()
    assert libc.calls == [THRESHOLD, (-2, 64 << 20)]
    assert capsys.readouterr().out.count("interestgym, version") == 2


@pytest.mark.parametrize("environ,expected_mb,calls", [
    ({"INTERESTGYM_MALLOC_TOP_PAD_MB": "16"}, 16, [THRESHOLD, (-2, 16 << 20)]),
    ({"INTERESTGYM_MALLOC_TOP_PAD_MB": "0"}, 0, []),           # glibc left as it is
    ({"MALLOC_TOP_PAD_": "1048576"}, 0, []),                   # the user's own glibc setting wins
    ({"MALLOC_MMAP_THRESHOLD_": "131072"}, 0, []),
    ({"GLIBC_TUNABLES": "glibc.malloc.top_pad=0"}, 0, []),
])
def test_the_users_choice_is_kept(libc, environ, expected_mb, calls):
    assert heap.keep_freed_heap(environ) == expected_mb
    assert libc.calls == calls


def test_a_bad_value_warns_and_leaves_glibc_alone(libc, capsys):
    assert heap.keep_freed_heap({"INTERESTGYM_MALLOC_TOP_PAD_MB": "lots"}) == 0
    assert libc.calls == []
    assert "INTERESTGYM_MALLOC_TOP_PAD_MB='lots': expected a whole number of MB from 0 to 2047" in capsys.readouterr().err


def test_a_c_library_without_mallopt_is_no_error(monkeypatch):
    def missing(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    assert heap.keep_freed_heap({}) == 0
    refused = FakeLibc(answer=0)
    monkeypatch.setattr(ctypes, "CDLL", lambda name: refused)
    assert heap.keep_freed_heap({}) == 0 and refused.calls == [THRESHOLD]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_real_mallopt_accepts_it():
    """On this machine's C library the call is accepted (mallopt returns 1), in a fresh process."""
    code = "from interestgym import heap; print(heap.keep_freed_heap({}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "64"


@pytest.mark.parametrize("value", ["-1", "2048", "4096"])
def test_a_pad_mallopt_cannot_take_is_refused(libc, capsys, value):
    """mallopt takes a C int of bytes: 2048 MB and more would wrap (4096 MB reached glibc as 0)."""
    assert heap.keep_freed_heap({"INTERESTGYM_MALLOC_TOP_PAD_MB": value}) == 0
    assert libc.calls == [] and "from 0 to 2047" in capsys.readouterr().err
