"""The ``watercolor`` command: run the services, and talk to them from a terminal."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from watercolor import __version__
from watercolor.config import ConfigError, Settings, load_setting, load_settings, parse_hostport


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"watercolor: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


def _long_running() -> None:
    """What a service process sets up before serving: memory that stays flat (see watercolor.memory)."""
    from watercolor.memory import pin_mmap_threshold

    pin_mmap_threshold()


def _serve(serve: Callable[[Settings], int]) -> int:
    """Run a service; an address it cannot listen on is one line on stderr and status 1."""
    from watercolor.listen import CannotListen

    settings = _settings()
    _setup_logging(settings)
    _long_running()
    try:
        return serve(settings)
    except CannotListen as exc:
        print(f"watercolor: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # e.g. WTC_DEVICE=vulkan on a machine without a Vulkan device
        print(f"watercolor: configuration error: {exc}", file=sys.stderr)
        return 2


def cmd_process(args: argparse.Namespace) -> int:
    from watercolor.processing.process import serve

    return _serve(serve)


def cmd_api(args: argparse.Namespace) -> int:
    from watercolor.api.server import serve

    return _serve(serve)


def _api_url() -> str:
    """``http://localhost:$WTC_API_PORT``: the API this machine runs unless told otherwise."""
    try:
        port = load_setting("WTC_API_PORT")
    except ConfigError as exc:
        print(f"watercolor: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return f"http://localhost:{port}"


def cmd_upscale(args: argparse.Namespace) -> int:
    from watercolor import client

    request = client.Request(args.url or _api_url(), scale=args.scale, model=args.model,
                             format=args.format, quality=args.quality, api_key=args.api_key,
                             timeout=args.timeout, tile_size=args.tile_size, options=tuple(args.option))
    # A terminal closed or a `kill` is an interruption like Ctrl-C: the work still running is cancelled.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    return client.run(args.files, request, out_dir=args.out, jobs=args.jobs, use_jobs=not args.no_jobs,
                      poll=args.poll)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _backend(text: str) -> tuple[str, int]:
    try:
        return parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_ping(args: argparse.Namespace) -> int:
    from watercolor import protocol, transport
    from watercolor.errors import WatercolorError

    settings = _settings()
    secret = settings.shared_secret.encode() if settings.shared_secret else None
    started = time.monotonic()
    try:
        reply = transport.exchange(args.backend, protocol.ping(uuid.uuid4().hex[:12]), secret=secret,
                                   io_timeout=args.timeout, connect_timeout=args.timeout,
                                   max_reply=1 << 16)
    except (WatercolorError, OSError) as exc:
        print(f"ping {args.backend[0]}:{args.backend[1]} failed: {exc}", file=sys.stderr)
        return 1
    ms = (time.monotonic() - started) * 1000
    if args.alive and reply.type in (protocol.FrameType.PONG, protocol.FrameType.BUSY):
        # Liveness: a backend that answers at all is alive, even if it is full or draining.
        print(f"{args.backend[0]}:{args.backend[1]} is alive ({reply.type.name.lower()}, {ms:.1f} ms)")
        return 0
    if reply.type is not protocol.FrameType.PONG:
        code = reply.header.get("code") or reply.header.get("reason") or reply.type.name.lower()
        print(f"ping failed: {code}: {reply.header.get('message', '')}".rstrip(": "), file=sys.stderr)
        return 1
    h = reply.header
    print(f"pong from {args.backend[0]}:{args.backend[1]} in {ms:.1f} ms: version {h.get('version')}, "
          f"{h.get('running', 0)}/{h.get('slots', '?')} slots busy, {h.get('waiting', 0)} waiting"
          + (", draining" if h.get("draining") else ""))
    return 0 if not h.get("draining") else 1


def cmd_send(args: argparse.Namespace) -> int:
    from watercolor import errors, protocol, transport
    from watercolor.params import parse_params

    settings = _settings()
    secret = settings.shared_secret.encode() if settings.shared_secret else None
    options = dict(args.option)
    raw = {"model": args.model, "scale": args.scale, "format": args.format, "quality": args.quality,
           "tile_size": args.tile_size}
    try:
        params = parse_params({k: v for k, v in raw.items() if v is not None},
                              default_model=settings.default_model, max_scale=settings.max_scale,
                              options=options)
        data = Path(args.image).read_bytes()
    except errors.WatercolorError as exc:
        print(f"error {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cannot read {args.image}: {exc.strerror}", file=sys.stderr)
        return 2

    def show(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\rtiles {done}/{total}", end="", file=sys.stderr, flush=True)

    frame = protocol.request(uuid.uuid4().hex[:12], data, model=params.model, scale=params.scale,
                             fmt=params.format, quality=params.quality, options=params.options,
                             tile_size=params.tile_size, progress=True)
    started = time.monotonic()
    try:
        reply = transport.exchange(args.backend, frame, secret=secret, io_timeout=settings.io_timeout,
                                   deadline=time.monotonic() + args.timeout, on_progress=show)
    except errors.WatercolorError as exc:
        print(f"\nerror {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"\nerror backend_failed: {exc}", file=sys.stderr)
        return 1
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if reply.type is protocol.FrameType.BUSY:
        print(f"error backend_busy: backend is busy ({reply.header.get('reason')}); try again",
              file=sys.stderr)
        return 1
    if reply.type is protocol.FrameType.ERROR:
        print(f"error {reply.header.get('code')}: {reply.header.get('message')}", file=sys.stderr)
        return 1
    Path(args.out).write_bytes(reply.payload)
    h = reply.header
    print(f"{args.out}: {h.get('width')}x{h.get('height')} {h.get('format')} "
          f"({len(reply.payload)} bytes) with {h.get('model')} in {time.monotonic() - started:.1f} s")
    return 0


def _option(text: str) -> tuple[str, str]:
    from watercolor.params import RESERVED

    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"wants NAME=VALUE, not {text!r}")
    if key in RESERVED:
        raise argparse.ArgumentTypeError(f"{key} is not a model option"
                                         + (f": use --{key.replace('_', '-')}" if key in OWN_FLAGS else ""))
    return key, value


#: Request parameters that have flags of their own.
OWN_FLAGS = ("model", "scale", "format", "quality", "tile_size")
DESCRIPTION = ("Watercolor, a self-hosted image-upscaling service: run its HTTP API and processing "
               "backends, and send them images from a terminal.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="watercolor", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"watercolor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("process", help="run a processing backend (raw TCP, WTC_PROCESS_PORT)")
    p.set_defaults(func=cmd_process)

    p = sub.add_parser("api", help="run the HTTP API (gunicorn, WTC_API_PORT)")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("upscale", help="send image files to a running API and save the results")
    p.add_argument("files", nargs="+", metavar="FILE", help="input image files")
    p.add_argument("-o", "--out", metavar="DIR", help="output folder (default: next to each input)")
    p.add_argument("--url", help="API address (default http://localhost:$WTC_API_PORT, "
                   "i.e. http://localhost:5000 when WTC_API_PORT is not set)")
    p.add_argument("--model", help="model name (default: the API's WTC_DEFAULT_MODEL)")
    p.add_argument("--scale", help="scale factor, e.g. 1.5, 2, 4 (default: the model's native scale)")
    p.add_argument("--format", help="png (default), jpeg, webp, or same")
    p.add_argument("--quality", help="JPEG/WebP quality 1-100")
    p.add_argument("--tile-size", dest="tile_size", help="tile edge in pixels (smaller: finer progress)")
    p.add_argument("--option", action="append", default=[], type=_option, metavar="NAME=VALUE",
                   help="model option, e.g. denoise=1 (repeatable; see the API's /v1/models)")
    p.add_argument("--api-key", dest="api_key", help="API key, when the API requires one")
    p.add_argument("--no-jobs", dest="no_jobs", action="store_true",
                   help="no job and no progress bars: one waiting request per file (the API's /v1/upscale)")
    p.add_argument("--jobs", type=int, default=3,
                   help="files sent at once without jobs (--no-jobs, or when the API cannot keep jobs; "
                   "default 3)")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between progress updates (default 0.5)")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="seconds any one HTTP request may take (default 3600)")
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser("ping", help="check that a processing backend answers")
    p.add_argument("backend", type=_backend, metavar="HOST:PORT")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
    p.add_argument("--alive", action="store_true",
                   help="succeed on any answer, busy or draining included (for liveness probes)")
    p.set_defaults(func=cmd_ping)

    p = sub.add_parser("send", help="send one image straight to a processing backend")
    p.add_argument("image", help="input image file")
    p.add_argument("out", help="where to write the result")
    p.add_argument("--backend", type=_backend, default=("127.0.0.1", 32017), metavar="HOST:PORT",
                   help="backend address (default 127.0.0.1:32017)")
    p.add_argument("--model", help="model name (default WTC_DEFAULT_MODEL)")
    p.add_argument("--scale", help="scale factor, e.g. 1.5, 2, 4 (default: the model's native scale)")
    p.add_argument("--format", help="png (default), jpeg, webp, or same")
    p.add_argument("--quality", help="JPEG/WebP quality 1-100")
    p.add_argument("--tile-size", dest="tile_size", help="tile edge in pixels")
    p.add_argument("--option", action="append", default=[], type=_option, metavar="NAME=VALUE",
                   help="model option, e.g. denoise=1 (repeatable)")
    p.add_argument("--timeout", type=float, default=3600.0, help="overall seconds (default 3600)")
    p.set_defaults(func=cmd_send)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
