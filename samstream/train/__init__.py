"""Training and fine-tuning: `samstream train CONFIG` (docs/finetuning.md)."""
