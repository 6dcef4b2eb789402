"""The model and what it does with text: the network, its device and precision, a training step,
sampling, co-writing, inference from a checkpoint, evaluation."""
