"""Only the hooks layer touches model internals (issue 22, item 5).

`interp.hooks.HOOKS_LAYER` names the modules that may know how transformers and accelerate
are built inside. Every other module of interp, probes and circuits is read with `ast` and
fails this test when it

* reads a private attribute (`x._name` or `getattr(x, "_name")`, not a dunder) of anything
  but `self`/`cls` that the module does not define itself (as `self._name = ...` or in a
  class body):
  `model._hf_hook`, `cache._seen_tokens`, `module._forward_hooks`, `hooks._ACTIVE`;
* installs a hook on a module (`register_forward_hook`, `register_forward_pre_hook`, ...);
* reads a KV cache's internals: `key_cache`/`value_cache` (the old layout), the tensors
  `.keys`/`.values` of a cache layer (off `something.layers[i]`, or a loop variable over
  `something.layers`), or imports `transformers.cache_utils` (the layer classes). A cache's
  public methods (`update`, `get_seq_length`, `batch_repeat_interleave`, ...) are fine;
* branches on the architecture: reads `.model_type` or `.architectures`, or compares a
  class name (`type(x).__name__`, `x.__class__.__name__`);
* reads a module by an architecture's own name for it (`.self_attn`, `.o_proj`,
  `.input_layernorm`, `.lm_head`, `.language_model`, ...), which `interp.layouts` finds.

The allowlist is the layer's module list and nothing else: no per-line exemptions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from interp.hooks import HOOKS_LAYER

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("interp", "probes", "circuits")
KV_TENSORS = {"keys", "values"}
ARCHITECTURE = {"model_type", "architectures"}
MODULE_NAMES = {
    "self_attn",
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "input_layernorm",
    "post_attention_layernorm",
    "embed_tokens",
    "lm_head",
    "language_model",
    "vision_tower",
    "multi_modal_projector",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_layers(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "layers"


def _is_class_name(node: ast.AST) -> bool:
    """`type(x).__name__` or `x.__class__.__name__`."""
    if not (isinstance(node, ast.Attribute) and node.attr == "__name__"):
        return False
    inner = node.value
    by_type = isinstance(inner, ast.Call) and getattr(inner.func, "id", None) == "type"
    return by_type or (isinstance(inner, ast.Attribute) and inner.attr == "__class__")


def own_private_names(tree: ast.Module) -> set[str]:
    """Private attributes the module defines: assigned on self/cls, or named in a class body."""
    own = set()
    for node in ast.walk(tree):
        stored = isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
        if stored and getattr(node.value, "id", None) in {"self", "cls"}:
            own.add(node.attr)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    own.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    own.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    own.update(t.id for t in item.targets if isinstance(t, ast.Name))
    return {name for name in own if _is_private(name)}


def _private_getattr(node: ast.Call) -> str | None:
    """The name `getattr(x, "_name")` or `hasattr(x, "_name")` reads, if private."""
    if getattr(node.func, "id", None) not in {"getattr", "hasattr"} or len(node.args) < 2:
        return None
    name = node.args[1]
    is_text = isinstance(name, ast.Constant) and isinstance(name.value, str)
    return name.value if is_text and _is_private(name.value) else None


def violations(source: str) -> Iterator[str]:
    """One line per read of model internals in `source`."""
    tree = ast.parse(source)
    own = own_private_names(tree)
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    layer_vars = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.For | ast.comprehension) and _is_layers(node.iter)
        for target in [node.target]
        if isinstance(target, ast.Name)
    }
    for node in ast.walk(tree):
        where = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "transformers.cache_utils"
        ):
            yield f"{where}: imports {node.module}"
        if isinstance(node, ast.Compare) and any(
            _is_class_name(side) for side in [node.left, *node.comparators]
        ):
            yield f"{where}: compares a class name"
        if isinstance(node, ast.Call) and (private := _private_getattr(node)) not in own | {None}:
            yield f"{where}: reads private {private!r} through getattr"
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        mine = node.attr in own or getattr(owner, "id", None) in {"self", "cls"}
        if _is_private(node.attr) and not mine:
            yield f"{where}: reads private .{node.attr}"
        if node.attr.startswith("register_") and node.attr.endswith("hook"):
            yield f"{where}: installs a hook with .{node.attr}"
        if node.attr in {"key_cache", "value_cache"}:
            yield f"{where}: reads a KV cache's .{node.attr}"
        cache_layer = (isinstance(owner, ast.Subscript) and _is_layers(owner.value)) or (
            isinstance(owner, ast.Name) and owner.id in layer_vars
        )
        if node.attr in KV_TENSORS and cache_layer and id(node) not in called:
            yield f"{where}: reads a cache layer's .{node.attr}"
        if node.attr in ARCHITECTURE:
            yield f"{where}: branches on .{node.attr}"
        if node.attr in MODULE_NAMES:
            yield f"{where}: reads the module .{node.attr} by its architecture's name"


def library_modules() -> list[Path]:
    return sorted(
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if module_name(path) not in HOOKS_LAYER
    )


def test_the_layer_exists() -> None:
    for name in HOOKS_LAYER:
        path = ROOT / Path(*name.split("."))
        assert path.with_suffix(".py").is_file(), name


@pytest.mark.parametrize(
    "source",
    [
        "hook = module._hf_hook",
        "hook = getattr(module, '_hf_hook', None)",
        "handle = model.base_model.register_forward_pre_hook(read, with_kwargs=True)",
        "n = cache._seen_tokens",
        "for layer in cache.layers:\n    k = layer.keys[0]",
        "v = cache.layers[3].values",
        "k = cache.key_cache",
        "from transformers.cache_utils import DynamicLayer",
        "if config.model_type == 'llava': pass",
        "same = type(hf).__name__ == 'LlavaForConditionalGeneration'",
        "weight = layer.self_attn.o_proj.weight",
    ],
)
def test_each_rule_catches_its_internal(source: str) -> None:
    assert list(violations(source))


def test_public_use_passes() -> None:
    source = (
        "class A:\n    _key = 1\n    def same(self, other): return self._key == other._key\n"
        "self._prompt = None\n"
        "cache.update(k, v, 0)\n"
        "keys = mapping.keys()\n"
        "n = cache.get_seq_length()\n"
        "raise ValueError(f'{type(x).__name__}')\n"
    )
    assert not list(violations(source))


@pytest.mark.parametrize("path", library_modules(), ids=lambda p: module_name(p))
def test_no_module_outside_the_layer_reads_internals(path: Path) -> None:
    found = list(violations(path.read_text()))
    assert not found, f"{module_name(path)} reads model internals: {found}"
