"""The official openai Python SDK against `omniroute serve` on the built-in default config."""

import sys
import time

import httpx
import openai
from openai import OpenAI


def counting_client(base_url: str, max_retries: int):
    """A client whose every HTTP attempt (first try and SDK retries) is timestamped by an httpx
    event hook, so retries are counted, not guessed from timing."""
    sent: list[float] = []
    http = httpx.Client(event_hooks={"request": [lambda _req: sent.append(time.monotonic())]})
    client = OpenAI(
        base_url=base_url,
        api_key="not-needed-on-loopback",
        max_retries=max_retries,
        http_client=http,
    )
    return client, sent


def main(base_url: str) -> None:
    client = OpenAI(base_url=base_url, api_key="not-needed-on-loopback", max_retries=0)
    passed = 0

    r = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "hello from the SDK"}]
    )
    assert r.choices[0].message.content.startswith("Mock reply from mock/fast"), r
    assert r.usage is not None and r.usage.total_tokens > 0, r
    passed += 1

    text, usage, chunks = "", None, 0
    stream = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "stream this please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        chunks += 1
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert "stream this please" in text, text
    assert chunks >= 3 and usage is not None and usage.completion_tokens > 0, (chunks, usage)
    passed += 1

    try:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("unknown model was accepted")
    except openai.NotFoundError as e:
        assert e.code == "model_not_found", e
    passed += 1

    # A capability mismatch (an image for a combo with no vision model) is the client's mistake:
    # 400, which the SDK raises as BadRequestError without retrying (it would retry a 503).
    retrying, sent = counting_client(base_url, max_retries=2)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    try:
        retrying.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": [{"type": "text", "text": "what is it"}, image]}],
        )
        raise AssertionError("an image was accepted by a combo without vision")
    except openai.BadRequestError as e:
        assert e.status_code == 400, e
        assert "mock/premium" in str(e.message), e.message
    assert len(sent) == 1, f"the SDK retried a 400: {len(sent)} attempts"
    passed += 1

    # Every target rate-limited (mock/429 always answers 429 with Retry-After: 1): 429 with the
    # header, which the SDK honours between its retries before raising RateLimitError.
    retrying, sent = counting_client(base_url, max_retries=2)
    try:
        retrying.chat.completions.create(
            model="mock/429", messages=[{"role": "user", "content": "x"}]
        )
        raise AssertionError("a rate-limited model answered")
    except openai.RateLimitError as e:
        assert e.status_code == 429, e
        assert e.code == "rate_limit_exceeded", e
        assert e.response.headers.get("retry-after") == "1", e.response.headers
    assert len(sent) == 3, f"expected the first try and 2 retries, got {len(sent)} attempts"
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    # The SDK's own first backoff is at most 0.5 s: a gap of about 1 s is the Retry-After.
    assert all(g >= 0.95 for g in gaps), f"Retry-After: 1 not honoured: gaps {gaps}"
    passed += 1

    print(f"openai-sdk: {passed} passed, 0 failed")


if __name__ == "__main__":
    main(sys.argv[1])
