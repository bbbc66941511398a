"""``python -m fedlight.wandb_report --group G``: a W&B Report for one study.

A study is the runs of one W&B group (the runs of one Hydra multirun share
one). The report holds clean accuracy and ASR per round, the detection metrics
per round, the time split, and a comparison of the runs: their final metrics
side by side, the defender's per-client confidence table and a run comparer.
Curves are grouped by dataset, attack and defence, so each defence is one line
per setting.

Online (an API key, W&B reachable) the report is saved and its URL printed.
Offline, or when saving fails, the report's spec (the JSON W&B stores for a
report) is written to a file instead and the command says it was not uploaded;
``Report`` validation runs either way, so a bad panel fails before any upload.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from fedlight.tracking import resolve_mode

# Runs are grouped by these config keys (nested Hydra config, as logged).
SETTING_KEYS = ("dataset.name", "attack.name", "defense.name")

ROUND_PANELS = (
    ("Clean accuracy per round", ["accuracy"]),
    ("Attack success rate per round", ["asr"]),
)
DETECTION_PANELS = (
    ("Detection precision", ["detection/precision"]),
    ("Detection recall", ["detection/recall"]),
    ("Detection false-positive rate", ["detection/fpr"]),
    ("Clients flagged per round", ["detection/num_flagged"]),
)
COMPARISON_COLUMNS = (
    *(f"config:{k.split('.', 1)[0]}.value.{k.split('.', 1)[1]}" for k in SETTING_KEYS),
    "config:num_clients.value",
    "config:num_rounds.value",
    "summary:final/accuracy",
    "summary:final/asr",
    "summary:final/precision",
    "summary:final/recall",
    "summary:final/fpr",
    "summary:seconds",
)


def _runset(wr: Any, group: str, grouped: bool, name: str) -> Any:
    return wr.Runset(
        name=name,
        filters=f"Group = '{group}'",
        groupby=[f"config.{k}" for k in SETTING_KEYS] if grouped else [],
        visible_columns=list(COMPARISON_COLUMNS),
    )


def _line(wr: Any, title: str, y: list[str], **kwargs: Any) -> Any:
    return wr.LinePlot(
        title=title,
        x="round",
        y=y,
        title_x="round",
        groupby_aggfunc="mean",
        groupby_rangefunc="minmax",
        **kwargs,
    )


def build_report(
    group: str, project: str, entity: str = "", title: str | None = None
) -> Any:
    """The study's report as a ``wandb_workspaces`` Report (not saved).

    Its run sets name no project: W&B resolves a project's id only online, so
    :func:`report_spec` and :func:`save_report` fill it in.
    """
    import wandb_workspaces.reports.v2 as wr

    grid_w = 12

    def curves() -> Any:
        return _runset(wr, group, grouped=True, name=f"{group} by setting")

    return wr.Report(
        project=project,
        entity=entity,
        title=title or f"fedlight study {group}",
        description=(
            f"Runs of W&B group {group}: clean accuracy, attack success rate and "
            "the defender's detection per round, grouped by dataset, attack and "
            "defence; then every run side by side."
        ),
        width="fluid",
        blocks=[
            wr.H2(text="Clean accuracy and attack success rate"),
            wr.PanelGrid(
                runsets=[curves()],
                panels=[
                    _line(wr, t, y, range_y=(0, 1), layout=wr.Layout(w=grid_w, h=8))
                    for t, y in ROUND_PANELS
                ],
            ),
            wr.H2(text="Detection"),
            wr.MarkdownBlock(
                text="Flagged (excluded) clients against the attackers taking part "
                "in each round. Precision is empty when nothing was flagged."
            ),
            wr.PanelGrid(
                runsets=[curves()],
                panels=[
                    _line(wr, t, y, layout=wr.Layout(w=grid_w, h=7))
                    for t, y in DETECTION_PANELS
                ],
            ),
            wr.H2(text="Time per round"),
            wr.PanelGrid(
                runsets=[curves()],
                panels=[
                    _line(
                        wr,
                        "Training, defence and evaluation (s)",
                        ["time/train", "time/defense", "time/eval"],
                        plot_type="stacked-area",
                        layout=wr.Layout(w=24, h=7),
                    )
                ],
            ),
            wr.H2(text="Comparison"),
            wr.PanelGrid(
                runsets=[_runset(wr, group, grouped=False, name=group)],
                panels=[
                    wr.RunComparer(diff_only="split", layout=wr.Layout(w=24, h=10)),
                    wr.WeavePanelSummaryTable(
                        table_name="confidence_table", layout=wr.Layout(w=24, h=12)
                    ),
                ],
            ),
        ],
    )


def report_spec(report: Any) -> dict[str, Any]:
    """The JSON W&B stores for ``report``; run sets point at the report's project
    by name (online, W&B adds the project's id)."""
    from wandb_workspaces.reports.v2 import internal

    model = report._to_model()
    for block in model.spec.blocks:
        if isinstance(block, internal.PanelGrid):
            for runset in block.metadata.run_sets:
                runset.project = internal.Project(
                    name=report.project, entity_name=report.entity
                )
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def save_report(report: Any) -> str:
    """Save ``report`` to W&B (needs W&B reachable) and return its URL."""
    for block in report.blocks:
        for runset in getattr(block, "runsets", []):
            runset.entity, runset.project = report.entity, report.project
    report.save()
    return report.url


def write_spec(report: Any, path: Path) -> Path:
    """Write the report's spec as JSON to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report_spec(report), indent=2))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fedlight.wandb_report",
        description="Build a W&B Report for the runs of one W&B group.",
    )
    parser.add_argument("--group", required=True, help="the W&B group of the study")
    parser.add_argument(
        "--project", default=os.environ.get("WANDB_PROJECT", "fedlight")
    )
    parser.add_argument("--entity", default=os.environ.get("WANDB_ENTITY"))
    parser.add_argument("--title", default=None)
    parser.add_argument(
        "--mode",
        choices=("online", "offline"),
        default=None,
        help="online saves the report; offline writes its spec (default: online "
        "with an API key, else offline; WANDB_MODE applies)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where the offline spec goes"
    )
    args = parser.parse_args(argv)
    mode = resolve_mode(args.mode)
    entity = args.entity
    if mode == "online" and not entity:
        try:
            import wandb

            entity = wandb.Api().default_entity
        except Exception as err:  # any failure: offline
            print(f"W&B unreachable ({err}); writing the spec instead", file=sys.stderr)
            mode = "offline"
    report = build_report(args.group, args.project, entity or "", args.title)
    if mode == "online":
        try:
            print(f"Saved report: {save_report(report)}")
            return 0
        except Exception as err:  # fall back to the spec
            print(f"could not save the report ({err})", file=sys.stderr)
    out = args.out or Path(f"wandb-report-{args.group}.json")
    write_spec(report, out)
    print(
        f"Report spec written to {out}; not uploaded (offline). Rerun with an API "
        "key after `wandb sync` to save it."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
