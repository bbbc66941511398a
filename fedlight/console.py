"""What a run prints: a FedDefender block per round, a progress bar over the
rounds on a terminal, and a summary table."""

from __future__ import annotations

import atexit
import logging
import sys
from typing import Any

from fedlight.record import RoundRecord

log = logging.getLogger("fedlight")


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def log_round(
    record: RoundRecord,
    malicious: list[str],
    num_inputs: int | None,
    defense: str = "FedDefender",
) -> None:
    """Log one round like the seed README's FedDefender output, then the metrics.

    The block appears for every defence that scores clients, under its own name.
    """
    r = record.round
    if record.malicious_confidence is not None:
        predicted = {
            cid: round(c, 3)
            for cid, c in sorted(
                record.malicious_confidence.items(), key=lambda kv: -kv[1]
            )
            if c > 0
        }
        log.info("***%s Output Round %d ***", defense, r)
        log.info("True Malicious Clients (Ground Truth) = %s", malicious)
        if num_inputs is not None:
            log.info("Total Random Inputs = %s", num_inputs)
        log.info("Predicted Malicious Clients = %s", predicted)
        log.info("Flagged (excluded) = %s", record.flagged)
        log.info("Localisation accuracy (recall) = %s", _fmt(record.recall, ".0%"))
    failures = f", {len(record.failures)} failed" if record.failures else ""
    log.info(
        "[round %d] accuracy %s  loss %s  ASR %s  precision %s  recall %s  (%.1f s%s)",
        r,
        _fmt(record.accuracy),
        _fmt(record.loss),
        _fmt(record.asr),
        _fmt(record.precision, ".2f"),
        _fmt(record.recall, ".2f"),
        record.seconds,
        failures,
    )


def summary_table(rounds: list[RoundRecord]) -> str:
    """A fixed-width table of every round, printed at the end of a run."""
    header = (
        f"{'round':>5} {'accuracy':>9} {'ASR':>7} {'prec':>5} {'recall':>6} "
        f"{'sec':>6}  flagged"
    )
    lines = ["[SUMMARY]", header, "-" * len(header)]
    for r in rounds:
        flagged = "-" if r.flagged is None else ",".join(r.flagged) or "none"
        lines.append(
            f"{r.round:>5} {_fmt(r.accuracy):>9} {_fmt(r.asr):>7} "
            f"{_fmt(r.precision, '.2f'):>5} {_fmt(r.recall, '.2f'):>6} "
            f"{r.seconds:>6.1f}  {flagged}"
        )
    return "\n".join(lines)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def round_status(record: RoundRecord) -> str:
    """One line on a finished round: accuracy, ASR and the flagged clients."""
    flagged = record.flagged
    who = "-" if flagged is None else ",".join(flagged) or "none"
    return f"accuracy {_fmt(record.accuracy)}  ASR {_fmt(record.asr)}  flagged {who}"


class RoundProgress:
    """A live bar over the rounds, with the last round's :func:`round_status`.

    Only on a terminal: in CI or a log file the per-round log lines say the same,
    so it does nothing there. While the bar is live, log lines that would go to
    the terminal are printed above it instead of through it. It stops by itself
    after the last round, or at exit if a run fails first.
    """

    def __init__(
        self, total: int, enabled: bool | None = None, console: Any = None
    ) -> None:
        from rich.console import Console

        self.total = total
        self.console = console or Console(stderr=True)
        self.enabled = self.console.is_terminal if enabled is None else enabled
        self._progress: Any = None
        self._swapped: list[tuple[logging.StreamHandler, Any]] = []

    def start(self) -> None:
        """Show the bar (round 0 of ``total``) until :meth:`stop`."""
        if not self.enabled or self._progress is not None:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("round"),
            MofNCompleteColumn(),
            BarColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            # print() goes above the bar too, unless it goes to a file
            redirect_stdout=_is_terminal(sys.stdout),
            redirect_stderr=_is_terminal(sys.stderr),
        )
        self._task = self._progress.add_task("rounds", total=self.total, status="")
        self._progress.start()
        self._route_logs()
        atexit.register(self.stop)

    def _route_logs(self) -> None:
        """Point the log handlers that write to a terminal at the bar's console, so
        their lines print above the bar (a handler writing to a file keeps it)."""
        from rich.file_proxy import FileProxy

        for handler in logging.getLogger().handlers:
            stream = getattr(handler, "stream", None)
            if type(handler) is logging.StreamHandler and _is_terminal(stream):
                old = handler.setStream(FileProxy(self.console, handler.stream))
                self._swapped.append((handler, old))

    def update(self, record: RoundRecord) -> None:
        """Count a finished round and show its status; stop after the last one."""
        if self._progress is None:
            return
        # completed = the round number, so a resumed run counts from where it was
        self._progress.update(
            self._task, completed=record.round, status=round_status(record)
        )
        if record.round >= self.total:
            self.stop()

    def stop(self) -> None:
        """Take the bar down and give the log handlers their streams back."""
        if self._progress is None:
            return
        for handler, stream in self._swapped:
            handler.flush()
            handler.setStream(stream)
        self._swapped.clear()
        self._progress.stop()
        self._progress = None
        atexit.unregister(self.stop)
