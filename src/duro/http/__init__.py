"""The front: HTTP and WebSocket server. Imports api and runtime."""

from .server import AsgiFront, serve

__all__ = ["AsgiFront", "serve"]
