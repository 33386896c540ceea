"""A rule another installed package adds (entry-point group ``interestgym.rules``) is a baseline like the built-in ones.

The package is real as far as Python's packaging sees it: a module and a ``*.dist-info`` folder (METADATA,
entry_points.txt) on ``sys.path``, which ``importlib.metadata`` finds exactly as it finds a pip-installed one.

* it is made by name, tuned on its class's grid, a row of the baselines and a candidate for the reference;
* a run whose reference it is records the package and its version; its export names them in the manifest; the
  runtime composes with it and reproduces ``evaluate`` to the bit;
* without the package, or at another version, the run folder and the export are refused, saying what to install;
* a package whose rule cannot be used (a built-in's name, not a RulePolicy, a name that is not its class's, an
  import that fails) is refused naming the package and the entry point, never skipped in silence.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from agents_fixtures import shipping_config, tiny_synthetic
from interestgym.agents.rules import baseline_names, tuning_grids
from interestgym.agents.run_folder import read_run_config, run_reference

from interestgym.core.features import FeatureView
from interestgym.core.rules import (
    RuleParameterError,
    RulePluginError,
    make_rule,
    refresh_plugin_rules,
    rule_definition,
    rule_from_record,
)

RULE_MODULE = '''
import numpy as np
from interestgym.core.rules import RulePolicy


class GapRule(RulePolicy):
    """The short-term profile moves by how long the user was away: a_S = 1 - 2^(-gap / half_life_hours).

    (A second paragraph the definition leaves out.)"""

    name = "gap_rule"
    grid = {"long_rate": [0.05, 0.3], "half_life_hours": [1.0, 48.0]}

    def __init__(self, long_rate=0.1, half_life_hours=24.0, short_weight=0.5, popularity_weight=0.2):
        super().__init__(long_rate=long_rate, half_life_hours=half_life_hours, short_weight=short_weight,
                         popularity_weight=popularity_weight)

    def strengths(self, view):
        p = self.params
        a_s = 1.0 - 0.5 ** (view.decision_gap_seconds / 3600.0 / p["half_life_hours"])
        a_l = np.where(view["long_empty"] > 0, 1.0, p["long_rate"])
        return a_l, a_s, p["short_weight"], p["popularity_weight"]
'''


def install(root: Path, monkeypatch, *, version: str = "0.3", entry: str = "gap_rule = igtest_rules:GapRule",
            module: str = RULE_MODULE, module_name: str = "igtest_rules", dist: str = "igtest-rules") -> Path:
    """A package ``dist`` (igtest-rules) at ``version`` under ``root``, on sys.path (importlib.metadata reads it from there)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module_name}.py").write_text(module)
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[interestgym.rules]\n{entry}\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(__import__("sys").modules, module_name, raising=False)
    refresh_plugin_rules()
    return root


@pytest.fixture(autouse=True)
def _fresh_registry():
    refresh_plugin_rules()
    yield
    refresh_plugin_rules()  # the next test reads the packages of its own sys.path


def test_an_installed_packages_rule_is_a_baseline_made_by_name_and_tuned_on_its_grid(tmp_path, monkeypatch):
    assert "gap_rule" not in baseline_names()
    install(tmp_path / "site", monkeypatch)
    assert baseline_names()[-1] == "gap_rule" and baseline_names()[:-1] == tuple(n for n in baseline_names() if n != "gap_rule")
    assert tuning_grids()["gap_rule"] == {"long_rate": [0.05, 0.3], "half_life_hours": [1.0, 48.0]}
    assert tuning_grids(slot_counts=False, impressions=False)["gap_rule"] == {"long_rate": [0.05, 0.3], "half_life_hours": [1.0, 48.0]}
    assert rule_definition("gap_rule") == "The short-term profile moves by how long the user was away: a_S = 1 - 2^(-gap / half_life_hours)."

    rule = make_rule("gap_rule", long_rate=0.3, half_life_hours=2.0)
    assert type(rule).__module__ == "igtest_rules" and rule.params["half_life_hours"] == 2.0
    import hashlib

    # the digest of the code it runs: here a top-level module, hashed with its file name
    source = hashlib.sha256(b"igtest_rules.py\0" + RULE_MODULE.encode() + b"\0").hexdigest()
    assert rule.describe()["provider"] == {"distribution": "igtest-rules", "version": "0.3", "entry_point": "igtest_rules:GapRule",
                                           "group": "interestgym.rules", "source_sha256": source}
    assert "provider" not in make_rule("ema").describe()  # built-in records are as before
    # it acts by its own formula, through the product's parameter checks and action map
    rng = np.random.default_rng(0)
    obs = rng.uniform(0, 1, (6, 26)).astype(np.float32)
    view = FeatureView(obs)
    a_s = 1.0 - 0.5 ** (view.decision_gap_seconds / 3600.0 / 2.0)
    a_l = np.where(view["long_empty"] > 0, 1.0, 0.3)
    expected = np.stack([a_l, a_s, np.full(6, 0.5), np.full(6, 0.2)], 1) * 2.0 - 1.0
    np.testing.assert_allclose(rule.act(obs), expected, rtol=0, atol=1e-6)
    with pytest.raises(RuleParameterError, match="half_life_hours=-1: expected a number > 0"):
        make_rule("gap_rule", half_life_hours=-1)


@pytest.mark.parametrize("entry, module, message", [
    ("ema = igtest_rules:GapRule", RULE_MODULE, "'ema' is a built-in rule's name"),
    ("gap_rule = igtest_rules:helper", RULE_MODULE + "\ndef helper():\n    pass\n", "expected a subclass of interestgym.core.rules.RulePolicy"),
    ("gap = igtest_rules:GapRule", RULE_MODULE, "has name 'gap_rule'; expected 'gap'"),
    ("gap_rule = igtest_rules:GapRule", "import no_such_module_here\n", "importing it failed: ModuleNotFoundError"),
    ("gap_rule = igtest_rules:GapRule", RULE_MODULE.replace('"half_life_hours": [1.0, 48.0]', '"half_life": [1.0]'),
     "'half_life' is not a parameter of GapRule"),
    ("ppo = igtest_rules:GapRule", RULE_MODULE.replace('name = "gap_rule"', 'name = "ppo"'), "'ppo' names another row of the tables"),
    ("gap_rule = igtest_rules:GapRule", RULE_MODULE.replace("long_rate=0.1, half_life_hours", "long_rate, half_life_hours"),
     "parameter(s) long_rate have no default"),
    ("gap_rule = igtest_rules:GapRule", RULE_MODULE.replace('"half_life_hours": [1.0, 48.0]', '"half_life_hours": [None]'),
     "half_life_hours: [None]; expected a non-empty list of numbers"),
    ("gap_rule = igtest_rules:GapRule", RULE_MODULE.replace('"long_rate": [0.05, 0.3]', '"long_rate": [0.05, 1.5]'),
     "long_rate: [0.05, 1.5]: rule 'gap_rule' parameter long_rate=1.5: expected a number in [0, 1]"),
    ("gap_rule = igtest_rules:GapRule", RULE_MODULE.replace('"half_life_hours": [1.0, 48.0]', '"half_life_hours": [1.0, float("nan")]'),
     "half_life_hours: [1.0, nan]: rule 'gap_rule' parameter half_life_hours=nan: expected a finite number"),
], ids=["a built-in's name", "not a rule class", "another name than its class's", "an import that fails", "a grid of another rule",
        "the learned row's name", "a parameter without a default", "None in a grid", "a rate past 1 in a grid", "NaN in a grid"])
def test_a_package_whose_rule_cannot_be_used_is_refused_naming_it(tmp_path, monkeypatch, entry, module, message):
    install(tmp_path / "site", monkeypatch, entry=entry, module=module)
    with pytest.raises(RulePluginError) as info:
        tuning_grids()  # what `train` and `evaluate` read first when they tune every baseline
    text = str(info.value)
    assert message in text and "igtest-rules 0.3" in text and "interestgym.rules" in text
    # what uses built-in rules only never reads the packages: a broken one elsewhere does not stop it
    from interestgym.agents.config import TrainConfig

    assert make_rule("ema").name == "ema"
    assert "gap_rule" not in tuning_grids(names=["ema", "bayesian_category"]) and "ema" in tuning_grids(names=["ema"])
    TrainConfig(dataset="d", run_dir="r", reward_baseline="ema").validate()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_synthetic(tmp_path_factory.mktemp("plugin") / "tiny", users=40)


def test_a_run_on_a_packages_rule_records_it_and_its_export_serves_with_it(dataset, tmp_path, monkeypatch):
    """``train --reward-baseline gap_rule``: tuned on its grid, the residual agent's reference; the export's runtime
    replays the test users exactly as ``evaluate`` does; without the package (or at another version) the run and
    the export are refused with what to install."""
    from interestgym.agents.run_folder import load_shipped_policy
    from interestgym.agents.train import train_run
    from interestgym.envs.vector import evaluate_policy

    from interestgym.data.dataset import Dataset
    from interestgym.export.parity import replay_through_runtime
    from interestgym.export.run import export_run
    from interestgym.runtime import load_policy

    site = install(tmp_path / "site", monkeypatch)
    run, export = tmp_path / "run", tmp_path / "export"
    train_run(shipping_config(dataset, run, reward_baseline="gap_rule", ship_threshold=-1.0))  # ships the learned model
    saved = read_run_config(run)
    reference = saved["reference"]
    assert reference["name"] == "gap_rule" and reference["provider"]["distribution"] == "igtest-rules"
    # its grid's parameters, tuned (the others at the class's defaults, as a built-in rule's are written down)
    assert set(reference["params"]) == {"long_rate", "half_life_hours"}
    assert reference["params"]["long_rate"] in (0.05, 0.3) and reference["params"]["half_life_hours"] in (1.0, 48.0)
    export_run(run, export, verify_observations=100)
    policy = load_policy(export)
    assert policy.form == "residual" and type(policy.rule).__name__ == "GapRule" and policy.rule.params == make_rule("gap_rule", **reference["params"]).params
    data = shipping_config(dataset, run).replay_data("test")
    expected = evaluate_policy(data, load_shipped_policy(run), progress=False)
    got = replay_through_runtime(policy, Dataset.open(dataset), data, serialise="bytes")
    for metric in expected.metrics:
        np.testing.assert_array_equal(got[metric].to_numpy(), expected.points[metric].to_numpy(), err_msg=metric)

    # evaluate: the package's rule is a baseline row like the others, the run's reference among them
    import json

    from interestgym.agents.config import TrainConfig

    from interestgym.errors import InterestGymError
    from interestgym.evaluation.run import evaluate_run

    evaluate_run(run, out=tmp_path / "eval", baselines="ema,gap_rule", n_boot=20, progress=False)
    doc = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    rows = doc["summary"]["policies"]
    assert set(rows) - {"oracle"} == {"ppo", "ema", "gap_rule"} and rows["gap_rule"]["kind"] == "baseline"
    assert doc["tuned_baselines"]["gap_rule"]["params"] == reference["params"]  # the same tuning, the same users
    with pytest.raises(InterestGymError, match=r"--reward-baseline 'gap': expected best, none or one of .*bayesian_category, gap_rule"):
        TrainConfig(dataset=str(dataset), run_dir=str(tmp_path / "r2"), reward_baseline="gap").validate()

    assert doc["tuned_baselines"]["gap_rule"]["provider"]["version"] == "0.3"  # which code the numbers came from
    assert json.loads((export / "manifest.json").read_text())["format_version"] == 5  # earlier runtimes: "upgrade", not "corrupt"

    # the package gone: the run's reference, its resume and the export are refused, naming what to install
    import dataclasses
    import sys

    sys.path.remove(str(site))
    refresh_plugin_rules()
    with pytest.raises(RulePluginError, match=re.escape(f"{run / 'config.json'} (reference): rule 'gap_rule' comes from the package "
                                                        "igtest-rules 0.3") + r".*pip install 'igtest-rules==0.3'"):
        run_reference(saved, run)
    config = shipping_config(dataset, run, reward_baseline="gap_rule", ship_threshold=-1.0)
    with pytest.raises(RulePluginError, match=r"config.json \(reference\): rule 'gap_rule' comes from the package igtest-rules 0.3"):
        train_run(dataclasses.replace(config, timesteps=512), resume=True)
    with pytest.raises(RulePluginError, match=r"manifest.json: rule 'gap_rule' comes from the package igtest-rules 0.3"):
        load_policy(export)
    # installed again while this process runs (a service's operator): found without a restart (the lookup reads again)
    sys.path.insert(0, str(site))
    assert load_policy(export).rule.name == "gap_rule"
    sys.path.remove(str(site))
    # another version, or the same name from another package: its rule may act otherwise, so it is refused too
    install(tmp_path / "site2", monkeypatch, version="0.4")
    with pytest.raises(RulePluginError, match=r"recorded from igtest-rules 0.3 \(entry point igtest_rules:GapRule\); igtest-rules 0.4 "
                                              r"\(entry point igtest_rules:GapRule\) adds it here, whose rule may act otherwise"):
        load_policy(export)
    with pytest.raises(RulePluginError, match="recorded from igtest-rules 0.3"):
        rule_from_record(reference, "config")
    # ... and its parameters, tuned with 0.3, are not reused under 0.4 (--tuned-baselines: said; a run's own file: tuned again)
    with pytest.raises(InterestGymError, match=r"baselines.json: rule 'gap_rule' was tuned with igtest-rules 0.3; igtest-rules 0.4 "
                                               r"is installed: its parameters were tuned with that code"):
        train_run(dataclasses.replace(config, run_dir=str(tmp_path / "r3"), tuned_baselines=str(run / "baselines.json")))
    sys.path.remove(str(tmp_path / "site2"))
    install(tmp_path / "site3", monkeypatch, dist="other-rules", version="0.3", module_name="other_rules",
            entry="gap_rule = other_rules:GapRule")
    with pytest.raises(RulePluginError, match=r"recorded from igtest-rules 0.3 .*; other-rules 0.3 \(entry point other_rules:GapRule\) adds it"):
        load_policy(export)


def test_a_rule_whose_code_changed_at_the_same_version_is_refused(tmp_path, monkeypatch):
    """An editable install edited keeps its version: the digest of the rule's source tells the code apart. A record of
    the old code is refused naming both digests, a tuning of it is not reused, and the code put back is accepted; a
    record from before the digest existed is checked by its version alone."""
    from interestgym.agents.run_folder import read_tuned_baselines

    site = install(tmp_path / "site", monkeypatch)
    record = make_rule("gap_rule", long_rate=0.3).describe()
    old_source = record["provider"]["source_sha256"]
    assert rule_from_record(record, "config").params["long_rate"] == 0.3
    path = tmp_path / "baselines.json"
    import json

    protocol = {"split": "valid"}
    path.write_text(json.dumps({"metric": "ndcg@10", "protocol": protocol, "tune_users": None,
                                "baselines": {"gap_rule": {"params": record["params"], "provider": record["provider"]}}}))

    def read(strict=False):
        return read_tuned_baselines(path, metric="ndcg@10", protocol=protocol, names=["gap_rule"], tune_users=None, strict=strict)

    assert read() is not None

    (site / "igtest_rules.py").write_text(RULE_MODULE.replace("p[\"long_rate\"])", "0.25 * p[\"long_rate\"])"))
    monkeypatch.delitem(__import__("sys").modules, "igtest_rules", raising=False)
    refresh_plugin_rules()
    new_source = make_rule("gap_rule").describe()["provider"]["source_sha256"]
    assert new_source != old_source
    with pytest.raises(RulePluginError, match=re.escape(f"config: rule 'gap_rule' was recorded from igtest-rules 0.3 with source sha256 "
                                                        f"{old_source[:12]}; the code of igtest-rules 0.3 installed here differs "
                                                        f"(sha256 {new_source[:12]}")):
        rule_from_record(record, "config")
    assert read() is None  # tuned again, not reused
    with pytest.raises(Exception, match=re.escape(f"rule 'gap_rule' was tuned with igtest-rules 0.3 of source sha256 {old_source[:12]}")):
        read(strict=True)
    legacy = {**record, "provider": {k: v for k, v in record["provider"].items() if k != "source_sha256"}}
    assert rule_from_record(legacy, "config").name == "gap_rule"  # recorded before digests: the version decides

    (site / "igtest_rules.py").write_text(RULE_MODULE)  # the code it was recorded with, back
    monkeypatch.delitem(__import__("sys").modules, "igtest_rules", raising=False)
    refresh_plugin_rules()
    assert rule_from_record(record, "config").params["long_rate"] == 0.3


def test_the_digest_is_of_the_code_running_and_covers_the_whole_package(tmp_path, monkeypatch):
    """The digest is taken when the process imports the rule: files edited after that do not change what acts here, so a
    record of the new files is refused with 'restart', and one of the running code is accepted. A rule in a package
    hashes every .py file of it (a helper module's edit counts); an unreadable file gives no digest (the version decides);
    a package parameter named *_rate is checked to lie in [0, 1] as the built-ins' are."""
    import hashlib

    from interestgym.core.rules import rule_source_sha256

    site = install(tmp_path / "site", monkeypatch)
    running = make_rule("gap_rule").describe()
    (site / "igtest_rules.py").write_text(RULE_MODULE + "\n# edited after the import\n")
    refresh_plugin_rules()  # a service's lookup reads the packages again; the module stays imported
    edited = {**running, "provider": {**running["provider"],
                                      "source_sha256": hashlib.sha256(b"igtest_rules.py\0" + (RULE_MODULE + "\n# edited after the import\n")
                                                                      .encode() + b"\0").hexdigest()}}
    assert rule_from_record(running, "export").name == "gap_rule"  # the code acting here is the recorded one
    with pytest.raises(RulePluginError, match=r"which the files hold now, but this process runs the code it imported before "
                                              r"they changed .*; restart it"):
        rule_from_record(edited, "export")

    pkg = tmp_path / "pkgsite" / "mypkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "rules.py").write_text("from interestgym.core.rules import RulePolicy\nclass R(RulePolicy):\n    name = 'r'\n")
    (pkg / "helper.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgsite"))
    import importlib

    cls = importlib.import_module("mypkg.sub.rules").R
    expected = hashlib.sha256()
    for rel in ("__init__.py", "helper.py", "sub/__init__.py", "sub/rules.py"):  # every file of the top package, by path
        expected.update(rel.encode() + b"\0" + (pkg / rel).read_bytes() + b"\0")
    assert rule_source_sha256(cls) == rule_source_sha256(cls, on_disk=True) == expected.hexdigest()
    (pkg / "helper.py").write_text("X = 2\n")
    assert rule_source_sha256(cls, on_disk=True) != expected.hexdigest() == rule_source_sha256(cls)
    (pkg / "gone.py").symlink_to(pkg / "no-such-file.py")
    assert rule_source_sha256(cls, on_disk=True) is None

    from interestgym.core.rules import check_rule_params

    with pytest.raises(RuleParameterError, match=r"decay_rate=1.5: expected a number in \[0, 1\]"):
        check_rule_params("mine", {"decay_rate": 1.5})
    check_rule_params("bayesian_category", {"slot_weight": 4.0})  # a weight >= 0, not a share
