"""The thin layer that wires the engine into LiteLLM's Router through LiteLLM's own extension points.

* The governed doors (``ingress.py``): the Router's request methods, wrapped by ``install``, and in
  the proxy the pre-call hook (``proxy.py``), check each request (forged ``payg_*`` state,
  malformed fields, a deployment named as the model) and mint the plugin's id for it; the state
  every hook below reads lives in :class:`~litellm_payg.runtime.request_state.RequestStates`, keyed by that
  id, never in anything a client can write.
* ``async_pre_call_deployment_hook``, once per attempt: refuses an attempt on a governed deployment
  that no pick chose (the backstop of the doors), and sets ``first_token_timeout_ms``.
* ``async_filter_deployments`` (a ``CustomLogger`` hook the Router runs on every pick, retry and
  fallback hop, after its own cooldown and health filtering) narrows the group's deployments to the
  one the policy orders first among those not yet tried for this request, and reserves its estimate
  against the budgets. LiteLLM keeps doing its health checks, cooldowns, retries and fallbacks; we
  only decide the candidate.
* ``async_post_call_failure_deployment_hook`` runs inline once per failed attempt: the attempt's
  reservation is released (it did not bill), the failure is classified and fed to the circuit
  breaker, and the next pick of the same request follows ``failover.on``. An attempt that failed
  *after* the provider answered HTTP 200 (``Failure.answered``: a garbled body, a Gemini answer
  without ``usageMetadata``, a stream that broke) has billed at least the prompt, so it is charged
  an estimate instead (:meth:`PaygRouting._charge_answered_failure`).
* ``async_log_failure_event``: a stream that fails while it is being read (after LiteLLM's call
  returned it) never reaches the hook above; LiteLLM reports it only to the failure log. Such an
  attempt's reservation is released there, or charged the same estimate when the stream had
  begun (LiteLLM recovered partial usage from it).
* ``async_post_call_success_deployment_hook`` runs inline once per answered non-stream attempt: the
  response validators run, then the attempt is settled there with LiteLLM's real cost
  (:meth:`PaygRouting.settle_attempt`), before the Router returns the answer. The door settles what
  that hook never sees (:meth:`PaygRouting.answered`): an answer LiteLLM's cache served ($0, marked
  ``cache_hit``), and a stream, when its last chunk is read or when it is dropped unread
  (``streams.py``). An answer that reported no usage at all (LiteLLM then says 0 tokens, $0) is
  charged an estimate instead, LiteLLM's token counter x the deployment's price, and logged and
  marked as such (:meth:`PaygRouting._estimate_missing_usage`): it billed, so it must not be
  recorded at $0. Every path charges through one function (:meth:`PaygRouting.settle_answer`).
* ``async_log_success_event`` (LiteLLM's background worker, after the answer; for streams, after the
  last chunk) settles what is still open then (the proxy's disconnect billing, call types priced
  per unit) the same way; an attempt settled inline has no reservation left, so it is not charged
  twice. A script whose event loop ends right after its last call never runs this worker: that is
  why answers are settled inline.
* The decision of each attempt (the pick it went to, and why the others were not) goes to the
  ``payg_decision`` observers once per attempt, and is stamped on the request's ``metadata`` dict
  (``payg_decision``) as an output: the plugin never reads it back.
* How much an answer is charged is ``charges.py``'s business; these hooks decide when.
* The synchronous ``router.completion`` skips async filters, so ``attach`` routes it through the async
  path (``sync_bridge.py``) instead of letting it go unrouted.

Where each part lives (each module says why it is its own):

* ``payg_routing.py``: the :class:`PaygRouting` callback, binding to a Router, install/uninstall;
* ``request_door.py``: opening and finding a request's state (the doors' part);
* ``pick_filter.py``: ``async_filter_deployments`` and ``async_pre_call_deployment_hook``;
* ``answer_path.py`` and ``answer_charges.py``: when an answer is settled, and what it is charged;
* ``failure_path.py``: the two failure callbacks, and what an answered failure billed;
* ``response_guard.py``: the validators' guardrail; ``context_window.py``: the larger-context alias;
* ``attach.py``: :func:`attach`.

None of them calls the spend guard or the health store: a request's reservations, settlements,
breaker records, failover hop and ``payg_outcome`` are its
:class:`~litellm_payg.runtime.attempt.Attempt`'s (``runtime/attempt.py``); this module keeps the
names the rest of the package and its users import from here.
"""

from __future__ import annotations

from litellm_payg.adapter.attach import attach
from litellm_payg.adapter.context_window import LARGER_CONTEXT_SUFFIX
from litellm_payg.adapter.payg_routing import PaygRouting
from litellm_payg.adapter.request_door import DECISION_KEY, OWN_KEYS
from litellm_payg.adapter.response_guard import ResponseGuard
from litellm_payg.runtime.attempt import AnsweredRequest

__all__ = ["AnsweredRequest", "DECISION_KEY", "LARGER_CONTEXT_SUFFIX", "OWN_KEYS", "PaygRouting", "ResponseGuard", "attach"]
