"""The prepare stage: raw logs -> a validated, split, canonical dataset directory.

See :mod:`interestgym.data.schema` for the on-disk contract and :class:`interestgym.data.dataset.Dataset`
for the reader every later stage uses.
"""
