"""Detection metrics of one round, as the literature defines them: precision,
recall and false-positive rate of the flagged clients against the malicious ones
among the round's participants, and the attackers' share of the aggregate.

Torch-free, so that the report recounts them without loading a model stack.
"""

from __future__ import annotations

from collections.abc import Iterable

from fedlight.record import attacker_share


def attacking(malicious: list[str], attacks: bool) -> tuple[list[str], set[str]]:
    """(the clients whose update this round is malicious, the malicious clients
    that send an honest update this round). ``attacks``: whether the round is in
    the attackers' schedule (``attack.rounds``). Outside it a scheduled attacker
    trains and reports as a benign client, so the detection metrics and
    ``attacker_weight`` count it neither as malicious nor as benign."""
    return (list(malicious), set()) if attacks else ([], set(malicious))


def round_detection(
    excluded: Iterable[str],
    malicious: list[str],
    participants: list[str],
    weights: dict[str, float] | None,
    *,
    attacks: bool,
    scored: bool,
) -> dict[str, float | None]:
    """One round's ``precision``, ``recall``, ``fpr`` and ``attacker_weight``, a
    scheduled attacker counted only in the rounds it attacks (:func:`attacking`).

    The one rule the server, the reference loop and the report's recount share.
    ``excluded``: flagged or rejected clients; ``scored``: whether the defence
    judged anyone (else the detection metrics are None).
    """
    attackers, honest = attacking(malicious, attacks)
    if scored:
        detection = detection_metrics(sorted(excluded), attackers, participants, honest)
    else:
        detection = {"precision": None, "recall": None, "fpr": None}
    share = attacker_share(weights, attackers) if weights else None
    return {**detection, "attacker_weight": share}


def detection_metrics(
    flagged: list[str],
    malicious: list[str],
    participants: list[str],
    honest: set[str] | frozenset[str] = frozenset(),
) -> dict[str, float | None]:
    """Precision, recall and false-positive rate of one round's flags.

    Only participants count, and of them not ``honest`` (malicious clients
    outside their schedule, :func:`attacking`). Precision is None when nothing
    was flagged, recall None when no malicious client took part, FPR None when
    no benign one did.
    """
    part = set(participants) - set(honest)
    flagged_set = set(flagged) & part
    bad = set(malicious) & part
    good = part - bad
    true_pos = len(flagged_set & bad)
    return {
        "precision": true_pos / len(flagged_set) if flagged_set else None,
        "recall": true_pos / len(bad) if bad else None,
        "fpr": len(flagged_set & good) / len(good) if good else None,
    }
