"""Cutting a net: choosing the neurons from scores (`choose`), the cut as data (`recipe`: per
parameter blob, the axis and the indices kept), applying it to the prototxts and the caffemodel
(`cut`), folding removed channels' means into biases (`fold`), and proving a cut equal to the
silenced original (`verify`).

Layer: above graph; imports graph, feeds, caffeio and core.
"""
