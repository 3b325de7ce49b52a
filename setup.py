"""Build the optional C kernel; everything else comes from pyproject.toml.

The extension is optional: without a working C compiler the package still
installs and rnncli falls back to its numpy loop.
"""

import sys

from setuptools import Extension, setup

if sys.platform == "win32" and "GCC" not in sys.version:
    # MSVC: the portable scalar path is compiled
    compile_args = ["/O2"]
else:
    # No -march/-mavx*: SIMD code paths are picked at run time (see
    # _kernel.c).  No -ffast-math: the activations rely on IEEE NaN/inf
    # behaviour.  -ffp-contract=fast lets a*b+c become one FMA instruction
    # (GCC's default in GNU C mode, made explicit for Clang and -std=c*).
    compile_args = ["-O3", "-ffp-contract=fast", "-fno-math-errno", "-std=gnu11"]

setup(
    ext_modules=[
        Extension(
            "rnncli._kernel",
            ["rnncli/_kernel.c"],
            optional=True,
            extra_compile_args=compile_args,
        )
    ]
)
