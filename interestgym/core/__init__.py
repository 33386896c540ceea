"""The maths, pure numpy, shared by the env, the batched evaluator and the runtime.

* :mod:`interestgym.core.interest`: profile update and candidate scoring (:class:`ScoringConfig`).
* :mod:`interestgym.core.features`: the observation's FEATURES table and its encoding / decoding.
* :mod:`interestgym.core.metrics`: ranking metrics per scoring point (expected value over tie orders).
* :mod:`interestgym.core.transition`: the per-decision state transition (running statistics,
  profile updates, forgetful category counts, folding outcomes into the running means).
* :mod:`interestgym.core.protocol`: action mapping, item popularity, seeded negative sampling.
"""
