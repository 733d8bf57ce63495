"""Drives a Gambi room whose participant is a real model server (llama.cpp's llama-server with a
135M model) with the official OpenAI Python client, as a developer would.

Usage: real_model_client.py BASE_URL MODEL chat|responses|responses-kept

BASE_URL is the room's OpenAI base URL (http://HUB/rooms/CODE/v1). A real model says what it
likes, so only the shape of each answer is checked, and that it is not empty. Prints one line per
check and exits non-zero on the first failure, with the reason.
"""

import sys

import openai

PROMPT = "Write one short sentence about the sea."


def check(name, condition, detail=""):
    if not condition:
        print(f"FAIL {name}: {detail!r}", flush=True)
        sys.exit(1)
    print(f"ok {name}", flush=True)


def chat(client, model):
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=16, temperature=0
    )
    check("chat object", answer.object == "chat.completion" and len(answer.choices) == 1, answer)
    choice = answer.choices[0]
    check("chat message", choice.message.role == "assistant" and len(choice.message.content or "") > 0, choice)
    check("chat finish_reason", choice.finish_reason in ("stop", "length"), choice.finish_reason)
    usage = answer.usage
    check("chat usage", usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0, usage)
    check("chat max_tokens", usage.completion_tokens <= 16, usage)

    pieces, usage = [], None
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=24,
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
    created = client.responses.create(model=model, input=PROMPT, max_output_tokens=16, temperature=0)
    check("responses object", created.object == "response" and created.status in ("completed", "incomplete"), created)
    check("responses output_text", len(created.output_text) > 0, created.output)
    messages = [item for item in created.output if item.type == "message"]
    check("responses message item", len(messages) == 1 and messages[0].role == "assistant", created.output)
    check("responses usage", created.usage is not None and created.usage.output_tokens > 0, created.usage)

    events, text, final = [], "", None
    stream = client.responses.create(model=model, input=PROMPT, max_output_tokens=24, temperature=0, stream=True)
    for event in stream:
        events.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        elif event.type == "response.completed":
            final = event.response
    check("responses stream created", events[:1] == ["response.created"], events[:3])
    check("responses stream deltas", events.count("response.output_text.delta") > 1 and len(text) > 0, events)
    check("responses stream completed", events[-1] == "response.completed", events[-3:])
    check("responses stream final", final is not None and final.output_text == text, (final, text))

    if kept:
        # The SDK's accumulating helper needs every event's output_index, content_index and
        # sequence_number, which the hub's own events carry (llama-server's native ones do not).
        with client.responses.stream(model=model, input=PROMPT, max_output_tokens=24, temperature=0) as helper:
            kinds = [event.type for event in helper]
            accumulated = helper.get_final_response()
        check("responses stream helper", "response.completed" in kinds and len(accumulated.output_text) > 0, kinds)

    if kept:
        # A response the hub translated is kept by the hub: it answers for it by id.
        again = client.responses.retrieve(created.id)
        check("responses retrieve", again.id == created.id and again.output_text == created.output_text, again)


def main():
    base_url, model, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    client = openai.OpenAI(base_url=base_url, api_key="no-key-needed", max_retries=0, timeout=120)
    if mode == "chat":
        chat(client, model)
    elif mode in ("responses", "responses-kept"):
        responses(client, model, mode == "responses-kept")
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    print(f"real model {mode}: all checks passed", flush=True)


if __name__ == "__main__":
    main()
