"""A small real model-server stand-in for gateway tests, run as its own process:

    python tests/gateway/upstream.py --port 9001 --bias 0 --delay-ms 0

POST /score with {"data": [numbers], "sleep_ms"?: n, "reject"?: "message"} answers
{"predictions": [x + bias ...]} (422 with the message for "reject"); GET /count
tells how many /score requests it served; /health/live and /health/ready answer 200."""

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bias", type=float, default=0.0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    lock = threading.Lock()
    served = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a) -> None:
            pass

        def _answer(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.startswith("/health/"):
                self._answer(200, {"status": "ok"})
            elif self.path == "/count":
                self._answer(200, {"served": served[0]})
            else:
                self._answer(404, {"error": {"code": "NotFound", "message": self.path}})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/score":
                self._answer(404, {"error": {"code": "NotFound", "message": self.path}})
                return
            with lock:
                served[0] += 1
            payload = json.loads(raw)
            delay = args.delay_ms + float(payload.get("sleep_ms", 0) if isinstance(payload, dict) else 0)
            if delay:
                time.sleep(delay / 1000.0)
            if isinstance(payload, dict) and payload.get("reject"):
                self._answer(422, {"error": {"code": "ModelInputError", "message": payload["reject"]}})
                return
            data = payload.get("data", []) if isinstance(payload, dict) else []
            self._answer(200, {"predictions": [x + args.bias for x in data]})

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 128
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
