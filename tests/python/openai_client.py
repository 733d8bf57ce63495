"""Drives a Gambi room with the official OpenAI Python client, exactly as a developer would.

Usage: openai_client.py BASE_URL API_KEY MODEL
BASE_URL is the room's OpenAI base URL (http://HUB/rooms/CODE/v1). Prints one line per check and
exits non-zero on the first failure, with the reason.
"""

import sys

import openai


def check(name, condition, detail=""):
    if not condition:
        print(f"FAIL {name}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok {name}", flush=True)


def main():
    base_url, api_key, model = sys.argv[1], sys.argv[2], sys.argv[3]
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)

    models = client.models.list()
    ids = [m.id for m in models.data]
    check("models.list", len(ids) >= 1, ids)

    chat = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello from python"}]
    )
    text = chat.choices[0].message.content or ""
    check("chat.completions", len(text) > 0, chat)
    check("chat.completions usage", chat.usage is not None and chat.usage.total_tokens > 0, chat.usage)

    pieces = []
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "stream please"}], stream=True
    )
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta and choice.delta.content:
                pieces.append(choice.delta.content)
    check("chat.completions stream", len("".join(pieces)) > 0, pieces)

    response = client.responses.create(model=model, input="hello responses")
    check("responses.create", response.status == "completed" and len(response.output_text) > 0, response)

    events = []
    with client.responses.stream(model=model, input="stream responses") as rs:
        for event in rs:
            events.append(event.type)
        final = rs.get_final_response()
    check("responses stream events", "response.output_text.delta" in events and "response.completed" in events, events)
    check("responses stream final", len(final.output_text) > 0, final)

    tools = [{
        "type": "function",
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }]
    tool_response = client.responses.create(model=model, input="weather in Paris?", tools=tools)
    calls = [item for item in tool_response.output if item.type == "function_call"]
    check("responses function tool", len(calls) == 1 and calls[0].name == "get_weather", tool_response.output)

    print("python openai client: all checks passed", flush=True)


if __name__ == "__main__":
    main()
