"""Executor side: the code that runs inside Spark tasks (data feed, model replica, training loop)."""
