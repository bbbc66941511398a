#!/usr/bin/env bash
# The comparison tables of docs/results/, one Hydra multirun per chunk, then reports.
#   bash launch/matrix.sh            # every chunk, in the order below
#   bash launch/matrix.sh noattack   # one chunk (paper_mnist, paper_fmnist,
#                                    # paper_fmnist_subset, noattack, harder, report)
# Each chunk writes its own sweep folder under multirun/ (MATRIX_DIR), so a chunk that
# fails loses only its own jobs; `report` reads whatever finished. Set FEDLIGHT_DATA
# to the folder holding mnist/ and fashion-mnist/.
set -uo pipefail
cd "$(dirname "$0")/.."
DIR=${MATRIX_DIR:-multirun}
COMMON=(wandb.mode=offline)

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
paper_fmnist() {  # the paper's FMNIST settings on the full data: FedAvg, NormClip, FedDefender
    run paper/fmnist '+experiment=fmnist_20,fmnist_30' \
        defense=none,normclip,feddefender seed=0,1
}
paper_fmnist_subset() {  # every defence on a 12,000-image FMNIST subset
    run paper/fmnist_subset '+experiment=fmnist_20,fmnist_30' \
        defense=none,normclip,krum,multikrum,median,trimmed_mean,feddefender \
        dataset.max_train_samples=12000 seed=0,1
}
noattack() {  # false positives of the detecting defences without an attacker
    run noattack +experiment=mnist_20_noattack \
        defense=krum,multikrum,bulyan,feddefender seed=0,1
}
harder() {  # 3 attackers of 30 (FMNIST subset), non-IID, model replacement, DBA; seed 0
    run harder/fmnist '+experiment=fmnist_30_3attackers' \
        defense=none,normclip,multikrum,bulyan,median,trimmed_mean,feddefender \
        dataset.max_train_samples=12000 seed=0
    run harder/mnist \
        '+experiment=mnist_20_dirichlet05,mnist_20_dirichlet01,mnist_20_scaling,mnist_20_dba' \
        defense=none,normclip,multikrum,bulyan,median,trimmed_mean,feddefender seed=0
}
report() {
    python -m fedlight.report "$DIR/paper" --out docs/results/paper
    python -m fedlight.report "$DIR/noattack" --out docs/results/noattack
    python -m fedlight.report "$DIR/harder" --out docs/results/harder
}

if [ $# -eq 0 ]; then
    set -- paper_mnist paper_fmnist paper_fmnist_subset noattack harder report
fi
for chunk in "$@"; do
    "$chunk"
done
