"""Build hook for the optional native sector kernel (everything else is in pyproject.toml).

``bdekit.crypto._sector`` (src/bdekit/crypto/_sector.c) is built when a C compiler and the
Python headers are present; ``optional=True`` turns a failed build into a warning, and bdekit
then runs on its pure numpy path (also selectable at run time with ``BDEKIT_PURE=1``).
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
    ],
)
