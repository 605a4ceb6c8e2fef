"""Training: synthetic telecom data, the LoRA recipe, the sweep, and reports."""
