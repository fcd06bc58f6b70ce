"""gw's compiled parts, each a C form of Python code that stays as its fallback: the access
line (``gw.observe.accesslog``), an answer's head (``gw.edge.reply``) and the
passes over a request's head (``gw.edge.connection``, ``gw.edge.environ``), the request
head sent upstream and the pass over its answer's fields (``gw.upstream.wire``), the
shared rate-limit table's check of a key (``gw.limits.table``), the passes that drop the
fields a client or an upstream may not pass on (``gw.core.headers``), and the socket calls that
do not wait (``gw.host.process``, ``gw.upstream.pool``).

``optional=True``: where nothing can compile them (no C compiler or Python headers), gw
installs and runs with the Python forms alone, which make the same bytes. Everything else about
the package is in setup.cfg.
"""

from setuptools import Extension, setup


def _compiled(module: str) -> Extension:
    return Extension(
        module,
        [module.replace(".", "/") + ".c"],
        depends=["gw/_buffer.h", "gw/_collector.h", "gw/_http.h", "gw/_slots.h"],
        optional=True,
        extra_compile_args=["-Wall", "-Wextra", "-Wno-unused-parameter"],
    )


setup(
    ext_modules=[
        _compiled("gw.observe._accessline"),
        _compiled("gw.observe._grouped"),
        _compiled("gw.edge._replyfields"),
        _compiled("gw.edge._requestfields"),
        _compiled("gw.upstream._wire"),
        _compiled("gw.limits._table"),
        _compiled("gw.core._fields"),
        _compiled("gw.host._io"),
    ]
)
