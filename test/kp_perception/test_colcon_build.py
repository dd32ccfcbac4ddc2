"""colcon builds both packages the way a ROS user does, and the install has the layout ROS tools expect.

The repository's files (tracked and not ignored, as a clone plus local edits has them) are copied into a
temporary workspace, built with colcon (colcon-common-extensions comes with the test extra) against the ROS
wheels in this venv, and the install is checked: ament index entries of both packages, launch/config/rviz under
share/kp_perception, the node executables under lib/kp_perception, the shipped model inside the installed
Python package, the interfaces importing from the install, an installed executable running, and the installed
launch file loading (with the real launch packages where they exist, else with the stand-ins of launch_fakes.py).
"""

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
COLCON = VENV_BIN / "colcon"
SKIP_DIRS = {".git", ".venv", "build", "install", "log", "runs", "outputs", "__pycache__"}


def repository_files():
    """Files a clone with local edits has: tracked and untracked-but-not-ignored (git), else a filtered walk."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, check=True).stdout.decode().split("\0")
        return sorted({f for f in listed if f and (ROOT / f).is_file()})
    except (OSError, subprocess.CalledProcessError):
        out = []
        for dirpath, dirnames, filenames in os.walk(ROOT):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            out += [str(Path(dirpath, f).relative_to(ROOT)) for f in filenames]
        return sorted(out)


def ros_env(extra=None):
    env = dict(os.environ)
    prefix = str(Path(sys.prefix))
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["AMENT_PREFIX_PATH"] = prefix  # where the ROS wheels and their CMake files are (what /opt/ros is elsewhere)
    env["CMAKE_PREFIX_PATH"] = prefix
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("PYTHONPATH", None)
    env.update(extra or {})
    return env


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    if not COLCON.exists():
        pytest.skip(f"colcon is not installed in this environment ({COLCON}); pip install -e '.[test]'")
    ws = tmp_path_factory.mktemp("colcon_ws")
    src = ws / "src" / "kp_net"
    for name in repository_files():
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    cmd = [str(COLCON), "--log-base", str(ws / "log"), "build", "--paths", str(src), str(src / "kp_interfaces"),
           "--build-base", str(ws / "build"), "--install-base", str(ws / "install"),
           "--cmake-args", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}"]
    result = subprocess.run(cmd, cwd=ws, env=ros_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"colcon build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert "2 packages finished" in result.stdout, result.stdout
    return ws


def sourced(ws, command, timeout=180):
    """Run ``command`` in bash after `source install/setup.bash`, as a ROS user would."""
    script = f"source {ws / 'install' / 'setup.bash'} && {command}"
    env = ros_env({"ROS_DOMAIN_ID": "77", "ROS_HOME": str(ws / "ros_home")})
    return subprocess.run(["bash", "-c", script], cwd=ws, env=env, capture_output=True, text=True, timeout=timeout)


def test_ament_index_has_both_packages(workspace):
    install = workspace / "install"
    for package in ("kp_perception", "kp_interfaces"):
        assert (install / package / "share" / "ament_index" / "resource_index" / "packages" / package).is_file()
        assert (install / package / "share" / package / "package.xml").is_file()
    assert (install / "kp_interfaces" / "share" / "ament_index" / "resource_index" / "rosidl_interfaces"
            / "kp_interfaces").is_file()


def test_share_has_launch_config_and_rviz(workspace):
    share = workspace / "install" / "kp_perception" / "share" / "kp_perception"
    for name in ("launch/kp_perception.launch.py", "config/kp_perception.yaml", "config/kp_perception.rviz",
                 "config/fastdds_large_clouds.xml"):
        assert (share / name).is_file(), name
        assert (share / name).read_bytes() == (ROOT / name).read_bytes()


def test_executables_are_where_ros2_run_looks(workspace):
    lib = workspace / "install" / "kp_perception" / "lib" / "kp_perception"
    for name in ("kp_perception_node", "kp_perception_managed_node", "kp-rotate-goal"):
        assert (lib / name).is_file() and os.access(lib / name, os.X_OK), name
    models = list((workspace / "install" / "kp_perception").rglob("kp_perception/models/mug.safetensors"))
    assert len(models) == 1, "the shipped model is not installed with the package"
    profiles = list((workspace / "install" / "kp_perception").rglob("kp_perception/middleware/fastdds_profile.xml"))
    assert len(profiles) == 1, "the node's Fast DDS profile is not installed with the package"


def test_the_install_imports_and_runs(workspace):
    probe = sourced(workspace, f"{sys.executable} -c 'import kp_perception, kp_interfaces.srv; "
                               "print(kp_perception.__file__); print(kp_interfaces.srv.__file__)'")
    assert probe.returncode == 0, probe.stderr
    install = str(workspace / "install")
    assert all(line.startswith(install) for line in probe.stdout.split()), probe.stdout  # not the source tree
    node = workspace / "install" / "kp_perception" / "lib" / "kp_perception" / "kp_perception_node"
    run = sourced(workspace, f"{node} --ros-args -p model_path:={workspace / 'missing.safetensors'}")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "cannot start" in run.stdout + run.stderr


def test_installed_launch_file_loads(workspace, monkeypatch):
    share = workspace / "install" / "kp_perception" / "share" / "kp_perception"
    path = share / "launch" / "kp_perception.launch.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    compile(tree, str(path), "exec")
    modules = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert modules <= {"launch", "launch_ros", "lifecycle_msgs"}, modules
    importlib.import_module("lifecycle_msgs.msg")  # the one ROS import besides launch that exists here
    try:
        import launch  # noqa: F401
        import launch_ros  # noqa: F401

        real = True
    except ImportError:  # not installable from PyPI: load it against the stand-ins instead
        import launch_fakes

        launch_fakes.install(monkeypatch)
        real = False
    spec = importlib.util.spec_from_file_location("installed_kp_launch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    if not real:
        from launch_fakes import DeclareLaunchArgument, FakeContext, perform

        context = FakeContext(share=share)
        default = next(e for e in description.entities if isinstance(e, DeclareLaunchArgument)
                       and e["name"] == "params_file")["default_value"]
        assert Path(perform(default, context)).is_file(), "the default params file is not in the install"
