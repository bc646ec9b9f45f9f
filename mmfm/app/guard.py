"""What every response of `mmfm serve` carries, and which Host names it answers.

- A strict Content-Security-Policy (scripts, styles, images and requests from the app itself only; no inline
  script or style, no eval, no framing) and ``X-Content-Type-Options: nosniff``: text from a crafted file that
  reached the page could not run, and an uploaded file served back is never sniffed into HTML.
- ``TrustedHostMiddleware`` (Starlette's) with the loopback names plus the host the app was started on: a web page
  that rebinds its own domain name to 127.0.0.1 (DNS rebinding) gets 400, not the user's uploads.
"""

from __future__ import annotations

from typing import Any

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "x-frame-options": "DENY",
           "referrer-policy": "no-referrer", "cache-control": "no-store",   # no scan left in the browser's cache
           "cross-origin-resource-policy": "same-origin"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class SecurityHeaders:
    """Pure ASGI middleware: adds :data:`HEADERS` to every HTTP response (errors and 404s included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((k.encode(), v.encode()) for k, v in HEADERS.items() if k.encode() not in have)]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def host_names(hosts: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The Host header values the app answers: loopback names and ``hosts`` (IPv6 literals also in brackets, as
    browsers send them)."""
    out: list[str] = []
    for h in (*LOOPBACK, *hosts):
        h = h.strip().lower()
        for name in (h, f"[{h}]" if ":" in h and not h.startswith("[") else None):
            if name and name not in out:
                out.append(name)
    return out


def protect(app: Any, hosts: list[str] | tuple[str, ...] = ()) -> None:
    """Install both on a Starlette/FastAPI app (security headers outermost, so that a refused host gets them too)."""
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=host_names(hosts), www_redirect=False)
    app.add_middleware(SecurityHeaders)
