"""Drives a Gambi room with the official `ollama` Python client, exactly as a developer would.

Usage: ollama_client.py HOST MODEL EMBED_MODEL [KEY]
HOST is the room (http://HUB/rooms/CODE), the client's base URL; KEY, when given, is the room
password, sent as the bearer token. The room's chat participant answers `echo: <last user text>`
and calls the first tool it is offered (the suite's fake provider). Prints one line per check and
exits non-zero on the first failure, with the reason.
"""

import sys

import ollama


def check(name, condition, detail=""):
    if not condition:
        print(f"FAIL {name}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok {name}", flush=True)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def main():
    host, model, embed_model = sys.argv[1], sys.argv[2], sys.argv[3]
    headers = {"Authorization": f"Bearer {sys.argv[4]}"} if len(sys.argv) > 4 else None
    client = ollama.Client(host=host, headers=headers, timeout=30)

    listed = client.list()
    names = [m.model for m in listed.models]
    check("list", f"{model}:latest" in names and f"{embed_model}:latest" in names, names)
    check("list details", all(m.details is not None and m.digest for m in listed.models), listed)

    loaded = client.ps()
    check("ps", any(m.model == f"{model}:latest" and (m.size_vram or 0) > 0 for m in loaded.models), loaded)

    shown = client.show(model)
    check("show", shown.details is not None and shown.modelinfo == {} and "completion" in shown.capabilities, shown)

    answer = client.chat(model=model, messages=[{"role": "user", "content": "hello"}], stream=False)
    check("chat", answer.message.content == "echo: hello" and answer.done and answer.done_reason == "stop", answer)
    check("chat counts", answer.eval_count > 0 and answer.prompt_eval_count > 0 and answer.total_duration > 0, answer)

    parts = list(client.chat(model=model, messages=[{"role": "user", "content": "stream please"}], stream=True))
    text = "".join(p.message.content or "" for p in parts)
    check("chat stream", text == "echo: stream please" and len(parts) > 2, [p.message.content for p in parts])
    check("chat stream end", parts[-1].done and parts[-1].done_reason == "stop" and parts[-1].eval_count > 0, parts[-1])
    check("chat stream only ends once", not any(p.done for p in parts[:-1]), parts)

    asked = [{"role": "user", "content": "weather in Paris?"}]
    called = client.chat(model=model, messages=asked, tools=[WEATHER], stream=False)
    calls = called.message.tool_calls or []
    check(
        "chat tool call",
        len(calls) == 1 and calls[0].function.name == "get_weather" and calls[0].function.arguments == {"city": "Paris"},
        called.message,
    )
    followed = client.chat(
        model=model,
        messages=asked + [called.message, {"role": "tool", "tool_name": "get_weather", "content": "sunny"}],
        tools=[WEATHER],
        stream=False,
    )
    check("chat tool result", followed.message.content == "echo: weather in Paris?", followed.message)
    streamed_calls = [
        c for p in client.chat(model=model, messages=asked, tools=[WEATHER], stream=True) for c in (p.message.tool_calls or [])
    ]
    check("chat stream tool call", [c.function.name for c in streamed_calls] == ["get_weather"], streamed_calls)

    generated = client.generate(model=model, prompt="why is the sky blue?", stream=False)
    check("generate", generated.response == "echo: why is the sky blue?" and generated.done, generated)
    pieces = list(client.generate(model=model, prompt="tell me more", stream=True))
    check("generate stream", "".join(p.response for p in pieces) == "echo: tell me more" and pieces[-1].done, pieces)
    raw = client.generate(model=model, prompt="<|user|>raw prompt<|assistant|>", raw=True, stream=False)
    check("generate raw", raw.response == "echo: <|user|>raw prompt<|assistant|>" and raw.done, raw)

    embedded = client.embed(model=embed_model, input=["first text", "second text"])
    dims = [len(e) for e in embedded.embeddings]
    check("embed", dims == [8, 8] and embedded.embeddings[0] != embedded.embeddings[1], embedded)
    one = client.embed(model=embed_model, input="first text")
    check("embed one", one.embeddings == embedded.embeddings[:1], one)
    legacy = client.embeddings(model=embed_model, prompt="first text")
    check("embeddings", list(legacy.embedding) == list(embedded.embeddings[0]), legacy)

    try:
        client.pull(model)
        check("pull refused", False, "pull succeeded")
    except ollama.ResponseError as e:
        check("pull refused", e.status_code == 403 and "does not manage" in e.error, (e.status_code, e.error))
    try:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
        check("unknown model", False, "chat succeeded")
    except ollama.ResponseError as e:
        check("unknown model", e.status_code == 404 and e.error == "model 'no-such-model' not found", (e.status_code, e.error))

    print("python ollama client: all checks passed", flush=True)


if __name__ == "__main__":
    main()
