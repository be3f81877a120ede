"""The HTTP surface: webhook intake and the JSON API, built by `create_app`."""

from responder.web.app import create_app

__all__ = ["create_app"]
