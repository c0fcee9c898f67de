"""The engine: data, training, sampling, checkpoints, devices. Uses torch; never Qt."""
