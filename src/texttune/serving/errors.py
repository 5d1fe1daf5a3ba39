"""The one error a request can fail with: a status, TEI's ``error_type`` and a message for the client."""

from __future__ import annotations


class ServeError(Exception):
    """A request the server refuses or cannot answer; becomes ``{"error": message, "error_type": kind}``."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
