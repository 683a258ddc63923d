"""``attach``: govern a LiteLLM Router by a policy, in Python (the proxy's handler is ``proxy.py``).

Why its own module: building the engine, registering the callback with LiteLLM's process-wide
lists, routing the synchronous ``router.completion`` through the async path (``sync_bridge.py``)
and undoing all of it (``.detach()`` on the handle it returns, or the Router being collected) is
set-up, not routing.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import litellm

from litellm_payg.adapter.attachment import Attached
from litellm_payg.adapter.payg_routing import PaygRouting
from litellm_payg.adapter.sync_bridge import BRIDGE
from litellm_payg.core.errors import PaygError
from litellm_payg.policy.load import Policy, load_policy
from litellm_payg.runtime.engine import Engine


def attach(
    router: Any,
    policy: str | Path | Mapping[str, Any] | Policy,
    *,
    ledger: Any = None,
    clock: Callable[[], float] | None = None,
) -> Attached:
    """Govern ``router`` by ``policy`` (a YAML path, a dict, or a loaded Policy); returns the handle
    (:class:`~litellm_payg.adapter.attachment.Attached`: ``.engine`` is the Engine, whose attributes
    the handle reads through).

    ``ledger`` (a URL such as ``memory://``, or a ``Ledger``) replaces the policy's ledger, and
    ``clock`` the wall clock budgets and breakers read: tests and simulations inject both instead of
    sleeping in real time or reaching into private attributes.

    Registers a :class:`PaygRouting` callback with LiteLLM, makes the Router's request methods
    governed doors (:mod:`litellm_payg.adapter.ingress`: bad input and deployment names are refused there,
    and each request gets the plugin's id), and routes ``router.completion`` (sync) through the
    async path so it is governed too. ``.detach()`` on the handle undoes all of it.
    """
    loaded = policy if isinstance(policy, Policy) else load_policy(policy, deployments_known=True)  # bind checks prices
    engine = Engine(loaded, ledger=ledger, clock=clock or time.time)
    adapter = PaygRouting(engine)
    adapter.install(router)
    litellm.logging_callback_manager.add_litellm_callback(adapter)
    if adapter not in litellm.callbacks:
        # LiteLLM only warns when its callback list is full (MAX_CALLBACKS): the Router would then
        # run ungoverned, so say so instead
        adapter.uninstall()
        raise PaygError(
            f"litellm-payg: LiteLLM refused to register the policy's callback: its callback list is full "
            f"({len(litellm.callbacks)} callbacks). Detach the engines and drop the Routers you no longer "
            "use (before LiteLLM 1.110 every Router also keeps its own callbacks there for good)"
        )


    def completion(*args: Any, **kwargs: Any) -> Any:
        result = BRIDGE.run(router.acompletion(*args, **kwargs))
        if kwargs.get("stream"):
            return BRIDGE.iterate(result)
        return result

    completion.__doc__ = "Router.completion, governed by litellm-payg (served through acompletion)."
    router.completion = completion

    attached = Attached(engine, adapter, router)
    # a Router dropped without detach() must not leave its callback in LiteLLM's process-wide lists
    weakref.finalize(router, _router_collected, weakref.ref(adapter))
    return attached


def _router_collected(adapter_ref: "weakref.ReferenceType[PaygRouting]") -> None:
    adapter = adapter_ref()
    if adapter is not None:
        adapter.uninstall()
