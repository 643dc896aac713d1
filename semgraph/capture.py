"""Capture activations with forward hooks, batch by batch, without leaking hooks or memory.

``with capture(model, ["blocks.0.hook_resid_post"]) as acts: model(x)`` registers one forward hook per
name on entry and removes exactly those handles on exit (exceptions included); hooks the user installed
are never touched. Each captured tensor is detached, moved to CPU, cut to the requested position and upcast
to float32 before it is kept, so nothing holds the autograd graph or the model.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch

from semgraph.errors import ConfigError, SemgraphError


def resolve_module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """A hook name (TransformerLens hook point, e.g. ``blocks.0.hook_resid_post``) or a module name."""
    hook_dict = getattr(model, "hook_dict", None)
    if isinstance(hook_dict, dict) and name in hook_dict:
        return hook_dict[name]
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        known = sorted(hook_dict)[:8] if isinstance(hook_dict, dict) else \
            [n for n, _ in model.named_modules() if n][:8]
        raise ConfigError(f"no hook point or module named {name!r}", stage="capture",
                          fix=f"use one of the model's names, e.g. {known} (analyze: --hooks; a task's default "
                              f"hooks assume its reference model's names)") from exc


def output_tensor(output: Any) -> torch.Tensor:
    """The tensor a module produced: plain tensors, the first tensor of tuples, or ModelOutput-like objects."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    for attr in ("last_hidden_state", "logits", "hidden_states"):
        value = getattr(output, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    raise SemgraphError(f"module output of type {type(output).__name__} holds no tensor", stage="capture",
                        fix="hook a module that returns a tensor")


def select_position(t: torch.Tensor, position: int | None) -> torch.Tensor:
    """Keep one sequence position of a (batch, seq, ...) activation; None keeps everything."""
    if position is None or t.dim() < 3:
        return t
    return t[:, position]


class StopForward(Exception):
    """Raised by the last requested hook to skip the layers after it (see ``capture(stop_early=True)``)."""


class Captured(dict):
    """hook name -> list of per-batch CPU float32 tensors; ``calls`` counts hook firings per forward."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}

    def pop_batch(self) -> dict[str, torch.Tensor]:
        """Activations of the forward pass just run, removing them from the buffer."""
        out = {k: v[-1] for k, v in self.items() if v}
        for k in self:
            self[k] = []
        return out


@contextlib.contextmanager
def capture(model: torch.nn.Module, names: Sequence[str], *, position: int | None = -1,
            dtype: torch.dtype = torch.float32, stop_early: bool = False,
            sink: Callable[[str, torch.Tensor], None] | None = None) -> Iterator[Captured]:
    """Record the outputs of ``names`` during forward passes inside the block.

    With ``stop_early=True`` the hook that completes the set of requested names raises ``StopForward``, so
    the layers after the last requested one are never computed (the logits are then not available); call
    the model through ``forward(model, x)``, which swallows it.

    A module that fires more than once per forward pass (shared weights, a reused activation) is refused
    with an error instead of being silently overwritten; use ``check_fired`` after a forward pass to turn
    a hook that never fired (e.g. on a torch.compile'd module) into an error.

    ``sink(name, tensor)``, when given, receives each detached, position-cut output instead of the buffer
    keeping a float32 copy (``semgraph.store.BlockBuffer`` copies it into memory reused across checkpoints);
    the tensor is a view of the module's output, so the sink must copy what it keeps before returning.
    """
    store = Captured()
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def make_hook(name: str):
        def hook(_module, _inputs, output):
            store.calls[name] = store.calls.get(name, 0) + 1
            if store.calls[name] > 1:
                raise SemgraphError(f"module {name!r} ran {store.calls[name]} times in one forward pass",
                                    stage="capture",
                                    fix="hook a module that runs once per forward (not a shared one)")
            t = select_position(output_tensor(output).detach(), position)
            if sink is not None:
                sink(name, t)
            else:
                store[name].append(t.to("cpu", dtype=dtype, copy=True))
            if stop_early and all(store.calls.get(n, 0) for n in store):
                raise StopForward
        return hook

    try:
        for name in names:
            store[name] = []
            handles.append(resolve_module(model, name).register_forward_hook(make_hook(name)))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def forward(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
    """``model(*args, **kwargs)``, returning None when a ``stop_early`` capture cut the pass short."""
    try:
        return model(*args, **kwargs)
    except StopForward:
        return None


def check_fired(store: Captured, names: Sequence[str]) -> None:
    """Raise if a hook did not fire in the last forward pass, then reset the per-forward call counts."""
    silent = [n for n in names if store.calls.get(n, 0) == 0]
    store.calls.clear()
    if silent:
        raise SemgraphError(f"hooks never fired: {silent}", stage="capture",
                            fix="register hooks on the eager module (not a torch.compile'd one) and check "
                                "that these modules run in the forward pass")


def hook_count(model: torch.nn.Module) -> int:
    """Number of forward/pre/backward hooks currently registered on all modules (for hygiene checks)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())
