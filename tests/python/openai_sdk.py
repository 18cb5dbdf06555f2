"""The official openai Python SDK against `omniroute serve` on the built-in default config."""

import sys

import openai
from openai import OpenAI


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

    print(f"openai-sdk: {passed} passed, 0 failed")


if __name__ == "__main__":
    main(sys.argv[1])
