"""The names of the 3DPE execution paths (importable without torch, for the command line)."""

TORCH_BACKENDS = ("torch", "torch-bf16", "torch-fp32")
GRAPH_BACKENDS = ("onnxruntime", "openvino", "tensorrt")
BACKEND_CHOICES = ("auto",) + TORCH_BACKENDS + GRAPH_BACKENDS + ("hybrid", "torch-cuda")
#: what runs on an NVIDIA GPU (torch-fp32 is the reference path, on any device)
GPU_BACKENDS = ("torch-cuda", "tensorrt", "torch-fp32")
DEVICE_HELP = "auto (CUDA when torch sees a GPU, else cpu), cpu, cuda, cuda:N or mps (Apple; untested)"
