"""Plan stage: compile (model, technique) into what the device executes, and serialise it (docs/plan-format.md).

The plan decides which tensors live in SRAM and when. Only trainable parameters are copied to SRAM (frozen ones are
read from flash); an activation is kept past its forward use only if the backward pass needs it (the input of a layer
whose weights train, the output of a ReLU on the backward path); the backward pass visits only layers at or above the
lowest trained one; updates are applied as soon as each gradient is known, so gradient buffers never coexist. Buffers
then get arena offsets by lifetime: two buffers share bytes when their lifetimes do not overlap. The result is the
plan's analytic arena peak, which the device's measured (painted) arena peak is compared against.

Sparse update (MCUNetV3): a layer whose weights train on a fraction r of its output channels gets a *channel list*
(the ``round(r·C)`` (at least 1) channels with the largest L2 weight norm, ascending); only those rows are copied to
SRAM, the others are read from flash, and only their gradient is computed and applied.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from bench.config.profile import Technique
from bench.formats.blobs import TPLN_HEADER, TPLN_LAYER
from bench.model.nn import Layer, Model, numel, same_padding
from bench.plan.blob import finish_blob
from bench.plan.buffers import Buffer, aligned, arena_composition, buffer_kind, channel_count, place_buffers

PLAN_MAGIC = 0x4E4C5054
PLAN_HEADER = TPLN_HEADER.size
LAYER_RECORD = TPLN_LAYER.size
NONE = 0xFFFFFFFF
OPS = {"dense": 1, "conv2d": 2, "relu": 3, "maxpool2d": 4, "dwconv2d": 5, "gap": 6, "add": 7}
MERGE_FLAG = 64  # layer flag bit 6: a residual branch starts here; its input gradient adds the ADD's skip gradient
ACT_FLAGS = {"none": 0, "relu": 16, "relu6": 32}  # layer flag bits 4 / 5: a fused activation
MAX_LAYERS = 32
PLAN_F_CHANNEL_LISTS = 1  # header flag: some layer records carry a channel list (sparse update)
PLAN_F_RECON = 8  # header flag: the reconstruction loss (an autoencoder's MSE against its input)


@dataclass(frozen=True)
class LayerPlan:
    index: int
    op: str
    train_w: bool
    train_b: bool
    need_dx: bool
    w_ram: int
    b_ram: int
    in_off: int
    out_off: int
    dout_off: int
    din_off: int
    scratch_off: int
    kept_bytes: int  # activation bytes this layer keeps alive for backward
    channels: tuple[int, ...] = ()  # sparse update: the output channels whose weights train (empty = all)
    merge: bool = False  # a residual branch starts here: its input gradient adds the skip gradient of the ADD above


@dataclass(frozen=True)
class Plan:
    """What one (model, technique) run needs on the device, with its analytic memory figures."""

    model: Model
    technique: Technique
    layers: tuple[LayerPlan, ...]
    buffers: tuple[Buffer, ...]
    arena_bytes: int
    input_off: int
    dlogits_off: int
    first_bwd: int
    trainable: frozenset[tuple[int, str]]
    fwd_mode: int = 0  # forward-only training: 0 none (backprop), FWD_PEPITA, FWD_MEMPEPITA
    mod_a_off: int = 0  # forward-only: the modulated pass's two buffers
    mod_b_off: int = 0

    @property
    def plan_hash(self) -> int:
        return _plan_hash(self)

    @property
    def channels(self) -> dict[int, tuple[int, ...]]:
        """Layer → output channels whose weights train, for layers trained on a subset of their channels."""
        return {lp.index: lp.channels for lp in self.layers if lp.channels}

    def blob(self, dataset_addr: int) -> bytes:
        """The plan blob, with the absolute flash address where the dataset blob will be placed."""
        return finish_blob(_serialise(self, dataset_addr), crc_at=12)

    def composition(self) -> dict[str, int]:
        """Planned arena bytes by kind at the moment the most bytes are live (SGD keeps no optimizer state)."""
        return arena_composition(self.buffers, lambda b: buffer_kind(b.name))

    def layer_memory(self) -> list[dict[str, int]]:
        """Planned bytes per layer: trainable parameters in SRAM, activations kept for backward, gradient buffers."""
        sizes = {b.name: b.size for b in self.buffers}
        rows = []
        for lp in self.layers:
            i = lp.index
            rows.append({"layer": i, "weights_ram_bytes": sizes.get(f"w{i}", 0) + sizes.get(f"b{i}", 0),
                         "kept_act_bytes": lp.kept_bytes,
                         "grad_bytes": aligned(4 * numel(self.model.layers[i].in_shape)) if lp.need_dx else 0,
                         "scratch_bytes": sizes.get(f"s{i}" if lp.op == "add" else f"scratch{i}", 0)})
        return rows

    def buffer_table(self) -> list[dict[str, int | str]]:
        return [{"name": b.name, "bytes": b.size, "offset": b.offset, "live": f"{b.start}..{b.end}"}
                for b in self.buffers]


def select_channels(weight: np.ndarray, ratio: float) -> tuple[int, ...]:
    """The ``channel_count`` output channels with the largest L2 weight norm (ties: lower index), ascending."""
    rows = np.asarray(weight, np.float64).reshape(weight.shape[0], -1)
    norms = np.sqrt((rows * rows).sum(axis=1))
    order = np.lexsort((np.arange(len(norms)), -norms))
    return tuple(sorted(int(c) for c in order[: channel_count(len(norms), ratio)]))


def sparse_channels(model: Model, technique: Technique) -> dict[int, tuple[int, ...]]:
    """Layer → trained output channels, for the layers a sparse technique trains on fewer than all channels."""
    if technique.scheme != "sparse":
        return {}
    out: dict[int, tuple[int, ...]] = {}
    for i, ratio in technique.layers:
        layer = model.layers[i] if 0 <= i < len(model.layers) else None
        if layer is None or layer.weight is None:
            raise ValueError(f"sparse technique: layer {i} of '{model.name}' has no weights")
        chosen = select_channels(layer.weight, ratio)
        if len(chosen) < layer.weight.shape[0]:
            out[i] = chosen
    return out


def compile_plan(model: Model, technique: Technique) -> Plan:
    if len(model.layers) > MAX_LAYERS:
        raise ValueError(f"model '{model.name}' has {len(model.layers)} layers; plans hold at most {MAX_LAYERS}")
    _check_residuals(model)
    if technique.forward_only:
        return _forward_only_plan(model, technique)
    trainable = frozenset(technique.trainable(model.param_layers()))
    channels = sparse_channels(model, technique)
    n = len(model.layers)
    first_bwd = min((i for i, _ in trainable), default=n)
    buffers, names = _buffers(model, trainable, first_bwd, channels)
    placed = place_buffers(buffers)
    off = {b.name: b.offset for b in placed}
    merged = merges(model, first_bwd)
    layers = tuple(_layer_plan(i, layer, trainable, first_bwd, names, off, channels.get(i, ()), i in merged)
                   for i, layer in enumerate(model.layers))
    return Plan(model=model, technique=technique, layers=layers, buffers=tuple(placed),
                arena_bytes=max((b.offset + b.size for b in placed), default=0),
                input_off=off[names["act"][0]], dlogits_off=off[names["grad"][n]], first_bwd=first_bwd,
                trainable=trainable)


def _check_residuals(model: Model) -> None:
    """Each ADD reads the input of an earlier layer, with its own shape; one ADD per branch start (the device's
    rule: a merge is fed by exactly one ADD)."""
    starts: set[int] = set()
    for i, layer in enumerate(model.layers):
        if layer.op != "add":
            continue
        if not 0 <= layer.skip < i or layer.in_shape != layer.out_shape:
            raise ValueError(f"model '{model.name}' layer {i} add: skip {layer.skip} is not an earlier position, or "
                             f"its shapes {layer.in_shape} -> {layer.out_shape} differ")
        shape = model.input_shape if layer.skip == 0 else model.layers[layer.skip - 1].out_shape
        if shape != layer.in_shape or layer.skip in starts:
            raise ValueError(f"model '{model.name}' layer {i} add: its skip (the input of layer {layer.skip}) has "
                             f"shape {shape}, not {layer.in_shape}, or feeds another add")
        starts.add(layer.skip)


# ---- lifetimes --------------------------------------------------------------------------------------------

def _fwd_t(i: int) -> int:
    return i


def _bwd_t(n: int, i: int) -> int:
    return 2 * n - i


def _buffers(model: Model, trainable: frozenset, first_bwd: int,
             channels: dict[int, tuple[int, ...]]) -> tuple[list[Buffer], dict]:
    """Every arena buffer with its lifetime; ``names`` maps activations/gradients to (possibly shared) buffers."""
    n = len(model.layers)
    life: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}

    def use(name: str, size: int, t: int) -> None:
        sizes[name] = max(sizes.get(name, 0), aligned(size))
        span = life.setdefault(name, [t, t])
        span[0], span[1] = min(span[0], t), max(span[1], t)

    act = _activation_names(model)
    grad = _gradient_names(model, first_bwd)
    end = _bwd_t(n, 0) + 1
    use(act[0], 4 * numel(model.input_shape), -1)  # the sample is decoded before the forward pass
    for i, layer in enumerate(model.layers):
        use(act[i], 4 * numel(layer.in_shape), _fwd_t(i))
        use(act[i + 1], 4 * numel(layer.out_shape), _fwd_t(i))
        if layer.op == "add":  # the skip lives from where the branch starts to the ADD
            use(act[layer.skip], 4 * numel(layer.in_shape), _fwd_t(i))
        for p, arr in (("w", layer.weight), ("b", layer.bias)):
            if (i, p) in trainable and arr is not None:
                size = 4 * arr.size
                if p == "w" and i in channels:  # compact copy of the trained channels' rows
                    size = size // arr.shape[0] * len(channels[i])
                use(f"{p}{i}", size, -1)
                use(f"{p}{i}", size, end)
    use(act[n], 4 * model.n_classes, n)
    if model.loss == "reconstruction":  # the loss reads the input after the forward pass
        use(act[0], 4 * numel(model.input_shape), n)
    _backward_uses(model, trainable, first_bwd, act, grad, use)
    bufs = [Buffer(name, sizes[name], span[0], span[1]) for name, span in life.items()]
    return bufs, {"act": act, "grad": grad}


def _backward_uses(model: Model, trainable: frozenset, first_bwd: int, act: list[str], grad: list[str],
                   use) -> None:
    n = len(model.layers)
    use(grad[n], 4 * model.n_classes, n)
    for i in range(n - 1, first_bwd - 1, -1):
        layer, t = model.layers[i], _bwd_t(n, i)
        use(grad[i + 1], 4 * numel(layer.out_shape), t)
        if (i, "w") in trainable:
            use(act[i], 4 * numel(layer.in_shape), t)
        if layer.op == "relu":  # masks by its output
            use(act[i + 1], 4 * numel(layer.out_shape), t)
        elif layer.act != "none":  # a fused activation masks dout by the output first, so the output lives through
            use(act[i + 1], 4 * numel(layer.out_shape), t - 1)  # the layer above's backward, and din may reuse it
        if layer.op == "maxpool2d" and i > first_bwd:  # its backward finds each window's maximum again
            use(act[i], 4 * numel(layer.in_shape), t)
        if i > first_bwd:
            use(grad[i], 4 * numel(layer.in_shape), t)
        if layer.op in ("conv2d", "dwconv2d") and (i, "w") in trainable:
            use(f"scratch{i}", 4 * _row(layer), t)
    for start, i in merges(model, first_bwd).items():  # the skip gradient, from the ADD's backward to the merge
        use(f"s{i}", 4 * numel(model.layers[i].in_shape), _bwd_t(n, i))
        use(f"s{i}", 4 * numel(model.layers[i].in_shape), _bwd_t(n, start))


def _row(layer: Layer) -> int:
    """Floats per output channel of a conv's weights: its weight-gradient scratch."""
    assert layer.weight is not None
    return int(layer.weight[0].size)


def _activation_names(model: Model) -> list[str]:
    """Activation buffer per position 0..n; an in-place ReLU's output is its input's buffer, unless that input is
    a residual ADD's skip, which must survive to the ADD."""
    skips = {layer.skip for layer in model.layers if layer.op == "add"}
    names = ["a0"]
    for i, layer in enumerate(model.layers):
        names.append(names[i] if layer.op == "relu" and i not in skips else f"a{i + 1}")
    return names


def merges(model: Model, first_bwd: int) -> dict[int, int]:
    """Residual merges the backward pass makes: branch start (the ADD's skip position) -> the ADD. Only a skip above
    first_bwd needs its gradient (below it, nothing computes the input gradient it would join)."""
    return {layer.skip: i for i, layer in enumerate(model.layers) if layer.op == "add" and layer.skip > first_bwd}


def _gradient_names(model: Model, first_bwd: int) -> list[str]:
    """Gradient buffer per position; an in-place ReLU backward writes over its output gradient."""
    n = len(model.layers)
    names = [""] * (n + 1)
    names[n] = f"d{n}"
    for i in range(n - 1, -1, -1):
        names[i] = names[i + 1] if model.layers[i].op == "relu" else f"d{i}"
    return names


def _layer_plan(i: int, layer: Layer, trainable: frozenset, first_bwd: int, names: dict,
                off: dict[str, int], channels: tuple[int, ...], merge: bool) -> LayerPlan:
    act, grad = names["act"], names["grad"]
    in_bwd = i >= first_bwd
    train_w, train_b = (i, "w") in trainable, (i, "b") in trainable
    kept = 4 * numel(layer.in_shape) if train_w else 0
    if in_bwd and (layer.op == "relu" or layer.act != "none"):
        kept += 4 * numel(layer.out_shape)
    if layer.op == "maxpool2d" and in_bwd and i > first_bwd:
        kept = 4 * numel(layer.in_shape)
    return LayerPlan(
        index=i, op=layer.op, train_w=train_w, train_b=train_b, need_dx=in_bwd and i > first_bwd,
        w_ram=off.get(f"w{i}", NONE), b_ram=off.get(f"b{i}", NONE),
        in_off=off[act[i]], out_off=off[act[i + 1]],
        dout_off=off.get(grad[i + 1], NONE) if in_bwd else NONE,
        din_off=off.get(grad[i], NONE) if in_bwd and i > first_bwd else NONE,
        scratch_off=off.get(f"s{i}" if layer.op == "add" else f"scratch{i}", NONE), kept_bytes=kept,
        channels=channels, merge=merge,
    )


# ---- forward-only training (PEPITA, MEMPEPITA) ------------------------------------------------------------

FWD_PEPITA, FWD_MEMPEPITA = 1, 2
PLAN_F_PEPITA, PLAN_F_MEMPEPITA = 2, 4
F_SEED = 0x0E717A  # the fixed projection F's seed: the device draws F from it (docs/plan-format.md)
F_SCALE = 0.05  # F ~ U(±0.05·√(6/d_in)), as in Dellaferrera & Kreiman's code
OPS_FORWARD_ONLY = ("dense", "conv2d", "relu", "maxpool2d")


def projection_bound(model: Model) -> float:
    """F's bound as the device uses it (float32)."""
    return float(np.float32(F_SCALE * np.sqrt(6.0 / numel(model.input_shape))))


def act_of(model: Model, i: int) -> int:
    """The layer whose output is parameter layer i's activation h_i: the ReLU right after it, else itself."""
    return i + 1 if i + 1 < len(model.layers) and model.layers[i + 1].op == "relu" else i


def _forward_only_plan(model: Model, technique: Technique) -> Plan:
    """Times: the clean pass t = i, the modulated pass t = n + 1 + i. Layer buffers carry the clean stream (PEPITA:
    once; MEMPEPITA: again beside the modulated one, and its first pass, which keeps nothing, fits in the bytes the
    recompute uses later), two buffers of the largest activation the modulated stream. PEPITA keeps each trained
    layer's h_j (its dout) until its update; MEMPEPITA's dout holds h_j - h'_j for that update only, so the
    differences share bytes."""
    mem = technique.scheme == "mempepita"
    n = len(model.layers)
    if model.loss != "cross-entropy":
        raise ValueError(f"{technique.name}: forward-only training has no {model.loss} loss (its modulation is the "
                         f"softmax error)")
    fused = [i for i, layer in enumerate(model.layers) if layer.act != "none" or layer.op not in OPS_FORWARD_ONLY]
    if fused:
        raise ValueError(f"{technique.name}: forward-only training takes dense/conv2d/relu/maxpool2d layers with "
                         f"separate RELU layers; layer {fused[0]} of '{model.name}' is "
                         f"{model.layers[fused[0]].op} with activation {model.layers[fused[0]].act}")
    trainable = frozenset(technique.trainable(model.param_layers()))
    act = _activation_names(model)
    widest = max(max(numel(la.in_shape), numel(la.out_shape)) for la in model.layers)
    bufs: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}

    def use(name: str, size: int, t0: int, t1: int) -> None:
        sizes[name] = max(sizes.get(name, 0), aligned(size))
        span = bufs.setdefault(name, [t0, t1])
        span[0], span[1] = min(span[0], t0), max(span[1], t1)

    end = 2 * n + 2
    for i, layer in enumerate(model.layers):
        t = n + 1 + i if mem else i
        use(act[i], 4 * numel(layer.in_shape), t, t)
        use(act[i + 1], 4 * numel(layer.out_shape), t, t)
        for p, arr in (("w", layer.weight), ("b", layer.bias)):
            if (i, p) in trainable and arr is not None:
                use(f"{p}{i}", 4 * arr.size, -1, end)
        if (i, "w") in trainable and i < n - 1:
            a = act_of(model, i)
            use(f"d{i}", 4 * numel(model.layers[a].out_shape), n + 1 + a if mem else a, n + 1 + a)
        if layer.op == "conv2d" and (i, "w") in trainable:
            use(f"scratch{i}", 4 * _row(layer), n + 1 + act_of(model, i),
                n + 1 + act_of(model, i))
    use(act[0], 4 * numel(model.input_shape), -1, n + 1)  # decoded for the first pass and again for x'
    use(f"d{n}", 4 * model.n_classes, n - 1, end)  # e, then e'
    use("am0", 4 * widest, n + 1, end)
    use("am1", 4 * widest, n + 1, end)
    placed = place_buffers([Buffer(k, sizes[k], v[0], v[1]) for k, v in bufs.items()])
    off = {b.name: b.offset for b in placed}
    layers = tuple(_forward_only_layer(model, i, trainable, act, off) for i in range(n))
    return Plan(model=model, technique=technique, layers=layers, buffers=tuple(placed),
                arena_bytes=max(b.offset + b.size for b in placed), input_off=off[act[0]], dlogits_off=off[f"d{n}"],
                first_bwd=min((i for i, _ in trainable), default=n), trainable=trainable,
                fwd_mode=FWD_MEMPEPITA if mem else FWD_PEPITA, mod_a_off=off["am0"], mod_b_off=off["am1"])


def _forward_only_layer(model: Model, i: int, trainable: frozenset, act: list[str], off: dict[str, int]
                        ) -> LayerPlan:
    n, layer = len(model.layers), model.layers[i]
    train_w, train_b = (i, "w") in trainable, (i, "b") in trainable
    dout = off[f"d{n}"] if i == n - 1 else off.get(f"d{i}", NONE)
    return LayerPlan(
        index=i, op=layer.op, train_w=train_w, train_b=train_b, need_dx=False,
        w_ram=off.get(f"w{i}", NONE), b_ram=off.get(f"b{i}", NONE), in_off=off[act[i]], out_off=off[act[i + 1]],
        dout_off=dout if train_w or train_b else NONE, din_off=NONE, scratch_off=off.get(f"scratch{i}", NONE),
        kept_bytes=4 * numel(model.layers[act_of(model, i)].out_shape) if train_w and i < n - 1 else 0,
    )


# ---- serialisation ----------------------------------------------------------------------------------------


def _serialise(plan: Plan, dataset_addr: int) -> bytes:
    model = plan.model
    records, weights = bytearray(), bytearray()
    data_start = PLAN_HEADER + LAYER_RECORD * len(model.layers)
    for lp, layer in zip(plan.layers, model.layers, strict=True):
        w_src = _append(weights, layer.weight, data_start)
        b_src = _append(weights, layer.bias, data_start)
        ch_off = 0
        if lp.channels:  # u16 list, padded to 4 bytes
            ch_off = data_start + len(weights)
            weights += np.asarray(lp.channels, "<u2").tobytes() + b"\0" * (2 * (len(lp.channels) % 2))
        records += _layer_record(lp, layer, w_src, b_src, ch_off)
    total = data_start + len(weights)
    flags = PLAN_F_CHANNEL_LISTS if plan.channels else 0
    if model.loss == "reconstruction":
        flags |= PLAN_F_RECON
    fwd: dict[str, int | float] = {"f_seed": 0, "f_bound": 0.0, "mod_a_off": 0, "mod_b_off": 0}
    if plan.fwd_mode:
        flags |= PLAN_F_PEPITA if plan.fwd_mode == FWD_PEPITA else PLAN_F_MEMPEPITA
        fwd = {"f_seed": F_SEED, "f_bound": projection_bound(model), "mod_a_off": plan.mod_a_off,
               "mod_b_off": plan.mod_b_off}
    header = TPLN_HEADER.pack({
        "magic": PLAN_MAGIC, "version": 1, "header_bytes": PLAN_HEADER, "blob_bytes": total, "crc32": 0,
        "plan_hash": _plan_hash(plan), "arena_bytes": plan.arena_bytes, "dataset_addr": dataset_addr,
        "n_layers": len(model.layers), "n_classes": model.n_classes, "layers_offset": PLAN_HEADER,
        "input_off": plan.input_off, "dlogits_off": plan.dlogits_off, "first_bwd": plan.first_bwd, "flags": flags,
        **fwd,
    })
    return header + bytes(records) + bytes(weights)


def _plan_hash(plan: Plan) -> int:
    """The plan hash covers everything but the dataset address and itself, so it names the plan, not a placement."""
    digest = hashlib.sha256()
    digest.update(repr((plan.model.name, plan.technique, plan.arena_bytes, plan.layers)).encode())
    for layer in plan.model.layers:
        for arr in (layer.weight, layer.bias):
            if arr is not None:
                digest.update(np.ascontiguousarray(arr, dtype="<f4").tobytes())
    return int.from_bytes(digest.digest()[:4], "little")


def _append(buf: bytearray, arr: np.ndarray | None, base: int) -> int:
    if arr is None:
        return NONE
    offset = base + len(buf)
    buf += np.ascontiguousarray(arr, dtype="<f4").tobytes()
    return offset


def _layer_record(lp: LayerPlan, layer: Layer, w_src: int, b_src: int, ch_off: int) -> bytes:
    flags = lp.train_w | lp.train_b << 1 | lp.need_dx << 2 | (layer.padding == "same") << 3 | ACT_FLAGS[layer.act] \
        | (MERGE_FLAG if lp.merge else 0)
    pad_top = pad_left = 0
    conv = layer.op in ("conv2d", "dwconv2d")
    if conv and layer.padding == "same":
        pad_top = same_padding(layer.in_shape[0], layer.kernel, layer.stride)
        pad_left = same_padding(layer.in_shape[1], layer.kw, layer.stride)
    (in_h, in_w, in_c), (out_h, out_w, out_c) = layer.in_shape, layer.out_shape
    return TPLN_LAYER.pack({
        "op": OPS[layer.op], "flags": flags, "stride": layer.stride,
        "k": layer.skip if layer.op == "add" else layer.kernel,  # ADD: the layer whose input is its skip
        "in_h": in_h, "in_w": in_w,
        "in_c": in_c, "out_h": out_h, "out_w": out_w, "out_c": out_c, "w_src": w_src, "b_src": b_src,
        "w_ram": lp.w_ram, "b_ram": lp.b_ram, "in_off": lp.in_off, "out_off": lp.out_off, "dout_off": lp.dout_off,
        "din_off": lp.din_off, "scratch_off": lp.scratch_off, "pad_top": pad_top, "pad_left": pad_left,
        "ch_off": ch_off, "ch_count": len(lp.channels), "kw": layer.kw if conv and layer.kw != layer.kernel else 0,
    })


