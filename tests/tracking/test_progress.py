"""The console over rounds: the live bar on a terminal, log lines above it, and
the FedDefender block still printed every round."""

from __future__ import annotations

import io
import logging

from rich.console import Console
from tracking_sample import record

from fedlight.console import RoundProgress, log_round, round_status


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_the_bar_does_nothing():
    progress = RoundProgress(3, console=Console(file=io.StringIO()))
    assert not progress.enabled
    progress.start()
    progress.update(record(1))
    progress.stop()


def test_the_bar_counts_rounds_and_logs_print_above_it():
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160)
    terminal, logfile = Terminal(), io.StringIO()
    to_terminal = logging.StreamHandler(terminal)
    to_file = logging.StreamHandler(logfile)
    root = logging.getLogger()
    root.addHandler(to_terminal)
    root.addHandler(to_file)
    try:
        progress = RoundProgress(2, console=console)
        assert progress.enabled
        progress.start()
        assert to_terminal.stream is not terminal and to_file.stream is logfile
        logging.getLogger("fedlight.test").warning("a line above the bar")
        progress.update(record(1))
        progress.update(record(2, flagged=[], asr=None))  # the last: it stops
        assert to_terminal.stream is terminal
    finally:
        root.removeHandler(to_terminal)
        root.removeHandler(to_file)
    shown = screen.getvalue()
    assert (
        "a line above the bar" in shown and "a line above the bar" in logfile.getvalue()
    )
    assert "2/2" in shown and "accuracy 0.900  ASR -  flagged none" in shown
    assert terminal.getvalue() == ""


def test_round_status_names_the_flagged_clients():
    assert round_status(record()) == "accuracy 0.900  ASR 0.050  flagged 0"
    assert round_status(record(flagged=None)).endswith("flagged -")


def test_the_feddefender_block_still_prints_every_round(caplog):
    with caplog.at_level(logging.INFO, logger="fedlight"):
        log_round(record(3), malicious=["0"], num_inputs=10)
    assert "***FedDefender Output Round 3 ***" in caplog.text
    assert "Flagged (excluded) = ['0']" in caplog.text
    assert "[round 3] accuracy 0.900" in caplog.text
