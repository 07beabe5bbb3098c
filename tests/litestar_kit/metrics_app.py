"""A small app with the shared ``/metrics`` route and request metrics, served by uvicorn for
``test_metrics.py``."""

from __future__ import annotations

from chatrelay_litestar import MetricsController, exception_handlers, request_metrics
from litestar import Litestar, get
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig

__all__ = ["create_app"]


@get("/items/{number:int}")
async def item(number: int) -> dict[str, int]:
    return {"item": number}


@get("/teapot")
async def teapot() -> None:
    raise HTTPException(status_code=418, detail="Short and stout")


@get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def create_app() -> Litestar:
    return Litestar(
        route_handlers=[item, teapot, healthz, MetricsController],
        middleware=[request_metrics("kit")],
        exception_handlers=exception_handlers(),
        openapi_config=OpenAPIConfig(title="kit", version="1", path="/schema"),
    )
