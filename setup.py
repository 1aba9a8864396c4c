"""Packaging for kubirun.

The native layer (``kubirun/_native``) is a cffi module in API mode: it is
compiled at install time from ``kubirun/_native/build.py``.
"""
from setuptools import find_packages, setup

setup(
    name="kubirun",
    version="0.1.0",
    description="A low-level Linux container runtime in Python",
    packages=find_packages(include=["kubirun", "kubirun.*"]),
    python_requires=">=3.9",
    setup_requires=["cffi>=1.15"],
    cffi_modules=["kubirun/_native/build.py:ffibuilder"],
    install_requires=[
        "cffi>=1.15",
        "click>=8.0",
        "python-prctl>=1.7",
        "pyroute2>=0.7",
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={"console_scripts": ["kubirun = kubirun.cli:main"]},
)
