"""The names of the 3DPE execution paths (importable without torch, for the command line)."""

TORCH_BACKENDS = ("torch", "torch-bf16", "torch-fp32")
GRAPH_BACKENDS = ("onnxruntime", "openvino", "tensorrt")
BACKEND_CHOICES = ("auto",) + TORCH_BACKENDS + GRAPH_BACKENDS + ("hybrid",)
