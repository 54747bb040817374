"""The node's shell without ROS: parameters (files, validation, live changes), launch and config files,
the CMake install, rclpy confined to node.py, clean shutdown on SIGINT / SIGTERM."""

import ast
import py_compile
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orcnn_core.engine.predictor import BUNDLED_WEIGHTS, load_predictor
from orcnn_core.errors import ConfigError
from orcnn_ros.params import PARAMETERS, NodeParams, check_update, load_params_yaml, params_from_mapping

REPO = Path(__file__).resolve().parents[1]


# -- parameters, config and launch files ----------------------------------------------------------

def test_shipped_config_loads_into_params():
    params = load_params_yaml(REPO / "config" / "orcnn_node.yaml")
    assert params.class_names == []  # [""] in YAML means "keep the weights' names"
    assert (params.input, params.qos_reliability, params.qos_depth) == ("raw", "best_effort", 1)
    assert params.topic == "image"


@pytest.mark.parametrize("key, value, words", [
    ("device", "gpu0", "device"),
    ("device", "cuda:x", "device"),
    ("score_threshold", 1.5, "score_threshold"),
    ("max_instances", 0, "max_instances"),
    ("input", "h264", "input"),
    ("qos_reliability", "sometimes", "qos_reliability"),
    ("qos_depth", 0, "qos_depth"),
    ("occluder_min_overlap", -0.1, "occluder_min_overlap"),
    ("diagnostics_period_s", 0.0, "diagnostics_period_s"),
    ("image_max_side", 8, "image_max_side"),
    ("publish_overlay", "yes", "publish_overlay"),
    ("max_instances", 2.5, "max_instances"),
    ("class_names", ["a", 3], "class_names"),
    ("no_such_parameter", 1, "no_such_parameter"),
])
def test_invalid_parameters_name_the_parameter(key, value, words):
    with pytest.raises(ConfigError, match=words):
        params_from_mapping({key: value})


def test_half_needs_cuda_and_model_files_are_checked_at_configure(tmp_path):
    with pytest.raises(ConfigError, match="half"):
        params_from_mapping({"half": True, "device": "cpu"})
    missing = params_from_mapping({"weights": str(tmp_path / "missing.safetensors")})
    with pytest.raises(ConfigError, match="parameter 'weights': file not found"):
        missing.require_model()


def test_empty_weights_mean_the_bundled_model():
    NodeParams().require_model()  # nothing to check: the package ships a model
    predictor = load_predictor(**NodeParams(device="cpu").predictor_kwargs())
    assert predictor.source == str(BUNDLED_WEIGHTS)
    assert predictor.score_threshold == NodeParams().score_threshold


def test_params_yaml_with_wildcard_section_and_missing_section(tmp_path):
    good = tmp_path / "p.yaml"
    good.write_text("/**:\n  ros__parameters:\n    input: compressed\n    class_names: [cup, box]\n")
    params = load_params_yaml(good)
    assert params.topic == "image/compressed" and params.class_names == ["cup", "box"]
    bad = tmp_path / "q.yaml"
    bad.write_text("other_node:\n  ros__parameters: {}\n")
    with pytest.raises(ConfigError, match="orcnn_node"):
        load_params_yaml(bad)


def test_shipped_params_file_reaches_a_namespaced_node(tmp_path):
    # `namespace:=robot2` makes the node /robot2/orcnn_node: a file keyed `orcnn_node:` was then
    # silently ignored (autostart false still came up active). The shipped file must be keyed `/**`.
    text = (REPO / "config" / "orcnn_node.yaml").read_text()
    assert re.search(r"^/\*\*:", text, flags=re.M)
    changed = text.replace("autostart: true", "autostart: false")
    assert changed != text
    copy = tmp_path / "p.yaml"
    copy.write_text(changed)
    assert load_params_yaml(copy, namespace="robot2").autostart is False
    assert load_params_yaml(copy, namespace="/a/b/").autostart is False


def test_a_section_keyed_by_plain_node_name_misses_a_namespaced_node(tmp_path):
    # As ROS 2 Humble matches them: `orcnn_node:` is /orcnn_node only; the exact name beats /**.
    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters:\n    qos_depth: 3\n"
                    "orcnn_node:\n  ros__parameters:\n    qos_depth: 7\n"
                    "/robot2/orcnn_node:\n  ros__parameters:\n    max_instances: 9\n")
    assert load_params_yaml(path).qos_depth == 7
    robot2 = load_params_yaml(path, namespace="robot2")
    assert (robot2.qos_depth, robot2.max_instances) == (3, 9)
    assert load_params_yaml(path, namespace="robot3").max_instances == NodeParams().max_instances


def documented_names(heading: str) -> list:
    """Backticked names in the first column of the table under ``heading`` in docs/ros.md."""
    text = (REPO / "docs" / "ros.md").read_text()
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `([a-z_]+)`", section, flags=re.M)


def test_launch_file_declares_the_documented_arguments():
    tree = ast.parse((REPO / "launch" / "orcnn.launch.py").read_text())
    declared = [node.args[0].value for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument"]
    assert declared == ["image_topic", "weights", "config", "device", "namespace", "use_sim_time", "depth",
                        "depth_topic", "camera_info_topic"]
    assert declared == documented_names("### Launch arguments")
    calls = {getattr(n.func, "id", "") for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert "LifecycleNode" in calls


def test_every_parameter_is_documented():
    fields = list(NodeParams.__dataclass_fields__)
    assert documented_names("### Parameters") == fields


# -- rclpy stays in node.py -----------------------------------------------------------------------

def test_node_compiles_and_is_the_only_module_importing_rclpy():
    py_compile.compile(str(REPO / "orcnn_ros" / "node.py"), doraise=True)
    wrapper = (REPO / "scripts" / "orcnn_node").read_text()
    compile(wrapper, "scripts/orcnn_node", "exec")
    assert "from orcnn_ros.node import main" in wrapper
    importers = []
    for path in list((REPO / "orcnn_ros").rglob("*.py")) + list((REPO / "orcnn_core").rglob("*.py")) + \
            list((REPO / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "rclpy" or n.startswith("rclpy.") for n in names):
                importers.append(path.relative_to(REPO).as_posix())
    assert sorted(set(importers)) == ["orcnn_ros/node.py"]


def test_ros_free_modules_import_without_rclpy_or_ros_messages():
    # A meta-path hook makes any attempt to import ROS packages fail loudly.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs'):\n"
        "            raise ImportError('ROS import attempted: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import orcnn_ros.pipeline, orcnn_ros.conversions, orcnn_ros.messages, orcnn_ros.params\n"
        "import orcnn_ros.planner_example, orcnn_core.occlusion, orcnn_core.viz\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr




# -- colcon build -----------------------------------------------------------------------------------

def _cmake_calls(text: str, command: str) -> list[list[str]]:
    """Arguments of every call of ``command`` in a CMake file (comments removed)."""
    text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    return [re.split(r"\s+", args.strip()) for args in re.findall(rf"\b{command}\s*\(([^)]*)\)", text)]


def test_cmake_never_installs_a_python_package_twice():
    # colcon failed at configure ("add_custom_target cannot create target
    # ament_cmake_python_copy_orcnn_ros ... already exists"): rosidl_generate_interfaces already
    # installs the Python package named after the interface target.
    text = (REPO / "CMakeLists.txt").read_text()
    project = _cmake_calls(text, "project")[0][0]
    generated = {project if args[0] == "${PROJECT_NAME}" else args[0]
                 for args in _cmake_calls(text, "rosidl_generate_interfaces")}
    installed = [project if args[0] == "${PROJECT_NAME}" else args[0]
                 for args in _cmake_calls(text, "ament_python_install_package")]
    assert generated == {"orcnn_ros"}
    assert not generated & set(installed), "a generated interface package is installed again"
    assert len(installed) == len(set(installed))
    assert "orcnn_core" in installed
    # ... and the project's own orcnn_ros sources still reach the same installed package.
    directories = _cmake_calls(text, "install")
    assert any(args[:3] == ["DIRECTORY", "orcnn_ros/", "DESTINATION"]
               and args[3] == "${PYTHON_INSTALL_DIR}/${PROJECT_NAME}" for args in directories)
    assert not (REPO / "orcnn_ros" / "msg").exists()  # would shadow the generated orcnn_ros.msg


def test_the_guard_sees_a_second_install_of_the_generated_package():
    broken = ('project(orcnn_ros)\nrosidl_generate_interfaces(${PROJECT_NAME} "msg/A.msg")\n'
              "ament_python_install_package(orcnn_ros)\n")
    generated = {a[0] for a in _cmake_calls(broken, "rosidl_generate_interfaces")}
    installed = {a[0] for a in _cmake_calls(broken, "ament_python_install_package")}
    assert generated == {"${PROJECT_NAME}"} and installed == {"orcnn_ros"}  # same package, two spellings


# -- run-time parameters ----------------------------------------------------------------------------

def test_every_parameter_has_a_rule_and_the_docs_say_which_are_live():
    assert list(PARAMETERS) == list(NodeParams.__dataclass_fields__)
    table = (REPO / "docs" / "ros.md").read_text().split("### Parameters", 1)[1].split("\n#", 1)[0]
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z_]+)` .*$", table, flags=re.M)}
    for name, spec in PARAMETERS.items():
        assert spec.when in rows[name], f"docs/ros.md does not say that {name} is {spec.when}"


@pytest.mark.parametrize("change, words", [
    ({"score_threshold": 1.5}, "score_threshold' must be in"),
    ({"device": "gpu0"}, "device' must be"),
    ({"max_instances": 0}, "max_instances' must be in"),
    ({"mask_threshold": 0.0}, r"mask_threshold' must be in \(0"),
    ({"qos_depth": 4}, "qos_depth' is read at configure"),
    ({"weights": "/models/other.safetensors"}, "weights' is read at configure"),
    ({"autostart": False}, "autostart' is read only when the node starts"),
    ({"no_such": 1}, "unknown parameter 'no_such'"),
])
def test_refused_changes_say_why(change, words):
    with pytest.raises(ConfigError, match=words):
        check_update(NodeParams(), change, configured=True)


def test_live_changes_apply_and_configure_changes_wait_for_configure():
    current = NodeParams()
    updated = check_update(current, {"score_threshold": 0.95, "class_names": [""]}, configured=True)
    assert updated.score_threshold == 0.95 and updated.class_names == [] and current.score_threshold == 0.5
    assert updated.frame_settings().score_threshold == 0.95
    # Unconfigured, a configure-time parameter may change (it is read at the next configure) ...
    assert check_update(current, {"device": "cpu", "qos_depth": 4}, configured=False).qos_depth == 4
    # ... and setting one to the value it already has is no change at all.
    assert check_update(current, {"device": "auto"}, configured=True).device == "auto"


# -- clean shutdown ---------------------------------------------------------------------------------

SHUTDOWN_SCRIPT = textwrap.dedent("""
    import sys, threading
    from orcnn_ros.shutdown import ShutdownSignal, spin_until_shutdown

    stop = ShutdownSignal().install()
    worker = threading.Thread(target=stop.requested.wait, name="worker")  # stands in for the pipeline
    worker.start()
    print("spinning", flush=True)
    reason = spin_until_shutdown(lambda timeout: threading.Event().wait(timeout), stop)
    worker.join(5)
    stop.restore()
    print(f"{reason}: shut down, worker alive {worker.is_alive()}", flush=True)
    sys.exit(0)
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_end_the_spin_loop_cleanly(signum):
    # docker stop, systemd and ros2 launch send SIGTERM; the node used to ignore it until SIGKILL.
    process = subprocess.Popen([sys.executable, "-c", SHUTDOWN_SCRIPT], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert process.stdout.readline().strip() == "spinning"
        time.sleep(0.2)
        process.send_signal(signum)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert out.strip() == f"{signal.Signals(signum).name}: shut down, worker alive False"


def test_the_node_main_uses_the_shutdown_path():
    # node.py cannot run here (no rclpy); check that its main turns rclpy's handlers off, spins with
    # spin_until_shutdown and runs the lifecycle shutdown transition.
    tree = ast.parse((REPO / "orcnn_ros" / "node.py").read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    called = {getattr(c.func, "attr", getattr(c.func, "id", "")) for c in ast.walk(main)
              if isinstance(c, ast.Call)}
    assert {"ShutdownSignal", "install", "spin_until_shutdown", "trigger_shutdown", "try_shutdown"} <= called
    assert "spin" not in called  # rclpy.spin would not see our flag
    init = next(n for n in tree.body if isinstance(n, ast.FunctionDef)
                and n.name == "_init_without_signal_handlers")
    assert "SignalHandlerOptions.NO" in ast.unparse(init)
