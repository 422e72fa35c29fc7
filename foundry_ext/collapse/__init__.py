"""Loss-curve collapse ([SwC] Bergsma et al. 2025, arXiv:2509.25087): controls (tokens per parameter, the AdamW
timescale tau), normalized curves, the reference surrogate, early final-loss prediction, residuals, runs on disk
and plots. The analyses are numpy/scipy; counting parameters and evaluating a YAML's scheduler go through Foundry."""
