"""Chat with a pipectl pipeline through the openai package (the OpenAI-compatible HTTP routes).

python samples/clients/openai_chat.py --model rag "How do I read a file line by line?"
"""

from __future__ import annotations

import argparse

from openai import OpenAI


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="rag")
    parser.add_argument("--api-key", default="none")
    parser.add_argument("--no-stream", action="store_true")
    args = parser.parse_args()
    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    messages = [{"role": "user", "content": args.question}]
    if args.no_stream:
        reply = client.chat.completions.create(model=args.model, messages=messages)
        print(reply.choices[0].message.content)
        print(f"[usage: {reply.usage}]")
        return
    for chunk in client.chat.completions.create(model=args.model, messages=messages, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()


if __name__ == "__main__":
    main()
