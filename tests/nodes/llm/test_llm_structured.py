"""Structured output (`response_format`) in the engine: every token of a constrained answer is
one the grammar allows, a finished answer parses and matches its schema, unconstrained rows of
the same batch are untouched, and bad formats are refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodes.errors import InvalidRequest
from nodes.llm.config import EngineConfig
from nodes.llm.engine import LLMEngine
from nodes.llm.node import LLMParams
from nodes.llm.sampling import SamplingParams
from nodes.llm.speculative import SpeculativeConfig
from nodes.llm.structured import canonical_response_format

xgrammar = pytest.importorskip("xgrammar")
jsonschema = pytest.importorskip("jsonschema")

SCHEMA = json.loads((Path(__file__).parents[2] / "data" / "verdict.schema.json").read_text())
JSON_SCHEMA = canonical_response_format(
    {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA}}
)
JSON_OBJECT = canonical_response_format({"type": "json_object"})
CONFIG = {"dtype": "fp32", "block_size": 4, "kv_cache_bytes": 8 << 20, "max_model_len": 256}


@pytest.fixture(scope="module")
def engine(tmp_path_factory, smollm2_tokenizer, save_llama):
    """A tiny random Llama with SmolLM2's tokenizer: its choices are arbitrary, so only the
    grammar can make them JSON."""
    folder = tmp_path_factory.mktemp("tiny_structured")
    save_llama(folder, smollm2_tokenizer, seed=3)
    return LLMEngine(folder, EngineConfig(**CONFIG))


def _prompt(engine, text="Is the sky blue? Answer as JSON."):
    return engine.tokenizer.apply_chat([{"role": "user", "content": text}])


def _fresh_matcher(engine, response_format):
    return engine.grammars.matcher(response_format)


def test_each_sampled_token_is_one_the_grammar_allows(engine):
    params = SamplingParams(max_tokens=48, temperature=1.0, seed=7, response_format=JSON_SCHEMA)
    outs = engine.generate([_prompt(engine)] * 6, params)
    for out in outs:
        checker = _fresh_matcher(engine, JSON_SCHEMA)
        assert all(checker.accept_token(t) for t in out.token_ids), out.text
        if out.finish_reason == "stop":
            jsonschema.validate(json.loads(out.text), SCHEMA)
    # sampled rows are random, so without the mask a random model breaks JSON at once
    free = engine.generate([_prompt(engine)] * 6, SamplingParams(max_tokens=8, temperature=1.0))
    checker_results = []
    for out in free:
        checker = _fresh_matcher(engine, JSON_SCHEMA)
        checker_results.append(all(checker.accept_token(t) for t in out.token_ids))
    assert not all(checker_results)


def test_json_object_answers_are_json_objects(engine):
    outs = engine.generate(
        [_prompt(engine, q) for q in ("One", "Two words", "Three small words")],
        SamplingParams(max_tokens=64, temperature=0.7, seed=1, response_format=JSON_OBJECT),
    )
    for out in outs:
        checker = _fresh_matcher(engine, JSON_OBJECT)
        assert all(checker.accept_token(t) for t in out.token_ids)
        assert out.text.lstrip().startswith("{")
        if out.finish_reason == "stop":
            assert isinstance(json.loads(out.text), dict)


def test_rows_without_a_format_are_unchanged_in_a_mixed_batch(engine):
    plain = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
    alone = engine.generate([_prompt(engine, "Tell me a story")], plain)[0]
    mixed = engine.generate(
        [_prompt(engine), _prompt(engine, "Tell me a story")],
        [SamplingParams(max_tokens=16, temperature=0, response_format=JSON_SCHEMA), plain],
    )
    assert mixed[1].token_ids == alone.token_ids


def test_greedy_structured_output_is_identical_with_speculation(tmp_path, smollm2_tokenizer,
                                                                save_llama):  # fmt: skip
    save_llama(tmp_path, smollm2_tokenizer, seed=3)
    spec = SpeculativeConfig(num_speculative_tokens=3, prompt_lookup_max=3, prompt_lookup_min=1)
    plain = LLMEngine(tmp_path, EngineConfig(**CONFIG))
    speculative = LLMEngine(tmp_path, EngineConfig(**CONFIG, speculative=spec))
    prompts = [_prompt(plain, q) for q in ("yes or no?", "no or yes? no or yes?")]
    params = SamplingParams(max_tokens=32, temperature=0, response_format=JSON_SCHEMA)
    assert [o.token_ids for o in plain.generate(prompts, params)] == [
        o.token_ids for o in speculative.generate(prompts, params)
    ]


def _named(**spec) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "v"} | spec}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"type": "xml"}, "'response_format.type'"),
        ({"type": "json_schema"}, "'response_format.json_schema'"),
        ({"type": "json_schema", "json_schema": 3}, "'response_format.json_schema' must be"),
        (_named(schema=3), r"'response_format.json_schema.schema' must be a JSON Schema object"),
        (_named(schema=True), r"'response_format.json_schema.schema' must be .* not True"),
        (_named(schema={}, grammar="x"), "unknown keys"),
        ({"type": "json_schema", "json_schema": {"schema": {}}}, r"json_schema.name' is missing"),
        (_named(name=123), r"'response_format.json_schema.name' must be 1-64 .* not 123"),
        (_named(name="a b"), r"'response_format.json_schema.name' must be"),
        (_named(name="x" * 65), r"'response_format.json_schema.name' must be"),
        (_named(strict="yes"), r"'response_format.json_schema.strict' must be true or false"),
        (_named(description=5), r"'response_format.json_schema.description' must be a string"),
        ({"type": "json_object", "json_schema": {}}, "unknown keys"),
        ("{not json", "not valid JSON"),
        ([1, 2], "must be an object"),
    ],
)
def test_malformed_formats_are_refused_by_name(value, message):
    """OpenAI's rules for json_schema (name required and its pattern, strict a boolean) and
    a boolean schema refused naming `json_schema.schema`, not its parent."""
    with pytest.raises(InvalidRequest, match=message) as err:
        canonical_response_format(value)
    assert err.value.field == "response_format"


def test_a_schema_xgrammar_cannot_compile_is_a_request_error(engine):
    bad = canonical_response_format(
        {"type": "json_schema", "json_schema": {"name": "v", "schema": {"type": "nonsense"}}}
    )
    with pytest.raises(InvalidRequest, match="'response_format.json_schema.schema'.*nonsense"):
        engine.add_request(_prompt(engine), SamplingParams(max_tokens=4, response_format=bad))
    assert engine.generate([_prompt(engine)], SamplingParams(max_tokens=2))[0].text is not None


def test_min_tokens_with_a_format_is_refused_and_the_node_param_is_checked():
    with pytest.raises(InvalidRequest, match="min_tokens"):
        SamplingParams(min_tokens=2, response_format=JSON_OBJECT)
    params = LLMParams(response_format={"type": "json_object"})
    assert params.sampling().response_format == JSON_OBJECT
    assert LLMParams().sampling().response_format is None
    with pytest.raises(ValueError, match="response_format"):
        LLMParams(response_format={"type": "yaml"})


def test_well_formed_json_schema_keeps_name_and_schema():
    value = _named(name="Ver-dict_1", schema={"type": "object"}, strict=True, description="d")
    canonical = json.loads(canonical_response_format(value))
    assert canonical == {"type": "json_schema",
                         "json_schema": {"name": "Ver-dict_1", "schema": {"type": "object"}}}  # fmt: skip
    assert canonical_response_format(canonical) == canonical_response_format(value)
