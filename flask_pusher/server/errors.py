"""The one error the server's rules raise for a refused HTTP API request."""

from __future__ import annotations


class APIError(Exception):
    """An HTTP API request refused, answered with ``status`` and a text body.

    Pusher's status codes (https://pusher.com/docs/channels/library_auth_reference/rest-api/#response-codes):
    400 bad request, 401 failed authentication, 403 app disabled or over quota,
    404 unknown app, 413 event data too large.

    :param status: the HTTP status code.
    :param message: the plain-text explanation sent as the body.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
