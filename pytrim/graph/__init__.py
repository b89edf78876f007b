"""The channel-dependency graph: which channels of a net are cut together and which layers
read them. Its model (`model`: layouts of channel groups, a union-find), one handler per Caffe
layer type (`handlers`), building it from a net (`build`), and what callers ask of it
(`queries`).

Layer: above feeds; imports the layers below it (caffeio and core today).
"""
