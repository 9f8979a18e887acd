"""The ClientApp: bench.app.flower_deploy.clientapp."""

from bench.app.flower_deploy import clientapp as app

__all__ = ["app"]
