"""The export stage: a trained run's policy -> ``policy.onnx`` + ``manifest.json`` for :mod:`interestgym.runtime`.

- :mod:`~interestgym.export.run`: :func:`export_run` (``interestgym export``), the orchestration.
- :mod:`~interestgym.export.actor`: the ONNX actor (VecNormalize and action clipping baked in) and its export.
- :mod:`~interestgym.export.parity`: the graph checked against SB3; the runtime replayed against the evaluator.
- :mod:`~interestgym.export.writer`: the atomic directory write (build beside, swap, remove the old one).
- :mod:`~interestgym.export.cli`: the ``interestgym export`` command.

The manifest's content is built and read by :mod:`interestgym.runtime.manifest`. Nothing is imported
here: torch and stable-baselines3 load only when a submodule is used.
"""
