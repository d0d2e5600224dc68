"""The one compiled part: the media node's per-copy loop (services/media/_fastpath.c).

Everything else about the package is in pyproject.toml; ``make run`` and ``make test`` build
this with the machine's C compiler when they install.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "services.media._fastpath",
            ["services/media/_fastpath.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
