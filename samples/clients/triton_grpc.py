"""Call a pipectl pipeline with the stock tritonclient package over gRPC (KServe v2).

    python samples/clients/triton_grpc.py --model search --input query="read a file line by line"
    python samples/clients/triton_grpc.py --model rag --stream --input query="How do I sort a dict?"

Unary calls print every output; --stream prints the streamed text as it arrives (ModelStreamInfer).
"""

from __future__ import annotations

import argparse
import queue
import sys

import numpy as np
import tritonclient.grpc as grpcclient


def _inputs(pairs: list[str]) -> list[grpcclient.InferInput]:
    inputs = []
    for pair in pairs:
        name, _, text = pair.partition("=")
        tensor = grpcclient.InferInput(name, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
        inputs.append(tensor)
    return inputs


def unary(client, model: str, inputs, headers) -> None:
    result = client.infer(model, inputs, headers=headers)
    for output in result.get_response().outputs:
        values = result.as_numpy(output.name).reshape(-1)
        shown = [v.decode() if isinstance(v, bytes) else v for v in values]
        print(f"{output.name}: {shown if len(shown) > 1 else shown[0]}")


def stream(client, model: str, inputs, headers, text_output: str) -> None:
    responses: queue.Queue = queue.Queue()
    client.start_stream(
        callback=lambda result, error: responses.put((result, error)), headers=headers
    )
    client.async_stream_infer(model, inputs, enable_empty_final_response=True)
    while True:
        result, error = responses.get(timeout=300)
        if error is not None:
            raise SystemExit(f"error: {error}")
        response = result.get_response()
        if any(o.name == text_output for o in response.outputs):
            sys.stdout.write(result.as_numpy(text_output).reshape(-1)[0].decode())
            sys.stdout.flush()
        if response.parameters["triton_final_response"].bool_param:
            break
    client.stop_stream()
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="127.0.0.1:8001")
    parser.add_argument("--model", default="rag")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=TEXT")
    parser.add_argument("--stream", action="store_true", help="stream token deltas")
    parser.add_argument("--text-output", default="answer", help="the streamed output (--stream)")
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else None
    client = grpcclient.InferenceServerClient(args.url)
    inputs = _inputs(args.input or ["query=How do I read a file line by line?"])
    if args.stream:
        stream(client, args.model, inputs, headers, args.text_output)
    else:
        unary(client, args.model, inputs, headers)


if __name__ == "__main__":
    main()
