"""The built-in scope kinds, registered through ``payg_register_scopes`` as a third party's are.

The kinds a budget, a ``when:``, ``sticky_by``, the metrics, ``explain`` and ``simulate`` know come
only from this hook: a policy whose plugin manager has no registration knows no kind. The
definitions of the kinds the core's own fields carry (user, team, key...) are data in
``core/scopes.py`` (``BUILTIN_KINDS``); ``org`` is declared here whole, as a plugin would declare
a kind of its own: one registration.
"""

from __future__ import annotations

from litellm_payg import hookimpl
from litellm_payg.core.scopes import BUILTIN_KINDS, request_attribute

#: the authenticated key's organisation (LiteLLM's ``org_id`` of the key): trusted, read from the key
#: and never from a field the client writes; ``org:*`` caps every key of one organisation together
ORG = request_attribute("org", key_field="org_id", doc="the authenticated key's organisation")


@hookimpl
def payg_register_scopes(register):
    for kind in BUILTIN_KINDS:
        register(kind)
    register(ORG)
