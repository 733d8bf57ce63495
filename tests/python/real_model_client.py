"""Drives a Gambi room whose participant is a real model server (llama.cpp's llama-server with a
135M model) with the official OpenAI Python client, as a developer would.

Usage: real_model_client.py BASE_URL MODEL chat|responses|responses-kept|embeddings|completions|messages
       real_model_client.py BASE_URL MODEL ollama EMBED_MODEL DIMENSIONS

BASE_URL is the room's OpenAI base URL (http://HUB/rooms/CODE/v1); for `messages` the official
Anthropic client is used, and for `ollama` the official Ollama client, each with the room itself
(http://HUB/rooms/CODE) as its base URL. `ollama` chats and generates with MODEL and embeds with
EMBED_MODEL, whose vectors must measure DIMENSIONS (what its server's /v1/embeddings gives). A real model
says what it likes, so only the shape of each answer is checked, and that it is not empty. Prints
one line per check and exits non-zero on the first failure, with the reason.
"""

import json
import sys

import anthropic
import ollama
import openai

PROMPT = "Write one short sentence about the sea."
# The events that end a Responses stream with a response.
ENDS = ("response.completed", "response.incomplete")


def check(name, condition, detail=""):
    if not condition:
        print(f"FAIL {name}: {detail!r}", flush=True)
        sys.exit(1)
    print(f"ok {name}", flush=True)


def chat(client, model):
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=12, temperature=0
    )
    check("chat object", answer.object == "chat.completion" and len(answer.choices) == 1, answer)
    choice = answer.choices[0]
    check("chat message", choice.message.role == "assistant" and len(choice.message.content or "") > 0, choice)
    check("chat finish_reason", choice.finish_reason in ("stop", "length"), choice.finish_reason)
    usage = answer.usage
    check("chat usage", usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0, usage)
    check("chat max_tokens", usage.completion_tokens <= 12, usage)

    pieces, usage = [], None
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        check("chat stream chunk", chunk.object == "chat.completion.chunk", chunk)
        for choice in chunk.choices:
            if choice.delta and choice.delta.content:
                pieces.append(choice.delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    # A real model streams token by token: many small deltas, not one block.
    check("chat stream deltas", len(pieces) > 1 and len("".join(pieces)) > 0, pieces)
    check("chat stream usage", usage is not None and usage.completion_tokens > 0, usage)


def responses(client, model, kept):
    created = client.responses.create(model=model, input=PROMPT, max_output_tokens=12, temperature=0)
    check("responses object", created.object == "response" and created.status in ("completed", "incomplete"), created)
    check("responses output_text", len(created.output_text) > 0, created.output)
    messages = [item for item in created.output if item.type == "message"]
    check("responses message item", len(messages) == 1 and messages[0].role == "assistant", created.output)
    check("responses usage", created.usage is not None and created.usage.output_tokens > 0, created.usage)

    events, text, final = [], "", None
    stream = client.responses.create(model=model, input=PROMPT, max_output_tokens=16, temperature=0, stream=True)
    for event in stream:
        events.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        elif event.type in ENDS:
            final = event.response
    check("responses stream created", events[:1] == ["response.created"], events[:3])
    check("responses stream deltas", events.count("response.output_text.delta") > 1 and len(text) > 0, events)
    # `incomplete` when the model was still going at max_output_tokens.
    check("responses stream ended", events[-1] in ENDS, events[-3:])
    check("responses stream final", final is not None and final.output_text == text, (final, text))

    if kept:
        # The SDK's accumulating helper needs every event's output_index, content_index and
        # sequence_number, which the hub's own events carry (llama-server's native ones do not), and
        # a `response.completed` at the end: a short answer, well within its budget.
        with client.responses.stream(model=model, input="Say hello.", max_output_tokens=48, temperature=0) as helper:
            kinds = [event.type for event in helper]
            accumulated = helper.get_final_response()
        check("responses stream helper", kinds[-1] in ENDS and len(accumulated.output_text) > 0, kinds)

    if kept:
        # A response the hub translated is kept by the hub: it answers for it by id.
        again = client.responses.retrieve(created.id)
        check("responses retrieve", again.id == created.id and again.output_text == created.output_text, again)


def embeddings(client, model):
    # The client asks for base64 by default and decodes it.
    embedded = client.embeddings.create(model=model, input=["the sea", "the sky"])
    vectors = [d.embedding for d in embedded.data]
    check("embeddings vectors", len(vectors) == 2 and len(vectors[0]) > 0, embedded)
    check("embeddings dimensions agree", len(vectors[0]) == len(vectors[1]), [len(v) for v in vectors])
    check("embeddings differ", vectors[0] != vectors[1], "two texts, one vector")
    check("embeddings usage", embedded.usage is not None and embedded.usage.prompt_tokens > 0, embedded.usage)
    floats = client.embeddings.create(model=model, input="the sea", encoding_format="float")
    check("embeddings float", len(floats.data[0].embedding) == len(vectors[0]), floats.data[0])
    print(f"dimensions {len(vectors[0])}", flush=True)


def completions(client, model):
    done = client.completions.create(model=model, prompt="Once upon a time", max_tokens=8, temperature=0)
    check("completions object", done.object == "text_completion" and len(done.choices) == 1, done)
    check("completions text", len(done.choices[0].text) > 0, done.choices[0])
    check("completions usage", done.usage is not None and 0 < done.usage.completion_tokens <= 8, done.usage)
    pieces = []
    for chunk in client.completions.create(
        model=model, prompt="Once upon a time", max_tokens=12, temperature=0, stream=True
    ):
        for choice in chunk.choices:
            if choice.text:
                pieces.append(choice.text)
    check("completions stream", len(pieces) > 1 and len("".join(pieces)) > 0, pieces)


TOOLS = [{
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]
STOPS = ("end_turn", "max_tokens", "stop_sequence", "tool_use")


def messages(room_url, model):
    client = anthropic.Anthropic(base_url=room_url, api_key="no-key-needed", max_retries=0, timeout=120)
    asked = [{"role": "user", "content": PROMPT}]
    message = client.messages.create(model=model, max_tokens=12, system="Be brief.", messages=asked)
    text = "".join(b.text for b in message.content if b.type == "text")
    check("messages object", message.type == "message" and message.role == "assistant", message)
    check("messages text", len(text) > 0, message.content)
    check("messages stop_reason", message.stop_reason in STOPS, message.stop_reason)
    check("messages usage", message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 12, message.usage)

    pieces = []
    with client.messages.stream(model=model, max_tokens=16, messages=asked) as stream:
        for piece in stream.text_stream:
            pieces.append(piece)
        final = stream.get_final_message()
    check("messages stream text", len(pieces) > 1 and len("".join(pieces)) > 0, pieces)
    check("messages stream final", final.content[0].text == "".join(pieces), final)
    check("messages stream usage", final.usage.output_tokens > 0, final.usage)

    # A 135M model may or may not call the tool: the answer must be a well-formed message either way.
    weather = [{"role": "user", "content": "What is the weather in Paris?"}]
    called = client.messages.create(model=model, max_tokens=16, tools=TOOLS, messages=weather)
    kinds = [b.type for b in called.content]
    check("messages with tools", len(kinds) > 0 and set(kinds) <= {"text", "tool_use"}, called)
    check("messages with tools stop_reason", called.stop_reason in STOPS, called.stop_reason)
    for use in (b for b in called.content if b.type == "tool_use"):
        check("tool_use block", use.name == "get_weather" and isinstance(use.input, dict), use)


OLLAMA_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def ollama_calls(room_url, model, embed_model, dimensions):
    client = ollama.Client(host=room_url, timeout=120)
    listed = client.list()
    names = [m.model for m in listed.models]
    check("ollama list", f"{model}:latest" in names and f"{embed_model}:latest" in names, names)
    check("ollama list details", all(m.details is not None and m.digest for m in listed.models), listed)
    # What the members' servers hold in memory, where they say (llama-server has no /api/ps).
    loaded = client.ps()
    check("ollama ps", all(m.model in names for m in loaded.models), loaded)
    shown = client.show(model)
    check("ollama show", shown.details is not None and shown.capabilities == ["completion"], shown)
    # What the embeddings server's probe found: it embeds (and chats).
    shown = client.show(embed_model)
    check("ollama show embedding", "embedding" in (shown.capabilities or []), shown.capabilities)

    asked = [{"role": "user", "content": PROMPT}]
    options = {"num_predict": 12, "temperature": 0}
    answer = client.chat(model=model, messages=asked, options=options, stream=False)
    check("ollama chat", answer.message.role == "assistant" and len(answer.message.content or "") > 0, answer)
    check("ollama chat done", answer.done and answer.done_reason in ("stop", "length"), answer)
    check("ollama chat counts", 0 < answer.eval_count <= 12 and answer.prompt_eval_count > 0, answer)
    check("ollama chat durations", answer.total_duration > 0, answer)

    parts = list(client.chat(model=model, messages=asked, options={"num_predict": 16}, stream=True))
    text = "".join(p.message.content or "" for p in parts)
    check("ollama chat stream", len(parts) > 2 and len(text) > 0, [p.message.content for p in parts])
    end = parts[-1]
    check("ollama chat stream end", end.done and end.done_reason in ("stop", "length") and end.eval_count > 0, end)
    check("ollama chat stream only ends once", not any(p.done for p in parts[:-1]), parts)

    # Load-time settings an Ollama client sends are the member's own business: not sent on.
    tuned = client.chat(model=model, messages=asked, options={**options, "num_ctx": 4096}, keep_alive="5m")
    check("ollama chat load-time options", tuned.done and len(tuned.message.content or "") > 0, tuned)
    # Structured output: the schema goes to the server, which keeps the answer to it.
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    shaped = client.chat(
        model=model,
        messages=[{"role": "user", "content": "Name a city, as JSON."}],
        format=schema,
        options={"num_predict": 48, "temperature": 0},
    )
    parsed = json.loads(shaped.message.content or "null") if shaped.done_reason == "stop" else {"city": ""}
    check("ollama chat format", isinstance(parsed, dict) and isinstance(parsed.get("city"), str), shaped.message)
    # A 135M model may or may not call the tool: the answer must be well formed either way.
    weather = [{"role": "user", "content": "What is the weather in Paris?"}]
    tooled = client.chat(model=model, messages=weather, tools=[OLLAMA_WEATHER], options={"num_predict": 32})
    calls = tooled.message.tool_calls or []
    check("ollama chat with tools", tooled.done and (calls or tooled.message.content), tooled.message)
    for c in calls:
        check("ollama tool call", c.function.name == "get_weather" and isinstance(c.function.arguments, dict), c)

    generated = client.generate(model=model, prompt=PROMPT, options=options, stream=False)
    check("ollama generate", len(generated.response) > 0 and generated.done and generated.done_reason, generated)
    check("ollama generate counts", 0 < generated.eval_count <= 12, generated)
    pieces = list(client.generate(model=model, prompt=PROMPT, options={"num_predict": 16}, stream=True))
    check("ollama generate stream", len(pieces) > 2 and len("".join(p.response for p in pieces)) > 0, pieces)
    check("ollama generate stream end", pieces[-1].done and pieces[-1].eval_count > 0, pieces[-1])
    # A prompt already templated runs as a legacy completion.
    raw = client.generate(model=model, prompt="Once upon a time", raw=True, options=options, stream=False)
    check("ollama generate raw", len(raw.response) > 0 and raw.done and raw.done_reason, raw)

    embedded = client.embed(model=embed_model, input=["the sea", "the sky"])
    dims = [len(e) for e in embedded.embeddings]
    check("ollama embed", dims == [dimensions, dimensions], dims)
    check("ollama embed differ", embedded.embeddings[0] != embedded.embeddings[1], "two texts, one vector")
    check("ollama embed counts", (embedded.prompt_eval_count or 0) > 0, embedded)
    one = client.embed(model=embed_model, input="the sea")
    check("ollama embed one", [len(e) for e in one.embeddings] == [dimensions], one)
    legacy = client.embeddings(model=embed_model, prompt="the sea")
    check("ollama embeddings", len(legacy.embedding) == dimensions, legacy)
    print(f"dimensions {dimensions}", flush=True)


def main():
    base_url, model, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    client = openai.OpenAI(base_url=base_url, api_key="no-key-needed", max_retries=0, timeout=120)
    if mode == "chat":
        chat(client, model)
    elif mode in ("responses", "responses-kept"):
        responses(client, model, mode == "responses-kept")
    elif mode == "embeddings":
        embeddings(client, model)
    elif mode == "completions":
        completions(client, model)
    elif mode == "messages":
        messages(base_url.removesuffix("/v1"), model)
    elif mode == "ollama" and len(sys.argv) == 6:
        ollama_calls(base_url.removesuffix("/v1"), model, sys.argv[4], int(sys.argv[5]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    print(f"real model {mode}: all checks passed", flush=True)


if __name__ == "__main__":
    main()
