"""The 3DPE network (encoder + tri-plane renderer), its weights and checkpoints.

* :mod:`.threedpe` - the model object, ``load()`` and uint8 pre-processing;
* :mod:`.checkpoint` - official ``3dpe.pt`` / imported safetensors reading, validation, import;
* :mod:`.encoder` - the image-to-tri-plane encoder and the reference ViT;
* :mod:`.renderer` - EG3D tri-plane rendering and super-resolution;
* :mod:`.testing` - download-free weights (known-answer formula, random) for tests.

Submodules are imported on use so that ``import streamfx.models`` stays cheap.
"""
