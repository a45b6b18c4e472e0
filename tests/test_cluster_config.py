"""cluster.yaml, validated offline with Ray's own cluster-config schema, and its security
settings: dashboard on 127.0.0.1, token auth, no world-open ingress, own security group,
MLflow behind basic auth with a generated password, nothing secret in the file.

Offline: `prepare_config` (defaults of the provider, read from Ray's package) and
`validate_config` (jsonschema + cross-field checks) are what `ray up` runs before it
talks to the cloud; the AWS bootstrap that follows (IAM, subnets, security groups)
needs AWS and is not run. The tests block sockets while validating to prove it.
"""

import copy
import ipaddress
import json
import os
import re
import shlex
import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
TEXT = (REPO / "cluster.yaml").read_text()
DOCUMENTATION_NETS = [ipaddress.ip_network(n) for n in
                      ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
PRIVATE_ADDRESS = "$(hostname -I | cut -d' ' -f1)"  # the head's own private address


def _block(text: str, name: str) -> tuple[int, int]:
    """Line indexes of the `# >>> name` and `# <<< name` markers."""
    lines = text.splitlines()
    return lines.index(f"# >>> {name}"), lines.index(f"# <<< {name}")


def local_variant(text: str = TEXT) -> str:
    """cluster.yaml with its AWS block replaced by the uncommented local block, as the
    file tells a user to do."""
    lines = text.splitlines()
    aws_start, aws_end = _block(text, "aws")
    local_start, local_end = _block(text, "local")
    uncommented = []
    for line in lines[local_start + 1:local_end]:
        assert line == "#" or line.startswith("# "), f"not a commented line: {line!r}"
        uncommented.append(line[2:])
    # drop the explanation above the first key: it stays a comment
    first_key = next(i for i, line in enumerate(uncommented) if re.match(r"^[a-z_]+:", line))
    rest = [line for i, line in enumerate(lines)
            if not (aws_start <= i <= aws_end or local_start <= i <= local_end)]
    return "\n".join(rest[:aws_start] + uncommented[first_key:] + rest[aws_start:]) + "\n"


@pytest.fixture
def offline(monkeypatch):
    """Any network connection attempt fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"cluster validation tried to connect: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _prepared(text: str) -> dict:
    config = prepare_config(yaml.safe_load(text))
    validate_config(copy.deepcopy(config))  # raises on a schema or cross-field error
    return config


def _ray_starts(config: dict) -> list[str]:
    return [c for key in ("head_start_ray_commands", "worker_start_ray_commands")
            for c in config[key] if "ray start" in c]


def _mlflow_server_args(config: dict) -> list[str]:
    """The arguments of the `depthlab server` command the head runs."""
    commands = [c for c in config["head_start_ray_commands"] if "depthlab server" in c]
    assert len(commands) == 1, commands
    words = shlex.split(commands[0])
    return words[words.index("depthlab") + 2:]


def _value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def _check_security(config: dict, text: str) -> None:
    """The invariants both variants keep."""
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    resources = re.search(r"--resources='([^']*)'", head)
    from depthlab.study import DRIVER_RESOURCE

    assert json.loads(resources.group(1)) == {DRIVER_RESOURCE: 16}
    starts = _ray_starts(config)
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts)
    assert "export RAY_AUTH_MODE=token" in config["setup_commands"][0]
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "~/depthlab" in config["file_mounts"]
    assert any('pip install -q -e ".[server,cluster]"' in c for c in config["setup_commands"])

    args = _mlflow_server_args(config)
    assert "--auth" in args and "--no-auth" not in args
    assert _value(args, "--host") in ("127.0.0.1", PRIVATE_ADDRESS)
    assert _value(args, "--backend-store-uri").startswith("postgresql:")
    assert _value(args, "--artifacts-destination") == "/mnt/depthlab/mlartifacts"
    password_file = _value(args, "--auth-dir") + "/admin_password"
    assert config["cluster_synced_files"] == [password_file]
    assert "MLFLOW_TRACKING_PASSWORD=\"$(cat" in config["setup_commands"][0]

    # nothing world-open, nothing secret; addresses are loopback or documentation ranges
    for wildcard in ("0.0.0.0", "::/0"):
        assert wildcard not in text
    for cidr in re.findall(r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?\b", text):
        net = ipaddress.ip_network(cidr, strict=False)
        assert net.is_loopback or any(net.subnet_of(doc) for doc in DOCUMENTATION_NETS), cidr
    assert "password1234" not in text
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), "a URI with a password"
    for line in text.splitlines():
        if re.search(r"PASSWORD=", line):
            assert 'PASSWORD="$(cat ' in line, line


def test_aws_cluster_validates_offline_with_rays_schema(offline):
    config = _prepared(TEXT)
    assert config["provider"]["type"] == "aws"
    assert "security_group" not in config["provider"]  # Ray's own group opens SSH to all
    types = config["available_node_types"]
    assert set(types) == {"head", "gpu"} and config["head_node_type"] == "head"
    assert (types["gpu"]["min_workers"], types["gpu"]["max_workers"]) == (1, 4)
    assert types["gpu"]["node_config"]["InstanceType"] == "g5.xlarge"
    assert types["head"]["resources"] == {"trial_driver": 16}
    for name, node_type in types.items():
        node = node_type["node_config"]
        assert node["SecurityGroupIds"] and all(g.startswith("sg-")
                                                for g in node["SecurityGroupIds"]), name
        assert node["ImageId"].startswith("ami-"), name
    assert len({t["node_config"]["ImageId"] for t in types.values()}) == 1
    _check_security(config, TEXT)
    mount = " ".join(config["initialization_commands"])
    assert "mount -t nfs4" in mount and "/mnt/depthlab" in mount


def test_the_commented_local_variant_validates_too(offline):
    text = local_variant()
    config = _prepared(text)
    provider = config["provider"]
    assert provider["type"] == "local"
    assert provider["head_ip"] == "192.0.2.10"
    assert provider["worker_ips"] == ["192.0.2.11", "192.0.2.12"]
    (node_type,) = config["available_node_types"].values()  # Ray's single local type
    assert node_type["max_workers"] == 2
    assert "mountpoint -q /mnt/depthlab" in " ".join(config["initialization_commands"])
    _check_security(config, text)


def test_validation_catches_a_typo_key_and_a_missing_head_type(offline):
    config = yaml.safe_load(TEXT)
    config["available_node_types"]["gpu"]["min_worker"] = 1  # typo: Ray's schema refuses it
    with pytest.raises(Exception, match="min_worker"):
        _prepared(yaml.safe_dump(config))
    config = yaml.safe_load(TEXT)
    config["head_node_type"] = "missing"
    with pytest.raises(ValueError, match="head_node_type"):
        _prepared(yaml.safe_dump(config))


@pytest.mark.parametrize("variant", ["aws", "local"])
def test_every_node_command_is_valid_bash_as_ray_runs_it(variant):
    config = _prepared(TEXT if variant == "aws" else local_variant())
    keys = ("initialization_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    commands = [c for key in keys for c in config[key]]
    assert len(commands) >= 15
    for command in commands:  # the wrapper of Ray's SSH command runner (_with_interactive)
        wrapped = f"source /dev/null; export OMP_NUM_THREADS=1 && ({command})"
        checked = subprocess.run(["bash", "-n", "-c", wrapped], capture_output=True, text=True)
        assert checked.returncode == 0, f"{command}\n{checked.stderr}"


def test_the_node_environment_gives_token_mode_shared_data_and_the_mlflow_login(tmp_path):
    config = _prepared(TEXT)
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    uri_line = next(c for c in config["head_setup_commands"] if "MLFLOW_TRACKING_URI" in c)
    for command in (config["setup_commands"][0], uri_line):  # writes ~/.depthlab-cluster.sh
        subprocess.run(["bash", "-c", command], env=env, check=True, timeout=30)
    password_file = tmp_path / "depthlab-cluster" / "mlflow-auth" / "admin_password"
    password_file.parent.mkdir(parents=True)
    password_file.write_text("generated-on-the-head\n")
    shown = subprocess.run(
        ["bash", "-c", ". ~/.depthlab-cluster.sh; echo $RAY_AUTH_MODE $DEPTHLAB_DATA "
         "$MLFLOW_TRACKING_USERNAME $MLFLOW_TRACKING_PASSWORD $MLFLOW_TRACKING_URI $RAY_ADDRESS; "
         "echo $PATH"], env=env, capture_output=True, text=True, check=True, timeout=30)
    values, path = shown.stdout.splitlines()
    token, data, user, password, uri, address = values.split()
    assert address == "auto"  # `ray submit` on the head joins the cluster
    assert (token, data, user, password) == ("token", "/mnt/depthlab/data", "admin",
                                             "generated-on-the-head")
    assert re.fullmatch(r"http://[0-9a-f.:]+:5000", uri) and "127.0.0.1" not in uri
    assert path.startswith(f"{tmp_path}/venv/bin:")
