"""A fake OpenAI-compatible chat-completions server on 127.0.0.1 that
streams real ``chat.completion.chunk`` server-sent events, so that the
client tests can run a tool loop through the real agentd binary with no
network: when a request offers tools and holds no tool result yet, the
"model" calls ``weather`` with ``{"city": "Paris"}`` (arguments sent in two
fragments); otherwise it answers with one sentence that quotes the last
tool result."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (the http.server name)
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        self.server.requests.append(body)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()

        def send(data) -> None:
            self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()

        def chunk(delta, finish=None) -> None:
            send({"id": "c1", "object": "chat.completion.chunk",
                  "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        results = [m for m in body.get("messages", []) if m.get("role") == "tool"]
        if body.get("tools") and not results:
            chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                   "function": {"name": "weather", "arguments": ""}}]})
            for part in ('{"city"', ': "Paris"}'):
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
            chunk({}, "tool_calls")
        else:
            answer = f"The weather: {results[-1]['content']}." if results else "Hello."
            for word in answer.split(" "):
                chunk({"content": word + " "})
            chunk({}, "stop")
        send({"id": "c1", "object": "chat.completion.chunk", "choices": [],
              "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args) -> None:
        pass


class FakeOpenAI:
    """The fake, serving on a free loopback port until ``stop()``."""

    def __init__(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.requests = []
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def requests(self) -> list:
        return self._httpd.requests

    def stop(self) -> None:
        self._httpd.shutdown()
