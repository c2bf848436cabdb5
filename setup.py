"""Build hook for the optional native kernel; everything else is in pyproject.toml.

``semcodec.models._prefix`` (exact prefix attention, see ``semcodec.models.attention``) is
optional: where it cannot be compiled (no C compiler) the install goes on without it and
the numpy/onnxruntime kernels are used.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("semcodec.models._prefix", ["src/semcodec/models/_prefix.c"], optional=True)])
