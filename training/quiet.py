"""Keep what TensorFlow's native code prints out of the terminal: it goes to the debug log instead."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def native_output_to_log(what: str) -> Iterator[None]:
    """Send what native code (and Python) writes to stdout/stderr inside the block to the debug log.

    TensorFlow's C++ parts write "E0000 ... NodeDef mentions attribute use_unbounded_threadpool" lines (a
    Keras/TensorFlow version skew, harmless), the converter its settings, LiteRT "INFO: Created TensorFlow
    Lite XNNPACK delegate": none of it means anything to the user. Only for short blocks that do not log
    themselves (a log handler writing to stderr inside the block would be captured too). If the block
    raises, the captured text is logged as an error, since it may say why.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    py_out = io.StringIO()
    failed = False
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(py_out):
                yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            text = py_out.getvalue() + sink.read().decode(errors="replace")
            if text.strip():
                log.log(logging.ERROR if failed else logging.DEBUG, "%s output:\n%s", what, text.rstrip())
