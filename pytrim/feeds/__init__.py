"""Images as Caffe reads them: the one TEST transform (`image`), a net's TEST data and the one
batch loop every pass uses (`source`), MNIST-shaped datasets (`datasets`) and ImageNet
(`imagenet`) written as LMDB.

Layer: above caffeio; imports caffeio and core.
"""
