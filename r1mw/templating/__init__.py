"""Prompt templates: declared (file or code) and mined from traffic; fast matching; canonical keys.

::

    r1mw/templating/slots.py     slot types (ticker, number, money, percent, date, period, text)
    r1mw/templating/template.py  Template, its patterns compiled to regex alternatives
    r1mw/templating/registry.py  TemplateRegistry: prefix/suffix-indexed matching, render, canonical form
    r1mw/templating/loader.py    template files (TOML, JSON, YAML) and templates declared in code
    r1mw/templating/miner.py     Drain-style miner of templates from unmatched prompts

The ``template`` stage (``r1mw_plugins.template``) puts them on the request path.
"""

from .loader import BUNDLED, code_templates, load_file, templates_from_data, to_template
from .miner import Miner, tokenize
from .registry import MAX_MATCH_CHARS, TemplateMatch, TemplateRegistry, canonical_form
from .slots import SLOT_TYPES, SlotType, infer_type, slot_type
from .template import Template, normalize_text

__all__ = [
    "BUNDLED",
    "MAX_MATCH_CHARS",
    "Miner",
    "SLOT_TYPES",
    "SlotType",
    "Template",
    "TemplateMatch",
    "TemplateRegistry",
    "canonical_form",
    "code_templates",
    "infer_type",
    "load_file",
    "normalize_text",
    "slot_type",
    "templates_from_data",
    "to_template",
    "tokenize",
]
