"""File and device I/O outside WebRTC: video files, local cameras, virtual cameras.

- :func:`process_video` runs a frame filter over a video file (PyAV decode -> filter ->
  PyAV encode, audio passed through).
- :class:`VideoWriter` encodes RGB frames to a file whose extension picks the codec.
- :func:`write_y4m_from_video` places a video on a larger canvas and writes ``.y4m``
  (Chromium's fake camera input).
- :class:`CameraSource` reads a camera index or a (looping, paced) file with OpenCV.
- :class:`VirtualCamera` publishes frames with pyvirtualcam.
"""

from .camera_source import CameraSource
from .encoding import VideoWriter, output_format
from .errors import CameraError, MediaError, VirtualCameraError
from .video_file import ProcessResult, process_video
from .virtual_camera import VirtualCamera
from .y4m import write_y4m_from_video

__all__ = [
    "CameraError", "CameraSource", "MediaError", "ProcessResult", "VideoWriter", "VirtualCamera",
    "VirtualCameraError", "output_format", "process_video", "write_y4m_from_video",
]
