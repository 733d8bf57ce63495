"""Streams through a Gambi room with the official OpenAI Python client while the request waits in
the room's queue (the hub sends SSE comment lines with its place in line before the stream).

Usage: openai_queued.py BASE_URL MODEL KIND   (KIND: chat, responses or completions)
Prints one line per check and exits non-zero on the first failure, with the reason.
"""

import sys

import openai


def check(name, condition, detail=""):
    if not condition:
        print(f"FAIL {name}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok {name}", flush=True)


def main():
    base_url, model, kind = sys.argv[1], sys.argv[2], sys.argv[3]
    client = openai.OpenAI(base_url=base_url, api_key="no-key-needed", max_retries=0, timeout=30)
    if kind == "chat":
        pieces = []
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "queued stream"}], stream=True
        )
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta and choice.delta.content:
                    pieces.append(choice.delta.content)
        check("queued chat stream", "queued stream" in "".join(pieces), pieces)
    elif kind == "responses":
        events = []
        with client.responses.stream(model=model, input="queued responses") as rs:
            for event in rs:
                events.append(event.type)
            final = rs.get_final_response()
        check("queued responses events", "response.completed" in events, events)
        check("queued responses final", "queued responses" in final.output_text, final)
    elif kind == "completions":
        text = ""
        for chunk in client.completions.create(model=model, prompt="queued prompt", stream=True):
            text += chunk.choices[0].text if chunk.choices else ""
        check("queued completions stream", len(text) > 0, text)
    else:
        check("kind", False, kind)
    print("all checks passed", flush=True)


if __name__ == "__main__":
    main()
