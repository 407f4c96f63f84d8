"""`template`: fills a Jinja text template from its inputs, e.g. a prompt that cites passages.

    prompt:
      kind: template
      params:
        template: |
          Answer from the numbered passages and cite them.
          {% for p in passages %}
          [{{ loop.index }}] {{ p }}
          {% endfor %}
          Question: {{ query }}
      inputs: {query: $inputs.query, passages: rerank.texts}

Templates run in Jinja's SandboxedEnvironment without a loader: no Python code, no attribute
access to internals, no includes. Input ports are the template's variables (BYTES, shape [-1])
unless declared in `inputs`. A port of shape [1] (or []) is a scalar in the template; any other
is a list, which also prints as its items joined by newlines, so `{{ query }}` reads naturally.
BYTES are decoded as UTF-8. The output `text` is BYTES [1].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import model_validator

from nodes.base import Item, Node, NodeParams, Ports, TensorSpec
from nodes.paths import resolve_path
from nodes.port_spec import PortMap, tensor_specs

TEXT = TensorSpec("BYTES", (1,), doc="the filled template")


class TemplateParams(NodeParams):
    """Params of the `template` kind.

    | param         | meaning                                                               |
    |---------------|-----------------------------------------------------------------------|
    | template      | the template text (Jinja syntax)                                      |
    | template_file | or a file holding it (relative to the pipeline's folder, or pkg:)     |
    | inputs        | input ports; inferred from `template` when omitted (BYTES, shape -1)  |
    """

    template: str | None = None
    template_file: str | None = None
    inputs: PortMap | None = None

    @model_validator(mode="after")
    def _one_source(self) -> TemplateParams:
        if (self.template is None) == (self.template_file is None):
            raise ValueError("give exactly one of template and template_file")
        if self.template is not None:
            used = template_variables(self.template)
            if self.inputs is not None:
                unknown = sorted(used - set(self.inputs))
                if unknown:
                    raise ValueError(
                        f"template uses {', '.join(map(repr, unknown))}, which are not inputs; "
                        f"inputs: {', '.join(self.inputs) or '(none)'}"
                    )
        elif self.inputs is None:
            raise ValueError("template_file needs its inputs declared (e.g. inputs: [query])")
        return self


class TemplateNode(Node):
    """Renders the template once per item."""

    deterministic = True  # no sampling: a response cache may serve it
    kind = "template"
    Params = TemplateParams
    max_batch_size = 1 << 16

    params: TemplateParams

    def __init__(self, params: TemplateParams, base_dir: str | Path | None = None):
        super().__init__(params, base_dir)
        self._inputs = type(self).ports(params).inputs
        self._template: Any = None

    @classmethod
    def ports(cls, params: TemplateParams) -> Ports:
        if params.inputs is not None:
            inputs = tensor_specs(params.inputs)
        else:
            names = sorted(template_variables(params.template or ""))
            inputs = {name: TensorSpec("BYTES", (-1,)) for name in names}
        return Ports(inputs=inputs, outputs={"text": TEXT})

    def load(self, device: str) -> None:
        super().load(device)
        text = self.params.template
        if text is None:
            path = resolve_path(self.params.template_file or "", self.base_dir)
            text = path.read_text(encoding="utf-8")
            unknown = sorted(template_variables(text) - set(self._inputs))
            if unknown:
                raise ValueError(
                    f"{path} uses {', '.join(map(repr, unknown))}, which are not inputs; "
                    f"inputs: {', '.join(self._inputs) or '(none)'}"
                )
        self._template = _environment().from_string(text)

    def run_batch(self, items: list[Item]) -> list[Item]:
        out = []
        for item in items:
            context = {name: _value(item.get(name), spec) for name, spec in self._inputs.items()}
            text = self._template.render(context)
            out.append({"text": np.array([text.encode("utf-8")], dtype=object)})
        return out


class Items(list):
    """A list input: iterable and indexable, and printed as its items one per line."""

    def __str__(self) -> str:
        return "\n".join(str(v) for v in self)


def _environment():
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
    )


def template_variables(text: str) -> set[str]:
    """The variables a template reads (ValueError with the line on a syntax error)."""
    from jinja2 import TemplateSyntaxError, meta

    try:
        return set(meta.find_undeclared_variables(_environment().parse(text)))
    except TemplateSyntaxError as exc:
        raise ValueError(f"template line {exc.lineno}: {exc.message}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _value(arr: np.ndarray | None, spec: TensorSpec) -> Any:
    if arr is None:
        return None
    if len(spec.shape) == 0 or tuple(spec.shape) == (1,):
        return _plain(arr.reshape(-1)[0].item() if arr.dtype != object else arr.reshape(-1)[0])
    return Items(_plain(arr.tolist()))
