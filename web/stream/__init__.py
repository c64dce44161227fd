"""`/v1/stream`: text in, a talking head out, over one websocket (docs/stream-protocol.md).

`protocol` (pydantic messages), `framing` (binary media header), `sendqueue` (per-connection
backpressure), `session` (one websocket: its messages, its `realtime.Session`, its media
out), `handler` (the aiohttp route: auth, origins, limits), `client` (the Python client
library and recorder)."""
