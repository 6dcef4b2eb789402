"""A training run: set-up, the loop, its controls, the learning-rate schedule, metrics, the batch
size probe, CPU threads and several processes. It knows no sockets: a run is served by engine.serve."""
