#!/usr/bin/env bash
# The comparison tables of docs/results/, one Hydra multirun per chunk, then reports.
#   bash launch/matrix.sh            # every chunk, in the order below
#   bash launch/matrix.sh noattack   # chosen chunks (paper_mnist, noattack, robust_mnist,
#                                    # paper_fmnist, robust_fmnist, harder,
#                                    # paper_fmnist_subset, ablation, report)
# The default runs every chunk but ablation: 109 jobs, about 3 h on 2 cores;
# ablation is 128 more (about 3 h; its Fashion-MNIST cells use the 12,000-image
# subset), in chunks ablation_methods, _inputs, _memory, _cap, _fingerprint,
# _reference, _continuous that can run one at a time in any order (two at once on
# 2 cores is slower than one after the other: each job ~2.4x longer).
# Each chunk writes its own sweep folder under multirun/ (MATRIX_DIR), so a chunk that
# fails loses only its own jobs; `report` reads whatever finished. With
# MATRIX_DIR=docs/results/runs/<commit> each job's config.yaml and results.json are
# kept in git (that folder's .gitignore), so tables and resumes survive a new checkout.
#
# The defence zoo (docs/results/zoo/, issue 15): every defence in the paper's four
# settings and the harder ones, seeds 0-2, on the full datasets. One job is ~9 min
# on 2 cores, so the zoo is ~100 h (its README fixes the order): chunks zoo_clean
# (FedAvg without attack, the clean reference of "holds"; 18 jobs), zoo_mnist_20,
# zoo_fmnist_20, zoo_mnist_30, zoo_fmnist_30 (63 jobs each), zoo_harder_<experiment>
# (63 each). Their job folders are named by their overrides, so a chunk rerun with
# more defences or seeds resumes instead of renumbering; `bash launch/matrix.sh
# zoo_report` tables whatever finished. Set FEDLIGHT_DATA to the folder holding
# mnist/ and fashion-mnist/.
set -uo pipefail
cd "$(dirname "$0")/.."
DIR=${MATRIX_DIR:-multirun}
COMMON=(wandb.mode=offline skip_finished=true)  # a rerun resumes the sweep

run() {  # run SWEEP_NAME ARGS... : one multirun into $DIR/SWEEP_NAME
    local name=$1
    shift
    echo "== $name: $* ($(date -u +%H:%M:%S))"
    python -m fedlight.run -m "$@" "${COMMON[@]}" "hydra.sweep.dir=$DIR/$name" \
        || echo "== $name failed with exit code $?"
}

paper_mnist() {  # the paper's MNIST settings (the local 7,996-image subset), 7 defences
    run paper/mnist '+experiment=mnist_20,mnist_30' \
        defense=none,normclip,krum,multikrum,median,trimmed_mean,feddefender seed=0,1
}
robust_mnist() {  # the robust FedDefender in the paper's MNIST settings (same table)
    run paper/robust_mnist '+experiment=mnist_20,mnist_30' defense=feddefender_robust seed=0,1
}
robust_fmnist() {  # the robust FedDefender in the paper's FMNIST settings, full data
    run paper/robust_fmnist '+experiment=fmnist_20,fmnist_30' defense=feddefender_robust seed=0,1
}
paper_fmnist() {  # the paper's FMNIST settings on the full data: FedAvg, NormClip, FedDefender
    run paper/fmnist '+experiment=fmnist_20,fmnist_30' \
        defense=none,normclip,feddefender seed=0,1
}
paper_fmnist_subset() {  # the other defences on a 12,000-image FMNIST subset
    run paper/fmnist_subset '+experiment=fmnist_20,fmnist_30' \
        defense=none,krum,multikrum,median,trimmed_mean,feddefender \
        dataset.max_train_samples=12000 seed=0,1
}
noattack() {  # false positives without an attacker, and FedAvg's clean accuracy
    run noattack +experiment=mnist_20_noattack \
        defense=none,krum,multikrum,bulyan,feddefender,feddefender_robust seed=0,1
}
harder() {  # 3 attackers of 30 (FMNIST subset), non-IID, model replacement, DBA; seed 0
    run harder/fmnist '+experiment=fmnist_30_3attackers' \
        defense=none,multikrum,median,feddefender,feddefender_robust \
        dataset.max_train_samples=12000 seed=0
    run harder/mnist \
        '+experiment=mnist_20_dirichlet05,mnist_20_dirichlet01,mnist_20_scaling,mnist_20_dba' \
        defense=none,multikrum,median,feddefender,feddefender_robust seed=0
}
# The ablation: the robust FedDefender's levers, each off in turn, beside the paper's
# method. One chunk per lever, each its own sweep folder; `ablation` runs them all.
ABLATION_SETTINGS='+experiment=mnist_20,mnist_30,fmnist_20,fmnist_30,fmnist_30_3attackers,mnist_20_dirichlet05,mnist_20_dirichlet05_3attackers,mnist_20_noattack'
ablate() {  # ablate LEVER ARGS...: the ablation settings, seeds 0 and 1
    local lever=$1
    shift
    # Fashion-MNIST cells on the 12,000-image subset (no effect on the 7,996-image MNIST)
    run "ablation/$lever" "$ABLATION_SETTINGS" "$@" dataset.max_train_samples=12000 seed=0,1
}
ablation_methods() { ablate methods defense=feddefender,feddefender_robust; }
ablation_inputs() { ablate inputs defense=feddefender_robust defense.inputs=noise; }
ablation_memory() { ablate memory defense=feddefender_robust defense.memory_decay=0; }
ablation_cap() { ablate cap defense=feddefender_robust defense.cap_examples=null; }
ablation_reference() { ablate reference defense=feddefender_robust defense.reference=global; }
ablation_fingerprint() {  # the paper's boolean fingerprint in place of disagreement
    ablate fingerprint_boolean defense=feddefender_robust defense.fingerprint=boolean
}
ablation_continuous() {  # real-valued activations with median/MAD z-scores
    ablate fingerprint_continuous defense=feddefender_robust defense.fingerprint=continuous
}
ablation() {
    ablation_methods
    ablation_inputs
    ablation_memory
    ablation_cap
    ablation_fingerprint
    ablation_reference
    ablation_continuous
}
# The zoo, in report order. Seeds outermost, so a stopped chunk has whole seeds.
ZOO=none,fedavg_cap,normclip,dp_fixed,dp_adaptive,crfl,centered_clipping,rlr,krum
ZOO+=,multikrum,foolsgold,bulyan,dnc,median,fldetector,trimmed_mean,flame,rfa
ZOO+=,deepsight,feddefender,feddefender_robust
ZOO_SEEDS=${ZOO_SEEDS:-0,1,2}
NAMED=('hydra.sweep.subdir=${hydra.job.override_dirname}'
    'hydra.job.config.override_dirname.exclude_keys=[wandb.mode,skip_finished]')
zoo() {  # zoo EXPERIMENT [ARGS...]: every defence of the zoo in one setting
    local experiment=$1
    shift
    run "zoo/$experiment" "seed=$ZOO_SEEDS" "+experiment=$experiment" \
        "defense=${ZOO_DEFENSES:-$ZOO}" "${NAMED[@]}" "$@"
}
# FedAvg without attack on every task of the zoo (the "holds" reference); ZOO_CLEAN
# picks tasks (the zoo README's order runs mnist_20,fmnist_20 first). A task is the
# data, split, clients and training (fedlight.report.task_key): fmnist_30_3attackers
# shares fmnist_30's, the 3-attacker Dirichlet, scaling, DBA and no-attack settings
# share their base's, so five tasks cover the zoo.
ZOO_CLEAN=${ZOO_CLEAN:-mnist_20,mnist_30,fmnist_20,fmnist_30,mnist_20_dirichlet05}
zoo_clean() {
    local experiment
    for experiment in ${ZOO_CLEAN//,/ }; do
        run zoo/clean "seed=$ZOO_SEEDS" "+experiment=$experiment" \
            attack=none defense=none "${NAMED[@]}"
    done
}
zoo_mnist_20() { zoo mnist_20; }
zoo_mnist_30() { zoo mnist_30; }
zoo_fmnist_20() { zoo fmnist_20; }
zoo_fmnist_30() { zoo fmnist_30; }
zoo_harder_fmnist_30_3attackers() { zoo fmnist_30_3attackers; }
zoo_harder_mnist_20_dirichlet05() { zoo mnist_20_dirichlet05; }
zoo_harder_mnist_20_dirichlet05_3attackers() { zoo mnist_20_dirichlet05_3attackers; }
zoo_harder_mnist_20_scaling() { zoo mnist_20_scaling; }
zoo_harder_mnist_20_dba() { zoo mnist_20_dba; }
zoo_noattack() { zoo mnist_20_noattack; }  # false positives of every defence
# The adaptive attacks (docs/results/adaptive/, issue 16): FedAvg and the zoo defences
# that held against the plain backdoor (see holding() below) in mnist_20 and fmnist_20
# against each adaptive attack, seeds 0-2 (its README: ~380 jobs, ~50 h). Neurotoxin and the intermittent attacker stop after
# round 10 so the report's "ASR after stop" measures durability; the white-box
# attackers know the run's seed (attack.run_seed, null: seed).
# The robust FedDefender's development runs (docs/results/robust/PROTOCOL.md):
# development settings and seeds only (attacker 0, target 9, 12 px: the configs'
# defaults). DEV_SEEDS picks seeds (default 100,101), DEV_LEVERS the lever sets
# (';' between sets, spaces between a set's overrides), DEV_SETTINGS the experiments.
DEV_SEEDS=${DEV_SEEDS:-100,101}
DEV_SETTINGS=${DEV_SETTINGS:-mnist_20,fmnist_30,mnist_20_dirichlet05,mnist_20_dirichlet05_3attackers,mnist_20_noattack}
DEV_LEVERS=${DEV_LEVERS:-'defense.median_rounds=0;defense.median_rounds=1'}
robust_dev() {  # every lever set of DEV_LEVERS in every DEV_SETTINGS experiment
    local levers
    IFS=';' read -ra levers <<<"$DEV_LEVERS"
    for lever in "${levers[@]}"; do
        IFS=' ' read -ra args <<<"$lever"
        run robust_dev "seed=$DEV_SEEDS" "+experiment=$DEV_SETTINGS" \
            defense=feddefender_robust "${args[@]}" "${NAMED[@]}"
    done
}
robust_dev_report() {
    python -m fedlight.report "$DIR/robust_dev" --out docs/results/robust/dev "${TARGETS[@]}"
}
# The robust FedDefender's test runs (PROTOCOL.md): seeds 0-2, attacker 7 (3
# attackers: 4, 11, 17), target 3, an 8 px trigger; run once the shipped config is
# frozen, each chunk its own sweep folder under robust_test/.
TEST_SEEDS=${TEST_SEEDS:-0,1,2}
TEST_ATTACK=('attack.malicious_clients=[7]' attack.target_label=3 attack.trigger_size=8)
TEST_ATTACK_3=(attack.num_malicious=null 'attack.malicious_clients=[4,11,17]'
    attack.target_label=3 attack.trigger_size=8)
FMNIST_DIRICHLET=('+experiment=fmnist_20' partition=dirichlet partition.alpha=0.5)
robust_test_none() {  # robust_test_none NAME ARGS...: one test cell, seeds 0-2
    local name=$1
    shift
    run "robust_test/$name" "seed=$TEST_SEEDS" "${NAMED[@]}" "$@"
}
robust_test() {  # robust_test NAME ARGS...: feddefender_robust in one test cell
    local name=$1
    shift
    robust_test_none "$name" defense=feddefender_robust "$@"
}
robust_test_paper() {
    robust_test paper '+experiment=mnist_20,mnist_30,fmnist_20,fmnist_30' "${TEST_ATTACK[@]}"
}
robust_test_dirichlet() {
    robust_test dirichlet '+experiment=mnist_20_dirichlet05' "${TEST_ATTACK[@]}"
    robust_test dirichlet "${FMNIST_DIRICHLET[@]}" "${TEST_ATTACK[@]}"
    robust_test dirichlet '+experiment=mnist_20_dirichlet05_3attackers' "${TEST_ATTACK_3[@]}"
}
# Constrain-and-scale scales as its paper (gamma = n = 20, no count boost: model
# replacement); the white-box attacker of the robust defence stays benign in
# round 1 (its evasion term needs last round's global model; a plain round-1
# backdoor would be flagged and remembered), as PROTOCOL.md's amendment says.
SCALE_AS_PAPER=(attack=constrain_scale attack.scale=20 attack.boost=1)
robust_test_adaptive() {
    robust_test adaptive '+experiment=mnist_20,fmnist_20' "${TEST_ATTACK[@]}" \
        attack=pgd,neurotoxin,a3fl,whitebox_feddefender
    robust_test adaptive '+experiment=mnist_20,fmnist_20' "${TEST_ATTACK[@]}" \
        "${SCALE_AS_PAPER[@]}"
    robust_test adaptive '+experiment=mnist_20,fmnist_20' "${TEST_ATTACK[@]}" \
        attack=whitebox_robust attack.gate=false,true 'attack.rounds=2:'
    robust_test adaptive '+experiment=mnist_20,fmnist_20' "${TEST_ATTACK[@]}" \
        attack=whitebox_robust attack.gate=true attack.evade=searched 'attack.rounds=2:'
    robust_test adaptive '+experiment=mnist_20,fmnist_20' "${TEST_ATTACK[@]}" \
        attack=backdoor 'attack.rounds=1::3,6:'
}
# A3FL's floor: its trigger is re-optimised against each round's global model, so
# it may score an ASR as an adversarial patch with no backdoor at all. FedAvg with
# the same attacker optimising and publishing its trigger but poisoning nothing
# (and no boost) measures that floor (6 runs).
robust_test_adaptive_floor() {
    robust_test_none adaptive '+experiment=mnist_20,fmnist_20' "${TEST_ATTACK[@]}" \
        defense=none attack=a3fl attack.poison_fraction=0 attack.boost=1
}
HARDER_ALPHAS=${HARDER_ALPHAS:-0.3}
robust_test_harder_choice() {  # FedAvg only, never the defence: which Dirichlet alpha
    # (0.3, else HARDER_ALPHAS=0.2) still lets the test attack reach ASR >= 0.8
    robust_test_none harder_choice '+experiment=mnist_20_dirichlet05' \
        "partition.alpha=$HARDER_ALPHAS" defense=none "${TEST_ATTACK[@]}"
}
# PROTOCOL.md: on alpha 0.3 FedAvg's mean max ASR was 0.758 (< 0.8), so the harder
# row is alpha 0.2 (whatever FedAvg reaches there, recorded before the defence runs)
HARDER_ALPHA=0.2
robust_test_harder() {
    robust_test harder '+experiment=mnist_20_dirichlet05' "partition.alpha=$HARDER_ALPHA" \
        "${TEST_ATTACK[@]}"
}
robust_test_cap() {  # FedAvg with the count cap alone (the robust defence's cap,
    # no detector) on the non-IID test settings, where the cap did much of the work
    local cap=defense=fedavg_cap
    robust_test_none cap '+experiment=mnist_20_dirichlet05' "$cap" "${TEST_ATTACK[@]}"
    robust_test_none cap "${FMNIST_DIRICHLET[@]}" "$cap" "${TEST_ATTACK[@]}"
    robust_test_none cap '+experiment=mnist_20_dirichlet05' "partition.alpha=$HARDER_ALPHA" \
        "$cap" "${TEST_ATTACK[@]}"
    robust_test_none cap '+experiment=mnist_20_dirichlet05_3attackers' "$cap" \
        "${TEST_ATTACK_3[@]}"
}
robust_test_noattack() {
    robust_test noattack '+experiment=mnist_20_noattack'
    robust_test noattack '+experiment=mnist_20_dirichlet05' attack=none
}
robust_test_clean() {  # FedAvg with the test trigger and no attacker on every test
    # task: the clean accuracy of "within 1 point", and the trigger's ASR floor
    local floor=(defense=none 'attack.malicious_clients=[]' attack.target_label=3
        attack.trigger_size=8)
    robust_test_none clean '+experiment=mnist_20,mnist_30,fmnist_20,fmnist_30' "${floor[@]}"
    robust_test_none clean '+experiment=mnist_20_dirichlet05' "${floor[@]}"
    robust_test_none clean "${FMNIST_DIRICHLET[@]}" "${floor[@]}"
    robust_test_none clean '+experiment=mnist_20_dirichlet05' \
        "partition.alpha=$HARDER_ALPHA" "${floor[@]}"
}
# TEST_DIRS: every folder of test runs (space-separated), when chunks ran at
# different commits (the adaptive chunk runs after f8657a5: TEST.md says why).
robust_test_report() {  # every test run, FedAvg's clean runs among them
    local dirs
    read -ra dirs <<<"${TEST_DIRS:-$DIR/robust_test}"
    python -m fedlight.report "${dirs[@]}" --out docs/results/robust/test --layout scorecard \
        --target 'max_asr<=0.10' --target 'max_asr_after_1<=0.05' \
        --target 'recall>=0.95' --target 'precision>=0.9' --target 'fpr<=0.05' \
        --target 'attacker_weight<=0.02' --target 'accuracy_drop<=0.01'
}
# Each adaptive attack runs against FedAvg (none) and the zoo defences that held
# against the plain backdoor in that setting in at least one of 3 seeds (the rule of
# docs/results/adaptive/README.md, read from docs/results/zoo/table.csv by
# fedlight.holding); ZOO_DEFENSES overrides the list. A setting whose zoo cell is not
# finished stops the chunk before any of its jobs.
ZOO_TABLE=${ZOO_TABLE:-docs/results/zoo/table.csv}
holding() {  # holding EXPERIMENT: the defences an adaptive attack runs against there
    if [ -n "${ZOO_DEFENSES:-}" ]; then echo "$ZOO_DEFENSES"; return; fi
    python -m fedlight.holding "$ZOO_TABLE" "$1" --defenses "$ZOO"
}
adaptive() {  # adaptive NAME EXPERIMENT DEFENCES ARGS...
    local name=$1 experiment=$2 defenses=$3
    shift 3
    run "adaptive/$name/$experiment" "seed=$ZOO_SEEDS" "+experiment=$experiment" \
        "defense=$defenses" "${NAMED[@]}" "$@"
}
ADAPTIVE_SETTINGS=(mnist_20 fmnist_20)
adaptive_all() {  # adaptive_all NAME ARGS...: both settings
    local name=$1 experiment
    local -a lists=()
    shift
    for experiment in "${ADAPTIVE_SETTINGS[@]}"; do
        lists+=("$(holding "$experiment")") || return 2
    done
    local i=0
    for experiment in "${ADAPTIVE_SETTINGS[@]}"; do
        adaptive "$name" "$experiment" "${lists[$i]}" "$@"
        i=$((i + 1))
    done
}
adaptive_pgd() { adaptive_all pgd attack=pgd; }
adaptive_constrain_scale() { adaptive_all constrain_scale "${SCALE_AS_PAPER[@]}"; }
adaptive_neurotoxin() { adaptive_all neurotoxin attack=neurotoxin 'attack.rounds=1:10'; }
adaptive_a3fl() { adaptive_all a3fl attack=a3fl; }
adaptive_whitebox() {
    adaptive_all whitebox_feddefender attack=whitebox_feddefender
    adaptive_all whitebox_robust attack=whitebox_robust attack.gate=true \
        attack.evade=searched 'attack.rounds=2:'
}
adaptive_intermittent() { adaptive_all intermittent attack=backdoor 'attack.rounds=1:10:3'; }
# A3FL's floor in the adaptive settings: its trigger is re-optimised against each
# round's global model, an adversarial patch that a model nobody poisoned may
# already obey. FedAvg with A3FL poisoning nothing and no boost measures it (6 runs).
adaptive_a3fl_floor() {
    local experiment
    for experiment in "${ADAPTIVE_SETTINGS[@]}"; do
        adaptive a3fl_floor "$experiment" none attack=a3fl \
            attack.poison_fraction=0 attack.boost=1
    done
}
# The adaptive table reads the zoo's cells of its settings too: FedAvg's clean runs
# (the reference of "holds") and the plain backdoor's, so that every defence has a
# line and one not rerun reads "broken by the plain attack" (fedlight.report).
# ZOO_DIR: the zoo's runs when they came from another commit than the adaptive ones.
# --experiment: only its own settings' runs (the zoo's clean folder holds others').
adaptive_report() {
    local zoo_dir=${ZOO_DIR:-$DIR/zoo}
    local -a zoo=("$zoo_dir/clean") only=()
    local experiment
    for experiment in "${ADAPTIVE_SETTINGS[@]}"; do
        zoo+=("$zoo_dir/$experiment")
        only+=(--experiment "$experiment")
    done
    python -m fedlight.report "$DIR/adaptive" "${zoo[@]}" --out docs/results/adaptive \
        --target 'max_asr_after_1<=0.05' --floor 'a3fl=a3fl [boost=1, poison_fraction=0]' \
        "${only[@]}"
}
zoo_report() {
    python -m fedlight.report "$DIR/zoo" --out docs/results/zoo --target 'max_asr_after_1<=0.05'
}
# The robust FedDefender's done-means (issue 9), marked in each table's overview.
TARGETS=(--target 'max_asr_after_1<=0.05' --target 'recall>=0.95'
    --target 'precision>=0.9' --target 'fpr<=0.05')
report() {
    local study
    for study in paper noattack harder ablation; do
        if [ -d "$DIR/$study" ]; then
            python -m fedlight.report "$DIR/$study" --out "docs/results/$study" "${TARGETS[@]}"
        fi
    done
}

if [ $# -eq 0 ]; then
    set -- paper_mnist noattack robust_mnist paper_fmnist robust_fmnist harder \
        paper_fmnist_subset report
fi
# every chunk name checked before the first job starts: a typo in the last of
# several chunks must not surface hours later
chunks=$(declare -F | awk '$3 != "run" {print $3}' | tr '\n' ' ')
for chunk in "$@"; do
    if [[ " $chunks" != *" $chunk "* ]]; then
        echo "launch/matrix.sh: unknown chunk '$chunk'; chunks: $chunks" >&2
        exit 2
    fi
done
for chunk in "$@"; do
    "$chunk"
done
