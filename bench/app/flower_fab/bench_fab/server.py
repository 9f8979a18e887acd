"""The ServerApp: bench.app.flower_deploy.serverapp."""

from bench.app.flower_deploy import serverapp as app

__all__ = ["app"]
