"""What ``attach`` returns: the handle that binds one Engine to one Router, and undoes it.

Why a handle: the engine is the runtime's (``simulate`` and ``explain`` build one with no Router),
so it holds nothing of the adapter. What ``attach`` installed on a Router (the LiteLLM callback,
the governed doors, the sync ``completion``) is known here, beside the callback that applies the
engine, and :meth:`Attached.detach` removes it and closes the engine's stores.

The handle reads every other attribute through to its engine, so code written as
``engine = attach(router, policy)``, then ``engine.run_status(run_id)``, keeps working;
``attached.engine`` is the Engine itself.
"""

from __future__ import annotations

import weakref
from typing import Any

from litellm_payg.runtime.engine import Engine


class Attached:
    """One Router governed by one Engine, until :meth:`detach`."""

    def __init__(self, engine: Engine, adapter: Any, router: Any):
        #: the Engine applying the policy (the runtime's: it does not know this handle)
        self.engine = engine
        #: the LiteLLM callback applying the engine to the Router (``PaygRouting``)
        self.adapter = adapter
        # weak: LiteLLM's callback list keeps the adapter, which must not keep the Router alive
        self._router_ref = weakref.ref(router)
        self._detached = False

    def release(self) -> None:
        """Stop governing the Router (its callback, doors and ``completion`` go back to LiteLLM's),
        leaving the engine's stores open. Idempotent."""
        self.adapter.uninstall()
        governed = self._router_ref()
        if governed is not None:
            governed.__dict__.pop("completion", None)  # back to the class's own method

    def detach(self) -> None:
        """Undo ``attach``: stop governing the Router and close the engine's stores. Idempotent."""
        self.release()
        if not self._detached:
            self._detached = True
            self.engine.detach()

    def __getattr__(self, name: str) -> Any:
        # only reached for a name the handle itself lacks: the engine's (``run_status``, ``spend``...)
        if name.startswith("__") or name in ("engine", "adapter", "_router_ref", "_detached"):
            raise AttributeError(name)
        return getattr(self.engine, name)

    def __repr__(self) -> str:
        return f"<Attached {self.engine!r} to {self._router_ref()!r}>"
