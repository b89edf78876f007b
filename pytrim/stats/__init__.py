"""What is measured on a net: zero counts and APoZ (`collect`, on a GPU `statsnet`), the
statistics file (`statsfile`) and its plots, means for folding (`means`), what criteria read
(`layer_data`), evaluation and paired differences (`evaluate`), and cost: parameters, MACs and
forward time (`cost`).

Layer: above scale; imports scale and the layers below it.
"""
