"""Loss laws: fit how the loss follows the LR schedule, and forecast the loss of schedules not yet run.

The multi-power law (Luo et al., ICLR 2025) and the momentum law (Tissue et al. 2024), fitted robustly with
bootstrap and run-jackknife intervals (docs/loss_law.md). Pure numpy/scipy: nothing here imports torch.
"""
