"""pytrim: activation-driven pruning (Network Trimming, APoZ) of Caffe networks.

The pipeline, one module per step: collect statistics -> choose neurons -> cut the net ->
retrain -> report. Foundation modules: `caffe_env` (find pycaffe and Caffe's tools),
`datasets` (IDX files to LMDB), `train` (the Caffe solver in a child process), `evaluate`
(top-1/top-5 of a net on its TEST data).
"""

__version__ = "0.1.0"
