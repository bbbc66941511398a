# fedlight with its pinned dependencies (pyproject.toml): one image for `docker run`
# and for KubeRay (launch/kuberay-rayjob.yaml uses it for head, workers and the job
# submitter); launch/ray-cluster.yaml installs the same way on plain VMs.
#
#   docker build -t fedlight:0.1.0 .
#   docker run --rm --gpus all fedlight:0.1.0 python -m fedlight.run +experiment=mnist_20
#
# PyPI's torch==2.14.1 wheel for Linux is a CUDA build (it brings the CUDA
# libraries as nvidia-* wheels), so the same pins serve CPU and GPU nodes; a GPU
# needs only the NVIDIA container toolkit on the host (`--gpus all`).
FROM python:3.11-slim-bookworm

# wget: KubeRay's liveness and readiness probes call it inside Ray containers.
# procps: `ps`, to see which Ray processes a node runs.
# Left unpinned (DL3008) to take Debian's security fixes; the pins that shape
# results are Python's, in pyproject.toml.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget procps \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0

WORKDIR /opt/fedlight
COPY . .
# The README's install step, unchanged: an editable install keeps the configs and
# the sources at /opt/fedlight, and the dev extra brings pytest for the image's
# own test run (`docker run IMAGE python -m pytest`).
RUN pip install -e ".[dev]"

# Ray (and KubeRay) run containers as an unprivileged user; Hydra writes outputs/
# into the working directory, so that is the user's own.
RUN useradd --create-home --uid 1000 ray \
    && mkdir -p /work \
    && chown ray:ray /work
USER 1000:1000
WORKDIR /work

# The tests' smoke experiment (tests/support.py SMOKE: 4 clients, 2 rounds) on a
# private local Ray, offline on the MNIST subset inside the package: once a
# minute after start until it passes (--start-interval needs Docker 25+), then
# every 6 hours. Kubernetes ignores it (KubeRay has its own probes).
HEALTHCHECK --start-period=15m --start-interval=1m --interval=6h --timeout=10m --retries=1 \
    CMD ["/opt/fedlight/launch/smoke.sh"]

CMD ["python", "-m", "fedlight.run", "+experiment=mnist_20"]
