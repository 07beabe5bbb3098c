"""A small app made only of the shared glue, served by uvicorn for ``test_kit.py``."""

from __future__ import annotations

from chatrelay_common import ServiceSettings, SessionStore, store_lifespan
from chatrelay_litestar import (
    exception_handlers,
    from_state,
    health_controller,
    login_required,
    provide_value,
)
from litestar import Litestar, get, put
from litestar.datastructures import State
from litestar.exceptions import HTTPException

__all__ = ["GATE_CLOSED", "create_app"]

GATE_CLOSED = "The gate is closed"


def _gate_closed(state: State) -> str | None:
    return None if state.gate_open else GATE_CLOSED


@put("/gate", status_code=200)
async def set_gate(state: State, is_open: bool) -> dict[str, bool]:
    state.gate_open = is_open
    return {"open": is_open}


@get("/items/{number:int}")
async def item(number: int, greeting: str) -> dict[str, str]:
    return {"item": f"{greeting} {number}"}


@get("/store")
async def store_kind(store: SessionStore) -> dict[str, str]:
    return {"store": type(store).__name__}


@get("/guarded", guards=[login_required])
async def guarded() -> dict[str, str]:
    return {"in": "yes"}


@get("/boom")
async def boom() -> None:
    raise RuntimeError("a secret that must not leak")


@get("/teapot")
async def teapot() -> None:
    raise HTTPException(status_code=418, detail="Short and stout", headers={"X-Pot": "1"})


def create_app() -> Litestar:
    settings = ServiceSettings()
    return Litestar(
        route_handlers=[
            health_controller(_gate_closed),
            set_gate,
            item,
            store_kind,
            guarded,
            boom,
            teapot,
        ],
        lifespan=[store_lifespan(settings)],
        dependencies={"store": from_state("store"), "greeting": provide_value("item")},
        state=State({"settings": settings, "gate_open": True}),
        exception_handlers=exception_handlers(),
        openapi_config=None,
    )
