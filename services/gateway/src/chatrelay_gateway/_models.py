"""The models a session may pick: the allowlist (``OPENAI_MODELS``), narrowed to those the
upstream says it serves (``GET {base}/models``) when it answers.

The upstream's list is cached; concurrent callers share one fetch, and a fetch that takes
longer than its timeout counts as no answer, so the page's model picker never waits long.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import msgspec

from ._upstream import UpstreamConfig

__all__ = ["ModelCatalog"]

logger = logging.getLogger("chatrelay.gateway")

# After a failed fetch the allowlist stands for this share of the cache time, then the next
# caller asks again (an upstream that is down is not asked on every page load).
_FAILURE_SHARE = 0.1


class _Model(msgspec.Struct):
    id: str


class _ModelList(msgspec.Struct):
    """OpenAI's ``{"object": "list", "data": [{"id": ...}, ...]}``; other fields ignored."""

    data: list[_Model]


_list_decoder = msgspec.json.Decoder(_ModelList)


class ModelCatalog:
    def __init__(
        self,
        client: httpx.AsyncClient,
        config: UpstreamConfig,
        allowed: tuple[str, ...],
        *,
        cache_seconds: float,
        timeout: float,
        ask_upstream: bool = True,
    ) -> None:
        """``ask_upstream=False`` (the demo model): the allowlist alone."""
        self._client = client
        self._config = config
        self._allowed = allowed
        self._cache_seconds = cache_seconds
        self._timeout = timeout
        self._ask_upstream = ask_upstream
        self._models = allowed
        self._expires = float("-inf")
        self._fetch: asyncio.Task[None] | None = None

    async def models(self) -> tuple[str, ...]:
        if not self._ask_upstream:
            return self._allowed
        if asyncio.get_running_loop().time() >= self._expires:
            if self._fetch is None:
                self._fetch = asyncio.create_task(self._refresh(), name="model list")
            # Shielded: a caller that goes away does not cancel the others' fetch.
            await asyncio.shield(self._fetch)
        return self._models

    async def _refresh(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            served = await self._served()
        except (httpx.HTTPError, msgspec.DecodeError, TimeoutError, ValueError) as exc:
            logger.warning(
                "the upstream's model list is unavailable (%s); offering OPENAI_MODELS as set",
                type(exc).__name__,
            )
            self._models = self._allowed
            self._expires = loop.time() + self._cache_seconds * _FAILURE_SHARE
        else:
            narrowed = tuple(model for model in self._allowed if model in served)
            if not narrowed:
                logger.warning(
                    "the upstream lists none of OPENAI_MODELS; offering OPENAI_MODELS as set"
                )
            self._models = narrowed or self._allowed
            self._expires = loop.time() + self._cache_seconds
        finally:
            self._fetch = None

    async def _served(self) -> set[str]:
        headers = {"Accept": "application/json"}
        if self._config.api_key:
            headers["Authorization"] = f"Bearer {self._config.api_key}"
        async with asyncio.timeout(self._timeout):
            response = await self._client.get(f"{self._config.base_url}/models", headers=headers)
        if response.status_code != 200:
            raise ValueError(f"HTTP {response.status_code}")
        return {model.id for model in _list_decoder.decode(response.content).data}
