"""What the plugin does with a request, written once for live traffic and for ``simulate``:
the engine (``decide`` over a snapshot), spend control (reserve before, settle after), the failover
hop, and the lifecycle that ties them into one pick per attempt.

May import: ``core``, the plugin contract, ``policy`` and ``stores``; never LiteLLM's Router or
proxy (that is ``adapter``).
"""
