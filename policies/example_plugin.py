"""An example custom policy plugin: keep requests tagged ``eu`` on EU-hosted deployments.

It adds a rule type, ``data_residency``, through the same ``payg_register_rules`` hook the built-in
rules use. A policy file loads it with ``plugins: [example_plugin.py]`` (a path relative to the policy
file, or a dotted module name) and then names the rule in a route::

    plugins: [example_plugin.py]
    models:
      mistral/mistral-large-latest: {labels: {region: eu}}
    routes:
      chat:
        - data_residency: {tag: eu, label: region, value: eu}
        - quality_floor: {min_quality: 0.8}

Where a deployment is hosted comes from its labels: the policy's ``models: <model>: labels:``, or
the deployment's own ``model_info`` in the LiteLLM config (e.g. ``model_info: {region: eu}``).
"""

from __future__ import annotations

from pydantic import Field

import litellm_payg
from litellm_payg import Rule, RuleOptions, Step


class DataResidencyOptions(RuleOptions):
    tag: str = Field(min_length=1, description="requests carrying this tag are restricted")
    label: str = Field(default="region", min_length=1, description="the deployment label to check")
    value: str = Field(min_length=1, description="the label value a deployment must have")


class DataResidency(Rule):
    """Tagged requests may only go to deployments whose ``label`` equals ``value``; others are untouched."""

    name = "data_residency"
    Options = DataResidencyOptions

    def apply(self, request, candidates):
        opts = self.options
        if opts.tag not in request.tags:
            return Step(list(candidates))
        kept, dropped = [], []
        for c in candidates:
            if c.labels.get(opts.label) == opts.value:
                kept.append(c)
            else:
                hosted = c.labels.get(opts.label, "unlabelled")
                dropped.append(Step.drop(
                    c, f"request tagged {opts.tag!r} must stay on {opts.label}={opts.value} ({c.model} is {hosted})", self.name
                ))
        return Step(kept, dropped, f"data_residency: tag {opts.tag!r} -> {opts.label}={opts.value}")


@litellm_payg.hookimpl
def payg_register_rules(register):
    register(DataResidency)
