"""Logging set-up shared by every subcommand (the daemon and the CLI).

With ``logging.format: json`` every line the daemon writes is one JSON object: its own loggers, uvicorn's
(they propagate to the root logger: edge/api/server.py gives uvicorn no handlers of its own), Python warnings,
uncaught exceptions of any thread, start-up errors (:func:`fatal`) and what native libraries print on the
process's stderr (LiteRT's "Created TensorFlow Lite XNNPACK delegate", :func:`capture_native_stderr`).

``faulthandler`` is on for every subcommand: a crash (SIGSEGV, SIGFPE, SIGABRT, SIGBUS) writes the Python
stack of every thread to the real stderr, and ``kill -USR1 PID`` does so for a live process.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
from types import TracebackType
from typing import IO, Any

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
NATIVE_LOGGER = "native"  # lines native code printed on stderr, in JSON mode

_format = "text"
_stderr: IO[str] | None = None  # the real stderr once capture_native_stderr() took fd 2


def setup_logging(level: str | int | None = None, fmt: str = "text") -> None:
    """Configure the root logger once. ``BOXINSPECT_LOG_LEVEL`` overrides the default level."""
    global _format
    level = level or os.environ.get("BOXINSPECT_LOG_LEVEL", "INFO")
    if isinstance(level, str):
        level = level.upper()
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(_stderr)  # None: sys.stderr
    if fmt == "json":
        # One JSON object per line, tracebacks included (exc_info, stack_info) and any extra= fields.
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "ts", "levelname": "level", "name": "logger", "message": "msg"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    _format = fmt
    root.addHandler(handler)
    root.setLevel(level)
    # TensorFlow and friends are chatty; keep their noise out of an operator's log.
    for noisy in ("absl", "tensorflow", "h5py", "matplotlib", "PIL", "urllib3", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)  # warnings.warn(...) -> the "py.warnings" logger, in the same format
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_thread
    _enable_faulthandler()


def fatal(message: str) -> None:
    """A start-up error that ends the process: one line on stderr, or one JSON log record in JSON mode."""
    if _format == "json":
        logging.getLogger("boxinspect").critical(message)
    else:
        sys.stderr.write(f"{message}\n")


def _enable_faulthandler() -> None:
    stream = _stderr or sys.__stderr__
    try:
        if stream is None:
            return
        faulthandler.enable(file=stream, all_threads=True)
        if hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread():
            faulthandler.register(signal.SIGUSR1, file=stream, all_threads=True, chain=False)
    except (OSError, ValueError, RuntimeError, AttributeError):  # a stream without a file descriptor (pytest)
        pass


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("boxinspect").critical("uncaught exception", exc_info=(kind, value, tb))


def _log_uncaught_thread(args: Any) -> None:
    if args.exc_type is SystemExit:
        return
    logging.getLogger("boxinspect").critical(
        "uncaught exception in thread %s", args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def capture_native_stderr() -> None:
    """JSON mode: route file descriptor 2 through a pipe whose lines are logged as JSON records (logger
    ``native``), so what C/C++ libraries print there joins the JSON stream. The log handler and faulthandler
    keep writing to the real stderr (a duplicate of the old fd 2). Once per process; the daemon calls it."""
    global _stderr
    if _stderr is not None or _format != "json":
        return
    real = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    _stderr = os.fdopen(real, "w", buffering=1, encoding="utf-8", errors="replace")
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler):
            h.setStream(_stderr)
    _enable_faulthandler()
    threading.Thread(target=_pump, args=(read_fd,), name="native-stderr", daemon=True).start()


def _pump(read_fd: int) -> None:
    from edge.runtime.nativelog import as_template, limit_native_logger

    native = limit_native_logger(logging.getLogger(NATIVE_LOGGER))  # issue 24: a corrupt stream's decoder must not flood the journal
    with open(read_fd, encoding="utf-8", errors="replace") as pipe:
        for line in pipe:
            line = line.rstrip()
            if line:
                level = (logging.ERROR if line.startswith(("ERROR", "Error", "FATAL", "Traceback", "E0", "E1", "F0", "F1"))
                         else logging.WARNING if line.startswith(("WARNING", "W0", "W1")) else logging.INFO)
                template, args = as_template(line)
                native.log(level, template, *args)


def early_format(config_path: str | None, environ: dict[str, str] | None = None) -> str:
    """The log format the daemon will use, known before its modules are imported (their import-time warnings
    must already come out as JSON): ``BOXINSPECT_LOGGING__FORMAT``, else ``logging.format`` in the file, else
    text. Anything unreadable here is left to the real config check."""
    env = os.environ if environ is None else environ
    fmt = env.get("BOXINSPECT_LOGGING__FORMAT", "")
    if not fmt and config_path:
        try:
            import yaml

            with open(config_path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
            fmt = str(data.get("logging", {}).get("format", "")) if isinstance(data, dict) else ""
        except Exception:  # a broken file is reported by load_config, with its key
            fmt = ""
    return "json" if fmt.strip().lower() == "json" else "text"
