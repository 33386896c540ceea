"""interestgym: learn when and how strongly to update user-interest profiles, by replaying real logs.

The pipeline, one module per stage:

    prepare  (interestgym.data)      raw logs -> canonical dataset directory
    encode   (interestgym.encoders)  item texts -> cached, L2-normalised embeddings
    replay   (interestgym.envs)      Gymnasium env + batched evaluator over the logs
    policy   (interestgym.agents)    PPO training and hand-written baseline rules
    evaluate (interestgym.agents)    every policy on the same held-out users, with CIs
    export   (interestgym.agents)    ONNX + manifest
    runtime  (interestgym.runtime)   numpy + onnxruntime serving code

The maths (profile update, scoring, metrics, features) lives once in ``interestgym.core``.
This module imports nothing heavy: ``interestgym.runtime`` must load without torch.
"""

from __future__ import annotations

import importlib.abc as _importlib_abc
import importlib.util as _importlib_util
import sys
from pathlib import Path as _Path

__version__ = "0.1.0"

# In a source checkout the pillars live beside this folder (envs/, agents/, encoders/); an install
# maps them into this namespace (pyproject's package-dir). Make a bare checkout importable the
# same way (e.g. `python -m pytest` before `pip install`), without adding top-level names.
_root = _Path(__file__).resolve().parent.parent
if not (_Path(__file__).resolve().parent / "envs").is_dir() and (_root / "envs" / "__init__.py").is_file():
    __path__.append(str(_root))  # type: ignore[name-defined]

#: The Gymnasium id of the replay env.
ENV_ID = "interestgym/InterestReplay-v0"


def register_envs() -> None:
    """Register ``interestgym/InterestReplay-v0`` (single env + ``make_vec`` vector entry point) with
    Gymnasium; idempotent. Called when Gymnasium is imported, whether before or after ``interestgym``."""
    import gymnasium

    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point="interestgym.envs.replay:InterestReplayEnv",
                           vector_entry_point="interestgym.envs.gym_vector:InterestReplayVectorEnv")


class _RegisterWhenGymnasiumLoads(_importlib_abc.MetaPathFinder):
    """Registers the env right after ``import gymnasium`` completes, so that ``import interestgym``
    never imports Gymnasium itself (the production runtime needs only numpy and onnxruntime)."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> object:
        if fullname != "gymnasium":
            return None
        sys.meta_path.remove(self)
        spec = _importlib_util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module: object) -> None:
            exec_module(module)  # type: ignore[arg-type]
            register_envs()

        spec.loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


if "gymnasium" in sys.modules:
    register_envs()
elif not any(isinstance(f, _RegisterWhenGymnasiumLoads) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenGymnasiumLoads())
