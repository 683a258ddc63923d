"""Re-record this project's cassettes: LiteLLM's real provider clients against the local stand-in.

    python tests/sample_user_project/record.py

Each request is sent once to every deployment in config.yaml ("shadow recording"), so a replay can
answer it exactly whichever deployment a policy picks. URIs are rewritten to the providers' real
URLs and credentials are never written (same rules as tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# the stand-in provider is a test server, not part of the package: it lives in tests/standin
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import litellm  # noqa: E402
import vcr  # noqa: E402
import yaml  # noqa: E402

from standin import StandIn  # noqa: E402

HERE = Path(__file__).resolve().parent
CASSETTE = HERE / "cassettes" / "support-week-01.yaml"
SCRUBBED_HEADERS = ["authorization", "x-api-key", "api-key", "x-goog-api-key"]

# Last week's support traffic (user, question, max_tokens).
TRAFFIC = [
    ("alice", "Where is my order 1042? It was due on Monday.", 64),
    ("bob", "How do I change the shipping address of an order that has not shipped yet?", 128),
    ("alice", "Can I get a refund for a damaged item? The box arrived crushed.", 128),
    ("carol", "Summarise our return policy in three bullet points for a customer email.", 256),
]
ANSWERS = {
    "deepseek": "Your order 1042 ships today and arrives within two business days, sorry for the wait.",
    "mistral": "Your order 1042 is on its way: it left our warehouse this morning and should arrive within "
               "two business days. We are sorry for the delay.",
}


def main() -> None:
    model_list = yaml.safe_load((HERE / "config.yaml").read_text())["model_list"]
    CASSETTE.unlink(missing_ok=True)
    with StandIn() as standin:
        for provider, text in ANSWERS.items():
            standin.reply(provider, text=text)

        def before_record_request(req):
            req.uri = standin.real_uri(req.uri)
            for name in [h for h in req.headers if h.lower() == "host"]:
                req.headers[name] = req.host
            return req

        recorder = vcr.VCR(record_mode="all", filter_headers=SCRUBBED_HEADERS, filter_query_parameters=["key"],
                           before_record_request=before_record_request, decode_compressed_response=True)

        async def record() -> None:
            for user, question, max_tokens in TRAFFIC:
                for d in model_list:
                    model = d["litellm_params"]["model"]
                    provider = model.split("/", 1)[0]
                    await litellm.acompletion(model=model, messages=[{"role": "user", "content": question}],
                                              max_tokens=max_tokens, user=user, api_key="sk-test-not-a-key",
                                              api_base=standin.url(provider))

        with recorder.use_cassette(str(CASSETTE)):
            asyncio.run(record())
    print(f"wrote {CASSETTE}")


if __name__ == "__main__":
    main()
