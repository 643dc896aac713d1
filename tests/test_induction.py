"""Induction probe on a hand-built 2-layer attention-only TransformerBridge with a known induction circuit.

Residual stream layout (d_model = V + n_ctx + V): token one-hot | position one-hot | previous-token one-hot.
Layer 0 head 0 is a previous-token head (query = own position i, key at j = position j + 1, so position i
attends to i - 1) that copies the attended token into the previous-token subspace. Layer 1 head 0 is an induction
head by K-composition (query = own token, key = the previous-token subspace written by layer 0, so position
i attends to j whose predecessor is the token at i). The other heads have zero weights: uniform attention.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from probes.base import ProbeContext
from probes.induction import InductionProbe, capture_patterns, induction_scores, previous_token_scores, repeated_tokens
from semgraph.capture import hook_count
from semgraph.models import boot_native

V, T = 30, 20              # vocabulary (token V - 1 is BOS), half length of the repeated sequence
N_CTX = 2 * T + 1
D_HEAD = 48
D_MODEL = V + N_CTX + V
TOK, POS, PREV = 0, V, V + N_CTX   # offsets of the three subspaces
SHARP = 80.0               # score = SHARP / sqrt(d_head) = 11.5 for the matching key, 0 otherwise


def hand_built_induction_model() -> torch.nn.Module:
    model = boot_native({"d_model": D_MODEL, "d_head": D_HEAD, "n_heads": 2, "n_layers": 2, "n_ctx": N_CTX,
                         "d_vocab": V, "attn_only": True, "normalization_type": None, "seed": 0, "act_fn": "relu"})
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    state["embed.weight"][:, TOK:TOK + V] = torch.eye(V)
    state["pos_embed.weight"][:, POS:POS + N_CTX] = torch.eye(N_CTX)
    # nn.Linear weights are (out, in); head h owns output rows h*D_HEAD:(h+1)*D_HEAD of q/k/v, columns of o
    for m in range(N_CTX):                                            # layer 0 head 0: previous token
        state["blocks.0.attn.q.weight"][m, POS + m] = SHARP
        if m >= 1:
            state["blocks.0.attn.k.weight"][m, POS + m - 1] = 1.0     # key j lights up query dim j + 1
    for m in range(V):
        state["blocks.0.attn.v.weight"][m, TOK + m] = 1.0            # copy the attended token ...
        state["blocks.0.attn.o.weight"][PREV + m, m] = 1.0           # ... into the previous-token subspace
        state["blocks.1.attn.q.weight"][m, TOK + m] = SHARP          # layer 1 head 0: my token ...
        state["blocks.1.attn.k.weight"][m, PREV + m] = 1.0           # ... matches the key's previous token
    model.load_state_dict(state)
    return model.eval()


@pytest.fixture(scope="module")
def patterns_and_tokens():
    model = hand_built_induction_model()
    tokens = repeated_tokens(V - 1, T, n=16, seed=0, bos=V - 1)
    with torch.no_grad():
        model(torch.as_tensor(tokens[:1]))                    # the bridge sets up its own hooks on first use
    before = hook_count(model)
    pats = capture_patterns(model, tokens, n_layers=2)
    assert hook_count(model) == before
    return pats, tokens


def test_hand_built_model_has_the_planted_heads(patterns_and_tokens):
    pats, tokens = patterns_and_tokens
    ind = {layer: induction_scores(pats[f"blocks.{layer}.attn.hook_pattern"], tokens) for layer in (0, 1)}
    prev = {layer: previous_token_scores(pats[f"blocks.{layer}.attn.hook_pattern"]) for layer in (0, 1)}
    assert ind[1][0] > 0.99                                   # the induction head
    assert prev[0][0] > 0.99                                  # the previous-token head it composes with
    others = [ind[0][0], ind[0][1], ind[1][1]]
    assert max(others) < 0.1, others                          # uniform heads: ~ mean 1/(i+1) over i > T
    assert max(prev[0][1], prev[1][0], prev[1][1]) < 0.1


def test_induction_probe_labels_the_heads(patterns_and_tokens):
    pats, tokens = patterns_and_tokens
    ctx = ProbeContext(run="hand", step=0, inputs=tokens, labels=np.zeros(len(tokens), int),
                       split=np.array(["test"] * len(tokens)), concepts={}, activations=pats,
                       logits=np.zeros((len(tokens), V)))
    res = InductionProbe(n_layers=2).compute(ctx)
    assert res.values["induction_L1"][0] > 0.99 and res.values["induction_max"] == res.values["induction_L1"][0]
    present = {k for k, on in res.present.items() if on}
    assert present == {"induction head L1H0", "previous-token head L0H0", "induction head"}


def test_induction_score_of_a_uniform_head_matches_its_closed_form():
    """A causal uniform head puts 1/(i+1) on the single target of query i; the score is their mean."""
    tokens = repeated_tokens(50, 10, n=3, seed=1)
    t = tokens.shape[1]
    uniform = np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]
    pat = np.broadcast_to(uniform, (3, 1, t, t))
    expected = np.mean(1 / (np.arange(10, 20) + 1))
    assert induction_scores(pat, tokens)[0] == pytest.approx(expected)
    assert previous_token_scores(pat)[0] == pytest.approx(np.mean(1 / (np.arange(1, t) + 1)))
