"""``python -m fedlight.tracking.dump RUN_DIR``: what a W&B run logged, as JSON.

wandb 0.31 has no public reader for a run's ``.wandb`` file and ``wandb.Api()``
needs W&B's servers, so this reads the file itself (framing in
:mod:`fedlight.tracking.records`) and replays its records: the run's identity
and config, one history row per step, the final summary, the artifacts, and the
tables the run logged (read from the run's ``files/``). It works on offline and
online runs alike, finished or not.

``RUN_DIR`` may be an experiment's output folder (the latest run under its
``wandb/`` is read), a W&B run folder, or a ``.wandb`` file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedlight.tracking.records import RecordFileError, read_records

_INTERNAL_KEYS = ("_wandb", "_runtime", "_timestamp")


def find_run_file(path: str | Path) -> Path:
    """The ``.wandb`` file behind ``path`` (see the module docstring)."""
    path = Path(path)
    if path.is_file():
        return path
    candidates = sorted(path.glob("run-*.wandb"))
    latest = path / "wandb" / "latest-run"  # wandb's own pointer to its last run
    if not candidates and latest.is_dir():
        candidates = sorted(latest.resolve().glob("run-*.wandb"))
    if not candidates:
        # folders are [offline-]run-<date>_<time>-<id>: latest start last
        candidates = sorted(
            path.glob("wandb/*run-*/run-*.wandb"),
            key=lambda p: p.parent.name.rsplit("run-", 1)[-1],
        )
    if not candidates:
        raise FileNotFoundError(f"no W&B run (run-*.wandb) under {path}")
    return candidates[-1]


def _value(item: Any) -> Any:
    """The Python value of a history, summary or config item."""
    if item.value_json:
        return json.loads(item.value_json)
    typed = "value" in item.DESCRIPTOR.oneofs_by_name  # history items only
    kind = item.WhichOneof("value") if typed else None
    if kind in (None, "none"):
        return None
    if kind == "json":
        return json.loads(item.json)
    return getattr(item, kind)


def _path(item: Any) -> list[str]:
    return [item.key] if item.key else list(item.nested_key)


def _set(target: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def _remove(target: dict[str, Any], path: list[str]) -> None:
    for part in path[:-1]:
        target = target.get(part, {})
    target.pop(path[-1], None)


def _apply(target: dict[str, Any], update: Any) -> None:
    """Apply a config or summary record's updates and removals to ``target``."""
    for item in update.update:
        _set(target, _path(item), _value(item))
    for item in update.remove:
        _remove(target, _path(item))


def _public(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in _INTERNAL_KEYS}


def _table(run_dir: Path, value: Any) -> dict[str, Any] | None:
    """The columns and data of a logged ``wandb.Table``, from the run's files."""
    if not (isinstance(value, dict) and value.get("_type") == "table-file"):
        return None
    path = run_dir / "files" / value["path"]
    if not path.is_file():
        return None
    table = json.loads(path.read_text())
    return {"columns": table["columns"], "data": table["data"]}


def load_run(path: str | Path) -> dict[str, Any]:
    """Replay the ``.wandb`` file behind ``path`` into plain JSON-able data."""
    file = find_run_file(path)
    run: dict[str, Any] = {}
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    rows: dict[int, dict[str, Any]] = {}
    artifacts: list[dict[str, Any]] = []
    exit_code: int | None = None
    for record in read_records(file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run = {
                "id": r.run_id,
                "project": r.project,
                "entity": r.entity,
                "group": r.run_group,
                "name": r.display_name,
                "job_type": r.job_type,
                "tags": list(r.tags),
            }
            _apply(config, r.config)
        elif kind == "config":
            _apply(config, record.config)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set(row, _path(item), _value(item))
            step = row.get("_step", record.history.step.num)
            rows.setdefault(step, {"_step": step}).update(_public(row))
        elif kind == "summary":
            _apply(summary, record.summary)
        elif kind == "artifact":
            a = record.artifact
            artifacts.append(
                {
                    "name": a.name,
                    "type": a.type,
                    "files": [e.path for e in a.manifest.contents],
                }
            )
        elif kind == "exit":
            exit_code = record.exit.exit_code
    history = [dict(sorted(rows[step].items())) for step in sorted(rows)]
    tables = {
        key: table
        for row in history
        for key, value in row.items()
        if (table := _table(file.parent, value)) is not None
    }
    return {
        "file": str(file),
        "run": run,
        "config": _public(config),
        "history": history,
        "summary": dict(sorted(_public(summary).items())),
        "artifacts": artifacts,
        "tables": tables,
        "finished": exit_code is not None,
        "exit_code": exit_code,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fedlight.tracking.dump",
        description="Print a W&B run's history rows, summary and more as JSON, "
        "read from its .wandb file (offline or online runs, no W&B server).",
    )
    parser.add_argument("run_dir", help="experiment folder, W&B run folder or .wandb")
    parser.add_argument(
        "--part",
        choices=("all", "history", "summary", "config", "tables"),
        default="all",
        help="print only this part",
    )
    args = parser.parse_args(argv)
    try:
        dumped = load_run(args.run_dir)
    except (FileNotFoundError, RecordFileError) as err:
        print(f"fedlight.tracking.dump: error: {err}", file=sys.stderr)
        return 2
    out = dumped if args.part == "all" else dumped[args.part]
    try:
        print(json.dumps(out, indent=2))
    except BrokenPipeError:  # `| head`: the reader has seen enough
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
