"""The mypyc-compiled form (``GW_MYPYC=1``, setup.py) is what runs when it is asked for.

``scripts/test-compiled.sh`` runs the in-process tests on a compiled wheel with
``GW_EXPECT_COMPILED=1``; this test then fails unless every module of ``gw.core.COMPILED`` is
the compiled one, so that run can never pass on the pure modules by mistake.
"""

from __future__ import annotations

import importlib
import os

import pytest

from gw.core import COMPILED

COMPILED_RUN = os.environ.get("GW_EXPECT_COMPILED") == "1"


@pytest.mark.skipif(not COMPILED_RUN, reason="only in scripts/test-compiled.sh")
@pytest.mark.parametrize("name", COMPILED)
def test_the_module_is_compiled(name: str) -> None:
    module = importlib.import_module(f"gw.core.{name}")
    assert not str(module.__file__).endswith(".py"), module.__file__
