"""Running the model: checkpoints (ours and official), and later training and evaluation."""
