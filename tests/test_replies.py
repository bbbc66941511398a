"""The server's reply loop: every reply collected as it arrives, a silent node
given up on at the timeout, and polls spaced as asked (Flower's own loop sleeps
0.1 s or 3 s between polls; fedlight chooses)."""

from __future__ import annotations

import time
from types import SimpleNamespace as NS

import pytest

from fedlight.server import collect_replies, partition_owners, send_and_receive


class TimedGrid:
    """The push/pull half of a Flower grid (what ``send_and_receive`` calls):
    node ``n``'s reply becomes pullable ``delays[n]`` seconds after the push
    (None: never). Messages are reduced to the metadata the loop reads."""

    def __init__(self, delays: dict[int, float | None]) -> None:
        self.delays = delays
        self.pushed: dict[str, tuple[int, float]] = {}
        self.polls = 0

    def push_messages(self, messages: list[NS]) -> list[str]:
        for i, msg in enumerate(messages):
            self.pushed[f"m{i}"] = (msg.metadata.dst_node_id, time.monotonic())
        return list(self.pushed)

    def pull_messages(self, message_ids: set[str]) -> list[NS]:
        self.polls += 1
        now, out = time.monotonic(), []
        for mid in list(message_ids):
            node, at = self.pushed[mid]
            delay = self.delays[node]
            if delay is not None and now - at >= delay:
                out.append(
                    NS(
                        metadata=NS(reply_to_message_id=mid, src_node_id=node),
                        has_error=lambda: False,
                        # what a client could claim about itself (ignored)
                        content={"metrics": {"partition-id": 0}},
                    )
                )
                del self.pushed[mid]  # pulled replies are gone, as in Flower
        return out


def messages(nodes: list[int]) -> list[NS]:
    return [NS(metadata=NS(dst_node_id=n)) for n in nodes]


def test_collects_every_reply_soon_after_the_last_arrives() -> None:
    grid = TimedGrid({1: 0.0, 2: 0.05, 3: 0.12})
    start = time.monotonic()
    replies = send_and_receive(grid, messages([1, 2, 3]), timeout=5.0, poll_s=0.01)
    took = time.monotonic() - start
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    assert 0.12 <= took < 0.3  # Flower's in-memory loop: up to 0.22, deployed: 3.12
    # it polled while waiting (every 0.03, 0.02, then 0.01 s), not after one long sleep
    assert grid.polls >= 6


def test_polls_less_often_while_many_replies_are_out() -> None:
    grid = TimedGrid({n: 0.25 for n in range(20)})
    send_and_receive(grid, messages(list(range(20))), timeout=5.0, poll_s=0.01)
    assert 3 <= grid.polls <= 5  # every 0.1 s (ten times poll_s), not every 0.01 s


def test_gives_up_on_a_silent_node_at_the_timeout() -> None:
    grid = TimedGrid({1: 0.0, 2: None})
    start = time.monotonic()
    replies = send_and_receive(grid, messages([1, 2]), timeout=0.3, poll_s=0.05)
    took = time.monotonic() - start
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]
    assert 0.3 <= took < 0.6
    assert 5 <= grid.polls <= 9  # one poll per 0.05 s, not a busy loop


def test_a_reply_is_the_client_its_node_announced_not_what_it_claims() -> None:
    # node id -> the partition it announced at discovery; every reply claims 0.
    owner = {101: 2, 102: 0, 103: 1, 104: 3}
    grid = TimedGrid({101: 0.0, 102: 0.04, 103: 0.02, 104: None})
    good, failures = collect_replies(
        grid, messages([101, 102, 103, 104]), owner, timeout=0.2, poll_s=0.01
    )
    # In partition order, by the node each reply came from.
    assert [r.metadata.src_node_id for r in good] == [102, 103, 101]
    assert failures == {"3": "no reply in 0.2 s"}


class FlakyGrid:
    """Replies at once; node ``n`` answers its first ``errors[n]`` messages
    with an error reply of reason ``reasons[n]`` (as Flower's Ray backend
    reports a failed ClientApp), the later ones normally."""

    def __init__(self, errors: dict[int, int], reasons: dict[int, str]) -> None:
        self.errors, self.reasons = dict(errors), reasons
        self.pushes: list[int] = []
        self.queued: dict[str, int] = {}

    def push_messages(self, messages: list[NS]) -> list[str]:
        ids = []
        for msg in messages:
            mid = f"m{len(self.pushes)}"
            self.pushes.append(msg.metadata.dst_node_id)
            self.queued[mid] = msg.metadata.dst_node_id
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: set[str]) -> list[NS]:
        out = []
        for mid in sorted(message_ids):
            node = self.queued.pop(mid)
            failing = self.errors.get(node, 0) > 0
            self.errors[node] = self.errors.get(node, 0) - 1
            out.append(
                NS(
                    metadata=NS(reply_to_message_id=mid, src_node_id=node),
                    has_error=lambda failing=failing: failing,
                    error=NS(reason=self.reasons.get(node, "")),
                )
            )
        return out


UNAVAILABLE = (
    "<class 'ray.exceptions.ActorUnavailableError'>:<'The actor 36 is unavailable: "
    "The actor is temporarily unavailable: IOError: The actor is restarting.'>"
)


def test_a_client_whose_actor_was_restarting_is_sent_the_round_again() -> None:
    # Node 2's actor was restarting (another client's actor had died): its
    # client never ran, so it gets the message again and trains. Node 3's
    # ClientApp raised: a real failure, not sent again.
    owner = {1: 0, 2: 1, 3: 2}
    grid = FlakyGrid({2: 1, 3: 1}, {2: UNAVAILABLE, 3: "ValueError: boom"})
    good, failures = collect_replies(
        grid, messages([1, 2, 3]), owner, timeout=1.0, poll_s=0.01, fresh=lambda m: m
    )
    assert [r.metadata.src_node_id for r in good] == [1, 2]
    assert failures == {"2": "ValueError: boom"}
    assert grid.pushes == [1, 2, 3, 2]  # node 2 twice, node 3 once
    # Once only: an actor still unavailable on the resend is a failure.
    grid = FlakyGrid({2: 5}, {2: UNAVAILABLE})
    good, failures = collect_replies(
        grid, messages([1, 2]), owner, timeout=1.0, poll_s=0.01, fresh=lambda m: m
    )
    assert [r.metadata.src_node_id for r in good] == [1]
    assert failures == {"1": UNAVAILABLE} and grid.pushes == [1, 2, 2]


def test_the_resent_message_carries_the_same_round_to_the_same_node() -> None:
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    from fedlight.server import resend

    TaskIdentity.task_id, TaskIdentity.run_id = 1, 1  # as inside a Flower run
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    content = RecordDict({"config": ConfigRecord({"server-round": 3})})
    msg = Message(content, dst_node_id=7, message_type=MessageType.TRAIN)
    again = resend(msg)
    assert again.metadata.dst_node_id == 7
    assert again.metadata.message_type == MessageType.TRAIN
    assert again.content["config"]["server-round"] == 3


def claims(by_node: dict[int, int]) -> list[NS]:
    """Discovery replies: each node announces the partition it claims."""
    return [
        NS(
            metadata=NS(src_node_id=node),
            has_error=lambda: False,
            content={"info": {"partition-id": pid}},
        )
        for node, pid in by_node.items()
    ]


def test_discovery_maps_each_partition_to_the_node_that_claimed_it() -> None:
    assert partition_owners(claims({501: 1, 502: 0, 503: 2})) == {
        0: 502,
        1: 501,
        2: 503,
    }


def test_two_nodes_claiming_one_partition_stop_the_run() -> None:
    # node 503 claims node 501's partition: it must not silently take its slot
    with pytest.raises(RuntimeError, match="partition 1 is claimed by nodes 501 and"):
        partition_owners(claims({501: 1, 502: 0, 503: 1}))
