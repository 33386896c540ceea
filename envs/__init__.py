"""Replay environments (imported as ``interestgym.envs``)."""
