"""The study report, built offline: its spec validates as a W&B report and its
panels name the keys that runs log."""

from __future__ import annotations

import json

from tracking_sample import record

from fedlight.tracking.rows import round_row
from fedlight.wandb_report import (
    COMPARISON_COLUMNS,
    SETTING_KEYS,
    build_report,
    main,
    report_spec,
)


def panels(spec: dict) -> list[dict]:
    return [
        panel
        for block in spec["spec"]["blocks"]
        if block["type"] == "panel-grid"
        for panel in block["metadata"]["panelBankSectionConfig"]["panels"]
    ]


def run_sets(spec: dict) -> list[dict]:
    return [
        rs
        for block in spec["spec"]["blocks"]
        if block["type"] == "panel-grid"
        for rs in block["metadata"]["runSets"]
    ]


def validate(spec: dict):
    """Parse ``spec`` the way wandb_workspaces reads a saved report back."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces.reports.v2 import internal

    model = internal.ReportViewspec.model_validate(spec)
    return wr.Report._from_model(model)


def test_the_spec_validates_and_round_trips():
    spec = report_spec(build_report("study-1", "fedlight", "me"))
    report = validate(json.loads(json.dumps(spec)))
    assert report.title == "fedlight study study-1"
    assert (report.project, report.entity) == ("fedlight", "me")
    assert [b.text for b in report.blocks if type(b).__name__ == "H2"] == [
        "Clean accuracy and attack success rate",
        "Detection",
        "Time per round",
        "Comparison",
    ]


def test_every_run_set_selects_the_group_in_the_reports_project():
    spec = report_spec(build_report("study-1", "fedlight", "me"))
    for rs in run_sets(spec):
        (leaf,) = rs["filters"]["filters"]
        assert leaf["key"] == {"section": "run", "name": "group"}
        assert (leaf["op"], leaf["value"]) == ("=", "study-1")
        assert rs["project"] == {"name": "fedlight", "entityName": "me"}
    grouped = [rs for rs in run_sets(spec) if rs["grouping"]]
    assert len(grouped) == 3  # the curve grids: per dataset, attack and defence
    names = [key["name"] for key in grouped[0]["grouping"]]
    # The registered plug-in names, as the runs' configs hold them.
    assert names == ["dataset.value.name", "attack.value.name",
                     "defense.value.name"]  # fmt: skip


def test_the_panels_plot_keys_a_round_row_has():
    spec = report_spec(build_report("s", "fedlight", "me"))
    lines = [p for p in panels(spec) if p["viewType"] == "Run History Line Plot"]
    plotted = {m for p in lines for m in p["config"]["metrics"]}
    assert {"accuracy", "asr", "detection/precision", "detection/recall",
            "detection/fpr"} <= plotted  # fmt: skip
    assert plotted <= set(round_row(record()))
    assert {p["config"]["xAxis"] for p in lines} == {"round"}
    kinds = {p["viewType"] for p in panels(spec)}
    assert {"Run Comparer", "Weave"} <= kinds


def test_offline_the_command_writes_the_spec_and_says_so(tmp_path, capsys):
    out = tmp_path / "report.json"
    code = main(["--group", "g7", "--mode", "offline", "--entity", "me",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    said = capsys.readouterr().out
    assert "not uploaded" in said and str(out) in said
    spec = json.loads(out.read_text())
    assert validate(spec).title == "fedlight study g7"
    columns = run_sets(spec)[-1]["runFeed"]["columnOrder"]
    assert columns == list(COMPARISON_COLUMNS)
    assert len(SETTING_KEYS) == 3
