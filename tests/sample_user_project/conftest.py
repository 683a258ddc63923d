# LiteLLM fetches its price map from the network at import unless told otherwise: stay offline.
import os
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    # This is a separate project with its own pytest.ini; litellm-payg's own suite runs it in a
    # subprocess (tests/test_sample_user_project.py) rather than with its own conftest and options.
    if config.rootpath.resolve() == HERE:
        return
    mine = [item for item in items if Path(str(item.path)).resolve().parent == HERE]
    if mine:
        config.hook.pytest_deselected(items=mine)
        items[:] = [item for item in items if item not in mine]
