"""predictions_bag/: a replay's predicted paths and kept-token heatmaps for Foxglove / RViz."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fastdrivevla_ros.conventions import TOKEN_PX
from fastdrivevla_ros.data.ego import step_headings


def write_output_bag(bag, records: list[dict], out: Path, distro: str = "jazzy") -> None:
    """Predicted paths (nav_msgs/Path, base_link at the keyframe stamp) and, where the run
    kept token indices, heatmaps of the kept tokens (CompressedImage) for Foxglove / RViz."""
    from fastdrivevla_ros.data import topics
    from fastdrivevla_ros.data.bag_reader import BagFrames
    from fastdrivevla_ros.data.nuscenes_bag import BagWriter, staged_bag

    by_token = {r["token"]: r for r in records}
    cameras = sorted({v["camera"] for r in records for v in _heatmap_views(r)})
    types = {topics.PREDICTED_PATH: "nav_msgs/msg/Path"}
    types |= {_heatmap_topic(c): "sensor_msgs/msg/CompressedImage" for c in cameras}
    with staged_bag(Path(out)) as tmp:
        writer = BagWriter(tmp, "mcap", distro)
        try:
            writer.open(types)
            for frame in BagFrames(bag, cameras=cameras or None, with_images=bool(cameras)):
                if frame.token in by_token:
                    _write_prediction(writer, frame, by_token[frame.token])
            writer.close()
        except BaseException:
            writer.abort()
            raise


def _write_prediction(writer, frame, rec: dict) -> None:
    """One keyframe's predicted path and kept-token heatmaps."""
    from fastdrivevla_ros.data import topics

    f = writer.factory
    pts = np.asarray(rec["waypoints"], float)
    yaws = step_headings(pts)
    stamps = [frame.stamp_ns + int((k + 1) * 0.5e9) for k in range(len(pts))]
    writer.write(topics.PREDICTED_PATH, frame.stamp_ns,
                 f.path(frame.stamp_ns, topics.EGO_FRAME, pts, yaws, stamps))
    for view in _heatmap_views(rec):
        jpeg = _heatmap_jpeg(frame, view)
        writer.write(_heatmap_topic(view["camera"]), frame.stamp_ns,
                     f.compressed_image(frame.stamp_ns, view["camera"], jpeg))


def _heatmap_views(record: dict) -> list[dict]:
    """Views whose kept indices were recorded (live-node records only carry counts)."""
    return [v for v in record.get("views", []) if "kept" in v and "grid" in v]


def _heatmap_topic(camera: str) -> str:
    return f"/planning/heatmap/{camera}/compressed"


def _heatmap_jpeg(frame, view: dict) -> bytes:
    """Kept/pruned overlay of one view, rebuilt from the kept indices in the JSONL."""
    import io

    from PIL import Image

    from fastdrivevla_ros.viz.heatmap import token_overlay
    from fastdrivevla_ros.vla.result import ViewResult

    rows, cols = view["grid"]
    rgb = frame.images([view["camera"]])[view["camera"]]
    resized = np.asarray(Image.fromarray(rgb).resize((cols * TOKEN_PX, rows * TOKEN_PX),
                                                     Image.BICUBIC))
    overlay = token_overlay(ViewResult(view["camera"], (rows, cols),
                                       np.asarray(view["kept"], int), None, resized))
    buf = io.BytesIO()
    Image.fromarray(overlay).save(buf, format="JPEG", quality=85)
    return buf.getvalue()
