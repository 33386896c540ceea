"""Policies: PPO training, baseline update rules, evaluation and export (imported as ``interestgym.agents``)."""
