"""Serving the API in production: gunicorn, one process of ``WTC_API_WORKERS`` threads.

One process because metrics (and later jobs) live in its memory: a second
process would hold its own numbers. Threads suit the work, which is mostly
waiting on backends (sockets release the GIL). Gunicorn's worker timeout is
set past the request deadline so it never kills a request the API is still
allowed to finish.
"""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker

from watercolor.config import Settings
from watercolor.listen import check_free

log = logging.getLogger("watercolor.api")

#: Seconds past WTC_API_DEADLINE before gunicorn considers a worker stuck.
TIMEOUT_MARGIN = 30


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    host = settings.api_host
    bind = f"[{host}]:{settings.api_port}" if ":" in host else f"{host}:{settings.api_port}"
    return {
        "bind": [bind],
        "workers": 1,
        "worker_class": StoppingThreadWorker,
        "threads": settings.api_workers,
        "timeout": int(settings.api_deadline) + TIMEOUT_MARGIN,
        "graceful_timeout": 30,
        "keepalive": 5,
        "loglevel": settings.log_level.lower(),
        "accesslog": "-",
        "errorlog": "-",
        "access_log_format": '%(h)s "%(r)s" %(s)s %(B)s %(M)sms',
        "proc_name": "watercolor-api",
        "limit_request_line": 8190,
        # No runtime-control socket (gunicorn 25.1+): it would need a writable home directory.
        "control_socket_disable": True,
    }


class StoppingThreadWorker(ThreadWorker):
    """gthread, except that a stopping worker closes its listening sockets at once.

    On SIGTERM the master closes its copies of the listening sockets and the
    worker stops accepting, but the worker's copies kept the port listening
    until it had finished its requests in flight (up to the graceful timeout):
    the kernel completed new connections that nobody would accept, and reset
    them when the worker exited. Here the worker first takes what the kernel
    has already queued (those requests are served like the ones in flight),
    then closes: from then on a new connection is refused at once, and a
    client or a load balancer retries elsewhere without waiting.
    """

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if enabled or self.alive:
            return
        for listener in self.sockets:
            while True:  # the listener is non-blocking: accept() takes one or returns
                before = self.nr_conns
                self.accept(listener)
                if self.nr_conns == before:
                    break
            listener.close()


class _Gunicorn(BaseApplication):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings).items():
            if key in self.cfg.settings:  # options newer than the installed gunicorn are skipped
                self.cfg.set(key, value)

    def load(self) -> Any:
        from watercolor.api.app import create_app

        return create_app(self.settings)


def serve(settings: Settings) -> int:
    """Run the API until SIGTERM/SIGINT (gunicorn handles the signals); returns the exit status.

    Raises :class:`~watercolor.listen.CannotListen` when the address is taken: checked here first,
    as gunicorn would retry for five seconds and then exit with lines of its own.
    """
    check_free(settings.api_host, settings.api_port, host_setting="WTC_API_HOST", port_setting="WTC_API_PORT")
    log.info("API on %s:%d, backends %s", settings.api_host, settings.api_port,
             ", ".join(f"{h}:{p}" for h, p in settings.backends))
    _Gunicorn(settings).run()
    return 0
