"""Messages need a run identity, as inside Flower's simulation engine."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def task_identity():
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id = 1, 1
    TaskIdentity.node_id = SUPERLINK_NODE_ID
