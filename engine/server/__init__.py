"""The serving faces of pipectl (`pipectl serve`): they translate protocols, nothing more.

app.py         one process: gRPC and HTTP on one event loop, loading, readiness, SIGTERM drain
repository.py  the served models and the request path (batch split, cache, tracing, drain)
request_check.py  a request's inputs and outputs checked against its model (names, dtypes, shapes)
batch_results.py  per-item results stacked back into the client's batch; stream events joined
model.py       a served model: a pipeline, or one node as `<pipeline>.<node>` (sub-plan)
describe.py    metadata, ModelConfig (pipelines as Triton ensembles), statistics, index
tensors.py     KServe v2 tensors <-> numpy (raw, typed contents, JSON; BYTES length prefix)
grpc.py        inference.GRPCInferenceService (grpc.aio), health and reflection
http.py        KServe v2 REST, binary tensor extension, generate / generate_stream (SSE)
openai_api.py  /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings (handlers)
openai_completion.py  one completion answered whole or as SSE chunks (usage, logprobs)
openai_fields.py      which OpenAI request fields are honoured, and how; the rest refused by name
kserve_body.py        KServe v2 REST request bodies, checked field by field
versions.py, model_control.py  model versions; Triton's model control (load, unload, poll)
dashboard.py, live.py, traces.py, otel.py  the live page, sampled traces, OpenTelemetry export
metrics.py     Prometheus /metrics, read from executor statistics at scrape time
auth.py        the API key (constant-time compare) for both protocols
"""
