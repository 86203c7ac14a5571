"""Explainers written as graphs that run without ttame or PyTorch (:mod:`ttame.export.onnx`)."""
