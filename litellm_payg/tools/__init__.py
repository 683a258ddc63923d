"""What people run: the ``litellm-payg`` CLI (``cli``), ``simulate``, ``report``, ``replay`` and the
pytest plugin (``testing``). The top layer: it may import anything, nothing imports it.
"""
