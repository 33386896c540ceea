"""Test-session settings shared by every test module.

``IG_REQUIRE_DATA=1`` turns the real-data tests' skips (``../shared/data`` absent, or a file of it missing)
into failures: a run that must check the README's real-data figures cannot pass without them.
"""

from __future__ import annotations

import os

import pytest

#: Words every real-data skip reason contains.
SHARED_DATA_MARK = "shared/data"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("IG_REQUIRE_DATA") == "1" and report.skipped and SHARED_DATA_MARK in str(report.longrepr):
        report.outcome = "failed"
        report.longrepr = f"IG_REQUIRE_DATA=1 but a real-data test was skipped: {report.longrepr}"
