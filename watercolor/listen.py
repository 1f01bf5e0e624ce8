"""A server's listening socket, or one clear line saying why it cannot have its address.

Both services (and ``./run.sh``, before it starts anything) take their
addresses through :func:`listen`, so a port already in use reads the same
everywhere: ``cannot listen on 127.0.0.1:32018: address already in use (set
WTC_PROCESS_PORT)`` instead of a traceback.
"""

from __future__ import annotations

import errno
import os
import socket

#: The setting to change, by what went wrong: the port is taken or privileged, or the host is no address
#: of this machine.
_PORT_ERRORS = {errno.EADDRINUSE, errno.EACCES}
_HOST_ERRORS = {errno.EADDRNOTAVAIL}


class CannotListen(OSError):
    """The address cannot be bound; ``str()`` is the whole explanation, fit to print as it is."""


def shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen(host: str, port: int, *, host_setting: str, port_setting: str,
           backlog: int = 256) -> socket.socket:
    """A TCP socket listening on ``host:port`` (SO_REUSEADDR, as servers bind).

    Raises :class:`CannotListen` naming the address, the reason and the
    setting to change.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=backlog, reuse_port=False)
    except OSError as exc:
        # create_server's own strerror adds "(while attempting to bind on address ...)": the plain reason.
        plain = exc.errno is not None and exc.errno > 0 and not isinstance(exc, socket.gaierror)
        reason = os.strerror(exc.errno) if plain else (exc.strerror or str(exc))
        if isinstance(exc, socket.gaierror) or exc.errno in _HOST_ERRORS:
            hint = host_setting
        elif exc.errno in _PORT_ERRORS:
            hint = port_setting
        else:
            hint = f"{host_setting} or {port_setting}"
        error = CannotListen(f"cannot listen on {shown(host, port)}: {reason[:1].lower()}{reason[1:]} "
                             f"(set {hint})")
        error.errno = exc.errno
        raise error from None


def check_free(host: str, port: int, *, host_setting: str, port_setting: str) -> None:
    """Raise :class:`CannotListen` unless ``host:port`` could be listened on right now."""
    listen(host, port, host_setting=host_setting, port_setting=port_setting, backlog=1).close()
