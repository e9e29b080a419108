"""langscale.sim: simulated OpenAI-compatible providers, driven by raw HTTP and by
langchain-openai's ChatOpenAI unchanged."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from langchain_core.tools import tool

import langscale
from langscale import cli, sim


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def chat(question: str = "What is the weather in Paris?") -> dict:
    return {"model": "sim-model", "messages": [{"role": "user", "content": question}]}


@tool
def get_weather(city: str) -> str:
    """Current weather of a city."""
    return f"Sunny in {city}"


def test_serve_starts_several_providers_on_loopback_ports():
    with sim.serve(sim.Provider("a"), sim.Provider("b")) as s:
        assert s.names == ["a", "b"]
        assert s.url("a").startswith("http://127.0.0.1:") and s.url("a").endswith("/v1")
        assert s.url("a") != s.url("b")
        assert s.url() == s.url("a")
        status, _, body = post(s.url("b") + "/chat/completions", chat())
        assert status == 200
        assert body["choices"][0]["message"]["content"].startswith("Simulated answer")
        assert s.stats("b")["ok"] == 1 and s.stats("a")["requests"] == 0
        assert set(s.stats()) == {"a", "b"}
        assert s.running
    assert not s.running
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(s.url("a") + "/models", timeout=2)


def test_default_is_one_provider_and_close_is_idempotent():
    s = sim.serve()
    assert s.names == ["default"]
    s.close()
    s.close()
    assert not s.running


def test_answers_are_deterministic_per_request():
    with sim.serve() as s:
        first = post(s.url() + "/chat/completions", chat())[2]
        again = post(s.url() + "/chat/completions", chat())[2]
        other = post(s.url() + "/chat/completions", chat("What is the weather in Lima?"))[2]
        text = first["choices"][0]["message"]["content"]
        assert text == again["choices"][0]["message"]["content"]
        assert text != other["choices"][0]["message"]["content"]
        assert first["usage"]["total_tokens"] == (
            first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
        )


def test_rate_limit_429_has_openai_headers():
    with sim.serve(sim.Provider("p", requests_per_minute=2, tokens_per_minute=10_000)) as s:
        for _ in range(2):
            status, headers, _ = post(s.url() + "/chat/completions", chat())
            assert status == 200
            assert headers["x-ratelimit-limit-requests"] == "2"
            assert headers["x-ratelimit-limit-tokens"] == "10000"
        status, headers, body = post(s.url() + "/chat/completions", chat())
        assert status == 429
        assert 1 <= int(headers["retry-after"]) <= 30
        assert int(headers["retry-after-ms"]) > 0
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert body["error"]["code"] == "rate_limit_exceeded"
        stats = s.stats("p")
        assert (stats["ok"], stats["rate_limited"]) == (2, 1)
        assert s.timeline("p")[0] == (3, 2, 1, 0)
        s.reset()
        assert s.stats("p")["requests"] == 0
        assert post(s.url() + "/chat/completions", chat())[0] == 200


def test_fault_schedule_and_forced_faults():
    faults = [sim.Fault(start=0, end=1.0, kind="down")]
    with sim.serve(sim.Provider("p", faults=faults, hang_seconds=0.05)) as s:
        assert post(s.url() + "/chat/completions", chat())[0] == 503
        time.sleep(max(1.05 - s.elapsed("p"), 0))
        assert post(s.url() + "/chat/completions", chat())[0] == 200
        assert post(s.url() + "/chat/completions", chat(), {"x-sim-fault": "500"})[0] == 500
        assert post(s.url() + "/chat/completions", chat(), {"x-sim-fault": "hang"})[0] == 504
        stats = s.stats("p")
        assert stats["unavailable"] == 1
        assert stats["server_errors"] == 1
        assert stats["timeouts"] == 1
        assert s.elapsed("p") > 1.0


def test_error_rate_is_roughly_honoured():
    with sim.serve(sim.Provider("p", error_rate=0.5, seed=3)) as s:
        codes = [post(s.url() + "/chat/completions", chat())[0] for _ in range(200)]
    errors = codes.count(500)
    assert set(codes) == {200, 500}
    assert 60 <= errors <= 140, errors


def test_latency_model():
    provider = sim.Provider("p", time_to_first_token=0.15, tokens_per_second=2000, jitter=0.1)
    with sim.serve(provider) as s:
        start = time.perf_counter()
        assert post(s.url() + "/chat/completions", chat())[0] == 200
        assert time.perf_counter() - start >= 0.15 * 0.9


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"jitter": 1.5}, "jitter"),
        ({"requests_per_minute": -1}, "requests_per_minute"),
        ({"tokens_per_second": "fast"}, "tokens_per_second"),
        ({"rpm": 10}, "rpm"),
        ({"faults": [{"start": 5, "end": 1, "kind": "down"}]}, "faults[0].end"),
        ({"faults": [{"start": 0, "kind": "explode"}]}, "explode"),
        ({"min_completion_tokens": 50, "max_completion_tokens": 10}, "min_completion_tokens"),
        ({"time_to_first_token": float("nan")}, "nan"),
        ({"host": "not a host"}, "host"),
    ],
)
def test_bad_settings_raise_config_error_naming_the_value(settings, named):
    with pytest.raises(langscale.ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        sim.serve({"name": "p", **settings})


def test_duplicate_names_bad_threads_and_bad_provider_type():
    with pytest.raises(langscale.ConfigError, match="unique"):
        sim.serve(sim.Provider("x"), sim.Provider("x"))
    with pytest.raises(langscale.ConfigError, match="threads"):
        sim.serve(threads=0)
    with pytest.raises(langscale.ConfigError, match="Provider"):
        sim.serve(42)  # type: ignore[arg-type]
    with sim.serve() as s, pytest.raises(langscale.ConfigError, match="nope"):
        s.stats("nope")


def test_serve_toml_file(tmp_path):
    path = tmp_path / "sim.toml"
    path.write_text(
        """
[[provider]]
name = "primary"
requests_per_minute = 600
[[provider.faults]]
start = 0
kind = "rate_limit"

[[provider]]
name = "fallback"
time_to_first_token = 0.01
"""
    )
    with sim.serve_toml(path) as s:
        assert s.names == ["primary", "fallback"]
        status, headers, _ = post(s.url("primary") + "/chat/completions", chat())
        assert status == 429 and "retry-after" in headers
        assert post(s.url("fallback") + "/chat/completions", chat())[0] == 200
    with pytest.raises(langscale.ConfigError, match="jitter"):
        sim.serve_toml("[[provider]]\njitter = 3\n")


def test_many_threads_share_one_simulator():
    with sim.serve(sim.Provider("p", time_to_first_token=0.002)) as s:
        url = s.url() + "/chat/completions"
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(lambda i: post(url, chat(f"question {i}"))[0], range(200)))
        assert codes == [200] * 200
        stats = s.stats("p")
        assert stats["ok"] == 200 and stats["in_flight"] == 0


async def test_async_with_serve_and_thread_safety_of_close():
    async with sim.serve() as s:
        loop = asyncio.get_running_loop()
        status = (await loop.run_in_executor(None, post, s.url() + "/chat/completions", chat()))[0]
        assert status == 200
    assert not s.running
    s2 = sim.serve()
    threads = [threading.Thread(target=s2.close) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not s2.running


# ChatOpenAI from langchain-openai, unchanged, against the simulator.


def _chat_openai(url: str, **kwargs):
    lc_openai = pytest.importorskip("langchain_openai")
    return lc_openai.ChatOpenAI(base_url=url, api_key="x", model="gpt-4o-mini", **kwargs)


def test_chat_openai_invoke_stream_and_tools():
    with sim.serve() as s:
        model = _chat_openai(s.url(), max_retries=0)
        answer = model.invoke("What is the weather in Paris?")
        assert "Paris" in answer.content
        assert answer.usage_metadata["total_tokens"] > 0
        chunks = list(model.stream("What is the weather in Paris?", stream_usage=True))
        assert len(chunks) > 3
        total = chunks[0]
        for c in chunks[1:]:
            total += c
        assert total.content == answer.content
        assert total.usage_metadata["output_tokens"] == answer.usage_metadata["output_tokens"]
        called = model.bind_tools([get_weather]).invoke("What is the weather in Oslo?")
        assert called.tool_calls[0]["name"] == "get_weather"
        assert called.tool_calls[0]["args"] == {"city": "Oslo"}
        streamed = None
        for chunk in model.bind_tools([get_weather]).stream("What is the weather in Oslo?"):
            streamed = chunk if streamed is None else streamed + chunk
        assert streamed.tool_calls[0]["args"] == {"city": "Oslo"}


def test_chat_openai_rate_limit_error_carries_retry_after():
    openai = pytest.importorskip("openai")
    with sim.serve(sim.Provider("p", requests_per_minute=1)) as s:
        model = _chat_openai(s.url(), max_retries=0)
        model.invoke("hi")
        with pytest.raises(openai.RateLimitError) as caught:
            model.invoke("hi")
        assert caught.value.status_code == 429
        assert int(caught.value.response.headers["retry-after"]) >= 1
        assert langscale.ScaledChatModel is not None
        from langscale._classify import classify

        kind, after = classify(caught.value)
        assert kind == "rate_limited" and after is not None and after > 0


def test_chat_openai_connection_reset_and_server_errors():
    openai = pytest.importorskip("openai")
    with sim.serve(sim.Provider("p", reset_rate=1.0)) as s:
        model = _chat_openai(s.url(), max_retries=0)
        with pytest.raises(openai.APIConnectionError):
            model.invoke("hi")
        assert s.stats("p")["resets"] == 1
    with sim.serve(sim.Provider("p", unavailable_rate=1.0)) as s:
        model = _chat_openai(s.url(), max_retries=0)
        with pytest.raises(openai.InternalServerError) as caught:
            model.invoke("hi")
        assert caught.value.status_code == 503


async def test_chat_openai_async_and_embeddings():
    lc_openai = pytest.importorskip("langchain_openai")
    async with sim.serve() as s:
        model = _chat_openai(s.url(), max_retries=0)
        answers = await asyncio.gather(*(model.ainvoke(f"Question {i}?") for i in range(20)))
        assert len({a.content for a in answers}) == 20
        embeddings = lc_openai.OpenAIEmbeddings(
            base_url=s.url(),
            api_key="x",
            model="text-embedding-3-small",
            dimensions=64,
            check_embedding_ctx_length=False,
        )
        vectors = await embeddings.aembed_documents(["weather in Paris", "weather in paris"])
        assert len(vectors) == 2 and len(vectors[0]) == 64
        same = sum(a * b for a, b in zip(vectors[0], vectors[1], strict=True))
        assert same > 0.8
        assert s.stats("default")["embedding_requests"] == 1


@pytest.mark.slow
def test_cli_sim_serves_a_toml_config(tmp_path, capsys):
    import subprocess
    import sys

    path = tmp_path / "sim.toml"
    path.write_text('[[provider]]\nname = "alpha"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "langscale.cli", "sim", "--config", str(path), "--seconds", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    name, url = first.strip().split(": ")
    assert name == "alpha" and url.startswith("http://127.0.0.1:")
    assert post(url + "/chat/completions", chat())[0] == 200
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(out)["alpha"]["ok"] == 1
    bad = tmp_path / "bad.toml"
    bad.write_text("[[provider]]\nerror_rate = 2\n")
    # The command's own main, in this process: a second interpreter importing langscale took
    # seconds of CI to say the same.
    assert cli.main(["sim", "--config", str(bad), "--seconds", "1"]) == 2
    assert "error_rate" in capsys.readouterr().err


def test_chat_openai_structured_output_both_methods():
    from pydantic import BaseModel

    class Trip(BaseModel):
        city: str
        days: int

    with sim.serve() as s:
        model = _chat_openai(s.url(), max_retries=0)
        for method in ("json_schema", "function_calling"):
            trip = model.with_structured_output(Trip, method=method).invoke("Plan 4 days in Lisbon")
            assert trip == Trip(city="Lisbon", days=4), method


def test_a_tokenizer_makes_usage_count_as_openai_does():
    """With ``tokenizer`` the simulator's prompt_tokens are OpenAI's count: what langscale
    reserves for an OpenAI model (``langscale._tokens``) is then exactly the usage."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    from langscale._tokens import estimate_input_tokens

    chats = [
        [HumanMessage("What is the capital of France?")],
        [
            SystemMessage("You answer in one sentence."),
            HumanMessage("Wie spät ist es in Tokio? 東京"),
            AIMessage("It is 9 pm."),
            HumanMessage("And in Paris?"),
        ],
    ]
    with sim.serve(sim.Provider("p", models=("gpt-4o",), tokenizer="o200k_base")) as s:
        endpoint = langscale.ChatEndpoint(s.url(), "gpt-4o")
        for messages in chats:
            usage = endpoint.invoke(messages).usage_metadata
            assert usage is not None
            assert usage["input_tokens"] == estimate_input_tokens(messages, "gpt-4o")
    with pytest.raises(langscale.ConfigError, match="tokenizer"):
        sim.serve(sim.Provider("p", tokenizer="gpt2")).__enter__()
