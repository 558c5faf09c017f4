"""ament_python packaging: installable with colcon (ROS) and with pip (venv)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vla_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Event-triggered VLA policy for ROS 2 with a safety validator",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={PACKAGE: ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/config/scenarios", glob("config/scenarios/*.yaml")),
    ],
    install_requires=["numpy", "pyyaml"],
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "vla-ros = vla_ros.cli:main",
            "camera_node = vla_ros.nodes.camera_node:main",
            "inference_node = vla_ros.nodes.inference_node:main",
            "safety_node = vla_ros.nodes.safety_node:main",
            "sim_node = vla_ros.nodes.sim_node:main",
            "expert_node = vla_ros.nodes.expert_node:main",
        ],
    },
)
