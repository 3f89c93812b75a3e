"""The studio's generic model server: one process serves one model.

    python -m endpoints_app.runtime.server --format sklearn --artifact model.joblib --port 8123
    python -m endpoints_app.runtime.server --format custom --code-dir ./src --scoring-script score.py --uds s.sock

Routes: GET /health/live (200 while serving), GET /health/ready (503 until the
model is loaded, then 200), POST /score, for embeddings POST /embeddings and
/v1/embeddings (OpenAI shape) and GET /info (model inference API), and POST /batch (one
mini-batch of a batch job; runtime/batch.py). Every route but the two health probes needs
`Authorization: Bearer <secret>` when the process was given $STUDIO_INSTANCE_SECRET (the
controller always gives one: endpoints_app/instance_auth.py), checked in constant time; else
401. Errors are {"error": {"code", "message"}}: 400 for a request the server cannot read,
422 for input the model rejects, 500 otherwise.

A plain ASGI app on uvicorn with uvloop and httptools: no framework on the hot
path. The model loads in a background thread after the port is bound, so the
controller sees "live" at once and "ready" when loading finishes; if loading
fails the traceback goes to stderr and the process exits with status 3.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import hmac
import json
import logging
import os
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from endpoints_app.asgi_io import read_body
from endpoints_app.runtime.batchio import BatchAnswer
from endpoints_app.runtime.handlers import BadRequest, EmbeddingsHandler, Handler, ModelInputError, make_handler
from endpoints_app.runtime.listen import serve

log = logging.getLogger("studio.model_server")

LOAD_FAILED_EXIT = 3
MAX_BODY_BYTES = 64 * 1024 * 1024

EMBEDDINGS_PATHS = ("/embeddings", "/v1/embeddings")

_JSON_HEADERS = [(b"content-type", b"application/json")]


def _numpy_default(value):
    """score.py files often return numpy arrays and scalars: serialise them as lists and numbers."""
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        return tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _error(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"code": code, "message": message}}).encode()


def _request_id(scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return value.decode("latin-1")
    return "-"


def _log_failure(method: str, path: str, status: int, body: bytes, scope) -> None:
    """One line per failed request, so the Logs tab shows what a client was told and which request it was."""
    try:
        error = json.loads(body)["error"]
        detail = f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        detail = body[:300].decode("utf-8", "replace")
    log.warning("%s %s %d request_id=%s %s", method, path, status, _request_id(scope), detail[:2000])


class ModelServer:
    """The ASGI application."""

    def __init__(self, handler: Handler, threads: int = 4, secret: str = ""):
        self.handler = handler
        # The whole header value, compared in one constant-time step.
        self.expected_auth = f"Bearer {secret}".encode() if secret else b""
        self.ready = False
        self.load_error: str | None = None
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="score")
        self.embeddings = isinstance(handler, EmbeddingsHandler)

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> None:
        began = time.perf_counter()
        try:
            self.handler.load()
        except BaseException:  # noqa: BLE001 - any failure to load must end the process visibly
            self.load_error = traceback.format_exc()
            print(f"Model failed to load:\n{self.load_error}", file=sys.stderr, flush=True)
            os._exit(LOAD_FAILED_EXIT)
        # What loading made (the model, sklearn, scipy: ~100k objects) lives as long as the process: moved out
        # of the collector's sight, so a full collection between mini-batches costs ~0 ms instead of ~70 ms.
        gc.freeze()
        self.ready = True
        print(f"Model ready ({self.handler.format}) in {time.perf_counter() - began:.2f}s", flush=True)

    # -- ASGI --------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if self.expected_auth and not path.startswith("/health/") and not self._authorized(scope):
            status, body = _error(401, "Unauthorized", "Only the studio's gateway may call this model server.")
        elif method == "GET":
            if path == "/health/live":
                status, body = 200, b'{"status":"live"}'
            elif path == "/health/ready":
                status, body = (200, b'{"status":"ready"}') if self.ready else (503, b'{"status":"loading"}')
            elif path == "/info" and self.embeddings:
                status, body = 200, json.dumps({
                    "model_name": self.handler.name, "model_type": "embeddings",
                    "model_provider_name": "sentence-transformers",
                }).encode()
            elif path == "/":
                status, body = 200, json.dumps(
                    {"name": self.handler.name, "format": self.handler.format, "ready": self.ready}
                ).encode()
            else:
                status, body = _error(404, "NotFound", f"No route {path}")
        elif method == "POST" and (
            path in ("/score", "/batch") or (path in EMBEDDINGS_PATHS and self.embeddings)
        ):
            request_body = await read_body(receive, MAX_BODY_BYTES)
            if request_body is None:
                status, body = _error(413, "PayloadTooLarge", f"Request body over {MAX_BODY_BYTES} bytes")
            else:
                status, body = await self._score(path, request_body, scope)
        else:
            status, body = _error(404 if method in ("GET", "POST") else 405, "NotFound", f"No route {method} {path}")
        if status >= 400 and path != "/health/ready":
            _log_failure(method, path, status, body, scope)
        content = _JSON_HEADERS
        if isinstance(body, BatchAnswer):
            # A mini-batch's output rows go back as CSV text, counts in headers: no JSON round trip.
            kind = b"application/x-tar" if body.tar is not None else b"text/csv; charset=utf-8"
            content = [(b"content-type", kind), (b"x-rows-in", str(body.rows_in).encode()),
                       (b"x-rows-out", str(body.rows_out).encode())]
            body = body.tar if body.tar is not None else body.csv
        # An explicit length spares the client chunked decoding.
        headers = [*content, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _authorized(self, scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return hmac.compare_digest(value, self.expected_auth)
        return False

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                threading.Thread(target=self.load, name="load-model", daemon=True).start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.executor.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _score(self, path: str, request_body: bytes, scope) -> tuple[int, bytes | BatchAnswer]:
        if not self.ready:
            return _error(503, "ServiceUnavailable", "The model is still loading.")
        if path == "/batch":
            from endpoints_app.runtime.batch import score_mini_batch

            fn = functools.partial(score_mini_batch, self.handler)
        else:
            fn = self.handler.openai_embeddings if path in EMBEDDINGS_PATHS else self.handler.score
        try:
            if path != "/batch" and self.handler.inline_rows and len(request_body) < self.handler.inline_rows * 256:
                result = fn(request_body)
            else:
                result = await asyncio.get_running_loop().run_in_executor(self.executor, fn, request_body)
            if isinstance(result, BatchAnswer):
                return 200, result
            try:
                return 200, json.dumps(result, allow_nan=False, default=_numpy_default).encode()
            except ValueError:
                return _error(422, "ModelInputError", "The model produced NaN or infinity for this input.")
        except BadRequest as exc:
            return _error(400, "BadRequest", str(exc))
        except ModelInputError as exc:
            return _error(422, "ModelInputError", str(exc))
        except Exception as exc:  # noqa: BLE001 - the model's failure becomes a 500 with its message
            log.exception("Scoring failed (request %s)", _request_id(scope))
            return _error(500, "ModelError", f"{type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The studio's generic model server")
    parser.add_argument("--format", required=True,
                        choices=["sklearn", "onnx", "sentence-transformers", "custom", "mlflow"])
    parser.add_argument("--artifact", help="Model file or folder")
    parser.add_argument("--code-dir", help="Folder holding the scoring script (custom format)")
    parser.add_argument("--scoring-script", default="score.py")
    parser.add_argument("--name", default="", help="Deployment name, for logs and the OpenAI 'model' field")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="TCP port (by hand only: the controller gives --uds)")
    parser.add_argument("--uds", help="Unix socket to listen on")
    parser.add_argument("--threads", type=int, default=0,
                        help="Scoring threads (default: 1 for a user's score.py, which may not be thread-safe; else 4)")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # A batch deployment's logging_level: this server's lines and its score.py's `logging` calls.
    level = os.environ.get("STUDIO_LOG_LEVEL", "INFO")
    level = level if level in logging.getLevelNamesMapping() else "INFO"
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.format != "custom" and not args.artifact:
        parser.error(f"--artifact is required for --format {args.format}")
    if args.format == "custom" and not args.code_dir:
        parser.error("--code-dir is required for --format custom")

    handler = make_handler(args.format, args.artifact, name=args.name, code_dir=args.code_dir,
                           scoring_script=args.scoring_script)
    threads = args.threads or int(os.environ.get("STUDIO_SCORING_THREADS", "0"))
    threads = threads or (1 if args.format == "custom" else 4)
    # Read once and dropped from os.environ, so score.py code does not find it there by habit.
    secret = os.environ.pop("STUDIO_INSTANCE_SECRET", "")
    if not secret:
        log.warning("no STUDIO_INSTANCE_SECRET: scoring routes are open to anyone who reaches the port")
    app = ModelServer(handler, threads=threads, secret=secret)
    where = " and ".join(filter(None, [args.uds, args.port and f"{args.host}:{args.port}"]))
    print(f"Model server {args.name or args.format} on {where} (pid {os.getpid()})", flush=True)
    serve(app, args.uds, args.host, args.port, loop="uvloop", http="httptools", lifespan="on", access_log=False,
          log_level="warning", server_header=False, date_header=False)


if __name__ == "__main__":
    main()
