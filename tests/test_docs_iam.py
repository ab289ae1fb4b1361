"""docs/operations.md's IAM policy: valid JSON, naming exactly the GameLift actions we call."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def called_actions() -> set[str]:
    """Every `self._client.<operation>` in the GameLift client, as the API's action name."""
    tree = ast.parse((ROOT / "service/gamelift/client.py").read_text())
    actions = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "_client"
        ):
            actions.add("".join(part.title() for part in node.attr.split("_")))
    return actions


def test_the_policy_names_every_action_the_broker_calls() -> None:
    text = (ROOT / "docs/operations.md").read_text()
    section = text.split("## IAM permissions", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```json\n(.*?)```", section, re.DOTALL)
    policy = json.loads(block)
    assert policy["Version"] == "2012-10-17"
    named = {
        action.removeprefix("gamelift:")
        for statement in policy["Statement"]
        for action in statement["Action"]
    }
    assert (
        named
        == called_actions()
        == {
            "GetComputeAuthToken",
            "DescribeCompute",
            "RegisterCompute",
            "DeregisterCompute",
        }
    )
    for action in called_actions():
        assert f"`gamelift:{action}`" in section  # and each mode's list says which it needs
