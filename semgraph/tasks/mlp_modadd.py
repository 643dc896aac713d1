"""A plain ``torch.nn.Module`` for (a + b) mod p: a 2-layer MLP on one-hot sums (no transformer-lens).

Written from the README of the external series ``modadd-mlp-p23`` (He, Wang, Chen, Yang, arXiv 2602.16849;
repository Y-Agent/modular-addition-feature-learning): input x = onehot(a) + onehot(b), hidden =
ReLU(W_in x) with ``W_in`` [d_mlp, p], logits = W_out hidden with ``W_out`` [p, d_mlp]; no biases, no
embedding, no LayerNorm; ``basis`` is a fixed orthonormal real Fourier basis buffer [p, p] (a constant row,
then cos/sin rows), stored in the checkpoints but not used by the forward pass.

Module names for hooks: ``mlp.hook_pre`` (pre-activations), ``mlp.hook_post`` (ReLU outputs, the neurons),
``mlp`` (logits). semgraph's probe set feeds token rows ``[a, b, =]``; the model reads the first two.
Use it as ``--model semgraph.tasks.mlp_modadd:onehot_mlp``.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def fourier_basis(p: int) -> torch.Tensor:
    """Orthonormal real Fourier basis over 0..p-1: a constant row, then cos/sin rows for k = 1..(p-1)//2."""
    t = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    for k in range(1, (p - 1) // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * t / p), torch.sin(2 * math.pi * k * t / p)]
    if p % 2 == 0:
        rows.append(torch.cos(math.pi * t))
    basis = torch.stack(rows)
    return (basis / basis.norm(dim=1, keepdim=True)).float()


class OneHotMLP(nn.Module):
    """hidden = ReLU(W_in (onehot(a) + onehot(b))), logits = W_out hidden."""

    def __init__(self, p: int, d_mlp: int, init_scale: float = 0.1):
        super().__init__()
        self.p = p
        self.W_in = nn.Parameter(torch.randn(d_mlp, p) * init_scale)
        self.W_out = nn.Parameter(torch.randn(p, d_mlp) * init_scale)
        self.register_buffer("basis", fourier_basis(p))
        self.hook_pre = nn.Identity()
        self.hook_post = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(x @ self.W_in.T)
        return self.hook_post(torch.relu(pre)) @ self.W_out.T


class ModAddMLP(nn.Module):
    """Reads token rows ``[a, b, ...]`` (or ``[a, b]``) and returns logits over the p residues."""

    def __init__(self, p: int = 23, d_mlp: int = 512, init_scale: float = 0.1):
        super().__init__()
        self.p = p
        self.mlp = OneHotMLP(p, d_mlp, init_scale)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = torch.as_tensor(tokens)
        x = nn.functional.one_hot(tokens[:, 0], self.p) + nn.functional.one_hot(tokens[:, 1], self.p)
        return self.mlp(x.to(self.mlp.W_in.dtype))


def onehot_mlp(p: int = 23, d_mlp: int = 512, init_scale: float = 0.1, seed: int = 0) -> ModAddMLP:
    """Model factory (``--model semgraph.tasks.mlp_modadd:onehot_mlp``): an untrained MLP of this shape."""
    torch.manual_seed(seed)
    return ModAddMLP(p=p, d_mlp=d_mlp, init_scale=init_scale)


#: semgraph's analysis settings for this model: hooks and weights by module name, Fourier probes on W_in's
#: token axis (axis 1 of [d_mlp, p]): the aggregate spectrum, and one frequency per neuron (``neuron_fourier``,
#: which finds the key frequencies here; the aggregate spectrum of W_in is flat), neurons at ``mlp.hook_post``.
#: The signature stays the task's: the per-neuron concentration rises smoothly, and adding it moved no node
#: boundary closer to the recorded accuracy stages (README, external series).
ANALYSIS = {
    "hooks": ["mlp.hook_post"],
    "params": ["mlp.W_in"],
    "probes": [["output", {}],
               ["fourier", {"embedding_param": "mlp.W_in", "token_axis": 1, "neuron_hook": "mlp.hook_post"}],
               ["neuron_fourier", {"param": "mlp.W_in", "token_axis": 1}],
               ["linear", {"concept": "a+b mod p", "hook": "mlp.hook_post"}]],
}
