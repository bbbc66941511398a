"""The W&B run of one experiment, owned by the driver.

Clients never open W&B runs: their metrics reach the driver in Flower replies
and are logged here with the server's own, one row per round. W&B trouble never
stops an experiment: an online run that cannot reach W&B at the start logs
offline instead, a call that fails later is reported once and tracking stops,
and ``results.json`` holds every metric either way. While W&B is unreachable
mid-run, wandb keeps writing the run's local ``.wandb`` file, and ``finish``
waits at most ``WANDB_FINISH_TIMEOUT`` (default below) before leaving the rest
to ``wandb sync``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedlight.record import RoundRecord
from fedlight.tracking.mode import resolve_mode
from fedlight.tracking.rows import (
    CONFIDENCE_COLUMNS,
    confidence_rows,
    round_row,
    run_summary,
)

log = logging.getLogger("fedlight")

INIT_TIMEOUT_S = 30.0
FINISH_TIMEOUT_S = 60.0


def _teardown() -> None:
    import wandb

    wandb.teardown()


def _env_or(name: str, value: Any) -> Any:
    """``value`` unless it is None, then the ``WANDB_*`` variable ``name``."""
    return os.environ.get(name) if value is None else value


class Tracker:
    """One W&B run: the config at start, a row per round, the results at the end.

    Every method is a no-op when the mode is ``disabled`` or after W&B failed.
    ``project``, ``entity``, ``group`` and ``name`` left None defer to
    ``WANDB_PROJECT``, ``WANDB_ENTITY``, ``WANDB_RUN_GROUP`` and ``WANDB_NAME``;
    ``WANDB_TAGS`` adds to ``tags``; ``WANDB_DIR`` replaces ``out_dir``.
    """

    def __init__(
        self,
        config: dict[str, Any],
        out_dir: Path,
        mode: str | None,
        project: str | None = "fedlight",
        entity: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        name: str | None = None,
    ) -> None:
        self.mode = resolve_mode(mode)
        self.run: Any = None
        if self.mode == "disabled":
            return
        env_tags = [t for t in os.environ.get("WANDB_TAGS", "").split(",") if t]
        self._init_args = {
            "project": _env_or("WANDB_PROJECT", project),
            "entity": _env_or("WANDB_ENTITY", entity),
            "group": _env_or("WANDB_RUN_GROUP", group),
            "name": _env_or("WANDB_NAME", name),
            "tags": list(dict.fromkeys([*(tags or []), *env_tags])) or None,
            "config": config,
            "dir": os.environ.get("WANDB_DIR") or str(out_dir),
        }
        Path(self._init_args["dir"]).mkdir(parents=True, exist_ok=True)
        try:
            self.run = self._init(self.mode)
        except Exception as err:  # W&B must never stop a run
            if self.mode != "online":
                log.warning("W&B: could not start a %s run (%s)", self.mode, err)
                return
            log.warning("W&B unreachable (%s); logging offline instead", err)
            self.mode = "offline"
            self._guard("start an offline run", self._start_offline)

    def _start_offline(self) -> None:
        self.run = self._init("offline")

    def _init(self, mode: str) -> Any:
        import wandb

        settings: dict[str, Any] = {"silent": True, "console": "off"}
        if "WANDB_INIT_TIMEOUT" not in os.environ:
            settings["init_timeout"] = INIT_TIMEOUT_S
        if "WANDB_FINISH_TIMEOUT" not in os.environ:
            settings["finish_timeout"] = FINISH_TIMEOUT_S
        run = wandb.init(
            **self._init_args,
            mode=mode,
            reinit="finish_previous",
            settings=wandb.Settings(**settings),
        )
        run.define_metric("round")
        run.define_metric("*", step_metric="round")
        return run

    def _guard(self, what: str, action: Callable[[], Any], stop: bool = True) -> bool:
        """Run ``action``; on any error say so, and with ``stop`` stop tracking.

        Returns whether it worked.
        """
        try:
            action()
            return True
        except Exception as err:  # W&B must never stop a run
            log.warning(
                "W&B: could not %s (%s)%s",
                what,
                err,
                "; tracking stops, results.json has every metric" if stop else "",
            )
            if stop:
                self.run = None
            return False

    @property
    def run_dir(self) -> Path | None:
        """The W&B run's folder (``.../wandb/<offline->run-<date>-<id>``), if any."""
        if self.run is None:
            return None
        return Path(self.run.dir).parent

    def log_round(self, record: RoundRecord) -> None:
        """Log one round record (see :func:`fedlight.tracking.rows.round_row`)."""
        if self.run is not None:
            run = self.run
            self._guard(
                f"log round {record.round}",
                lambda: run.log(round_row(record), step=record.round),
            )

    def finish(
        self, results: dict[str, Any], results_path: Path, images: list[Path]
    ) -> None:
        """Log the summary, ``results.json`` as an artifact, the plots and the
        per-client confidence table, then close the run."""
        run, run_dir = self.run, self.run_dir
        if run is None:
            return
        # the summary is local; the rest may need W&B's API when online, and
        # each call waits ~20 s for it when W&B is gone: the first failure ends them
        self._guard("log the summary", lambda: self._log_summary(results), stop=False)
        parts: list[tuple[str, Callable[[], None]]] = [
            ("log the plots", lambda: self._log_plots(results, images)),
            ("save results.json", lambda: self._log_artifact(results_path)),
            ("log the confidence table", lambda: self._log_table(results)),
        ]
        for what, action in parts:
            if not self._guard(what, action, stop=False):
                break
        self._guard("finish the run", run.finish)
        # wandb-core writes the run's file in the background: stopping it makes the
        # file complete now, for the dump reader or `wandb sync` (the next run
        # starts it again in about a second)
        self._guard("close W&B", _teardown)
        self.run = None
        if self.mode == "online":
            log.info("W&B run: %s (local copy in %s)", run.url, run_dir)
        else:
            log.info(
                "W&B run (offline) in %s; upload it with `wandb sync %s`",
                run_dir,
                run_dir,
            )

    def _log_summary(self, results: dict[str, Any]) -> None:
        self.run.summary.update(run_summary(results))

    def _log_plots(self, results: dict[str, Any], images: list[Path]) -> None:
        import wandb

        plots = {f"plots/{p.stem}": wandb.Image(str(p)) for p in images if p.exists()}
        if plots:
            self.run.log(plots, step=results["rounds"][-1]["round"])

    def _log_table(self, results: dict[str, Any]) -> None:
        import wandb

        rounds = [RoundRecord.from_dict(r) for r in results["rounds"]]
        rows = confidence_rows(rounds, results["malicious_clients"])
        if rows:
            table = wandb.Table(columns=CONFIDENCE_COLUMNS, data=rows)
            self.run.log(
                {"confidence_table": table}, step=results["rounds"][-1]["round"]
            )

    def _log_artifact(self, results_path: Path) -> None:
        import wandb

        artifact = wandb.Artifact(
            f"results-{self.run.id}",
            type="results",
            description="fedlight's results.json: every round's metrics",
        )
        # immutable: the file is final, so wandb references it instead of copying
        artifact.add_file(str(results_path), name="results.json", policy="immutable")
        self.run.log_artifact(artifact)
