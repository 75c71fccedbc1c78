"""Which samples of the training stream a worker keeps in a multi-worker run (no TensorFlow needed).

The plan (``ShardPlan``, :mod:`rtmdet_keras.training.distribute`) splits each global batch of ``B`` stream
positions over ``W`` workers: worker ``w`` keeps the positions ``k`` with ``(k mod B) // (B / W) == w``.
"""

from __future__ import annotations


def worker_takes(k, plan, worker: int):
    """Whether stream position ``k`` (int or int64 tensor) belongs to ``worker``'s share."""
    return (k % plan.global_batch) // plan.per_worker == worker
