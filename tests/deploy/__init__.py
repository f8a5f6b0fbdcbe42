"""The production setup of docs/deploying.rst (examples/deploy) under test."""

from __future__ import annotations

from typing import Any

from pusher.requests import RequestsBackend


class CABundleBackend(RequestsBackend):  # type: ignore[misc]
    """pusher-http-python's ``RequestsBackend``, verifying TLS with ``ca_bundle``.

    With ``ssl=True`` the stock backend sets ``verify`` to the CA file pusher ships
    (``pusher/cacert.pem``), over any ``verify`` option and ``REQUESTS_CA_BUNDLE``,
    so a throwaway CA can only be trusted this way (``PUSHER_BACKEND``).
    """

    def __init__(self, client: Any, ca_bundle: str, **options: Any) -> None:
        super().__init__(client, **options)
        self.options["verify"] = ca_bundle
