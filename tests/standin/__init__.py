"""A fault-injecting stand-in for LLM providers, for tests.

One local HTTP server speaks the wire formats of OpenAI, DeepSeek, Mistral, Groq, OpenRouter
(chat completions), Anthropic (messages) and Gemini (generateContent), faithfully enough that
LiteLLM's real provider clients accept it, and misbehaves on request (errors in each provider's
own shape, delays, broken streams). See :class:`StandIn`.

A test server, so it lives under ``tests/`` (imported as ``standin``, like the tests' other
sibling modules) and is not in the wheel (``tests/test_layers.py`` checks it). Stdlib only.
"""

from standin._server import FAULT_KINDS, PROVIDERS, Fault, FaultKind, Hit, Reply, StandIn
from standin._wire import DEFAULT_API_BASE

__all__ = ["DEFAULT_API_BASE", "FAULT_KINDS", "PROVIDERS", "Fault", "FaultKind", "Hit", "Reply", "StandIn"]
