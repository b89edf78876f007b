"""Retraining: Caffe's solver in a child process (`solver`) and masked retraining that holds
pruned connections at zero (`masked`).

Layer: above stats; imports stats and the layers below it.
"""
