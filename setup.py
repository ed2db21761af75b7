"""Build hook for the optional native modules (everything else is in pyproject.toml).

``bdekit.crypto._sector`` (src/bdekit/crypto/_sector.c) is built when a C compiler and the
Python headers are present; ``optional=True`` turns a failed build into a warning, and bdekit
then runs on its pure numpy path (also selectable at run time with ``BDEKIT_PURE=1``).
``bdekit.crypto._stretch`` (src/bdekit/crypto/_stretch.c) runs the key stretch on the CPU's
SHA-256 instructions; without it (or them) the stretch is a hashlib loop.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "bdekit.crypto._sector",
            sources=["src/bdekit/crypto/_sector.c"],
            depends=["src/bdekit/crypto/_sector_diffuser.h"],
            optional=True,
        ),
        Extension(
            "bdekit.crypto._stretch",
            sources=["src/bdekit/crypto/_stretch.c"],
            optional=True,
        ),
    ],
)
