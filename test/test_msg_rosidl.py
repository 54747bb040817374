"""Every .msg parses with ROS 2's own parser (rosidl_adapter), and matches what the code fills in."""

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from orcnn_core.analysis import AnalysisConfig
from orcnn_core.analysis import analyze as analyze_frame
from orcnn_core.layering import LayeringConfig
from orcnn_core.structures import Prediction
from orcnn_ros.conversions import MessageFactories, build_instance_array

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"
MSG_FILES = sorted((REPO / "msg").glob("*.msg"))


def analyze(prediction):
    """The frame analysis without the layering: these tests are about the messages, not the layering."""
    return analyze_frame(prediction, AnalysisConfig(layering=LayeringConfig(enabled=False)))

PARSE = """
import json, sys
from rosidl_adapter.parser import parse_message_string

spec = parse_message_string("orcnn_ros", sys.argv[1], open(sys.argv[2]).read())
print(json.dumps([[str(f.type), f.name] for f in spec.fields]))
"""


def parse_with_rosidl(path: Path) -> list:
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import rosidl_adapter.parser"], capture_output=True,
                           text=True, timeout=60)
    if probe.returncode != 0:
        pytest.fail("ROS 2's .msg parser is missing: install Debian's python3-rosidl for /usr/bin/python3 "
                    f"(scripts/setup.sh does it as root). {probe.stderr.strip()[-300:]}")
    done = subprocess.run([SYSTEM_PYTHON, "-c", PARSE, path.stem, str(path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, f"rosidl_adapter rejects {path.name}:\n{done.stderr}"
    return [tuple(f) for f in json.loads(done.stdout)]


def test_both_message_files_exist():
    assert [p.name for p in MSG_FILES] == ["AmodalInstance.msg", "AmodalInstanceArray.msg"]


def test_every_field_is_commented():
    for path in MSG_FILES:
        previous = ""
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                assert previous.startswith("#"), f"{path.name}: field '{line}' has no comment above it"
            previous = line


class Recorder(SimpleNamespace):
    """A message class that remembers the keyword arguments it was built with."""


def recorded_fields():
    """Field name -> value, as build_instance_array passes them, per message kind."""
    kinds = {}

    def factory(kind):
        def build(**kwargs):
            kinds.setdefault(kind, kwargs)
            return Recorder(kind=kind, **kwargs)
        return build

    factories = MessageFactories(instance_array=factory("AmodalInstanceArray"),
                                 instance=factory("AmodalInstance"), image=factory("Image"),
                                 roi=factory("RegionOfInterest"), point=factory("Point"),
                                 vector3=factory("Vector3"), polygon=factory("Polygon"),
                                 point32=factory("Point32"),
                                 byte_array=lambda a: ("array", "uint8[]"),
                                 uint32_array=lambda v: ("array", "uint32[]"),
                                 float32_array=lambda v: ("array", "float32[]"))
    amodal = np.zeros((1, 8, 8), bool)
    amodal[0, 2:5, 2:6] = True
    boxes = np.zeros((1, 4), np.float32)
    pred = Prediction(boxes, boxes.copy(), np.array([1]), np.array([3]), ["cup"], np.array([0.5], np.float32),
                      amodal, amodal.copy(), np.zeros_like(amodal), (8, 8))
    build_instance_array(analyze(pred), Recorder(kind="Header"), factories)
    return kinds


def expected_python(ros_type: str):
    """A check that a value passed by the conversion code fits a rosidl field type."""
    if ros_type.endswith("[]"):
        return lambda v: v == ("array", ros_type) or (
            isinstance(v, list) and all(getattr(x, "kind", None) == ros_type[:-2].split("/")[-1] for x in v))
    if "/" in ros_type:
        return lambda v: getattr(v, "kind", None) == ros_type.split("/")[-1]
    python = {"bool": bool, "string": str, "float32": float, "float64": float}.get(ros_type, int)
    return lambda v: isinstance(v, python) and (python is not int or not isinstance(v, bool))


@pytest.mark.parametrize("path", MSG_FILES, ids=lambda p: p.name)
def test_rosidl_parses_and_fields_match_the_conversion_code(path):
    fields = parse_with_rosidl(path)
    assert fields, f"{path.name} has no fields"
    passed = recorded_fields()[path.stem]
    assert [name for _, name in fields] == list(passed), "field names/order differ from build_instance_array"
    for ros_type, name in fields:
        value = passed[name]
        assert expected_python(ros_type)(value), f"{path.name}: {name} ({ros_type}) got {value!r}"


def test_message_dependencies_are_declared_for_colcon():
    """Every package our .msg files use is a <depend> of package.xml and a DEPENDENCIES of the CMake call."""
    types = [t for path in MSG_FILES for t, _ in parse_with_rosidl(path) if "/" in t]
    used = {t.split("/")[0] for t in types} - {"orcnn_ros"}
    package = (REPO / "package.xml").read_text()
    cmake = (REPO / "CMakeLists.txt").read_text()
    dependencies = cmake.split("DEPENDENCIES", 1)[1].split(")", 1)[0].split()
    assert used == {"std_msgs", "sensor_msgs", "geometry_msgs"}
    for name in used:
        assert f"<depend>{name}</depend>" in package and name in dependencies
        assert f"find_package({name} REQUIRED)" in cmake


def test_rosidl_types_are_the_documented_ones():
    types = {name: t for t, name in parse_with_rosidl(REPO / "msg" / "AmodalInstance.msg")}
    assert types["amodal_roi"] == "sensor_msgs/RegionOfInterest"
    assert {types[m] for m in ("amodal_mask", "visible_mask", "invisible_mask")} == {"sensor_msgs/Image"}
    assert (types["occluder_ids"], types["occluder_overlap"]) == ("uint32[]", "float32[]")
    assert (types["has_3d"], types["valid_points"]) == ("bool", "uint32")
    points = ("visible_centroid", "visible_box_min", "visible_box_max", "amodal_centroid")
    assert {types[name] for name in points} == {"geometry_msgs/Point"}
    assert types["surface_normal"] == "geometry_msgs/Vector3"
    assert types["amodal_footprint"] == "geometry_msgs/Polygon"
    array_types = {name: t for t, name in parse_with_rosidl(REPO / "msg" / "AmodalInstanceArray.msg")}
    assert array_types["header"] == "std_msgs/Header"
    assert array_types["instances"] == "orcnn_ros/AmodalInstance[]"
