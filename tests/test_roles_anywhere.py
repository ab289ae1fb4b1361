"""The bare-host credentials recipe (IAM Roles Anywhere), read by botocore's own loaders."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import botocore.session
from botocore.compat import compat_shell_split
from botocore.configloader import load_config

SYSTEMD = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
CONFIG = SYSTEMD / "aws-config.example"
DROP_IN = SYSTEMD / "rolesanywhere.conf"
CREDENTIALS_DIRECTORY = "/run/credentials/gamelift-token-broker.service"


def drop_in() -> tuple[dict[str, str], dict[str, str]]:
    """(LoadCredential name -> source file, Environment variables) of the drop-in."""
    text = DROP_IN.read_text()
    credentials = dict(re.findall(r"^LoadCredential=([^:\n]+):(\S+)$", text, re.MULTILINE))
    environment = dict(re.findall(r"^Environment=(\w+)=(\S+)$", text, re.MULTILINE))
    return credentials, environment


def helper_arguments() -> list[str]:
    profile = load_config(str(CONFIG))["profiles"]["default"]
    return compat_shell_split(profile["credential_process"])  # type: ignore[no-any-return]


def test_config_hands_the_loaded_credentials_to_the_signing_helper() -> None:
    credentials, environment = drop_in()
    args = helper_arguments()
    assert args[:2] == ["/usr/local/bin/aws_signing_helper", "credential-process"]
    options = dict(zip(args[2::2], args[3::2], strict=True))
    # The certificate and key are read where systemd puts the LoadCredential= copies.
    for option in ("--certificate", "--private-key"):
        directory, _, name = options[option].rpartition("/")
        assert directory == CREDENTIALS_DIRECTORY
        assert credentials[name].startswith("/etc/gamelift-token-broker/")
    for option, kind in (
        ("--trust-anchor-arn", "trust-anchor"),
        ("--profile-arn", "profile"),
    ):
        assert re.fullmatch(
            rf"arn:aws:rolesanywhere:[a-z0-9-]+:\d{{12}}:{kind}/[\w-]+", options[option]
        )
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", options["--role-arn"])
    assert environment["AWS_CONFIG_FILE"] == "/etc/gamelift-token-broker/aws-config"


def test_botocore_chain_runs_the_process(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The example, with the helper swapped for a fake that checks its arguments, resolved by
    botocore's real credential chain."""
    expected = helper_arguments()[1:]
    helper = tmp_path / "aws_signing_helper"
    helper.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"assert sys.argv[1:] == {expected!r}, sys.argv\n"
        "print(json.dumps({'Version': 1, 'AccessKeyId': 'AKIDFROMHELPER',"
        " 'SecretAccessKey': 'secret', 'SessionToken': 'session',"
        " 'Expiration': '2099-01-01T00:00:00Z'}))\n"
    )
    helper.chmod(0o755)
    config = tmp_path / "aws-config"
    config.write_text(CONFIG.read_text().replace("/usr/local/bin/aws_signing_helper", str(helper)))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    session = botocore.session.Session()
    credentials = session.get_credentials()
    assert credentials is not None
    assert credentials.method == "custom-process"
    assert credentials.get_frozen_credentials().access_key == "AKIDFROMHELPER"
    assert session.get_config_variable("region") == "us-west-2"
