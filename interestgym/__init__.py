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

from pathlib import Path as _Path

__version__ = "0.1.0"

# In a source checkout the pillars live beside this folder (envs/, agents/, encoders/); an install
# maps them into this namespace (pyproject's package-dir). Make a bare checkout importable the
# same way (e.g. `python -m pytest` before `pip install`), without adding top-level names.
_root = _Path(__file__).resolve().parent.parent
if not (_Path(__file__).resolve().parent / "envs").is_dir() and (_root / "envs" / "__init__.py").is_file():
    __path__.append(str(_root))  # type: ignore[name-defined]  # noqa: F821
