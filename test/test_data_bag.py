"""nuScenes -> ROS 2 bag conversion of the real scene-0916, and reading it back."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from _bags import converted_bag, frames

from fastdrivevla_ros.data import topics
from fastdrivevla_ros.data.typestore import get_typestore, message_definitions
from fastdrivevla_ros.errors import DataError
from fastdrivevla_ros.vla.prompt import CAMERAS


@pytest.fixture(scope="module")
def nusc(scene_dir):
    from nuscenes.nuscenes import NuScenes

    return NuScenes("v1.0-mini", str(scene_dir), verbose=False)


@pytest.fixture(scope="module")
def bag(scene_dir) -> Path:
    return converted_bag(scene_dir)


def _devkit_full_future_tokens(nusc) -> list[str]:
    """Keyframes followed by 6 more keyframes, walking the devkit's `next` links."""
    out = []
    for sample in nusc.sample:
        token, n = sample["token"], 0
        while n < 6 and nusc.get("sample", token)["next"]:
            token, n = nusc.get("sample", token)["next"], n + 1
        if n == 6:
            out.append(sample["token"])
    return out


def test_every_keyframe_is_converted_and_every_full_future_is_present(bag, nusc):
    fs = frames(bag)
    assert [f.token for f in fs] == _keyframe_order(nusc)
    full = {f.token for f in fs if f.target.full_future}
    assert full == set(_devkit_full_future_tokens(nusc))
    assert len(full) == 35
    # the mask tells how many future keyframes exist: min(6, keyframes after this one)
    assert [int(f.target.valid.sum()) for f in fs] == [min(6, 40 - k) for k in range(41)]


def _keyframe_order(nusc) -> list[str]:
    token, out = nusc.scene[0]["first_sample_token"], []
    while token:
        out.append(token)
        token = nusc.get("sample", token)["next"]
    return out


def test_future_waypoints_are_devkit_ego_poses_in_the_current_ego_frame(bag, nusc):
    from pyquaternion import Quaternion

    def ego_pose(sample_token):
        sd = nusc.get("sample_data", nusc.get("sample", sample_token)["data"]["LIDAR_TOP"])
        return nusc.get("ego_pose", sd["ego_pose_token"])

    for f in frames(bag)[::9]:
        now = ego_pose(f.token)
        inv = Quaternion(now["rotation"]).inverse
        token, expected = f.token, []
        for _ in range(int(f.target.valid.sum())):
            token = nusc.get("sample", token)["next"]
            delta = np.subtract(ego_pose(token)["translation"], now["translation"])
            expected.append(inv.rotate(delta)[:2])
        np.testing.assert_allclose(f.target.future[:len(expected)], expected, atol=1e-3)


def test_camera_images_are_the_original_jpegs_and_decode_to_1600x900(bag, nusc, scene_dir):
    f = frames(bag)[7]
    sample = nusc.get("sample", f.token)
    for cam in CAMERAS:
        sd = nusc.get("sample_data", sample["data"][cam])
        assert f.jpegs[cam] == (scene_dir / sd["filename"]).read_bytes()
    images = f.images()
    assert set(images) == set(CAMERAS)
    assert all(img.shape == (900, 1600, 3) and img.dtype == np.uint8 for img in images.values())


def _rosbags_messages(bag: Path, raw: bool = False) -> dict:
    """{(topic, log time ns): message} read with rosbags (raw CDR bytes if `raw`)."""
    from rosbags.rosbag2 import Reader

    store = get_typestore("jazzy")
    out = {}
    with Reader(bag) as reader:
        for conn, t, data in reader.messages():
            msg = bytes(data) if raw else store.deserialize_cdr(data, conn.msgtype)
            out[(conn.topic, t)] = msg
    return out


def test_rosbags_and_the_mcap_ros2_reader_find_the_same_messages(bag):
    """The mcap library (not rosbags) indexes the same messages, and mcap_ros2 decodes them
    from the ros2msg schemas embedded in the file alone."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    ours, raw = _rosbags_messages(bag), _rosbags_messages(bag, raw=True)
    factory, theirs, decoded_gt = DecoderFactory(), {}, 0
    (path,) = bag.glob("*.mcap")
    with open(path, "rb") as fh:
        for schema, channel, message in make_reader(fh).iter_messages():
            key = (channel.topic, message.log_time)
            theirs[key] = message.data
            assert schema.name == ours[key].__msgtype__ and schema.encoding == "ros2msg"
            if key[0] == topics.GROUND_TRUTH and decoded_gt >= 3:
                continue     # decoding a 1000x1000 grid in pure Python takes ~0.2 s
            msg = factory.decoder_for(channel.message_encoding, schema)(message.data)
            mine = ours[key]
            if key[0] == topics.GROUND_TRUTH:
                decoded_gt += 1
                assert msg.sample_token == mine.sample_token
                assert [a.category for a in msg.agents] == [a.category for a in mine.agents]
                assert bytes(np.array(msg.drivable_area.data, np.int8)) == \
                    mine.drivable_area.data.tobytes()
            elif topics.camera_from_topic(key[0]):
                assert bytes(msg.data) == mine.data.tobytes() and msg.format == "jpeg"
            elif key[0] == topics.EGO_STATUS:
                assert (msg.source, msg.speed) == (mine.source, mine.speed)
    assert theirs == raw
    counts = Counter(topic for topic, _ in ours)
    assert counts[topics.GROUND_TRUTH] == 41 and counts[topics.camera_image("CAM_FRONT")] == 41


def test_tf_static_camera_info_and_qos_carry_the_calibration(bag, nusc):
    msgs = _rosbags_messages(bag)
    (tf_static,) = [m for (topic, _), m in msgs.items() if topic == topics.TF_STATIC]
    by_child = {t.child_frame_id: t for t in tf_static.transforms}
    assert set(by_child) == {*CAMERAS, "LIDAR_TOP"}
    sample = nusc.sample[0]
    for cam in CAMERAS:
        cal = nusc.get("calibrated_sensor",
                       nusc.get("sample_data", sample["data"][cam])["calibrated_sensor_token"])
        tr = by_child[cam].transform
        assert by_child[cam].header.frame_id == topics.EGO_FRAME
        np.testing.assert_allclose([tr.translation.x, tr.translation.y, tr.translation.z],
                                   cal["translation"])
        np.testing.assert_allclose([tr.rotation.w, tr.rotation.x, tr.rotation.y, tr.rotation.z],
                                   cal["rotation"])
        info = next(m for (topic, _), m in msgs.items() if topic == topics.camera_info(cam))
        np.testing.assert_allclose(info.k.reshape(3, 3), cal["camera_intrinsic"])
        assert (info.width, info.height, info.header.frame_id) == (1600, 900, cam)
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9
    qos = {t["topic_metadata"]["name"]: t["topic_metadata"]["offered_qos_profiles"]
           for t in meta["topics_with_message_count"]}
    assert qos[topics.TF_STATIC][0]["durability"] == "transient_local"   # latched for late joiners


def test_ego_status_is_derived_from_poses_and_says_so(bag):
    msgs = _rosbags_messages(bag)
    status = [m for (topic, _), m in sorted(msgs.items()) if topic == topics.EGO_STATUS]
    odom = [m for (topic, _), m in sorted(msgs.items()) if topic == topics.ODOMETRY]
    assert len(status) == len(odom) == 41
    assert {s.source for s in status} == {"ego_pose"}      # the scene has no CAN bus data
    assert {s.steering_kind for s in status} == {"road_wheel"}
    # independent check: mean speed between keyframes from the odometry positions
    xy = np.array([[o.pose.pose.position.x, o.pose.pose.position.y] for o in odom])
    t = np.array([o.header.stamp.sec + 1e-9 * o.header.stamp.nanosec for o in odom])
    chord = np.hypot(*np.diff(xy, axis=0).T) / np.diff(t)
    speeds = np.array([s.speed for s in status])
    assert np.all(np.abs(0.5 * (speeds[1:] + speeds[:-1]) - chord) < 0.5)


def test_agents_are_current_annotations_with_category_names_and_futures(bag, nusc):
    f = frames(bag)[5]
    t = f.target
    names = {c["name"] for c in nusc.category}
    assert set(t.categories) <= names
    sample = nusc.get("sample", f.token)
    now = {nusc.get("sample_annotation", a)["instance_token"] for a in sample["anns"]}
    assert set(t.instances[t.steps == 0]) == now
    assert set(t.instances) == now          # no agent appears that was not there at t = 0
    # a car's box at step 2 is its annotation two keyframes later
    i = next(j for j in range(len(t.steps))
             if t.steps[j] == 2 and t.categories[j] == "vehicle.car")
    later = nusc.get("sample", nusc.get("sample", f.token)["next"])["next"]
    ann = next(nusc.get("sample_annotation", a) for a in nusc.get("sample", later)["anns"]
               if nusc.get("sample_annotation", a)["instance_token"] == t.instances[i])
    w, length, _ = ann["size"]
    np.testing.assert_allclose(t.boxes[i, 3:], [length, w])


def test_humble_sqlite_bag_has_humble_metadata_and_reads_back_identically(scene_dir, bag):
    small = converted_bag(scene_dir, storage="sqlite3", distro="humble", max_keyframes=3)
    storage = [p.suffix for p in small.iterdir()
               if p.name not in ("metadata.yaml", "conversion.json")]
    assert storage == [".db3"]
    meta = yaml.safe_load((small / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 5 and "ros_distro" not in meta
    for entry in meta["topics_with_message_count"]:
        assert isinstance(entry["topic_metadata"]["offered_qos_profiles"], str)
        assert "type_description_hash" not in entry["topic_metadata"]
    a, b = frames(small), frames(bag)[:3]
    assert [f.token for f in a] == [f.token for f in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.target.future, y.target.future)
        np.testing.assert_array_equal(x.target.drivable.data, y.target.drivable.data)
        assert x.jpegs == y.jpegs


def test_typestore_registers_every_msg_file_for_both_distros():
    names = set(message_definitions())
    assert {"fastdrivevla_ros/msg/EgoStatus", "fastdrivevla_ros/msg/PlanningGroundTruth",
            "fastdrivevla_ros/msg/AgentBox"} <= names
    for distro in ("humble", "jazzy"):
        assert names <= set(get_typestore(distro).types)


# ------------------------------------------------------------------------------ errors
def _link_dataroot(src: Path, dst: Path, skip: set[str] = frozenset()) -> Path:
    """A dataroot of symlinks to the real one, leaving out the relative paths in `skip`."""
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        if path.is_dir() or str(rel) in skip:
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).symlink_to(path)
    return dst


def test_bad_dataroot_version_table_scene_or_output_give_clear_errors(scene_dir, tmp_path):
    from fastdrivevla_ros.data.nuscenes_bag import convert

    with pytest.raises(DataError, match="dataroot not found"):
        convert(tmp_path / "nope", "v1.0-mini", tmp_path / "out")
    with pytest.raises(DataError, match="no version directory 'v1.0-trainval'.*v1.0-mini"):
        convert(scene_dir, "v1.0-trainval", tmp_path / "out")
    broken = _link_dataroot(scene_dir, tmp_path / "broken", {"v1.0-mini/ego_pose.json"})
    with pytest.raises(DataError, match="lacks table.*ego_pose.json"):
        convert(broken, "v1.0-mini", tmp_path / "out")
    with pytest.raises(DataError, match="unknown scene.*scene-0001"):
        convert(scene_dir, "v1.0-mini", tmp_path / "out", scenes=["scene-0001"])
    (tmp_path / "exists").mkdir()
    with pytest.raises(DataError, match="already exists"):
        convert(scene_dir, "v1.0-mini", tmp_path / "exists")


def test_missing_image_fails_before_writing_and_leaves_nothing(scene_dir, tmp_path, nusc):
    from fastdrivevla_ros.data.nuscenes_bag import convert

    sd = nusc.get("sample_data", nusc.sample[4]["data"]["CAM_BACK_LEFT"])
    root = _link_dataroot(scene_dir, tmp_path / "root", {sd["filename"]})
    with pytest.raises(DataError, match="missing image file .*" + re.escape(sd["filename"])):
        convert(root, "v1.0-mini", tmp_path / "out", max_keyframes=6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_sweeps_need_their_files_and_say_how_to_do_without(scene_dir, tmp_path):
    from fastdrivevla_ros.data.nuscenes_bag import convert

    with pytest.raises(DataError, match=r"missing image file .*sweeps.*drop --sweeps"):
        convert(scene_dir, "v1.0-mini", tmp_path / "out", sweeps=True, max_keyframes=1)
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_leaves_no_half_written_bag(scene_dir, tmp_path, monkeypatch):
    from fastdrivevla_ros.data import scene as scene_module
    from fastdrivevla_ros.data.nuscenes_bag import convert

    original = scene_module.SceneTruth.keyframe

    def fail_at_third(self, k):
        if k == 2:
            raise DataError("injected failure at keyframe 2")
        return original(self, k)

    monkeypatch.setattr(scene_module.SceneTruth, "keyframe", fail_at_third)
    with pytest.raises(DataError, match="injected"):
        convert(scene_dir, "v1.0-mini", tmp_path / "out", max_keyframes=4, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_convert_reports_errors_with_exit_code_2(tmp_path, capsys):
    from fastdrivevla_ros.cli import main

    code = main(["convert", "--dataroot", str(tmp_path / "missing"), "--version", "v1.0-mini",
                 "--out", str(tmp_path / "bag")])
    assert code == 2
    assert "nuScenes dataroot not found" in capsys.readouterr().err


def test_cli_convert_writes_a_bag(scene_dir, tmp_path, capsys):
    from fastdrivevla_ros.cli import main

    out = tmp_path / "bag"
    assert main(["convert", "--dataroot", str(scene_dir), "--version", "v1.0-mini",
                 "--scenes", "scene-0916", "--max-keyframes", "2", "--out", str(out)]) == 0
    assert "2 keyframes (2 with a full 3 s future)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["bag.mcap", "conversion.json",
                                                     "metadata.yaml"]
    assert [f.token for f in frames(out)] == _first_two(scene_dir)


def _first_two(scene_dir: Path) -> list[str]:
    table = json.loads((scene_dir / "v1.0-mini" / "sample.json").read_text())
    samples = {s["token"]: s for s in table}
    first = next(s for s in samples.values() if not s["prev"])
    return [first["token"], first["next"]]
