"""Caffe itself: finding the build and pinning its BLAS (`env`), prototxts (`proto`), the
streaming caffemodel codec (`caffemodel`), the one LMDB reader and writer (`lmdb`), the checks
made before Caffe may see a net (`netcheck`), V0/V1 upgrades (`upgrade`), and the model-zoo and
benchmark nets written with NetSpec (`zoo`, `benchnets`).

Layer: above core; imports only pytrim.core.
"""
