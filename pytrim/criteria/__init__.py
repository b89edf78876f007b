"""Pruning criteria: one registered class per unit criterion (`scores`: APoZ, mean
activation, L1, Taylor, random) and NN Relief's connection scores and masks (`relief`).

Layer: above retrain; imports retrain and the layers below it.
"""
