"""The operator's HTTP listener (aiohttp's server): /healthz, /readyz and /metrics.

- ``/healthz``: 200 while the process runs and its event loop answers (this handler is
  served by the loop the bot runs on).
- ``/readyz``: 200 when the WebSocket is authenticated, catch-up has finished and the
  database is writable; otherwise 503 and the reasons, one per line.
- ``/metrics``: the Prometheus text format.

Mattermost's calls to the bot (slash command, dialogs, buttons: incident_bot/web/) are
served here too; the runtime adds them with ``add_route`` before ``start``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from incident_bot.ops.metrics import CONTENT_TYPE, Metrics

log = structlog.get_logger("incident_bot.ops")

NotReady = Callable[[], Awaitable[list[str]]]
Refresh = Callable[[], Awaitable[None]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class OpsServer:
    def __init__(self, host: str, port: int, metrics: Metrics, not_ready: NotReady, refresh: Refresh) -> None:
        self.host = host
        self.port = port
        self.metrics = metrics
        self._not_ready = not_ready
        self._refresh = refresh
        self._runner: web.AppRunner | None = None
        self._routes: list[tuple[str, str, Handler]] = []
        self.address = ""  # host:port actually bound (port 0 picks one)

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve ``handler`` at ``path`` as well; call before ``start``."""
        if self._runner is not None:
            raise RuntimeError("OpsServer.add_route after start")
        self._routes.append((method, path, handler))

    async def start(self) -> str:
        """Bind and serve; returns (and logs as ``ops.listening``) the bound address. Raises OSError."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        for method, path, handler in self._routes:
            app.router.add_route(method, path, handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses  # the socket names: the port the system picked for port 0
        host, port = bound[0][:2] if bound else (self.host, self.port)
        self.address = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
        log.info(
            "ops.listening",
            address=self.address,
            paths=["/healthz", "/readyz", "/metrics", *(path for _, path, _ in self._routes)],
        )
        return self.address

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        reasons = await self._not_ready()
        self.metrics.ready.set(0 if reasons else 1)
        if reasons:
            return web.Response(status=503, text="not ready\n" + "".join(f"{r}\n" for r in reasons))
        return web.Response(text="ready\n")

    async def _metrics(self, _request: web.Request) -> web.Response:
        try:
            await self._refresh()
        except Exception as exc:  # noqa: BLE001 - serve the counters even when the database gauges cannot be read
            log.warning("ops.metrics_refresh_failed", error=type(exc).__name__, detail=str(exc)[:200])
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
