"""pytrim: activation-driven pruning (Network Trimming, APoZ) of Caffe networks.

One subpackage per concern, in layers (top to bottom; each imports only those below it, checked
by import-linter, see pyproject.toml): cli (the commands), experiments (benchmarks and sweeps),
loop (the iterated run), criteria, retrain, stats (what is measured), scale (Ray), surgery (the
cut and its proof), graph (the channel-dependency graph), feeds (images and data), caffeio
(Caffe's files and build), core (errors, files, child processes).
"""

__version__ = "0.1.0"
