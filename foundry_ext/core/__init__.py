"""What every capability shares: reading and writing metrics, configs, checkpointed state, plots."""
