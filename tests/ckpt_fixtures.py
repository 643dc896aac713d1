"""Generator of small real checkpoint folders, one per format and hazard kind (design/hazards.md, Checkpoints).

Each builder writes real files with torch.save / safetensors and returns a :class:`Fixture` saying what a
faithful loader must do: ``expected[run][step]`` holds the tensors (in the model's key space) that must end
up in the model, ``fails[run][step]`` the failure kind and the file the one-line message must name, and
``problems`` substrings discovery must report (unparseable names, duplicate steps...).
"""
from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import save_file

from semgraph.tasks.mlp_modadd import onehot_mlp

P, D = 7, 8
MLP_SPEC = {"builder": "factory", "factory": "semgraph.tasks.mlp_modadd:onehot_mlp", "kwargs": {"p": P, "d_mlp": D}}


@dataclass
class Fixture:
    name: str
    folder: Path
    model: Callable[[], torch.nn.Module]
    expected: dict[str, dict[int, dict[str, torch.Tensor]]] = field(default_factory=dict)
    fails: dict[str, dict[int, tuple[str, str]]] = field(default_factory=dict)   # kind, file name in message
    problems: list[str] = field(default_factory=list)
    trust: bool = False
    payload: str | None = None


def mlp_model() -> torch.nn.Module:
    return onehot_mlp(p=P, d_mlp=D)


def mlp_state(seed: int, d_mlp: int = D) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    m = onehot_mlp(p=P, d_mlp=d_mlp)
    return {"mlp.W_in": torch.randn(d_mlp, P, generator=g), "mlp.W_out": torch.randn(P, d_mlp, generator=g),
            "mlp.basis": m.mlp.basis.clone()}


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


class TiedModel(torch.nn.Module):
    """An embedding tied to the unembedding (as GPT-2): one tensor under two state-dict names."""

    def __init__(self, p: int = P, d: int = D):
        super().__init__()
        self.embed = torch.nn.Embedding(p, d)
        self.hidden = torch.nn.Linear(d, d)
        self.unembed = torch.nn.Linear(d, p, bias=False)
        self.unembed.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.unembed(torch.relu(self.hidden(self.embed(tokens[:, 0]))))


def tied_state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"embed.weight": torch.randn(P, D, generator=g), "hidden.weight": torch.randn(D, D, generator=g),
            "hidden.bias": torch.randn(D, generator=g)}


def tl_config() -> dict[str, Any]:
    from semgraph.tasks import ModularAddition
    return ModularAddition(p=P).model_spec(d_model=8, n_heads=2, d_mlp=16)["config"]


def tl_model() -> torch.nn.Module:
    from semgraph.models import boot_native
    return boot_native(tl_config())


def legacy_from_bridge(state: dict[str, torch.Tensor], n_heads: int, d_head: int) -> dict[str, torch.Tensor]:
    """The HookedTransformer (TL 1.x-3.x) state-dict layout of a bridge state dict: per-head W_Q [h, d, dh]..."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        head, _, leaf = k.rpartition(".")
        mod = head.rpartition(".")[2]
        base = head.rpartition(".")[0]
        if k.endswith("attn.q.weight") or k.endswith("attn.k.weight") or k.endswith("attn.v.weight"):
            out[f"{base}.W_{mod.upper()}"] = v.reshape(n_heads, d_head, -1).transpose(1, 2).contiguous()
        elif k.endswith(("attn.q.bias", "attn.k.bias", "attn.v.bias")):
            out[f"{base}.b_{mod.upper()}"] = v.reshape(n_heads, d_head).contiguous()
        elif k.endswith("attn.o.weight"):
            out[f"{base}.W_O"] = v.T.reshape(n_heads, d_head, -1).contiguous()
        elif k.endswith("attn.o.bias"):
            out[f"{base}.b_O"] = v
        elif k.endswith("mlp.in.weight"):
            out[f"{base}.W_in"] = v.T.contiguous()
        elif k.endswith("mlp.in.bias"):
            out[f"{base}.b_in"] = v
        elif k.endswith("mlp.out.weight"):
            out[f"{base}.W_out"] = v.T.contiguous()
        elif k.endswith("mlp.out.bias"):
            out[f"{base}.b_out"] = v
        elif k == "embed.weight":
            out["embed.W_E"] = v
        elif k == "pos_embed.weight":
            out["pos_embed.W_pos"] = v
        elif k == "unembed.weight":
            out["unembed.W_U"] = v.T.contiguous()
        elif k == "unembed.bias":
            out["unembed.b_U"] = v
        else:
            raise KeyError(k)
    out["blocks.0.attn.mask"] = torch.tril(torch.ones(3, 3, dtype=torch.bool))  # HookedTransformer buffers
    out["blocks.0.attn.IGNORE"] = torch.tensor(-1e5)
    return out


def shard_safetensors(state: dict[str, torch.Tensor], folder: Path, n: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(state)
    weight_map = {}
    for i in range(n):
        name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        part = {k: state[k].contiguous() for k in keys[i::n]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def shard_bin(state: dict[str, torch.Tensor], folder: Path, n: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(state)
    weight_map = {}
    for i in range(n):
        name = f"pytorch_model-{i + 1:05d}-of-{n:05d}.bin"
        part = {k: state[k] for k in keys[i::n]}
        torch.save(part, folder / name)
        weight_map.update({k: name for k in part})
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def hf_extras(folder: Path, step: int) -> None:
    """What an HF Trainer writes next to the weights: not weights, must be ignored."""
    w = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([w])
    torch.save(opt.state_dict(), folder / "optimizer.pt")
    torch.save({"last_epoch": 1, "_step_count": 2}, folder / "scheduler.pt")
    torch.save({"python": 1, "numpy": np.random.get_state()[1][:4], "cpu": torch.get_rng_state()},
               folder / "rng_state.pth")
    torch.save({"learning_rate": 1e-3, "output_dir": "out"}, folder / "training_args.bin")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))


def truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ---- builders ---------------------------------------------------------------------------------------------------
def build_all(root: Path) -> list[Fixture]:
    return [fn(root / name) for name, fn in BUILDERS.items()]


def _pt_prefixes(d: Path) -> Fixture:
    d.mkdir(parents=True)
    exp = {}
    for i, (step, prefix) in enumerate([(0, ""), (10, "module."), (100, "_orig_mod."), (1000, "model."),
                                        (9000, "module._orig_mod."), (10000, "model.module.")]):
        s = mlp_state(i)
        torch.save(prefixed(s, prefix), d / f"step_{step}.pt")
        exp[step] = s
    (d / "final.pt").write_bytes((d / "step_10000.pt").read_bytes())
    return Fixture("pt-prefixes", d, mlp_model, {d.name: exp},
                   problems=["final.pt: no step number in the name or inside the file"])


def _zero_pad(d: Path) -> Fixture:
    d.mkdir(parents=True)
    exp = {}
    for i, step in enumerate([5, 50, 500, 5000, 50000]):
        s = mlp_state(10 + i)
        save_file(s, str(d / f"ckpt-{step:0{3 if step < 1000 else 6}d}.safetensors"))
        exp[step] = s
    return Fixture("zero-padding-width-changes", d, mlp_model, {d.name: exp})


def _hf(d: Path, kind: str) -> Fixture:
    exp = {}
    for i, step in enumerate([500, 1000, 1500]):
        s = mlp_state(20 + i)
        ck = d / f"checkpoint-{step}"
        ck.mkdir(parents=True)
        if kind == "safetensors":
            save_file(s, str(ck / "model.safetensors"), metadata={"format": "pt"})
        elif kind == "sharded-safetensors":
            shard_safetensors(s, ck)
        elif kind == "bin":
            torch.save(s, ck / "pytorch_model.bin")
        else:
            shard_bin(s, ck)
        hf_extras(ck, step)
        exp[step] = s
    (d / "runs").mkdir()  # tensorboard logs folder next to the checkpoints
    return Fixture(f"hf-{kind}", d, mlp_model, {d.name: exp})


def _lightning(d: Path) -> Fixture:
    d.mkdir(parents=True)
    exp = {}
    w = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.Adam([w])
    for i, (epoch, step) in enumerate([(0, 99), (1, 199), (9, 999)]):
        s = mlp_state(30 + i)
        torch.save({"epoch": epoch, "global_step": step, "pytorch-lightning_version": "2.4.0",
                    "state_dict": prefixed(s, "model."), "loops": {}, "callbacks": {},
                    "optimizer_states": [opt.state_dict()], "lr_schedulers": [],
                    "hyper_parameters": {"lr": 1e-3, "p": P}}, d / f"epoch={epoch}-step={step}.ckpt")
        exp[step] = s
    return Fixture("lightning-ckpt", d, mlp_model, {d.name: exp})


def _containers(d: Path) -> Fixture:
    """Training containers with numpy scalars (refused by plain weights_only before the allowlist)."""
    d.mkdir(parents=True)
    exp = {}
    w = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    for i, step in enumerate([0, 200, 1000, 10000]):
        s = mlp_state(40 + i)
        torch.save({"model_state_dict": s, "optimizer_state_dict": opt.state_dict(), "epoch": np.int64(step),
                    "train_accuracy": np.float64(0.5 + i / 10), "loss": np.float32(1.5)}, d / f"{step}.pth")
        exp[step] = s
    torch.save([(1, 2), (3, 4)], d / "train_data.pth")
    return Fixture("container-numpy-scalars", d, mlp_model, {d.name: exp})


def _multi(d: Path) -> Fixture:
    d.mkdir(parents=True)
    states = [mlp_state(50 + i) for i in range(4)]
    torch.save(states, d / "history.pt")                                     # list, no steps recorded
    a = d / "with_steps"
    a.mkdir()
    torch.save([{"step": 100 * i, "model": s} for i, s in enumerate(states)], a / "all_checkpoints.pth")
    b = d / "keyed"
    b.mkdir()
    torch.save({str(100 * (i + 1)): s for i, s in enumerate(states)}, b / "snapshots.pt")
    return Fixture("one-file-many-steps", d, mlp_model,
                   {d.name: dict(enumerate(states)),
                    "with_steps": {100 * i: s for i, s in enumerate(states)},
                    "keyed": {100 * (i + 1): s for i, s in enumerate(states)}},
                   problems=["list positions 0..3 are used as steps"])


def _legacy_tl(d: Path) -> Fixture:
    d.mkdir(parents=True)
    cfg = tl_config()
    exp = {}
    for i, step in enumerate([0, 100, 200]):
        torch.manual_seed(60 + i)
        m = tl_model()
        state = {k: v.detach().clone() for k, v in m.state_dict().items()}
        torch.save(legacy_from_bridge(state, cfg["n_heads"], cfg["d_head"]), d / f"model_step_{step}.pt")
        exp[step] = state
    return Fixture("legacy-hookedtransformer", d, tl_model, {d.name: exp})


def _low_precision(d: Path) -> Fixture:
    d.mkdir(parents=True)
    exp = {}
    for i, (step, dtype) in enumerate([(0, torch.float16), (10, torch.bfloat16), (20, torch.float16)]):
        s = {k: v.to(dtype) for k, v in mlp_state(70 + i).items()}
        if step == 10:
            torch.save(s, d / f"step_{step}.pt")
        else:
            save_file(s, str(d / f"step_{step}.safetensors"))
        exp[step] = {k: v.float() for k, v in s.items()}
    return Fixture("fp16-bf16", d, mlp_model, {d.name: exp})


def _tied(d: Path) -> Fixture:
    d.mkdir(parents=True)
    exp = {}
    for i, step in enumerate([1, 2]):
        s = tied_state(80 + i)
        save_file(s, str(d / f"step_{step}.safetensors"))   # the tied unembed.weight is not on disk
        exp[step] = {**s, "unembed.weight": s["embed.weight"]}
    bad = tied_state(90)
    bad["unembed.weight"] = torch.randn(P, D)
    save_file(bad, str(d / "step_3.safetensors"))          # tied in the model, different in the file
    return Fixture("tied-weights", d, TiedModel, {d.name: exp},
                   fails={d.name: {3: ("keys", "step_3.safetensors")}})


def _seeds(d: Path) -> Fixture:
    exp: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    for seed in (0, 1):
        sub = d / f"seed{seed}"
        sub.mkdir(parents=True)
        exp[f"seed{seed}"] = {}
        for i, step in enumerate([0, 50, 100]):
            s = mlp_state(100 + 10 * seed + i)
            torch.save(s, sub / f"step_{step}.pt")
            exp[f"seed{seed}"][step] = s
    flat = d / "patterns"
    flat.mkdir()
    for seed in (0, 1):
        exp[f"patterns/seed{seed}_step_#"] = {}
        for i, step in enumerate([0, 50, 100]):
            s = mlp_state(200 + 10 * seed + i)
            torch.save(s, flat / f"seed{seed}_step_{step}.pt")
            exp[f"patterns/seed{seed}_step_#"][step] = s
    return Fixture("several-runs", d, mlp_model, exp)


def _trust(d: Path) -> Fixture:
    d.mkdir(parents=True)
    exp = {}
    for i, step in enumerate([0, 1]):
        s = mlp_state(300 + i)
        torch.save({"model": s, "saved_at": datetime.datetime(2024, 1, 1 + i)}, d / f"step_{step}.pt")
        exp[step] = s
    return Fixture("needs-trust", d, mlp_model, {d.name: exp}, trust=True)


def _needs_trust_refused(d: Path) -> Fixture:
    f = _trust(d)
    return Fixture("needs-trust-refused", d, mlp_model,
                   fails={d.name: {0: ("unpickling", "step_0.pt"), 1: ("unpickling", "step_1.pt")}})


def _corrupt(d: Path) -> Fixture:
    d.mkdir(parents=True)
    exp = {0: mlp_state(400)}
    torch.save(exp[0], d / "step_0.pt")
    torch.save(mlp_state(401), d / "step_1.pt")
    truncate(d / "step_1.pt")                                                # zip cut short
    save_file(mlp_state(402), str(d / "step_2.safetensors"))
    truncate(d / "step_2.safetensors", 0.8)                                  # safetensors cut short
    (d / "step_3.pt").write_bytes(b"")                                       # 0 bytes (full disk)
    torch.save(mlp_state(404), d / "step_4.pt", _use_new_zipfile_serialization=False)
    truncate(d / "step_4.pt", 0.5)                                           # legacy pickle cut short
    (d / "step_5.pt").write_bytes(b"\x80\x04garbage that is no pickle")      # not a checkpoint
    return Fixture("truncated-and-corrupt", d, mlp_model, {d.name: exp},
                   fails={d.name: {1: ("truncated", "step_1.pt"), 2: ("truncated", "step_2.safetensors"),
                                   3: ("truncated", "step_3.pt"), 4: ("truncated", "step_4.pt"),
                                   5: ("unpickling", "step_5.pt")}})


def _shape_change(d: Path) -> Fixture:
    d.mkdir(parents=True)
    exp = {0: mlp_state(500)}
    torch.save(exp[0], d / "step_0.pt")
    torch.save(mlp_state(501, d_mlp=2 * D), d / "step_100.pt")              # width changed mid-run
    return Fixture("shape-change", d, mlp_model, {d.name: exp}, fails={d.name: {100: ("shape", "step_100.pt")}})


def _keys(d: Path) -> Fixture:
    d.mkdir(parents=True)
    exp = {0: mlp_state(600)}
    torch.save(exp[0], d / "step_0.pt")
    partial = mlp_state(601)
    del partial["mlp.W_out"]
    torch.save(partial, d / "step_1.pt")                                     # a key missing
    torch.save(prefixed(mlp_state(602), "encoder."), d / "step_2.pt")       # a prefix that is no wrapper
    torch.save({"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}, d / "step_3.pt")  # optimizer only
    torch.save({"model": mlp_state(604), "ema": mlp_state(605)}, d / "step_4.pt")  # two payloads
    torch.save(torch.nn.Linear(2, 2), d / "step_5.pt")                     # a pickled module object
    return Fixture("keys-and-payloads", d, mlp_model, {d.name: exp},
                   fails={d.name: {1: ("keys", "step_1.pt"), 2: ("keys", "step_2.pt"), 3: ("keys", "step_3.pt"),
                                   4: ("keys", "step_4.pt"), 5: ("unpickling", "step_5.pt")}})


def _payload(d: Path) -> Fixture:
    d.mkdir(parents=True)
    exp = {}
    for i, step in enumerate([0, 1]):
        ema = mlp_state(700 + i)
        torch.save({"model": mlp_state(710 + i), "ema": ema, "step": step}, d / f"step_{step}.pt")
        exp[step] = ema
    return Fixture("payload-ema", d, mlp_model, {d.name: exp}, payload="ema")


def _missing_shard(d: Path) -> Fixture:
    exp = {100: mlp_state(800)}
    shard_safetensors(exp[100], d / "checkpoint-100")
    shard_safetensors(mlp_state(801), d / "checkpoint-200")
    (d / "checkpoint-200" / "model-00002-of-00002.safetensors").unlink()
    return Fixture("missing-shard", d, mlp_model, {d.name: exp},
                   fails={d.name: {200: ("keys", "model.safetensors.index.json")}})


def _duplicates(d: Path) -> Fixture:
    d.mkdir(parents=True)
    s = mlp_state(900)
    exp = {0: mlp_state(901), 100: s, 200: s}                                 # 200 identical to 100
    torch.save(exp[0], d / "step_0.pt")
    torch.save(s, d / "step_100.pt")
    torch.save(s, d / "step_200.pt")
    torch.save(mlp_state(902), d / "step_300.pt")
    torch.save(mlp_state(903), d / "step_0300.pt")                          # the same step twice
    return Fixture("duplicate-steps", d, mlp_model, {d.name: exp}, problems=["step 300 appears 2 times"])


def save_as_if_cuda(obj: Any, path: Path) -> None:
    """torch.save, then mark every storage as saved from 'cuda:0' (as a GPU training job writes it)."""
    import io
    import zipfile
    buf = io.BytesIO()
    torch.save(obj, buf)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for n in zin.namelist():
            data = zin.read(n)
            if n.endswith("data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            zout.writestr(n, data)
    path.write_bytes(out.getvalue())


def _cuda_saved(d: Path) -> Fixture:
    d.mkdir(parents=True)
    exp = {}
    for i, step in enumerate([0, 100]):
        s = mlp_state(1000 + i)
        save_as_if_cuda({"model": s, "step": step}, d / f"step_{step}.pt")
        exp[step] = s
    return Fixture("cuda-saved", d, mlp_model, {d.name: exp})


BUILDERS: dict[str, Callable[[Path], Fixture]] = {
    "pt-prefixes": _pt_prefixes, "zero-padding": _zero_pad,
    "hf-safetensors": lambda d: _hf(d, "safetensors"), "hf-sharded-safetensors": lambda d: _hf(d, "sharded-safetensors"),
    "hf-bin": lambda d: _hf(d, "bin"), "hf-sharded-bin": lambda d: _hf(d, "sharded-bin"),
    "lightning": _lightning, "containers": _containers, "multi": _multi, "legacy-tl": _legacy_tl,
    "low-precision": _low_precision, "tied": _tied, "seeds": _seeds, "trust": _trust,
    "trust-refused": _needs_trust_refused, "corrupt": _corrupt, "shape-change": _shape_change, "keys": _keys,
    "payload": _payload, "missing-shard": _missing_shard, "duplicates": _duplicates, "cuda-saved": _cuda_saved,
}
