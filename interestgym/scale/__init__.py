"""Past one process: the replay sharded by user, encoding sharded by text, on a Ray cluster.

* :mod:`interestgym.scale.shards`: pure helpers: contiguous user shards of a replay, merging the
  evaluator's per-shard results, text shards aligned with an encoder's own batching.
* :mod:`interestgym.scale.ray_backend`: the optional Ray backend (``pip install -c .ci/constraints.txt '.[ray]'`` in the checkout):
  :func:`~interestgym.scale.ray_backend.connect` and drop-in, sharded versions of
  ``evaluate_policy``, ``validation_scorer`` and an encoder.

Every result is identical to the single process: users are independent rows of the replay, so a
shard's numbers are the numbers of the same users replayed together, and the merge restores the
single-process order before anything is averaged. See ``docs/scale.md``.
"""
