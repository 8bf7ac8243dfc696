"""The optional body of acknowledge and approve: nothing, or {"comment": ...}; else 422."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from projections.api.errors import InvalidParameter
from projections.api.routes_alerts import comment_of


def _request(body: bytes) -> Request:
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    return Request({"type": "http", "method": "POST", "headers": []}, receive)


async def test_a_comment_or_nothing_and_anything_else_is_refused():
    assert await comment_of(_request(b"")) == ""
    assert await comment_of(_request(b'{"comment": "crew on site"}')) == "crew on site"
    with pytest.raises(InvalidParameter, match='body: expected {"comment"'):
        await comment_of(_request(b'{"comment": "x", "by": "someone else"}'))
    with pytest.raises(InvalidParameter, match="body"):
        await comment_of(_request(b"not json"))
