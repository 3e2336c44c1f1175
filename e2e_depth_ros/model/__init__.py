"""The paper's inference pipeline and its backends (torch, OpenVINO, ONNX Runtime), export
and tiny checkpoints. torch is imported by the modules that need it, never by this file."""
