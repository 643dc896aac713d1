"""Progress-measure events on constructed curves, and (slow) Nanda et al.'s claims on the reference run."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from probes.progress import check_claims, drop_step, rise_step

STEPS = [0, 10, 20, 30, 40, 50, 60]


def test_drop_and_rise_steps_on_constructed_curves():
    # peak 10 at step 20, final value 0: halfway level 5 is first reached at step 40 (value 4)
    assert drop_step(STEPS, [3, 8, 10, 7, 4, 1, 0]) == 40
    assert drop_step(STEPS, [3, 8, 10, 7, 4, 1, 0], level=0.9) == 50     # 90% of the way down: 1.0
    # minimum 1 at step 10, final value 9: halfway level 5 first reached at step 40
    assert rise_step(STEPS, [4, 1, 2, 3, 6, 9, 9]) == 40
    assert rise_step(STEPS, [4, 1, 2, 3, 6, 9, 9], level=0.9) == 50      # 90% of the way up: 8.2
    # a late spike (17 at step 50) moves the "extreme" level (9) but not the "final" one (5)
    spiky = [4, 1, 2, 3, 6, 17, 9]
    assert rise_step(STEPS, spiky) == 40 and rise_step(STEPS, spiky, toward="extreme") == 50
    assert drop_step(STEPS, [1, 2, 3, 4, 5, 6, 7]) is None                  # never comes down
    assert drop_step(STEPS, [np.nan] * 7) is None


def test_check_claims_on_constructed_rows():
    keys = [[4, 11], [4, 11], [4, 11]]
    rows = [{"step": s, "key_freqs": k, "restricted_loss": r, "excluded_loss": e, "test_loss": t, "train_loss": 0.1}
            for s, k, r, e, t in zip([0, 100, 200, 300, 400], [[1]] + [[2]] + keys,
                                     [4, 4, 1, 0.5, 0.1], [3, 0.1, 2.5, 4, 4], [4, 9, 8, 1, 0.1])]
    c = check_claims(rows, scale="linear")
    assert c["by_level"]["0.5"]["test_loss_drop_step"] == c["test_loss_drop_step"]
    assert c["by_level"]["0.25"]["test_loss_drop_step"] == 300        # 25% down from 9: <= 6.75
    assert c["key_freqs_stable_last"] and c["last_checkpoints"] == [400, 400, 1]
    assert c["restricted_loss_drop_step"] == 200 and c["excluded_loss_rise_step"] == 200
    assert c["test_loss_drop_step"] == 300
    assert c["restricted_drops_before_test"] and c["excluded_rises_before_test_drops"]
    rows[-2]["key_freqs"] = [4]
    assert not check_claims(rows, last_fraction=0.4)["key_freqs_stable_last"]
    # on a log scale, half way from the peak 9 to the final 0.1 is sqrt(9 * 0.1) = 0.95: reached at step 400
    assert check_claims(rows)["test_loss_drop_step"] == 400


#: The reference recipe (p = 53, 40% train, 5000 steps): test accuracy passes 0.95 near step 4100.
GROKKING: dict = {}


@pytest.mark.slow
def test_progress_measures_on_a_grokking_run(tmp_path):
    """Trains the grokking run unless SEMGRAPH_REF_RUN points at one (with SEMGRAPH_REF_STORE at its
    analysis store, copied first), then checks Nanda et al.'s three claims at level 0.5."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from progress_measures import progress_measures

    run = os.environ.get("SEMGRAPH_REF_RUN")
    store = tmp_path / "store"
    if run:
        if os.environ.get("SEMGRAPH_REF_STORE"):
            import shutil
            shutil.copytree(os.environ["SEMGRAPH_REF_STORE"], store)
    else:
        from semgraph.tasks.train_modular_addition import ModAddRecipe, train_modular_addition
        run = train_modular_addition(tmp_path / "modadd-p53", ModAddRecipe(**GROKKING), progress=False, threads=2)
    rows, claims = progress_measures(run, store)
    assert rows[-1]["test_acc"] >= 0.95, "the run did not grok; the claims are about grokking runs"
    assert claims["key_freqs_stable_last"], claims
    assert claims["restricted_drops_before_test"], claims
    assert claims["excluded_rises_before_test_drops"], claims
