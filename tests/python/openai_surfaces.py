"""Drives a Gambi room's embeddings, legacy completions and models with the official OpenAI
Python client, as a developer (or a code-completion tool) would.

Usage: openai_surfaces.py BASE_URL API_KEY MODEL
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

    ids = [m.id for m in client.models.list().data]
    check("models.list has *", "*" in ids, ids)
    check("models.retrieve *", client.models.retrieve("*").id == "*")

    # The client asks for base64 by default and decodes it.
    embedded = client.embeddings.create(model=model, input=["first text", "second text"])
    vectors = [d.embedding for d in embedded.data]
    check("embeddings.create", len(vectors) == 2 and all(len(v) > 0 for v in vectors), embedded)
    check("embeddings dimensions agree", len(vectors[0]) == len(vectors[1]), [len(v) for v in vectors])
    check("embeddings usage", embedded.usage.prompt_tokens > 0, embedded.usage)
    floats = client.embeddings.create(model=model, input="one text", encoding_format="float")
    check("embeddings.create float", len(floats.data[0].embedding) == len(vectors[0]), floats)
    print(f"dimensions {len(vectors[0])}", flush=True)

    completion = client.completions.create(model=model, prompt="Once upon a time", max_tokens=16)
    check("completions.create", len(completion.choices[0].text) > 0, completion)
    check("completions usage", completion.usage is not None and completion.usage.total_tokens > 0, completion.usage)

    pieces = []
    for chunk in client.completions.create(model=model, prompt="Stream a story", max_tokens=16, stream=True):
        for choice in chunk.choices:
            pieces.append(choice.text)
    check("completions.create stream", len("".join(pieces)) > 0, pieces)

    print("python openai surfaces: all checks passed", flush=True)


if __name__ == "__main__":
    main()
