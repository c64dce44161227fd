"""The operators' live dashboard: `GET /dashboard` and its feed `GET /v1/dashboard/feed`
(docs/dashboard.md). `add_dashboard_routes(app)` adds both and the sampler behind them."""
from .routes import add_dashboard_routes
from .snapshot import ServerStats, SessionStats, Snapshot, StageStats

__all__ = ["ServerStats", "SessionStats", "Snapshot", "StageStats", "add_dashboard_routes"]
