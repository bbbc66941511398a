"""FedDefender's fingerprint engine: what ``engine="batched"`` runs, and its inputs.

In production :func:`score_clients` runs :class:`_Engine` (all K inputs per forward
pass, client weights swapped in without copies) and :func:`_streaming_confidence`
(the leave-one-out vote in O(clients x neurons) per input). The paper's method,
written plainly, is the oracle in :mod:`fedlight.defenses.fingerprint_oracle`: it
runs for ``engine="loop"`` and the tests hold this engine to it bit for bit.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from fedlight.defenses import fingerprint_oracle as oracle
from fedlight.defenses.fingerprint_oracle import FINGERPRINT_MODULES

ENGINES = ("batched", "loop")

# On CPU, vmap turns every conv into a grouped conv, which oneDNN runs slower than
# one plain conv per client: measured on 2 cores, K=10, resnet18 takes 27 ms per
# client vmapped and 7.5 ms looped, while convnet takes 0.27 vs 0.40 ms. So on CPU
# only models this small are vmapped; on CUDA every model is.
_VMAP_CPU_MAX_WEIGHT_BYTES = 1 << 20

_BIT_WEIGHTS = (1, 2, 4, 8, 16, 32, 64, 128)


# --------------------------------------------------------------------------- inputs
def synthetic_inputs(
    num_inputs: int, shape: tuple[int, ...], mean: float, std: float, seed: int
) -> Tensor:
    """K random inputs, each pixel uniform in [0, 1], normalised like the data.

    One generator seeded once draws all K, so the inputs are distinct (the Flower
    port re-seeded on every call and repeated one input K times).
    """
    if num_inputs < 0:
        raise ValueError(f"num_inputs={num_inputs} must be >= 0")
    if std <= 0:
        raise ValueError(f"std={std} must be > 0")
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand((num_inputs, *shape), generator=generator)  # (K, *shape)
    return (pixels - mean) / std


def inference_guided_inputs(
    model: nn.Module,
    states: Sequence[Mapping[str, Tensor]],
    num_inputs: int,
    shape: tuple[int, ...],
    mean: float,
    std: float,
    seed: int,
    eta: int,
    pool_size: int,
    device: str | torch.device = "cpu",
) -> Tensor:
    """FedDebug's inference-guided selection of ``num_inputs`` synthetic inputs.

    Draws ``pool_size`` candidates with :func:`synthetic_inputs`, predicts every
    candidate with every client (batched), and walks the pool in order: a candidate
    is kept when at least ``eta`` clients agree on a class that no kept input covers
    yet; it then covers that class (the most agreed-on qualifying class, the lowest
    class id on a tie). Selection stops at ``num_inputs``. If the pool runs out
    first, the rest is filled with the candidates not kept, in pool order, so the
    result always has ``num_inputs`` rows. Deterministic given ``seed``.

    FedDebug keyed coverage on the set of agreeing clients and lowered ``eta`` on a
    timeout; we key it on the class and never loop, so the cost is bounded.
    """
    if eta < 1:
        raise ValueError(f"eta={eta} must be >= 1")
    if pool_size < num_inputs:
        raise ValueError(f"pool_size={pool_size} must be >= num_inputs={num_inputs}")
    pool = synthetic_inputs(pool_size, shape, mean, std, seed)  # (P, *shape)
    if len(states) == 0:
        return pool[:num_inputs]
    engine = _Engine(model, pool, na_t=0.0, device=device, capture=False)
    preds = torch.cat(
        [logits.flatten(2).argmax(-1).cpu() for _, _, logits in engine.chunks(states)]
    )  # (clients, P)
    num_classes = int(preds.max()) + 1
    covered = torch.zeros(num_classes, dtype=torch.bool)
    kept: list[int] = []
    for j in range(pool_size):
        if len(kept) == num_inputs:
            break
        votes = torch.bincount(preds[:, j], minlength=num_classes)  # (classes,)
        votes[covered | (votes < eta)] = 0
        if int(votes.max()) == 0:
            continue
        covered[int(votes.argmax())] = True  # argmax returns the first maximum
        kept.append(j)
    taken = set(kept)
    rest = [j for j in range(pool_size) if j not in taken]
    chosen = kept + rest[: num_inputs - len(kept)]
    return pool[chosen]


def score_clients(
    model: nn.Module,
    states: Sequence[Mapping[str, Tensor]],
    inputs: Tensor,
    na_t: float,
    num_attackers: int = 1,
    engine: str = "batched",
    max_memory_mb: float = 1024.0,
    device: str | torch.device = "cpu",
    *,
    vectorize: bool | None = None,
) -> Tensor:
    """FedDefender's per-client malicious confidence, float ``(clients,)``.

    ``engine="loop"`` runs the oracle, :func:`oracle.score_clients`;
    ``engine="batched"`` (the default, the production path) runs the engine below,
    which gives the same answer. The subset without client i shares the neurons on
    in all remaining clients plus those on in every one but i; the first term is the
    same for every subset, so the ranking only needs, per client, its *unique-off*
    count: neurons on in all other remaining clients and off in it.

    The engine never holds the full ``(clients, inputs, neurons)`` matrix: one pass
    over client chunks accumulates, per input and neuron, the number of clients on
    and the sum of their ids. Where exactly one remaining client is off, that
    client's id is the sum of remaining ids minus the on-sum, so a bincount gives
    every client's unique-off count. To remove a suspect (``num_attackers`` > 1)
    its row is subtracted from both sums; rows come from a bit-packed copy of the
    matrix when that fits in ``max_memory_mb``, or else are recomputed (the same
    chunk, so the same bits). Rounds with fewer than two clients, no inputs or
    ``num_attackers=0`` score zero under either engine.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} is not one of {', '.join(ENGINES)}")
    if num_attackers < 0:
        raise ValueError(f"num_attackers={num_attackers} must be >= 0")
    clients, num_inputs = len(states), len(inputs)
    if clients < 2 or num_attackers == 0 or num_inputs == 0:
        return torch.zeros(clients)
    if engine == "loop":
        return oracle.score_clients(model, states, inputs, na_t, num_attackers)

    runner = _Engine(
        model,
        inputs,
        na_t,
        device=device,
        max_memory_mb=max_memory_mb,
        vectorize=vectorize,
    )
    packed_bytes = clients * num_inputs * math.ceil(runner.neurons / 8)
    keep_packed = num_attackers > 1 and packed_bytes <= max_memory_mb * 2**20
    packed: list[Tensor] = []  # per chunk: uint8 (chunk, inputs, neurons / 8)

    def stream() -> Iterator[tuple[int, Tensor]]:
        for start, active, _ in runner.chunks(states):
            if keep_packed:
                packed.append(torch.stack([_pack_bits(row) for row in active]))
            yield start, active

    def rows_of(suspects: set[int]) -> dict[int, Tensor]:
        if not keep_packed:
            return runner.rows(states, suspects)
        size = runner.chunk_size
        return {
            s: _unpack_bits(packed[s // size][s % size], runner.neurons)
            for s in suspects
        }

    return _streaming_confidence(
        stream(),
        clients,
        num_inputs,
        runner.neurons,
        num_attackers,
        rows_of,
        runner.device,
    )


def _streaming_confidence(
    chunks: Iterable[tuple[int, Tensor]],
    clients: int,
    num_inputs: int,
    neurons: int,
    num_attackers: int,
    rows_of: Callable[[set[int]], dict[int, Tensor]],
    device: torch.device,
) -> Tensor:
    """The engine's vote, on a stream of ``(start, (chunk, K, neurons))`` chunks.

    Same confidences as :func:`oracle.confidence` on the whole matrix, tie rule
    included. ``rows_of`` returns the ``(K, neurons)`` rows of the given clients;
    it is only called to remove suspects, after the stream is consumed.
    """
    stats = _VoteStats(clients, num_inputs, neurons, device)
    for start, active in chunks:
        stats.add(start, active)
    votes = torch.zeros(clients)
    remaining = [list(range(clients)) for _ in range(num_inputs)]
    voting = set(range(num_inputs))
    for repetition in range(num_attackers):
        flagged: dict[int, int] = {}
        for k in sorted(voting):
            suspect = stats.suspect(k, remaining[k])
            if suspect is None:
                voting.discard(k)
                continue
            votes[suspect] += 1
            flagged[k] = suspect
        if repetition == num_attackers - 1 or not flagged:
            break
        rows = rows_of(set(flagged.values()))
        for k, suspect in flagged.items():
            stats.remove(k, suspect, rows[suspect][k])
            remaining[k].remove(suspect)
    return votes / max(num_inputs, 1)


# ------------------------------------------------------------------------ internals
def _pick(counts: Tensor, remaining: Sequence[int]) -> int | None:
    """The client whose count is the unique maximum, or None on a tie."""
    winners = torch.nonzero(counts == counts.max()).flatten()
    if len(winners) != 1:
        return None
    return remaining[int(winners[0])]


class _VoteStats:
    """Per input and neuron: clients on, and the sum of their ids (streaming)."""

    def __init__(
        self, clients: int, num_inputs: int, neurons: int, device: torch.device
    ) -> None:
        self.clients = clients
        self.on_count = torch.zeros(
            (num_inputs, neurons), dtype=torch.int32, device=device
        )
        self.on_id_sum = torch.zeros(
            (num_inputs, neurons), dtype=torch.int64, device=device
        )

    def add(self, start: int, active: Tensor) -> None:
        """Accumulate a chunk ``(chunk, inputs, neurons)`` of clients from ``start``."""
        for offset, row in enumerate(active):  # row by row: no (chunk, ...) int copy
            self.on_count += row
            if start + offset:
                self.on_id_sum.add_(row, alpha=start + offset)

    def remove(self, k: int, client: int, row: Tensor) -> None:
        """Take ``client``'s ``row`` (neurons,) of input ``k`` out of the sums."""
        row = row.to(self.on_count.device)
        self.on_count[k] -= row.int()
        self.on_id_sum[k] -= row.long() * client

    def suspect(self, k: int, remaining: list[int]) -> int | None:
        if len(remaining) < 2:
            return None
        only_one_off = self.on_count[k] == len(remaining) - 1  # (neurons,)
        off_id = sum(remaining) - self.on_id_sum[k][only_one_off]
        unique_off = torch.bincount(off_id, minlength=self.clients).cpu()
        return _pick(unique_off[remaining], remaining)


def _pack_bits(bits: Tensor) -> Tensor:
    """bool ``(..., n)`` -> uint8 ``(..., ceil(n / 8))``."""
    pad = (-bits.shape[-1]) % 8
    if pad:
        bits = torch.cat([bits, bits.new_zeros((*bits.shape[:-1], pad))], dim=-1)
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=bits.device)
    octets = bits.reshape(*bits.shape[:-1], -1, 8).to(torch.uint8)
    return (octets * weights).sum(dim=-1, dtype=torch.uint8)


def _unpack_bits(packed: Tensor, n: int) -> Tensor:
    """Inverse of :func:`_pack_bits`, cut back to ``n`` bits."""
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=packed.device)
    return ((packed.unsqueeze(-1) & weights) != 0).flatten(-2)[..., :n]


class _Engine:
    """Runs client weights through one template module on a shared input batch.

    Forward hooks, registered once on the template, threshold every Conv2d/Linear
    output as it is produced, so float activations are never kept.
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: Tensor,
        na_t: float,
        device: str | torch.device = "cpu",
        max_memory_mb: float = 1024.0,
        vectorize: bool | None = None,
        capture: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.template = copy.deepcopy(model).to(self.device).eval()
        self.reference = self.template.state_dict()
        self.keys = frozenset(self.reference)
        dtype = next(self.template.parameters()).dtype
        self.inputs = inputs.to(self.device, dtype)  # (K, *shape)
        self.na_t = na_t
        self.capture = capture
        self._outputs: list[Tensor] = []

        modules = [
            m for m in self.template.modules() if isinstance(m, FINGERPRINT_MODULES)
        ]
        if not modules:
            raise ValueError(
                "model has no nn.Conv2d or nn.Linear module to fingerprint"
            )
        for module in modules:
            module.register_forward_hook(self._record)
        self.neurons, activation_bytes = self._probe()

        weight_bytes = sum(
            t.numel() * t.element_size() for t in self.reference.values()
        )
        if vectorize is None:
            vectorize = (
                self.device.type == "cuda" or weight_bytes <= _VMAP_CPU_MAX_WEIGHT_BYTES
            )
        self.vectorize = vectorize
        self.chunk_size = self._chunk_size(
            max_memory_mb * 2**20, weight_bytes, len(self.inputs) * activation_bytes
        )

    def _record(self, _module: nn.Module, _args: object, output: Tensor) -> None:
        if self.capture:
            self._outputs.append((output > self.na_t).flatten(1))  # (K, units)

    @torch.no_grad()
    def _probe(self) -> tuple[int, int]:
        """Neurons per input, and bytes of all module outputs for one input."""
        sizes: list[int] = []

        def count(_m: nn.Module, _a: object, out: object) -> None:
            if isinstance(out, Tensor):
                sizes.append(out.numel() * out.element_size())

        leaves = [m for m in self.template.modules() if not list(m.children())]
        handles = [m.register_forward_hook(count) for m in leaves]
        capture, self.capture = self.capture, True
        try:
            self._outputs.clear()
            self.template(self.inputs[:1].new_zeros((1, *self.inputs.shape[1:])))
            neurons = sum(o.shape[1] for o in self._outputs)
        finally:
            self._outputs.clear()
            self.capture = capture
            for handle in handles:
                handle.remove()
        return neurons, sum(sizes)

    def _chunk_size(
        self, budget: float, weight_bytes: int, activation_bytes: int
    ) -> int:
        """Clients per chunk so that a chunk's tensors stay near ``budget`` bytes.

        vmap holds every client's weights and activations of a chunk at once; the
        per-client path holds one client's (weights only when they are moved to
        another device) plus the chunk's thresholded rows.
        """
        result_bytes = len(self.inputs) * self.neurons if self.capture else 0
        if self.vectorize:
            per_client = weight_bytes + activation_bytes + result_bytes
            return max(1, int(budget // max(per_client, 1)))
        moved = weight_bytes if self.device.type != "cpu" else 0
        spare = budget - activation_bytes - moved
        return max(1, int(spare // max(result_bytes, 1)))

    def _check_keys(self, state: Mapping[str, Tensor]) -> None:
        """Fail fast: a missing key would silently fall back to the template's."""
        if set(state) != self.keys:
            missing = sorted(self.keys - set(state))[:5]
            unexpected = sorted(set(state) - self.keys)[:5]
            raise KeyError(
                f"client state does not match the model: missing {missing}, "
                f"unexpected {unexpected}"
            )

    def _state(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``state`` on the engine's device and dtypes (no copy when they match)."""
        self._check_keys(state)
        out = {}
        for key, value in state.items():
            ref = self.reference[key]
            out[key] = torch.as_tensor(value).to(device=self.device, dtype=ref.dtype)
        return out

    def _forward(self, params: dict[str, Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
        """Fingerprints ``(K, neurons)`` and outputs ``(K, ...)`` of one weight set."""
        self._outputs.clear()
        logits = functional_call(self.template, params, (x,))
        active = torch.cat(self._outputs, dim=1) if self.capture else logits[:, :0]
        self._outputs.clear()
        return active, logits

    @torch.inference_mode()
    def run(
        self, states: Sequence[Mapping[str, Tensor]], clients: Sequence[int]
    ) -> tuple[Tensor, Tensor]:
        """bool ``(chunk, K, neurons)`` fingerprints and ``(chunk, K, ...)`` outputs.

        ``states[c]`` is read once per client and dropped after use, so states
        made on access (a lazy sequence) need not all be held at once.
        """
        if not self.vectorize:
            active = torch.empty(
                (len(clients), len(self.inputs), self.neurons if self.capture else 0),
                dtype=torch.bool,
                device=self.device,
            )
            outputs = []
            for j, c in enumerate(clients):
                active[j], out = self._forward(self._state(states[c]), self.inputs)
                outputs.append(out)
            return active, torch.stack(outputs)
        chunk = [states[c] for c in clients]
        for state in chunk:
            self._check_keys(state)
        stacked = {}
        for key, ref in self.reference.items():
            buffer = ref.new_empty((len(chunk), *ref.shape))  # (chunk, *param)
            for i, state in enumerate(chunk):
                buffer[i].copy_(torch.as_tensor(state[key]))
            stacked[key] = buffer
        del chunk
        return vmap(self._forward, in_dims=(0, None))(stacked, self.inputs)

    def chunks(
        self, states: Sequence[Mapping[str, Tensor]]
    ) -> Iterator[tuple[int, Tensor, Tensor]]:
        """(first client id, fingerprints, outputs) per chunk of clients."""
        for start in range(0, len(states), self.chunk_size):
            stop = min(start + self.chunk_size, len(states))
            active, logits = self.run(states, range(start, stop))
            yield start, active, logits

    def rows(
        self, states: Sequence[Mapping[str, Tensor]], clients: set[int]
    ) -> dict[int, Tensor]:
        """Fingerprints ``(K, neurons)`` of ``clients``, recomputed bit for bit.

        A vmapped chunk is rerun whole, as in the first pass, so the result cannot
        depend on which clients shared the grouped convolutions.
        """
        if not self.vectorize:
            return {c: self.run(states, [c])[0][0] for c in clients}
        rows = {}
        for start in sorted({c - c % self.chunk_size for c in clients}):
            stop = min(start + self.chunk_size, len(states))
            active, _ = self.run(states, range(start, stop))
            rows.update({c: active[c - start] for c in clients if start <= c < stop})
        return rows
