"""Your own update rules beside the built-in ones: ``evaluate --policy FILE.py:NAME`` and
``evaluate_run(..., extra_policies=[...])``.

A user's policy is what :class:`~interestgym.envs.policies.Policy` says: ``name``, ``act(observations) ->
actions`` in [-1, 1] and an optional ``scoring`` (a :class:`~interestgym.core.interest.ScoringConfig`). It is
given either as an object (evaluated as it is), or as a class / callable with a ``grid`` attribute
(``{parameter: [values]}``): that one is tuned like the baselines, by the product's grid search
(:func:`~interestgym.agents.tuning.grid_search`) on the same validation users, and evaluated with its best
parameters. Either way its row in the tables has kind ``custom`` and is compared with the best tuned baseline
(it is not a candidate for that reference).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from interestgym.errors import InterestGymError


def load_policy_spec(spec: str) -> Any:
    """The object ``NAME`` of the Python file ``FILE`` in ``spec`` = ``FILE.py:NAME`` (the file is run as a module
    named after it, with its folder on ``sys.path`` while it is imported, so it may import its neighbours)."""
    path_text, sep, attr = str(spec).rpartition(":")
    if not sep or not path_text or not attr:
        raise InterestGymError(f"--policy {spec!r}: expected FILE.py:NAME (a Python file and the name of a policy, "
                               "or of a class with a grid, in it)")
    path = Path(path_text)
    if path.suffix != ".py":
        raise InterestGymError(f"--policy {spec!r}: {path} is not a Python file (.py); expected FILE.py:NAME")
    if not path.is_file():
        where = "" if path.is_absolute() else f" (looked for it from {Path.cwd()})"
        found = "a folder" if path.is_dir() else "no such file"
        raise InterestGymError(f"--policy {spec!r}: {path}: {found}{where}; expected FILE.py:NAME, a Python file that exists")
    # one name per file (two rules.py of two folders are two modules)
    module_name = f"interestgym_user_policy_{path.stem}_{hashlib.sha256(str(path.resolve()).encode('utf-8')).hexdigest()[:8]}"
    loader = importlib.util.spec_from_file_location(module_name, path)
    if loader is None or loader.loader is None:
        raise InterestGymError(f"--policy {spec!r}: {path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(loader)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    # in sys.modules while it runs, as an import does: a @dataclass with string annotations (from __future__ import
    # annotations) looks its module up there (an AttributeError on 'NoneType' otherwise)
    sys.modules[module_name] = module
    try:
        loader.loader.exec_module(module)
    except Exception as exc:  # the user's code: say where it failed, keep the cause
        sys.modules.pop(module_name, None)
        raise InterestGymError(f"--policy {spec!r}: importing {path} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    if not hasattr(module, attr):
        names = sorted(n for n in vars(module) if not n.startswith("_"))
        raise InterestGymError(f"--policy {spec!r}: {path} has no {attr!r}; it defines {', '.join(names) or 'nothing public'}")
    return getattr(module, attr)


def raised_in(exc: BaseException, specs: Sequence[str]) -> InterestGymError | None:
    """An :class:`InterestGymError` saying that the code of a ``--policy`` file raised ``exc`` (or an exception it was
    raised from or during), with the innermost line of that file it went through; None when no frame of the chain is in
    one of those files (then it is interestgym's bug, and keeps its traceback)."""
    import traceback

    files = {str(Path(spec.rpartition(":")[0]).resolve()): spec for spec in specs}
    seen: set[int] = set()
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:  # the cause or context chain, outermost first
        seen.add(id(link))
        chain.append(link)
        link = link.__cause__ or link.__context__
    for error in reversed(chain):  # the first exception raised (the user's own), then those raised from it
        frames = [f for f in traceback.extract_tb(error.__traceback__) if str(Path(f.filename).resolve()) in files]
        if frames:
            at = frames[-1]
            return InterestGymError(f"--policy {files[str(Path(at.filename).resolve())]!r}: the policy's code raised "
                                    f"{type(error).__name__}: {error} ({at.filename} line {at.lineno}, in {at.name}: "
                                    f"{(at.line or '').strip()})")
    return None


def policy_source(policy: Any) -> dict[str, Any]:
    """Where a user's row came from, for ``evaluation.json``: its class (module and name), the file that defines it
    and that file's sha256, and for a wrapped model (``ModelPolicy``'s ``model``, ``ResidualPolicy``'s ``change`` and
    reference) the model's class and a sha256 of its weights: what a reader needs to tell which model made the row."""
    from interestgym.io import sha256_file

    cls = policy if isinstance(policy, type) else type(policy)
    out: dict[str, Any] = {"class": f"{cls.__module__}.{cls.__qualname__}"}
    file = getattr(sys.modules.get(cls.__module__), "__file__", None)
    if file and Path(file).is_file():
        out["file"] = str(Path(file).resolve())
        out["file_sha256"] = sha256_file(file)
    model = getattr(policy, "model", None)
    if model is not None:
        out["model"] = f"{type(model).__module__}.{type(model).__qualname__}"
        if (digest := weights_sha256(model)) is not None:
            out["weights_sha256"] = digest
    change = getattr(policy, "change", None)
    if change is not None and callable(getattr(change, "act", None)):
        out["change"] = policy_source(change)
    reference = getattr(policy, "reference", None)
    if reference is not None and callable(getattr(reference, "act", None)):
        out["reference"] = {"name": getattr(reference, "name", None), "params": dict(getattr(reference, "params", {}) or {})}
    return out


def weights_sha256(model: Any) -> str | None:
    """sha256 over a torch model's parameters and buffers (names and bytes, in name order): an SB3 model's
    ``policy``, or a module itself; None for anything without a ``state_dict``."""
    import numpy as np

    holder = getattr(model, "policy", model)
    state_dict = getattr(holder, "state_dict", None)
    if not callable(state_dict):
        return None
    h = hashlib.sha256()
    for name, tensor in sorted(state_dict().items()):
        h.update(name.encode("utf-8"))
        h.update(np.ascontiguousarray(tensor.detach().cpu().numpy()).tobytes())
    return h.hexdigest()


def check_policy(policy: Any, where: str) -> Any:
    """``policy`` when it has a ``name`` (a non-empty string) and a callable ``act``, and its ``scoring``, if any, is a
    :class:`~interestgym.core.interest.ScoringConfig`; else an :class:`InterestGymError` naming what is missing."""
    from interestgym.core.interest import ScoringConfig

    if not callable(getattr(policy, "act", None)):
        raise InterestGymError(f"{where}: {policy!r} has no act(observations) method; expected a policy (name, act, scoring) "
                               "or a class with a `grid` attribute")
    name = getattr(policy, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise InterestGymError(f"{where}: {policy!r} has name {name!r}; expected a non-empty string (its row in the tables)")
    scoring = getattr(policy, "scoring", None)
    if scoring is not None and not isinstance(scoring, ScoringConfig):
        raise InterestGymError(f"{where}: policy {name!r} has scoring {scoring!r}; expected an "
                               "interestgym.core.interest.ScoringConfig (or none)")
    return policy


def resolve_policies(items: Sequence[Any], score: Callable[[list[Any]], list[float]], taken: Sequence[str],
                     full_score: Callable[[list[Any]], list[float]] | None = None, *,
                     progress: bool | None = None) -> list[dict[str, Any]]:
    """Each user policy ready to evaluate: ``{"policy", "params", "valid_score", "grid"}``.

    A class (or a callable that is not a policy) is made with each point of its ``grid`` attribute (``{parameter:
    [values]}``; none: its defaults) and tuned with :func:`~interestgym.agents.tuning.grid_search` and ``score`` (the
    baselines' validation scorer); a policy object is scored once with ``score`` for its validation figure. ``taken``: the names of the
    other rows; a user policy may not reuse one. ``full_score``: the same scorer on the full engine
    (``validation_scorer(..., batched=False)``), for a policy that reads a feature the batched scorer's lean replay
    does not compute (its running reward, the profiles' running ranking quality). A grid's tuning shows progress as the
    baselines' does (``progress``: :func:`~interestgym.progress.progress_bar`'s ``enabled``): a line every 15 s
    when stderr is not a terminal."""
    from interestgym.agents.tuning import grid_search
    from interestgym.envs.rollout import LeanFeatureError
    from interestgym.progress import progress_bar

    def scored(policies: list[Any]) -> list[float]:
        try:
            return score(policies)
        except LeanFeatureError:
            if full_score is None:
                raise
            return full_score(policies)

    out: list[dict[str, Any]] = []
    names = set(taken)
    for item in items:
        where = f"policy {getattr(item, 'name', None) or getattr(item, '__name__', repr(item))!r}"
        if isinstance(item, type) or (callable(item) and not callable(getattr(item, "act", None))):
            # a class or factory: tuned over its `grid` (none: made with its defaults)
            grid = getattr(item, "grid", None) or {}
            if not isinstance(grid, dict) or not all(isinstance(v, (list, tuple)) and v for v in grid.values()):
                raise InterestGymError(f"{where}: grid {grid!r}; expected a dict of parameter -> non-empty list of values")

            def make(params: dict[str, Any], item: Any = item, where: str = where) -> Any:
                try:
                    policy = item(**params)
                except TypeError as exc:
                    raise InterestGymError(f"{where}: cannot be made with grid parameters {params}: {exc}") from exc
                return check_policy(policy, where)

            points = math.prod(len(v) for v in grid.values())
            with progress_bar(points, desc=f"tuning {where} on validation users", unit="grid point", enabled=progress) as bar:
                def tuned(policies: list[Any]) -> list[float]:
                    values = scored(policies)
                    bar.update(len(policies))
                    return values

                found = grid_search(make, grid, tuned)
            policy = make(found.best_params)
            own = getattr(policy, "params", None)  # every parameter the policy says it has, else the grid's
            entry = {"policy": policy, "params": dict(own) if isinstance(own, dict) else dict(found.best_params),
                     "valid_score": found.best_score, "grid": found.table}
        else:
            policy = check_policy(item, where)
            params = getattr(policy, "params", None)
            entry = {"policy": policy, "params": dict(params) if isinstance(params, dict) else {},
                     "valid_score": float(scored([policy])[0]), "grid": None}
        name = entry["policy"].name
        if name in names:
            raise InterestGymError(f"{where}: its name {name!r} is already a row of this evaluation; give it another name")
        names.add(name)
        out.append(entry)
    return out
