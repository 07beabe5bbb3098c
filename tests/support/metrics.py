"""Reading a service's ``/metrics`` in tests: fetched over HTTP, parsed by prometheus-client's
own parser (so the text must be valid exposition format), looked up by sample name and
labels."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Metrics", "metrics_once", "read_metrics"]


@dataclass(frozen=True)
class Metrics:
    text: str
    # (sample name, sorted label pairs) -> value
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]
    # metric family name -> type ("counter", "gauge", "histogram", ...)
    types: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            types[family.name] = family.type
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return cls(text, samples, types)

    def value(self, name: str, **labels: str) -> float:
        """The sample ``name`` with exactly these labels; 0 when it has not been created yet
        (a labelled series appears on first use)."""
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def series(self, name: str) -> list[dict[str, str]]:
        """The label sets of every sample named ``name``."""
        return [dict(labels) for sample, labels in self.samples if sample == name]


async def read_metrics(client: httpx.AsyncClient, base_url: str) -> Metrics:
    response = await client.get(f"{base_url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return Metrics.parse(response.text)


async def metrics_once(
    client: httpx.AsyncClient, base_url: str, ready: Callable[[Metrics], bool], within: float = 10.0
) -> Metrics:
    """The first scrape for which ``ready`` holds. A request's metrics are recorded after its
    response went out, so a scrape right after it may come first."""
    deadline = time.monotonic() + within
    while True:
        metrics = await read_metrics(client, base_url)
        if ready(metrics):
            return metrics
        assert time.monotonic() < deadline, f"not ready after {within} s:\n{metrics.text}"
        await asyncio.sleep(0.02)
