"""LiteLLM's wire format, read without importing LiteLLM: where a request keeps what the plugin
reads (its identity, session, metadata and body fields), which of it a client may send, and the
plugin's per-request state kept beside it.

Why a layer of its own: the core works on the plugin's own data (``RouteRequest``,
``RequestIdentity``) and names nothing of LiteLLM's (``tests/test_layers.py`` fails if a core module
does), while the policy file validates fields that are LiteLLM's (``requests.allow_fields``,
``sessions.id_from``) and so needs this table below the adapter.

May import ``core`` only; imports no LiteLLM module, no HTTP client and no store.
"""
