"""The `rerank` kind (node.py) and its two scoring backends: `cross_encoder` (cross_encoder.py,
a Hugging Face sequence classifier on torch or onnxruntime) and `llm_judge` (llm_judge.py,
log P(yes) - log P(no) of an LLM's next token, on the nodes/llm engine)."""
