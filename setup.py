"""The one compiled part of gw: the access line in C, with its Python form as the fallback.

``optional=True``: where nothing can compile it (no C compiler or Python headers), gw installs
and runs with the Python form alone, which makes the same text (``gw.observe.accesslog``).
Everything else about the package is in setup.cfg.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "gw.observe._accessline",
            ["gw/observe/_accessline.c"],
            optional=True,
            extra_compile_args=["-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
