#!/usr/bin/env bash
# KServe v2 JSON and the OpenAI route with curl, against `pipectl serve pipelines/search.yaml
# pipelines/rag.yaml`. Usage: samples/clients/curl.sh [host:port]
set -euo pipefail
HOST=${1:-127.0.0.1:8000}
AUTH=()
[ -n "${PIPECTL_API_KEY:-}" ] && AUTH=(-H "authorization: Bearer $PIPECTL_API_KEY")

curl -sS --fail-with-body "${AUTH[@]}" "http://$HOST/v2/models/search/infer" -d '{
  "inputs": [{"name": "query", "datatype": "BYTES", "shape": [1, 1],
              "data": ["How do I read a file line by line?"]}],
  "outputs": [{"name": "keys"}, {"name": "scores"}]}'
echo
curl -sS --fail-with-body "${AUTH[@]}" "http://$HOST/v1/chat/completions" -H 'content-type: application/json' -d '{
  "model": "rag", "messages": [{"role": "user", "content": "How do I read a file line by line?"}]}'
echo
