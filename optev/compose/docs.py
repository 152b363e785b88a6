"""Formulation reference: the generated part of ``formulations/README.md``.

The README documents the math of every block by hand; the parts that would drift from
the code are generated here from the code itself:

- the keys of a formulation file with their defaults (:mod:`optev.compose.formulation`);
- the block registry :data:`~optev.compose.formulation.BLOCKS` (build order, variants,
  modules);
- every block's options, with default and description, from the ``OPTIONS`` dict of the
  block module and of the module that declares a variant (the options a variant accepts
  are read back from :func:`~optev.compose.formulation.parse_formulation`, the validator
  itself, so the table lists exactly what a formulation file may set);
- the objective terms of :func:`~optev.compose.formulation.objective_terms` and the
  module that registers each;
- the shipped formulation files (``formulations/*.toml``): their blocks, variants,
  non-default options, objective weights and windows.

``python -m optev.compose.docs`` rewrites the part of ``formulations/README.md`` between
:data:`BEGIN_MARKER` and :data:`END_MARKER` (the rest of the file is left as written);
``python -m optev.compose.docs --check`` exits with status 1 if that part is out of date.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from optev.blocks.objectives import TERMS
from optev.compose.formulation import (BLOCKS, FORMULATIONS_DIR, SOLVER_KEYS, WINDOW_KEYS, load_formulation,
                                       objective_terms, parse_formulation)

README_MD = FORMULATIONS_DIR / "README.md"
"""The formulation documentation whose generated part this module writes."""

BEGIN_MARKER = "<!-- generated: begin -->"
END_MARKER = "<!-- generated: end -->"
"""Markers around the generated part of :data:`README_MD` (each on a line of its own)."""

VARIANT_MODULES: dict[tuple[str, str], str] = {
    ("station", "aggregate"): "optev.blocks.envelope",
    ("network", "lindistflow"): "optev.blocks.lindistflow",
}
"""Variants declared in a module other than their block's own, which adds its ``OPTIONS``
to the block's (as :func:`~optev.compose.formulation.parse_formulation` does)."""

TOP_KEY_DOCS: dict[str, str] = {
    "name": "name of the formulation (required); shown in results and error messages",
    "description": "one paragraph: what the formulation models and which requirements it covers",
}
WINDOW_KEY_DOCS: dict[str, str] = {
    "steps": "number of steps T of a window (`optev solve --steps` overrides it)",
    "step": "step length Δt, a pandas duration such as `15min` or `5min` (`optev solve --step` overrides it)",
}
SOLVER_KEY_DOCS: dict[str, str] = {
    "soft_limits": "`true`: hard limits become penalised slacks whose use is reported in `summary.json` "
                   "(`optev solve --soft-limits` turns it on)",
    "slack_penalty": "price of one unit of slack (kWh, kW, kVA; 0.001 p.u.² of squared voltage), currency",
    "time_limit_s": "HiGHS time limit per solve, s",
    "threads": "HiGHS threads (unset: HiGHS's default)",
}
"""Descriptions of the keys outside ``[blocks]`` and ``[objective]`` (their defaults come
from :mod:`optev.compose.formulation`; a key without a description is an error here)."""


# -- what the code declares ------------------------------------------------------------------
def variant_module(block: str, variant: str) -> str:
    """The module that declares ``variant`` of ``block``."""
    return VARIANT_MODULES.get((block, variant), BLOCKS[block].module)


def variant_options(block: str, variant: str) -> dict[str, Any]:
    """Options a formulation may set for ``variant`` of ``block``, with their defaults.

    Read back from :func:`~optev.compose.formulation.parse_formulation`, which fills in
    every accepted option: the list is exactly what validation accepts.
    """
    data = {"name": "reference", "blocks": {"ev": {}, "network": {}, block: {"variant": variant}},
            "objective": {"energy_cost": 1.0}}
    return dict(parse_formulation(data, "<reference>").blocks[block][1])


def option_description(block: str, variant: str, option: str) -> str:
    """Description of ``option`` of ``variant`` of ``block`` (the variant module's ``OPTIONS``
    first, then the block module's), or a LookupError naming what is missing."""
    for module in (variant_module(block, variant), BLOCKS[block].module):
        options = getattr(importlib.import_module(module), "OPTIONS", {})
        if option in options:
            return str(options[option][1])
    raise LookupError(f"option {option!r} of block {block!r} (variant {variant!r}) has no description; "
                      f"add the variant's module to optev.compose.docs.VARIANT_MODULES")


def term_modules() -> dict[str, str]:
    """Module that registers each objective term."""
    objective_terms()  # import every module that registers terms
    return {name: f.__module__ for name, (f, _) in TERMS.items()}


# -- rendering ---------------------------------------------------------------------------------
def toml_value(value: Any) -> str:
    """``value`` written as in a TOML file (``None``: unset)."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def _cell(text: str) -> str:
    """Text for a Markdown table cell (pipes escaped, no line breaks)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _keys_section() -> list[str]:
    rows = [[f"`{k}`", "*required*" if k == "name" else '`""`', TOP_KEY_DOCS[k]] for k in TOP_KEY_DOCS]
    for section, defaults, docs in (("window", WINDOW_KEYS, WINDOW_KEY_DOCS), ("solver", SOLVER_KEYS, SOLVER_KEY_DOCS)):
        for key, default in defaults.items():
            if key not in docs:
                raise LookupError(f"[{section}] key {key!r} has no description in optev.compose.docs")
            rows.append([f"`[{section}] {key}`", f"`{toml_value(default)}`", docs[key]])
    rows.append(["`[blocks.<block>] variant`", "first variant listed below",
                 "variant of the block; every other key of the table is an option of that variant"])
    rows.append(["`[objective] <term>`", "0 (term off)",
                 "weight of an objective term; at least one weight must be non-zero"])
    return ["### Formulation file keys", "", *_table(["key", "default", "meaning"], rows)]


def _blocks_section() -> list[str]:
    rows = []
    for order, (name, spec) in enumerate(BLOCKS.items(), start=1):
        variants = ", ".join(f"`{v}`" + (" (default)" if i == 0 else "") for i, v in enumerate(spec.variants))
        by_module: dict[str, list[str]] = {}
        for v in spec.variants:
            by_module.setdefault(variant_module(name, v), []).append(v)
        modules = ", ".join(f"`{m}`" if len(by_module) == 1 else f"`{m}` ({', '.join(vs)})"
                            for m, vs in by_module.items())
        required = "yes" if name in ("ev", "network") else ("no (`per_ev` when absent)" if name == "station" else "no")
        rows.append([str(order), f"`{name}`", variants, required, modules])
    return ["### Blocks and variants (in build order)", "",
            *_table(["order", "block", "variants", "required", "declared in"], rows)]


def _options_section() -> list[str]:
    out = ["### Block options", "",
           "Set in `[blocks.<block>]` next to `variant`; an option of another variant is an error.", ""]
    for name, spec in BLOCKS.items():
        per_variant = {v: variant_options(name, v) for v in spec.variants}
        keys: list[str] = []
        for opts in per_variant.values():
            keys += [k for k in opts if k not in keys]
        out += [f"#### `{name}`", ""]
        if not keys:
            out += ["No options.", ""]
            continue
        rows = []
        for key in keys:
            having = [v for v in spec.variants if key in per_variant[v]]
            defaults = {toml_value(per_variant[v][key]) for v in having}
            if len(defaults) == 1:
                default = f"`{defaults.pop()}`"
            else:
                default = "; ".join(f"{v}: `{toml_value(per_variant[v][key])}`" for v in having)
            where = "all" if len(having) == len(spec.variants) else ", ".join(f"`{v}`" for v in having)
            rows.append([f"`{key}`", default, where, option_description(name, having[0], key)])
        out += _table(["option", "default", "variants", "description"], rows)
    return out


def _terms_section() -> list[str]:
    terms = objective_terms()
    modules = term_modules()
    rows = [[f"`{name}`", desc, f"`{modules[name]}`"] for name, desc in terms.items()]
    return ["### Objective terms", "",
            "Selected and weighted in `[objective]`; the weighted sum is minimised.", "",
            *_table(["term", "description (unit)", "registered in"], rows)]


def _shipped_section() -> list[str]:
    rows = []
    descriptions = []
    for path in sorted(FORMULATIONS_DIR.glob("*.toml")):
        form = load_formulation(path)
        blocks = []
        for name, (variant, options) in form.blocks.items():
            defaults = variant_options(name, variant)
            changed = [f"{k} = {toml_value(v)}" for k, v in options.items() if defaults.get(k) != v]
            blocks.append(f"`{name}`: `{variant}`" + (f" ({', '.join(changed)})" if changed else ""))
        weights = ", ".join(f"`{k}` = {toml_value(v)}" for k, v in form.objective.items())
        window = f"{form.window['steps']} × {form.window['step']}"
        rows.append([f"`{path.name}`", "<br>".join(blocks), weights, window])
        descriptions.append(f"- `{path.name}` (`{form.name}`): {' '.join(form.description.split())}")
    return ["### Shipped formulation files", "",
            "Blocks with their variant and the options that differ from the defaults.", "",
            *_table(["file", "blocks", "objective weights", "window"], rows), *descriptions, ""]


def formulation_reference() -> str:
    """The generated part of ``formulations/README.md`` (Markdown, without the markers).

    Returns
    -------
    str
        Formulation file keys, the block registry, every block's options, the objective
        terms and the shipped formulation files, each as a Markdown table.
    """
    parts = [
        "<!-- Generated by `python -m optev.compose.docs` from optev/compose/formulation.py, the OPTIONS of "
        "each block module, the objective-term registry and formulations/*.toml; do not edit by hand. -->",
        "",
        *_keys_section(), *_blocks_section(), *_options_section(), *_terms_section(), *_shipped_section(),
    ]
    return "\n".join(parts).rstrip("\n") + "\n"


def generated_part(text: str) -> str:
    """The text between the markers of a README (ValueError if they are missing)."""
    begin = text.find(BEGIN_MARKER + "\n")
    end = text.find(END_MARKER, begin + 1)
    if begin < 0 or end < 0:
        raise ValueError(f"the README needs the lines {BEGIN_MARKER!r} and {END_MARKER!r}, in that order")
    return text[begin + len(BEGIN_MARKER) + 1:end]


def update_readme(text: str, reference: str | None = None) -> str:
    """``text`` with the part between the markers replaced by ``reference`` (default:
    :func:`formulation_reference`)."""
    old = generated_part(text)
    begin = text.find(BEGIN_MARKER + "\n") + len(BEGIN_MARKER) + 1
    new = formulation_reference() if reference is None else reference
    return text[:begin] + new + text[begin + len(old):]


def main(argv: list[str] | None = None) -> int:
    """Rewrite the generated part of :data:`README_MD` (or check it with ``--check``)."""
    parser = argparse.ArgumentParser(prog="python -m optev.compose.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the generated part is out of date")
    parser.add_argument("--output", type=Path, default=README_MD, help="README to update (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.output.exists():
        print(f"{args.output} does not exist", file=sys.stderr)
        return 2
    current = args.output.read_text(encoding="utf-8")
    try:
        text = update_readme(current)
    except ValueError as exc:
        print(f"{args.output}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if current != text:
            print(f"{args.output} is out of date; run `python -m optev.compose.docs`", file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
