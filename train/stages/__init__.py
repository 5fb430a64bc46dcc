"""Training: the model's parts, the collator and trainer, stages 1-3 and the demo's language-model warm-up."""
