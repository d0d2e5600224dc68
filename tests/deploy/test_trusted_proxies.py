"""The chart's ``forwardedAllowIps``: what reaches ANTECHAMBER_FORWARDED_ALLOW_IPS, and what the
schema refuses before the services would."""

from typing import Any

import helm_python
import pytest

from runtime.settings import RuntimeSettings
from tests.deploy.test_helm import minimal, render


def setting(values: dict[str, Any]) -> str:
    config = next(d for d in render(values) if d["kind"] == "ConfigMap")["data"]
    value: str = config["ANTECHAMBER_FORWARDED_ALLOW_IPS"]
    return value


def test_no_proxy_is_trusted_by_default() -> None:
    assert setting(minimal()) == ""


def test_the_listed_proxies_reach_every_service_as_one_setting() -> None:
    value = setting(minimal() | {"forwardedAllowIps": ["10.244.0.0/16", "192.0.2.7", "fd00::/8"]})
    assert value == "10.244.0.0/16,192.0.2.7,fd00::/8"
    assert RuntimeSettings(forwarded_allow_ips=value).forwarded_allow_ips == value


@pytest.mark.parametrize("entry", ["*", "ingress.example.org", "10.0.0.0/8, 10.1.0.0/16"])
def test_what_is_not_an_address_or_network_is_refused(entry: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="schema") as refused:
        render(minimal() | {"forwardedAllowIps": [entry]})
    assert "/forwardedAllowIps" in str(refused.value)
