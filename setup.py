"""A shim for tools that look for setup.py: pip and setuptools read everything from pyproject.toml.

`colcon build` does not use it either: package.xml declares build_type ament_cmake (CMakeLists.txt).
"""

from setuptools import setup

setup()
