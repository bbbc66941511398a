"""``python -m fedlight.report``: fake run directories with known numbers in, the
table, CSV and plots out; an interrupted sweep still reports what finished."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from fedlight.defenses import DEFENSES
from fedlight.detection import attacking
from fedlight.record import RoundRecord
from fedlight.report import (
    defense_label,
    find_runs,
    line_styles,
    main,
    mean_curve,
    parse_floor,
    parse_target,
    plot_panels,
    plot_rows,
    recount,
    report,
    row_styles,
)


def fake_run(
    root: Path,
    job: str,
    *,
    defense: str,
    seed: int,
    accuracy: list[float],
    asr: list[float | None],
    fpr: list[float | None] | None = None,
    name: str = "mnist_20",
    attack: str = "backdoor",
    max_train_samples: int | None = None,
    held: int | None = None,
    finished: bool = True,
    attacker_weight: list[float | None] | None = None,
    defense_params: dict | None = None,
    max_attackers: int = 1,
    legacy: bool = False,
    commit: str | None = None,
    partition: dict | None = None,
    attack_params: dict | None = None,
    attackers: int | None = None,
    precision: list[float | None] | None = None,
    recall: list[float | None] | None = None,
) -> Path:
    """A run directory as ``fedlight.run -m`` leaves it (without the plots).

    The config names its plug-ins (``defense.name``) and ``results.json`` holds a
    :class:`RoundRecord` per round; ``legacy`` writes a run of fedlight before
    the registry instead: ``_target_`` nodes, the options only in Hydra's record.
    """
    run = root / job
    (run / ".hydra").mkdir(parents=True)
    # the experiment's dataset and clients (mnist_30: MNIST, 30), so that the
    # report sees no task key overridden
    clients = int(name.split("_")[1])
    config = {
        "name": name,
        "seed": seed,
        "num_clients": clients,
        "dataset": {
            "name": name.split("_")[0],
            "max_train_samples": max_train_samples,
        },
        "attack": {"name": attack, "scale": 1, **(attack_params or {})},
        "defense": {"name": defense, **(defense_params or {})},
        "server": {"max_attackers": max_attackers},
    }
    if partition is not None:
        config["partition"] = partition
    if legacy:
        config["attack"] = {"_target_": "fedlight.attacks.Backdoor", "scale": 1}
        config["defense"] = {"_target_": "fedlight.defenses.Krum"}
        del config["server"]
        choices = {"attack": attack, "defense": defense, "dataset": "mnist"}
        (run / ".hydra" / "hydra.yaml").write_text(
            yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}})
        )
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    if finished:
        fpr = fpr or [None] * len(accuracy)
        weights = attacker_weight or [None] * len(accuracy)
        precisions = precision or [None] * len(accuracy)
        # recall 1 where the FPR is defined unless given (None: no attacker)
        recalls = recall or [None if f is None else 1.0 for f in fpr]
        rounds = [
            RoundRecord(
                round=i + 1,
                accuracy=a,
                loss=1.0 - a,
                asr=s,
                recall=r,
                fpr=f,
                weights=None if w is None else {"0": w, "1": 1.0 - w},
                attacker_weight=w,
                precision=p,
            )
            for i, (a, s, f, w, p, r) in enumerate(
                zip(accuracy, asr, fpr, weights, precisions, recalls, strict=True)
            )
        ]
        if held is not None:  # the clients hold `held` images between them
            share = {"train-examples": held / clients, "num-examples": held / clients}
            for r in rounds:
                r.participants = [str(c) for c in range(clients)]
                r.clients = dict.fromkeys(r.participants, share)
        results = {"rounds": [r.to_dict() for r in rounds], "seconds": 10.0 + seed}
        if attackers is not None:
            results["malicious_clients"] = [str(c) for c in range(attackers)]
        if commit:
            results["code"] = {"commit": commit, "dirty": False}
        (run / "results.json").write_text(json.dumps(results))
    return run


@pytest.fixture
def study(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    fake_run(root, "0", defense="none", seed=0, accuracy=[0.5, 0.8], asr=[0.9, 0.7])
    fake_run(root, "1", defense="none", seed=1, accuracy=[0.5, 0.6], asr=[0.5, 0.9])
    fake_run(
        root,
        "2",
        defense="krum",
        seed=0,
        accuracy=[0.4, 0.7],
        asr=[0.2, 0.0],
        fpr=[0.5, None],
    )
    fake_run(
        root,
        "3",
        defense="krum",
        seed=1,
        accuracy=[0.4, 0.9],
        asr=[0.4, 0.0],
        fpr=[0.1, 0.3],
    )
    fake_run(root, "4", defense="krum", seed=2, accuracy=[], asr=[], finished=False)
    return root


def test_table_means_and_spreads_over_seeds(study, tmp_path):
    rows = report(study, tmp_path / "out")
    none, krum = rows  # none first: the canonical defence order
    assert (none.defense, krum.defense) == ("none", "krum")
    assert none.seeds == [0, 1] and krum.seeds == [0, 1]
    assert none.mean["accuracy"] == pytest.approx(0.7)
    assert none.std["accuracy"] == pytest.approx(0.1414, abs=1e-4)
    assert none.mean["asr"] == pytest.approx(0.8)  # final ASR 0.7 and 0.9
    assert none.mean["max_asr"] == pytest.approx(0.9)  # max 0.9 and 0.9
    assert none.mean["max_asr_after_1"] == pytest.approx(0.8)  # 0.7 and 0.9
    assert none.mean["fpr"] is None and none.std["fpr"] is None
    # Krum FPR: run means ignoring nulls, 0.5 and 0.2, then over seeds.
    assert krum.mean["fpr"] == pytest.approx(0.35)
    assert krum.mean["seconds"] == pytest.approx(10.5)


def test_every_defence_gets_its_own_line_style():
    # The zoo's plots draw all registered defences: the colour cycle alone
    # (10 colours) gave two of them the same line.
    names = list(DEFENSES.names())
    styles = line_styles(names)
    looks = {tuple(sorted(style.items())) for style in styles.values()}
    assert len(names) > 10 and len(looks) == len(names)
    assert line_styles(names[:3]) == {n: styles[n] for n in names[:3]}


def test_a_zoo_plot_splits_flagging_defences_from_the_rest(tmp_path):
    # 21 defences in one panel repeat colours; more than 10 are split into
    # those that flag clients (a recall or FPR) and the rest, at most 10 to a
    # row, FedAvg in every row.
    names = list(DEFENSES.names())
    flagging = {"krum", "multikrum", "flame"}
    root = tmp_path / "sweep"
    for name in names:
        flags = name in flagging
        fake_run(
            root,
            name,
            defense=name,
            seed=0,
            accuracy=[0.5, 0.9],
            asr=[0.9, 0.1],
            fpr=[0.1, 0.0] if flags else None,
            attackers=1,
        )
    runs, _ = find_runs(root)
    by_defense = {r.defense: [r] for r in runs}
    rows = plot_rows(by_defense)
    rest = set(names) - flagging - {"none"}
    assert len(rest) > 10  # so the rest take two rows
    assert [title for title, _ in rows] == [
        "defences that flag clients",
        "defences that weight, clip or add noise (1/2)",
        "defences that weight, clip or add noise (2/2)",
    ]
    first, second, third = (members for _, members in rows)
    assert first[0] == second[0] == third[0] == "none"
    assert set(first[1:]) == flagging
    assert len(second) == 11 and set(second[1:]) | set(third[1:]) == rest
    for _, members in rows:
        colours = [style["color"] for style in row_styles(members).values()]
        assert len(set(colours)) == len(colours)  # no two lines of a row alike
    # up to 10 defences: one row, as before
    few = {n: by_defense[n] for n in names[:10]}
    assert plot_rows(few) == [("", names[:10])]
    report(root, tmp_path / "out")
    assert (tmp_path / "out" / "mnist_20-backdoor.png").stat().st_size > 1000


def test_the_plot_shows_detection_where_some_run_defines_it(tmp_path):
    # Without an attacker every flag is false: the FPR per round tells defences
    # apart, where ASR and recall panels would be empty; with one, recall too.
    root = tmp_path / "sweep"
    for seed, fpr in ((0, [0.2, None, 0.1]), (1, [0.4, None, 0.3])):
        fake_run(
            root,
            str(seed),
            defense="krum",
            attack="none",
            seed=seed,
            accuracy=[0.5, 0.8, 0.9],
            asr=[None] * 3,
            fpr=fpr,
            recall=[None] * 3,
        )
    fake_run(
        root,
        "a",
        defense="krum",
        seed=0,
        accuracy=[0.5, 0.9],
        asr=[0.9, 0.1],
        fpr=[0.1, 0.0],
        recall=[0.0, 1.0],
        attackers=1,
    )
    fake_run(root, "b", defense="median", seed=0, accuracy=[0.5], asr=[0.9])
    runs, _ = find_runs(root)
    benign = [r for r in runs if not r.attacked]
    attacked = [r for r in runs if r.attacked]
    assert [p[1] for p in plot_panels(benign)] == ["accuracy_curve", "fpr_curve"]
    assert mean_curve(benign, "fpr_curve") == pytest.approx([0.3, None, 0.2])
    assert [p[1] for p in plot_panels(attacked)] == [
        "accuracy_curve",
        "asr_curve",
        "recall_curve",
        "fpr_curve",
    ]
    median = [r for r in attacked if r.defense == "median"]
    assert [p[1] for p in plot_panels(median)] == ["accuracy_curve", "asr_curve"]
    assert [r for r in attacked if r.defense == "krum"][0].recall_curve == [0.0, 1.0]
    out = tmp_path / "out"
    report(root, out)  # draws every panel, skipping the median's no-detection lines
    assert (out / "mnist_20-none.png").stat().st_size > 1000
    assert (out / "mnist_20-backdoor.png").stat().st_size > 1000


def test_files_and_the_unfinished_run(study, tmp_path):
    out = tmp_path / "out"
    report(study, out)
    table = (out / "table.md").read_text()
    assert "## mnist_20 / backdoor" in table
    # Mean ± the 95% CI's half-width: t(0.975, 1) x 0.1414 / sqrt(2) = 1.271;
    # no FedAvg run without attack here, so "holds" is undefined (–).
    assert "| none | 2 | – | 0.700 ± 1.271 |" in table
    assert "1 run directory without results.json" in table and "sweep/4" in table
    assert "![mnist_20 / backdoor](mnist_20-backdoor.png)" in table
    assert (out / "mnist_20-backdoor.png").stat().st_size > 1000
    with (out / "table.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["defense"] for r in rows] == ["none", "krum"]
    assert rows[1]["setting"] == "mnist_20" and rows[1]["attack"] == "backdoor"
    assert float(rows[1]["fpr_mean"]) == pytest.approx(0.35)
    assert rows[0]["precision_mean"] == ""


def test_subsampled_and_no_attack_settings_are_separate_and_captioned(tmp_path):
    root = tmp_path / "sweep"
    fake_run(root, "0", defense="krum", seed=0, accuracy=[0.9], asr=[0.1])
    fake_run(
        root,
        "1",
        defense="krum",
        seed=0,
        accuracy=[0.8],
        asr=[0.1],
        max_train_samples=1000,
    )
    fake_run(
        root,
        "2",
        defense="krum",
        seed=0,
        accuracy=[0.9],
        asr=[None],
        attack="none",
        fpr=[0.25],
    )
    rows = report(root, tmp_path / "out")
    assert {(r.setting, r.attack) for r in rows} == {
        ("mnist_20", "backdoor"),
        ("mnist_20 (1000 train)", "backdoor"),
        ("mnist_20", "none"),
    }
    table = (tmp_path / "out" / "table.md").read_text()
    assert "1000-image subset of mnist" in table
    assert "| krum | 1 | – | 0.900 | – | – | – | – | – | 1.000 | 0.250 | – |" in table


def test_holds_counts_seeds_that_keep_the_backdoor_out_at_fedavgs_accuracy(tmp_path):
    root = tmp_path / "sweep"
    # FedAvg without attack: clean accuracy 0.90 and 0.92 (mean 0.91).
    for seed, acc in enumerate([0.90, 0.92]):
        fake_run(
            root,
            f"c{seed}",
            name="mnist_20_noattack",  # same task as mnist_20: its reference
            defense="none",
            attack="none",
            seed=seed,
            accuracy=[0.5, acc],
            asr=[None, None],
        )
    # Seed 0 holds (ASR after round 1 0.04, accuracy 0.90 >= 0.89); seed 1 lets
    # the backdoor in after round 1; seed 2 keeps it out at 0.88 < 0.89.
    for seed, (acc, asr) in enumerate([(0.90, 0.04), (0.95, 0.5), (0.88, 0.0)]):
        fake_run(
            root,
            f"k{seed}",
            defense="krum",
            seed=seed,
            accuracy=[0.5, acc],
            asr=[0.9, asr],
        )
    rows = report(root, tmp_path / "out")
    (krum,) = [r for r in rows if r.defense == "krum"]
    assert krum.held == (1, 3)
    t975 = 4.302652729911275  # Student t, 2 degrees of freedom
    assert krum.ci95["accuracy"] == pytest.approx(t975 * 0.0013**0.5 / 3**0.5, rel=1e-4)
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| krum | 3 | 1/3 |" in table
    assert "### holds" in table and "| krum | 1/3 |" in table
    with (tmp_path / "out" / "table.csv").open() as f:
        line = [r for r in csv.DictReader(f) if r["defense"] == "krum"][0]
    assert (line["held"], line["judged"]) == ("1", "3")


def test_the_holds_pivot_says_not_run_where_a_defence_has_no_run(tmp_path):
    # A zoo the compute reached only in part: krum ran in both settings, median
    # only in mnist_20. Its mnist_30 cell must say so, not read like "undefined".
    root = tmp_path / "sweep"
    for name in ("mnist_20", "mnist_30"):
        fake_run(
            root,
            f"c-{name}",
            name=name,
            defense="none",
            attack="none",
            seed=0,
            accuracy=[0.5, 0.9],
            asr=[None, None],
        )
        fake_run(
            root,
            f"k-{name}",
            name=name,
            defense="krum",
            seed=0,
            accuracy=[0.5, 0.9],
            asr=[0.9, 0.01],
        )
    fake_run(root, "m", defense="median", seed=0, accuracy=[0.5, 0.9], asr=[0.9, 0.6])
    report(root, tmp_path / "out", [parse_target("max_asr_after_1<=0.05")])
    table = (tmp_path / "out" / "table.md").read_text()
    holds = table.split("### holds")[1].split("###")[0]
    assert "| mnist_20 / backdoor | mnist_30 / backdoor |" in holds
    assert "| krum | 1/1 | 1/1 |" in holds
    assert "| median | 0/1 | not run |" in holds
    assert "not run: no finished run of that defence in that setting." in holds
    # FedAvg ran no attacked cell at all: no line of "not run" for it
    assert "| none |" not in holds


def test_the_holds_pivot_says_broken_where_the_plain_attack_broke_a_defence(tmp_path):
    # The adaptive table: pgd ran only against FedAvg and the defences the plain
    # backdoor did not break (fedlight.holding). rlr held in 0 of 2 plain seeds,
    # so its missing pgd cell says why; krum held, and its missing pgd cell (like
    # FedAvg's, the floor) is merely not run.
    root = tmp_path / "adaptive"
    fake_run(
        root, "c", defense="none", attack="none", seed=0,
        accuracy=[0.5, 0.9], asr=[None, None],
    )  # fmt: skip
    for seed in (0, 1):
        fake_run(
            root, f"n{seed}", defense="none", seed=seed,
            accuracy=[0.5, 0.9], asr=[0.9, 0.9],
        )  # fmt: skip
        fake_run(
            root, f"r{seed}", defense="rlr", seed=seed,
            accuracy=[0.5, 0.9], asr=[0.9, 0.8],
        )  # fmt: skip
        fake_run(
            root, f"k{seed}", defense="krum", seed=seed,
            accuracy=[0.5, 0.9], asr=[0.9, 0.01],
        )  # fmt: skip
    fake_run(
        root, "m", defense="median", attack="pgd", seed=0,
        accuracy=[0.5, 0.9], asr=[0.9, 0.2],
    )  # fmt: skip
    report(root, tmp_path / "out")
    table = (tmp_path / "out" / "table.md").read_text()
    holds = table.split("### holds")[1].split("###")[0]
    assert "| mnist_20 / backdoor | mnist_20 / pgd |" in holds
    assert "| rlr | 0/2 | broken by the plain attack |" in holds
    assert "| krum | 2/2 | not run |" in holds
    # FedAvg is every attack's floor, never left out for being broken
    assert "| none | 0/2 | not run |" in holds
    assert "| median | not run | 0/1 |" in holds
    assert "broken by the plain attack: not run under this attack" in holds


def test_a3fl_cells_are_read_against_the_floor_of_its_trigger(tmp_path):
    # FedAvg with A3FL poisoning nothing reaches max ASR after round 1 0.08 and
    # 0.10 (mean 0.09): its trigger's floor. Krum misses 0.05 in both seeds but
    # inside that floor; RLR misses it far above; median holds.
    root = tmp_path / "adaptive"
    fake_run(
        root, "c", defense="none", attack="none", seed=0,
        accuracy=[0.5, 0.9], asr=[None, None],
    )  # fmt: skip
    floor = {"boost": 1, "poison_fraction": 0}
    for seed, (floor_asr, krum_asr) in enumerate([(0.08, 0.07), (0.10, 0.09)]):
        fake_run(
            root, f"f{seed}", defense="none", attack="a3fl", seed=seed,
            attack_params=floor, accuracy=[0.5, 0.9], asr=[0.1, floor_asr],
        )  # fmt: skip
        for defense, asr in (("krum", krum_asr), ("rlr", 0.6), ("median", 0.01)):
            fake_run(
                root, f"{defense}{seed}", defense=defense, attack="a3fl",
                seed=seed, accuracy=[0.5, 0.9], asr=[0.9, asr],
            )  # fmt: skip
    floors = dict([parse_floor("a3fl=a3fl [boost=1, poison_fraction=0]")])
    report(root, tmp_path / "out", floors=floors)
    table = (tmp_path / "out" / "table.md").read_text()
    reading = table.split("### Read against the trigger's floor")[1].split("## ")[0]
    krum = "| mnist_20 | a3fl | krum | 0/2 | 0.080 ± 0.127 | 0.090 ± 0.127 |"
    assert krum + " at the trigger's floor |" in reading
    assert "| mnist_20 | a3fl | rlr | 0/2 |" in reading and "| broken |" in reading
    assert "| mnist_20 | a3fl | median | 2/2 |" in reading and "| held |" in reading
    # the floor's own runs are not read against themselves
    assert "| a3fl [boost=1, poison_fraction=0] |" not in reading
    # in the holds pivot the floor's column is FedAvg's alone: the others read "–"
    holds = table.split("### holds")[1].split("###")[0]
    assert "| mnist_20 / a3fl | mnist_20 / a3fl [boost=1, poison_fraction=0] |" in holds
    assert "| none | not run | 0/2 |" in holds  # its floor reaches 0.08-0.10
    assert "| krum | 0/2 | – |" in holds and "| median | 2/2 | – |" in holds
    assert "– in a floor's column" in holds
    with pytest.raises(ValueError, match="--floor 'a3fl': expected ATTACK=FLOOR"):
        parse_floor("a3fl")


def test_asr_after_stop_is_the_mean_asr_after_the_last_attacked_round():
    from fedlight.report import asr_after_stop

    curve = [0.9, 0.8, 0.7, 0.5, 0.1]
    assert asr_after_stop(curve, {"attack": {"rounds": "1:3"}}) == pytest.approx(0.3)
    # 1:4:2 attacks in rounds 1 and 3: durability is measured from round 4.
    assert asr_after_stop(curve, {"attack": {"rounds": "1:4:2"}}) == pytest.approx(0.3)
    assert asr_after_stop(curve, {"attack": {"rounds": "1:"}}) is None
    assert asr_after_stop(curve, {"attack": {}}) is None


def test_the_caption_names_the_code_each_run_came_from(tmp_path):
    root = tmp_path / "sweep"
    fake_run(
        root,
        "0",
        defense="none",
        seed=0,
        accuracy=[0.9],
        asr=[0.1],
        commit="0123456789abcdef",
    )
    fake_run(root, "1", defense="none", seed=1, accuracy=[0.9], asr=[0.1])
    report(root, tmp_path / "out")
    table = (tmp_path / "out" / "table.md").read_text()
    assert "Code: `0123456` (1 runs), `not recorded` (1 runs)." in table


def test_cli_without_runs_fails_in_one_line(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no run" in err and "\n" not in err


def test_cli_default_out_is_inside_the_sweep(study, capsys):
    assert main([str(study)]) == 0
    assert (study / "report" / "table.md").is_file()


def test_cli_reads_only_the_experiments_asked_for(tmp_path, capsys):
    # A folder of FedAvg references shared by several studies: each reads its own.
    refs = tmp_path / "clean"
    for name in ("mnist_20", "fmnist_20", "mnist_20_dirichlet05"):
        fake_run(
            refs,
            name,
            defense="none",
            seed=0,
            accuracy=[0.9],
            asr=[None],
            name=name,
            attack="none",
        )
    fake_run(
        refs,
        "left",
        defense="none",
        seed=1,
        accuracy=[0.9],
        asr=[None],
        name="mnist_20_dirichlet05",
        attack="none",
        finished=False,
    )
    out = tmp_path / "out"
    args = [str(refs), "--out", str(out), "--experiment", "mnist_20"]
    assert main([*args, "--experiment", "fmnist_20"]) == 0
    with (out / "table.csv").open() as f:
        assert sorted(r["setting"] for r in csv.DictReader(f)) == [
            "fmnist_20",
            "mnist_20",
        ]
    table = (out / "table.md").read_text()
    assert table.splitlines()[0].endswith("(experiments mnist_20, fmnist_20 only)")
    assert str(refs / "left") not in table  # another experiment's, unfinished
    capsys.readouterr()
    assert main([*args, "--experiment", "mnist_30"]) == 2
    err = capsys.readouterr().err.strip()
    assert "mnist_30" in err and "mnist_20_dirichlet05" in err and "\n" not in err


def test_overridden_defence_keys_name_their_own_cell():
    robust = {"name": "feddefender_robust", "memory_decay": 0.75}
    assert defense_label({"defense": robust}, {}) == "feddefender_robust"
    ablated = {**robust, "memory_decay": 0, "cap_examples": None, "remote": False}
    assert (
        defense_label({"defense": ablated}, {})
        == "feddefender_robust [memory_decay=0, cap_examples=null]"
    )
    # Keys null in the declared defaults are resolved at run time, not overrides.
    krum = {"name": "krum", "num_malicious_nodes": 1}
    assert defense_label({"defense": krum}, {}) == "krum"
    # The preset normclip_weights is compared with its own values (max_norm 10).
    clip = {"name": "normclip", "variant": "weights", "max_norm": 10}
    assert defense_label({"defense": clip}, {}) == "normclip_weights"
    assert (
        defense_label({"defense": {**clip, "max_norm": 5}}, {})
        == "normclip_weights [max_norm=5]"
    )


def test_the_label_is_the_configs_plugin_name_not_hydras_record():
    # A run's own config names its plug-ins; Hydra's record is only read for runs
    # of fedlight before the registry (and a run made by calling simulate() has
    # no such record at all).
    config = {"defense": {"name": "krum"}, "attack": {"name": "dba"}}
    assert defense_label(config, {"defense": "median"}) == "krum"
    legacy = {"defense": {"_target_": "fedlight.defenses.Krum"}}
    assert defense_label(legacy, {"defense": "krum"}) == "krum"
    assert defense_label(legacy, {}) == "Krum"


def test_a_bound_other_than_one_attacker_names_its_own_cell():
    krum = {"defense": {"name": "krum"}, "server": {"max_attackers": 3}}
    assert defense_label(krum, {}) == "krum [max_attackers=3]"
    assert defense_label({**krum, "server": {"max_attackers": 1}}, {}) == "krum"
    # FedAvg assumes nothing: no bound in its label.
    none = {"defense": {"name": "none"}, "server": {"max_attackers": 3}}
    assert defense_label(none, {}) == "none"


def test_runs_labelled_and_ordered_by_the_registry_without_hydras_record(tmp_path):
    root = tmp_path / "sweep"
    for job, defense in enumerate(["feddefender", "median", "krum", "none"]):
        fake_run(root, str(job), defense=defense, seed=0, accuracy=[0.9], asr=[0.1])
        (root / str(job) / ".hydra" / "hydra.yaml").unlink(missing_ok=True)
    fake_run(
        root,
        "4",
        defense="krum",
        seed=0,
        accuracy=[0.9],
        asr=[0.1],
        max_attackers=3,
    )
    rows = report(root, tmp_path / "out")
    names = [r.defense for r in rows]
    assert names == ["none", "krum", "krum [max_attackers=3]", "median", "feddefender"]
    ranks = [DEFENSES.rank(n.split(" ")[0]) for n in names]
    assert ranks == sorted(ranks)


def test_runs_of_fedlight_before_the_registry_are_still_labelled(tmp_path):
    root = tmp_path / "sweep"
    fake_run(root, "0", defense="krum", seed=0, accuracy=[0.9], asr=[0.1], legacy=True)
    fake_run(root, "1", defense="none", seed=0, accuracy=[0.8], asr=[0.2], legacy=True)
    rows = report(root, tmp_path / "out")
    assert [(r.attack, r.defense) for r in rows] == [
        ("backdoor", "none"),
        ("backdoor", "krum"),
    ]


def test_attacker_weight_is_the_largest_share_after_round_1(tmp_path):
    root = tmp_path / "sweep"
    # Seed 0: 0.9 in round 1 (not counted), then 0.2 and 0.3: 0.3.
    # Seed 1: 0.0, then None (no weights) and 0.1: 0.1.
    fake_run(
        root,
        "0",
        defense="feddefender",
        seed=0,
        accuracy=[0.5, 0.6, 0.7],
        asr=[0.5, 0.2, 0.1],
        attacker_weight=[0.9, 0.2, 0.3],
    )
    fake_run(
        root,
        "1",
        defense="feddefender",
        seed=1,
        accuracy=[0.5, 0.6, 0.7],
        asr=[0.5, 0.2, 0.1],
        attacker_weight=[0.0, None, 0.1],
    )
    (row,) = report(root, tmp_path / "out")
    assert row.values["attacker_weight"] == pytest.approx([0.3, 0.1])
    assert row.mean["attacker_weight"] == pytest.approx(0.2)
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| FPR | attacker weight r≥2 |" in table
    assert "| 0.200 ± 1.271 |" in table
    with (tmp_path / "out" / "table.csv").open() as f:
        (line,) = list(csv.DictReader(f))
    assert float(line["attacker_weight_mean"]) == pytest.approx(0.2)
    assert parse_target("attacker_weight<=0.05").metric == "attacker_weight"


def two_settings(root: Path) -> Path:
    """mnist_20: krum's two seeds keep max ASR after round 1 at 0.0 and 0.2
    (mean 0.1), FedAvg's one at 0.04; mnist_30: krum's one seed at 0.03."""
    fake_run(root, "0", defense="krum", seed=0, accuracy=[0.5, 0.9], asr=[0.9, 0.0])
    fake_run(root, "1", defense="krum", seed=1, accuracy=[0.5, 0.9], asr=[0.9, 0.2])
    fake_run(root, "2", defense="none", seed=0, accuracy=[0.5, 0.9], asr=[0.1, 0.04])
    fake_run(
        root,
        "3",
        defense="krum",
        seed=0,
        name="mnist_30",
        accuracy=[0.5, 0.9],
        asr=[0.5, 0.03],
        fpr=[0.0, 0.0],
    )
    return root


def test_overview_pivots_defences_against_settings_and_marks_missed_targets(
    tmp_path,
):
    root = two_settings(tmp_path / "sweep")
    report(root, tmp_path / "out", [parse_target("max_asr_after_1<=0.05")])
    table = (tmp_path / "out" / "table.md").read_text()
    pivot = table.split("### max ASR r≥2 (target <= 0.05)")[1].split("###")[0]
    lines = [line for line in pivot.splitlines() if line.startswith("|")]
    assert lines[0] == "| defence | mnist_20 | mnist_30 |"
    # The mean (0.1) is shown; one seed above 0.05 is enough to miss the target.
    assert lines[2] == "| none | 0.040 |  |"
    assert lines[3] == "| krum | 0.100 ✗ | 0.030 |"
    assert "✗: at least one seed misses the target (max_asr_after_1<=0.05)" in table
    # A setting without attack gets no ASR column.
    fake_run(
        root,
        "4",
        defense="krum",
        seed=0,
        name="mnist_20_noattack",
        attack="none",
        accuracy=[0.9, 0.9],
        asr=[None, None],
    )
    report(root, tmp_path / "out", [parse_target("max_asr_after_1<=0.05")])
    table = (tmp_path / "out" / "table.md").read_text()
    pivot = table.split("### max ASR r≥2")[1].split("###")[0]
    assert "| defence | mnist_20 | mnist_30 |" in pivot and "noattack" not in pivot
    assert "| defence | mnist_20 | mnist_20_noattack | mnist_30 |" in table
    # Metrics no row defines (precision here) get no pivot; settings and defences
    # that define none of a pivot's cells get no column or line (only krum on
    # mnist_30 has recall).
    assert "### precision" not in table
    recall = table.split("### recall")[1].split("###")[0]
    assert [line for line in recall.splitlines() if line.startswith("| ")] == [
        "| defence | mnist_30 |",
        "| krum | 1.000 |",
    ]


def test_precision_target_judges_only_cells_with_an_attacker(tmp_path):
    root = tmp_path / "sweep"
    common = {"defense": "krum", "seed": 0, "accuracy": [0.9, 0.9]}
    # one benign client flagged in round 2 of each: precision 0 that round
    fake_run(root, "0", **common, asr=[0.0, 0.0], precision=[None, 0.0], attackers=1)
    fake_run(
        root,
        "1",
        **common,
        name="mnist_20_noattack",
        attack="none",
        asr=[None, None],
        precision=[None, 0.0],
        fpr=[0.0, 0.05],
    )
    report(root, tmp_path / "out", [parse_target("precision>=0.9")])
    pivot = (tmp_path / "out" / "table.md").read_text().split("### precision")[1]
    lines = [
        line for line in pivot.split("###")[0].splitlines() if line.startswith("| ")
    ]
    assert lines == [
        "| defence | mnist_20 | mnist_20_noattack |",
        "| krum | 0.000 ✗ | 0.000 |",
    ]


def test_bad_targets_fail_in_one_line_before_reading_runs(study, tmp_path, capsys):
    for bad, words in [
        ("asr<0.1", "METRIC<=NUMBER"),
        ("speed>=3", "accuracy, asr, max_asr"),
    ]:
        assert main([str(study), "--out", str(tmp_path / "o"), "--target", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err
    assert not (tmp_path / "o").exists()
    assert str(parse_target(" recall >= 0.95 ")) == "recall>=0.95"
    assert main([str(study), "--out", str(tmp_path / "o"), "--layout", "wide"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--layout 'wide' is not one of pivot, scorecard" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_a_cap_above_the_datasets_size_is_no_subset(tmp_path):
    root = tmp_path / "sweep"
    # The embedded MNIST subset's 7,996 images under a 12,000 cap: all kept, the
    # full setting.
    fake_run(
        root,
        "0",
        defense="krum",
        seed=0,
        accuracy=[0.9],
        asr=[0.1],
        max_train_samples=12000,
        held=7996,
    )
    # Fashion-MNIST cut to 12,000: a subset, its own setting.
    fake_run(
        root,
        "1",
        defense="krum",
        seed=0,
        accuracy=[0.8],
        asr=[0.1],
        name="fmnist_20",
        max_train_samples=12000,
        held=12000,
    )
    rows = report(root, tmp_path / "out")
    assert {r.setting for r in rows} == {"mnist_20", "fmnist_20 (12000 train)"}
    table = (tmp_path / "out" / "table.md").read_text()
    assert "*fmnist_20* trained on a 12000-image subset" in table
    assert "*mnist_20* trained on" not in table


def test_an_overridden_task_key_is_its_own_setting(tmp_path):
    # Dirichlet 0.3 on the Dirichlet-0.5 experiment, and fmnist_20 (IID) split by
    # Dirichlet 0.5: neither shares a cell with the experiment as shipped
    root = tmp_path / "sweep"
    half = {"name": "dirichlet", "alpha": 0.5}
    runs = [  # experiment, partition, ASR
        ("mnist_20_dirichlet05", half, 0.9),
        ("mnist_20_dirichlet05", {"name": "dirichlet", "alpha": 0.3}, 0.2),
        ("fmnist_20", {"name": "iid", "alpha": None}, 0.9),
        ("fmnist_20", half, 0.1),
    ]
    for job, (name, partition, asr) in enumerate(runs):
        fake_run(root, str(job), name=name, partition=partition, defense="none",
                 seed=0, accuracy=[0.9], asr=[asr])  # fmt: skip
    rows = report(root, tmp_path / "out")
    assert {r.setting: r.mean["asr"] for r in rows} == {
        "mnist_20_dirichlet05": 0.9,
        "mnist_20_dirichlet05 [partition.alpha=0.3]": 0.2,
        "fmnist_20": 0.9,
        "fmnist_20 [partition.name=dirichlet, partition.alpha=0.5]": 0.1,
    }


def test_attack_keys_that_differ_name_their_cell_and_shared_ones_the_caption(tmp_path):
    root = tmp_path / "sweep"
    test = {"target_label": 3, "trigger_size": 8}
    for seed in (0, 1):
        fake_run(
            root,
            f"plain{seed}",
            attack="whitebox_robust",
            attack_params=test,
            defense="none",
            seed=seed,
            accuracy=[0.9],
            asr=[0.2],
        )
        fake_run(
            root,
            f"gated{seed}",
            attack="whitebox_robust",
            attack_params={**test, "gate": True},
            defense="none",
            seed=seed,
            accuracy=[0.9],
            asr=[0.6],
        )
    rows = report(root, tmp_path / "out")
    assert {(r.attack, len(r.seeds)): r.mean["asr"] for r in rows} == {
        ("whitebox_robust", 2): 0.2,
        ("whitebox_robust [gate=True]", 2): 0.6,
    }
    table = (tmp_path / "out" / "table.md").read_text()
    assert "*mnist_20*: target_label=3, trigger_size=8." in table


def test_accuracy_below_fedavg_and_a_table_over_two_folders(tmp_path):
    # the defence's runs in one study, FedAvg's clean runs in another
    fake_run(
        tmp_path / "study",
        "0",
        defense="krum",
        seed=0,
        accuracy=[0.5, 0.88],
        asr=[0.1, 0.0],
    )
    fake_run(
        tmp_path / "study",
        "1",
        defense="krum",
        seed=1,
        accuracy=[0.5, 0.86],
        asr=[0.1, 0.0],
    )
    for seed, acc in enumerate((0.91, 0.89)):
        fake_run(
            tmp_path / "clean",
            str(seed),
            name="mnist_20",
            attack="none",
            defense="none",
            seed=seed,
            accuracy=[0.5, acc],
            asr=[None, None],
        )
    assert (
        main(
            [
                str(tmp_path / "study"),
                str(tmp_path / "clean"),
                "--out",
                str(tmp_path / "out"),
                "--target",
                "accuracy_drop<=0.02",
            ]
        )
        == 0
    )
    rows = report([tmp_path / "study", tmp_path / "clean"], tmp_path / "out2")
    krum = next(r for r in rows if r.defense == "krum")
    assert krum.values["accuracy_drop"] == pytest.approx([0.02, 0.04])
    assert krum.held == (1, 2)  # 0.04 below FedAvg misses the 0.02 of "holds"
    table = (tmp_path / "out" / "table.md").read_text()
    assert f"`{tmp_path / 'study'}`, `{tmp_path / 'clean'}`" in table


def test_a_run_without_attackers_is_the_clean_reference_and_the_asr_floor(tmp_path):
    # FedAvg with the test trigger but no malicious client: its accuracy is the
    # clean reference, its ASR what the trigger does to an unpoisoned model
    root = tmp_path / "sweep"
    trigger = {"target_label": 3, "trigger_size": 8}
    fake_run(
        root,
        "floor",
        defense="none",
        seed=0,
        accuracy=[0.5, 0.9],
        asr=[0.02, 0.03],
        attack_params={**trigger, "malicious_clients": []},
        attackers=0,
    )
    fake_run(
        root,
        "robust",
        defense="krum",
        seed=0,
        accuracy=[0.5, 0.88],
        asr=[0.1, 0.0],
        attack_params={**trigger, "malicious_clients": [7]},
        attackers=1,
    )
    rows = report(root, tmp_path / "out")
    by_defense = {r.defense: r for r in rows}
    assert by_defense["none"].attack == "backdoor [no attacker]"
    assert (
        by_defense["none"].mean["max_asr"] == 0.03 and by_defense["none"].held is None
    )
    krum = by_defense["krum"]
    assert krum.attack == "backdoor"  # its attacker, target and trigger: the caption's
    assert krum.values["accuracy_drop"] == pytest.approx([0.02])
    assert krum.held == (1, 1)
    table = (tmp_path / "out" / "table.md").read_text()
    assert "malicious_clients=[7], target_label=3, trigger_size=8" in table


def test_a_defence_a_hair_above_fedavg_reads_zero_not_minus_zero(tmp_path):
    # accuracy 0.0002 above FedAvg's: the drop is -0.0002, which rounds to 0.000
    fake_run(
        tmp_path, "0", defense="krum", seed=0, accuracy=[0.5, 0.9002], asr=[0.1, 0.0]
    )
    fake_run(
        tmp_path,
        "1",
        name="mnist_20",
        attack="none",
        defense="none",
        seed=0,
        accuracy=[0.5, 0.9],
        asr=[None, None],
    )
    rows = report([tmp_path], tmp_path / "out")
    krum = next(r for r in rows if r.defense == "krum")
    assert krum.values["accuracy_drop"] == pytest.approx([-0.0002])
    table = (tmp_path / "out" / "table.md").read_text()
    assert "-0.000" not in table
    detail = [line for line in table.splitlines() if line.startswith("| krum | 1 |")]
    assert detail[0].endswith("| 0.000 |")  # the detail row's last column


def test_scorecard_layout_gives_each_defence_a_line_per_setting(tmp_path):
    root = two_settings(tmp_path / "sweep")
    targets = [parse_target("max_asr_after_1<=0.05"), parse_target("max_asr<=0.6")]
    report(root, tmp_path / "out", targets, layout="scorecard")
    table = (tmp_path / "out" / "table.md").read_text()
    krum = table.split("### krum")[1].split("###")[0].split("\n## ")[0]
    lines = [line for line in krum.splitlines() if line.startswith("| ")]
    # the targeted max ASR joins the overview's metrics, its bound in the header
    assert lines[0].startswith("| setting | seeds | holds | final clean acc. |")
    assert "| max ASR (<= 0.6) | max ASR r≥2 (<= 0.05) |" in lines[0]
    # mean ± the 95% CI over seeds; ✗ where one seed misses (0.2 > 0.05, 0.9 > 0.6)
    assert lines[1].startswith("| mnist_20 / backdoor | 2 | ")
    assert "| 0.900 ± 0.000 ✗ | 0.100 ± 1.271 ✗ |" in lines[1]
    assert "| 0.500 | 0.030 |" in lines[2]  # one seed: the mean alone, no miss
    assert "### none" in table and "| defence | mnist_20 |" not in table
    with pytest.raises(ValueError, match="layout 'wide' is not one of pivot"):
        report(root, tmp_path / "out", targets, layout="wide")


def test_a_scheduled_attackers_honest_rounds_count_neither_way():
    # Client 0 attacks from round 2 (attack.rounds=2:), as the server counts it
    # now; an old run recorded it as malicious in round 1 too.
    base = {
        "participants": ["0", "1", "2", "3"],
        "weights": {"0": 0.25, "1": 0.25, "2": 0.25, "3": 0.25},
        "rejected": {},
    }
    rounds = [
        # round 1: client 0 (honest then) and client 1 flagged
        {
            **base,
            "round": 1,
            "flagged": ["0", "1"],
            "precision": 0.5,
            "recall": 1.0,
            "fpr": 1 / 3,
            "attacker_weight": 0.25,
        },
        {
            **base,
            "round": 2,
            "flagged": [],
            "precision": None,
            "recall": 0.0,
            "fpr": 0.0,
            "attacker_weight": 0.25,
        },
    ]
    config = {"attack": {"rounds": "2:"}}
    first, second = recount(rounds, ["0"], config)
    assert first["recall"] is None  # no attacking client this round
    assert first["precision"] == 0.0  # its one judged flag (client 1) is false
    assert first["fpr"] == pytest.approx(1 / 3)  # of clients 1-3 only
    assert first["attacker_weight"] == 0.0
    assert second == rounds[1]  # an attacking round is kept as recorded
    assert rounds[0]["recall"] == 1.0  # the records themselves are not changed
    assert recount(rounds, ["0"], {"attack": {"rounds": "1:"}}) == rounds
    assert recount(rounds, [], config) == rounds
    assert attacking(["0"], True) == (["0"], set())
    assert attacking(["0"], False) == ([], {"0"})


def test_results_name_a_code_edit_but_not_a_docs_edit(tmp_path):
    import subprocess

    from fedlight.simulate import code_version

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-C", str(tmp_path), *args], check=True, capture_output=True
        )

    (tmp_path / "fedlight").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "fedlight" / "x.py").write_text("A = 1\n")
    (tmp_path / "docs" / "table.md").write_text("old\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    clean = code_version(tmp_path)
    assert clean is not None and len(clean["commit"]) == 40 and not clean["dirty"]
    (tmp_path / "docs" / "table.md").write_text("remade\n")  # a remade table
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert code_version(tmp_path)["dirty"] is False
    (tmp_path / "fedlight" / "x.py").write_text("A = 2\n")
    assert code_version(tmp_path)["dirty"] is True
    assert code_version(tmp_path / "nowhere") is None
