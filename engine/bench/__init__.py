"""`pipectl bench`: a closed-loop load generator in the manner of Triton's perf_analyzer and
`vllm bench serve`. targets.py and remote.py call a pipeline (in this process, or a server over
gRPC, HTTP or /v1); load.py drives them at a concurrency and summarises; report.py prints."""
