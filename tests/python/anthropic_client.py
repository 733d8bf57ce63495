"""Drives a Gambi room's Messages endpoint with the official Anthropic Python client, as a
developer would.

Usage: anthropic_client.py BASE_URL API_KEY MODEL
BASE_URL is the room (http://HUB/rooms/CODE): the client adds /v1/messages. The key goes as
x-api-key, what Anthropic clients send. Prints one line per check and exits non-zero on the first
failure, with the reason.
"""

import sys

import anthropic


def check(name, condition, detail=""):
    if not condition:
        print(f"FAIL {name}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok {name}", flush=True)


TOOLS = [{
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]


def main():
    base_url, api_key, model = sys.argv[1], sys.argv[2], sys.argv[3]
    client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)

    message = client.messages.create(
        model=model, max_tokens=64, system="Be brief.",
        messages=[{"role": "user", "content": "hello from anthropic"}],
    )
    text = "".join(b.text for b in message.content if b.type == "text")
    check("messages.create", message.type == "message" and message.role == "assistant" and len(text) > 0, message)
    check("messages.create stop_reason", message.stop_reason == "end_turn", message.stop_reason)
    check("messages.create usage", message.usage.input_tokens > 0 and message.usage.output_tokens > 0, message.usage)

    pieces = []
    with client.messages.stream(
        model=model, max_tokens=64, messages=[{"role": "user", "content": "stream please"}]
    ) as stream:
        for piece in stream.text_stream:
            pieces.append(piece)
        final = stream.get_final_message()
    check("messages.stream text", len("".join(pieces)) > 0, pieces)
    check("messages.stream final", final.stop_reason == "end_turn" and final.content[0].text == "".join(pieces), final)
    check("messages.stream usage", final.usage.output_tokens > 0, final.usage)

    asked = [{"role": "user", "content": "weather in Paris?"}]
    called = client.messages.create(model=model, max_tokens=64, tools=TOOLS, messages=asked)
    uses = [b for b in called.content if b.type == "tool_use"]
    check("tool call", called.stop_reason == "tool_use" and len(uses) == 1 and uses[0].name == "get_weather", called)
    check("tool call input", isinstance(uses[0].input, dict) and uses[0].input.get("city") == "Paris", uses[0].input)

    answered = client.messages.create(
        model=model, max_tokens=64, tools=TOOLS,
        messages=asked + [
            {"role": "assistant", "content": [b.model_dump() for b in called.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny"}]},
        ],
    )
    check("tool result answered", answered.stop_reason == "end_turn" and answered.content[0].type == "text", answered)

    with client.messages.stream(model=model, max_tokens=64, tools=TOOLS, messages=asked) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    check("tool call streamed", final.stop_reason == "tool_use" and len(uses) == 1 and uses[0].input.get("city") == "Paris", final)

    print("python anthropic client: all checks passed", flush=True)


if __name__ == "__main__":
    main()
