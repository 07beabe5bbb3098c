"""The bench's own counting: chunked decoding, tokens lost / duplicated, id order, the
latency of each live token, percentiles. Fed byte by byte, so no marker split across reads
is missed or counted twice."""

from __future__ import annotations

from array import array
from typing import Any

from bench.client import JobKind
from bench.report import goals, percentile
from bench.run import lost_or_duplicated, median_round, scenarios
from bench.scan import ChunkedDecoder, StreamFormat, TabScan
from bench.tokens import model_name, parse_model, token_text

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def event(seq: int, name: str, text: str) -> bytes:
    return b'id: %d\nevent: %s\ndata: {"text": "%s"}\n\n' % (seq, name.encode(), text.encode())


def feed_bytewise(scan: TabScan, raw: bytes, now_ns: int) -> None:
    for i in range(len(raw)):
        scan.feed(raw[i : i + 1], now_ns)


def test_chunked_decoder_drops_framing_across_any_split() -> None:
    body = chunked(b"hello ", b"chunked\r\nworld", b"!")
    decoder = ChunkedDecoder()
    out = b"".join(decoder.feed(body[i : i + 1]) for i in range(len(body)))
    assert out == b"hello chunked\r\nworld!"
    assert decoder.finished


def test_a_clean_stream_counts_prefix_live_tokens_and_latencies() -> None:
    latencies: array[int] = array("q")
    scan = TabScan(StreamFormat.CHATRELAY, 5, latencies)
    stream = HEAD + chunked(
        b"retry: 1000\n\n",
        event(7, "snapshot", token_text(0, 1_000_000) + token_text(1, 2_000_000)),
        event(8, "delta", token_text(2, 9_000_000) + token_text(3, 9_500_000)),
        b": ping\n\n",
        event(9, "delta", token_text(4, 9_900_000)),
        event(10, "done", "stop"),
    )
    feed_bytewise(scan, stream, now_ns=10_000_000)
    assert (scan.status, scan.lost, scan.duplicated, scan.received) == (200, 0, 0, 5)
    assert (scan.prefix, scan.live, scan.id_gaps, scan.id_repeats) == (2, 3, 0, 0)
    assert (scan.done, scan.error, scan.last_id) == (True, None, 10)
    assert list(latencies) == [1000, 500, 100]  # µs: arrival minus stamp, live tokens only
    assert scan.snapshot_ns == scan.first_live_ns == scan.done_ns == 10_000_000


def test_lost_duplicated_and_out_of_order_ids_are_counted() -> None:
    scan = TabScan(StreamFormat.CHATRELAY, 4, array("q"))
    stream = HEAD + chunked(
        event(1, "snapshot", ""),
        event(2, "delta", token_text(0, 1)),
        event(2, "delta", token_text(0, 1)),  # the same event again
        event(5, "delta", token_text(2, 1) + token_text(9, 1)),  # ids 3, 4 skipped; 9 > 3
        event(6, "error", "upstream_error"),
    )
    feed_bytewise(scan, stream, now_ns=5)
    assert (scan.lost, scan.duplicated, scan.out_of_range) == (2, 1, 1)
    assert (scan.id_repeats, scan.id_gaps) == (1, 1)
    assert (scan.done, scan.error, scan.done_ns) == (
        True,
        event(6, "error", "upstream_error")[:-2],
        None,
    )


def test_openai_streams_end_at_done_and_refusals_are_errors() -> None:
    latencies: array[int] = array("q")
    scan = TabScan(StreamFormat.OPENAI, 2, latencies)
    data = b"".join(
        b'data: {"choices":[{"delta":{"content":"%s"}}]}\n\n' % token_text(i, 0).encode()
        for i in range(2)
    )
    feed_bytewise(scan, HEAD + chunked(data + b"data: [DONE]\n\n"), now_ns=3000)
    assert (scan.lost, scan.live, scan.done_ns, list(latencies)) == (0, 2, 3000, [3, 3])

    refused = TabScan(StreamFormat.OPENAI, 2, array("q"))
    refused.feed(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n", 1)
    assert (refused.done, refused.status, refused.lost) == (True, 429, 2)


def test_model_names_and_percentiles() -> None:
    assert model_name(200, 10) == "bench-200x10"
    assert parse_model("bench-200x10") == (200, 10)
    assert parse_model("gpt-4o") is None
    ordered = [float(v) for v in range(1, 101)]
    assert (percentile(ordered, 0.5), percentile(ordered, 0.99), percentile([], 0.5)) == (
        50.0,
        99.0,
        None,
    )


def test_only_lost_or_duplicated_tokens_fail_a_run() -> None:
    fine = {"lost": 0, "duplicated": 0, "id_gaps": 0, "wall_s": 2.0}
    slow = {**fine, "name": "slow", "wall_s": 99.0}
    lost = {**fine, "name": "lost", "lost": 1}
    twice = {**fine, "name": "twice", "duplicated": 3}
    gap = {**fine, "name": "gap", "id_gaps": 1}
    assert lost_or_duplicated([slow]) == []
    assert lost_or_duplicated([slow, lost, twice, gap]) == ["lost", "twice", "gap"]


def test_the_smoke_subset_covers_every_kind_of_scenario() -> None:
    kinds = {sc.kind for sc in scenarios(smoke=True)}
    assert kinds == set(JobKind)
    assert {(sc.count, sc.tabs) for sc in scenarios(smoke=False) if sc.kind is JobKind.CHAT} == {
        (c, t) for c in (1, 10, 100) for t in (1, 3)
    }


def test_goals_are_judged_only_for_scenarios_that_ran() -> None:
    results = [
        {"name": "relay 100", "wall_s": 2.0},
        {
            "name": "chatrelay 100x3",
            "wall_s": 3.0,
            "lost": 0,
            "duplicated": 0,
            "latency_ms": {"added_p99": 40.0},
        },
    ]
    assert [(g["goal"], g["measured"], g["met"]) for g in goals(results)] == [
        ("100x3: wall time / the plain relay's at 100x1", 1.5, False),
        ("100x3: added latency p99, ms", 40.0, True),
        ("100x3: tokens lost + duplicated", 0.0, True),
    ]


def test_the_median_round_is_shown_and_a_loss_in_any_round_counts() -> None:
    def round_(p99: float, lost: int) -> dict[str, Any]:
        return {
            "latency_ms": {"p99": p99},
            "wall_s": p99 / 10,
            "others_cpu_s": 0.0,
            "lost": lost,
            "duplicated": 0,
            "id_gaps": 0,
        }

    chosen = median_round([round_(30.0, 0), round_(90.0, 2), round_(50.0, 0)])
    assert chosen["latency_ms"]["p99"] == 50.0
    assert chosen["wall_s"] == 5.0
    assert chosen["lost"] == 2
    assert [r["p99_ms"] for r in chosen["rounds"]] == [30.0, 90.0, 50.0]
