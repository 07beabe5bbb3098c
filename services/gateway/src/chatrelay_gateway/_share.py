"""Share links of a session: ``POST`` makes (or returns) its one live token, ``DELETE``
revokes it. Viewing them is the web's (``/api/shared/{token}``, ``/r/{token}``)."""

from __future__ import annotations

from typing import Any

import msgspec
from chatrelay_common import ShareLinks
from litestar import Controller, Request, Response, delete, post
from litestar.datastructures import State
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from ._errors import checked_session_id
from ._login import login_required
from ._schemas import error_responses

__all__ = ["ShareController", "SharedLink"]

# The read-only page of a token; relative, so it holds behind any host, port or proxy.
_PAGE = "/r/{token}"


class SharedLink(msgspec.Struct):
    token: str
    url: str


def _links(state: State) -> ShareLinks:
    if "share_links" not in state:
        state.share_links = ShareLinks(state.store.redis)
    links: ShareLinks = state.share_links
    return links


class ShareController(Controller):
    path = "/api/sessions/{session_id:str}/share"
    guards = (login_required,)

    @post("/", responses=error_responses(404))
    async def share(
        self, session_id: str, request: Request[Any, Any, State]
    ) -> Response[SharedLink]:
        """201 with a new token; 200 with the same token when the session already has one
        (one live link per session: sharing again never breaks a link already given out)."""
        link = await _links(request.app.state).share(checked_session_id(session_id))
        status = HTTP_201_CREATED if link.created else HTTP_200_OK
        return Response(SharedLink(link.token, _PAGE.format(token=link.token)), status_code=status)

    @delete("/", status_code=204, responses=error_responses(404))
    async def revoke(self, session_id: str, request: Request[Any, Any, State]) -> None:
        """Idempotent: every viewer's stream ends with ``revoked``; the owner's tabs see
        nothing."""
        await _links(request.app.state).revoke(checked_session_id(session_id))
