"""Sequence trackers of user behaviour (issue 13): GRU4Rec- and SASRec-style models over the user's last
k decisions, trained on training users, scored on the product's scoring points.

Modules: ``data`` (decision sequences, windows, training chunks), ``models`` (the torch networks),
``config`` (``SequenceConfig``), ``train`` (the loop), ``folder`` (the run folder's files),
``scoring`` (``load_tracker``, ``score_replay``: per-point metrics aligned with ``evaluate``),
``compare`` (a results table of trackers beside an ``evaluate`` run's rows), ``cli``
(``interestgym train-sequence``). Nothing here is imported by ``import interestgym``.
"""
