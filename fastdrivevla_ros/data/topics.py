"""Topic names and frames of the bags `fastdrivevla convert` writes (documented in docs/bags.md).

Camera topics follow image_transport naming (`<base>/compressed`, `camera_info` next to the
base) so RViz and image_transport decode them without remapping.
"""

from __future__ import annotations

MAP_FRAME = "map"
EGO_FRAME = "base_link"

TF = "/tf"
TF_STATIC = "/tf_static"
ODOMETRY = "/ego/odometry"
EGO_STATUS = "/ego/status"
GROUND_TRUTH = "/planning/ground_truth"
GROUND_TRUTH_PATH = "/planning/ground_truth/path"
PREDICTED_PATH = "/planning/predicted/path"        # written by `replay --output-bag`


def camera_image(camera: str) -> str:
    """sensor_msgs/CompressedImage (JPEG bytes exactly as in the nuScenes file)."""
    return f"/cameras/{camera}/image_rect/compressed"


def camera_info(camera: str) -> str:
    return f"/cameras/{camera}/camera_info"


def camera_from_topic(topic: str) -> str | None:
    """'CAM_FRONT' for '/cameras/CAM_FRONT/image_rect/compressed', else None."""
    parts = topic.strip("/").split("/")
    if len(parts) == 4 and parts[0] == "cameras" and parts[2:] == ["image_rect", "compressed"]:
        return parts[1]
    return None
