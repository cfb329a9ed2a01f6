"""NeuS training, split as in the official code: fields (networks), renderer (sampling and volume
rendering), data (rays from the NeuS layout) and trainer (losses, schedules, checkpoints)."""
