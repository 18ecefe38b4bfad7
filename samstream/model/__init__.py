"""SAM3 / SAM3-I model wrappers on transformers' SAM3 classes."""
