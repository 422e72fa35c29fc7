"""Loss-spike and divergence detection and classification, online and offline (numpy; no torch)."""
