"""Leaving Caffe: a net and its caffemodel as an ONNX model (`build`, one translation per Caffe
layer type in `translations`, the graph being written in `graph`), proven equal to Caffe in ONNX
Runtime before it is kept (`check`, `save`), and the forward time of a net where people deploy it:
Caffe, OpenCV's DNN and ONNX Runtime (`runtimes`).

Layer: above surgery (it reads nets and weights through caffeio and images through feeds);
stats imports it to time nets in every runtime.
"""
