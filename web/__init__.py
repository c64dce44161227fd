"""The server: one aiohttp application (HTTP, websockets, static pages). `web.app.create_app`
builds it; `web/stream/` is the `/v1/stream` websocket protocol. No model code lives here."""
