"""package.xml: every dependency is a key `rosdep install` resolves, every declared ROS package is used, and
what the code and tests use is declared (here and in setup.py's extras)."""

import ast
import configparser
import re
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Python keys as they are in ros/rosdistro rosdep/python.yaml (checked at commit 8468e88, 2026-08-22). A key
# missing there makes `rosdep install` stop; deprecated aliases (python3-pytorch-pip, which pip-installs CUDA
# torch and torchvision) are left out on purpose.
ROSDEP_PYTHON_KEYS = {
    "python3-numpy", "python3-scipy", "python3-yaml", "python3-matplotlib", "python3-tqdm", "python3-trimesh-pip",
    "python3-pytest", "python3-pytest-timeout",
}
DEPRECATED = {"python3-pytorch-pip", "python-pytorch-pip"}
# ROS packages we may depend on, and how the code shows it uses them.
ROS_PACKAGES = {
    "rclpy", "std_msgs", "rcl_interfaces", "sensor_msgs", "geometry_msgs", "visualization_msgs", "diagnostic_msgs",
    "lifecycle_msgs", "kp_interfaces", "launch", "launch_ros", "rviz2", "tf2_ros", "ament_index_python",
    "launch_testing", "launch_testing_ros",
}


def manifest():
    root = ET.parse(ROOT / "package.xml").getroot()
    return {tag: [e.text.strip() for e in root.iter(tag)] for tag in
            ("depend", "exec_depend", "build_depend", "test_depend", "buildtool_depend")}


def imported_modules(paths):
    names = set()
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("importorskip", "import_module"):
                if node.args and isinstance(node.args[0], ast.Constant):
                    names.add(str(node.args[0].value).split(".")[0])
    return names


def runtime_sources():
    return sorted((ROOT / "kp_perception").glob("*.py")) + sorted((ROOT / "launch").glob("*.py"))


def test_every_key_resolves_with_rosdep():
    keys = {k for values in manifest().values() for k in values}
    assert not keys & DEPRECATED, f"deprecated rosdep keys: {keys & DEPRECATED}"
    unknown = {k for k in keys if k not in ROS_PACKAGES and k not in ROSDEP_PYTHON_KEYS and k != "ament_python"}
    assert not unknown, f"not rosdep keys (rosdep install would stop): {sorted(unknown)}"


def test_declared_ros_packages_are_used():
    deps = manifest()
    runtime = imported_modules(runtime_sources())
    launch_text = "\n".join(p.read_text() for p in (ROOT / "launch").glob("*.py"))
    tests = imported_modules(sorted((ROOT / "test").rglob("*.py")))
    for key in deps["exec_depend"] + deps["depend"]:
        if key in ROS_PACKAGES:
            assert key in runtime or f'"{key}"' in launch_text, f"exec_depend {key} is not used"
    for key in deps["test_depend"]:
        if key in ROS_PACKAGES:
            assert key in tests, f"test_depend {key} is not used by any test"


def test_used_ros_packages_are_declared():
    deps = manifest()
    declared = set(deps["exec_depend"] + deps["depend"])
    used = imported_modules(runtime_sources()) & ROS_PACKAGES
    assert used <= declared, f"used but not declared: {sorted(used - declared)}"
    tests_used = imported_modules(sorted((ROOT / "test").rglob("*.py"))) & ROS_PACKAGES
    assert tests_used <= declared | set(deps["test_depend"]), f"tests use undeclared {sorted(tests_used - declared)}"


def test_pytest_plugins_the_configuration_needs_are_declared():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    options = dict(cfg["tool:pytest"]) if cfg.has_section("tool:pytest") else {}
    setup = (ROOT / "setup.py").read_text()
    extras = re.search(r'"test":\s*\[([^\]]*)\]', setup)
    assert extras, "setup.py has no test extra"
    if "timeout" in options:  # pytest-timeout's setting
        assert "python3-pytest-timeout" in manifest()["test_depend"]
        assert "pytest-timeout" in extras.group(1)
    assert "python3-pytest" in manifest()["test_depend"] and '"pytest' in extras.group(1)


def test_pip_only_dependencies_are_documented():
    """torch and safetensors have no usable rosdep key: the README says what pip must add."""
    text = (ROOT / "kp_perception" / "README.md").read_text()
    pip_lines = [line for line in text.splitlines() if "pip install" in line]
    for name in ("torch", "safetensors"):
        assert any(name in line for line in pip_lines), f"kp_perception/README.md: no pip line installs {name}"

