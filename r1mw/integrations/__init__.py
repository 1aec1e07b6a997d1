"""Integrations that switch r1mw on inside another tool's own extension points.

* :mod:`r1mw.integrations.litellm`: ``litellm.acompletion``, unwrapped, served by r1mw as
  LiteLLM's cache, configured from a LiteLLM config YAML.
"""
