"""The darkd REST API (FastAPI): ``create_app(runtime)`` in :mod:`daemon.api.app`."""
