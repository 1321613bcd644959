"""What every training-free attack family returns: one evaluation of the tampered model."""

from __future__ import annotations

import torch


def result(metrics: dict[str, float], cost: float, model: torch.nn.Module) -> dict:
    """The result dict of a training-free attack: one evaluation at step 0 (chosen on V_sel and
    reported on V_rep there, like a fine-tune's checkpoint), ``cost`` FLOPs."""
    return {
        "metrics": {"forget_acc_sel_max": metrics["forget_acc_sel"], "best_step": 0,
                    "forget_acc_rep_at_best": metrics["forget_acc_rep"], "forget_acc_max": metrics["forget_acc"],
                    "forget_acc_final": metrics["forget_acc"], "retain_acc_final": metrics["retain_acc"]},
        "curve": [(0, k, v) for k, v in metrics.items()],
        "flops": cost, "n_params": sum(p.numel() for p in model.parameters()),
        "train_wall_s": 0.0, "steps": 0, "n_examples": 0,
    }
