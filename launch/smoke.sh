#!/bin/sh
# The tests' smoke experiment (tests/support.py SMOKE), used by the Docker image's
# HEALTHCHECK and runnable by hand: `docker run --rm fedlight:0.1.0 /opt/fedlight/launch/smoke.sh`.
# It starts its own local Ray in a private temp dir (never the node's Ray, never
# `ray stop`) and needs no network: the MNIST subset ships inside the package.
set -eu
tmp=$(mktemp -d /tmp/flsmoke-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
unset RAY_ADDRESS  # a Ray node's containers set it: this run must not join that cluster
python -m fedlight.run \
    num_clients=4 num_rounds=2 client.epochs=1 dataset.max_train_samples=400 \
    wandb.mode=disabled simulation.round_timeout_s=120 \
    dataset.hub=false simulation.num_cpus=2 \
    "simulation.ray_temp_dir=$tmp/ray" "hydra.run.dir=$tmp/run"
