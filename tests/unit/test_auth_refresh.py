"""kube/client.throttle_auth_refresh: the config loaders' per-request refresh hook runs at most
once per interval, and keeps working though each run installs a new copy of itself."""

from __future__ import annotations

from kubernetes import client

from coai_operator.kube.client import throttle_auth_refresh


class Loader:
    """What kube_config / incluster_config do: the hook re-applies the token and re-installs a
    new closure of itself on every run."""

    def __init__(self) -> None:
        self.runs = 0
        self.token = "t1"

    def set_config(self, configuration: client.Configuration) -> None:
        configuration.api_key["BearerToken"] = self.token

        def refresh(c: client.Configuration) -> None:
            self.runs += 1
            self.set_config(c)

        configuration.refresh_api_key_hook = refresh


def test_the_hook_runs_once_per_interval_and_a_new_token_arrives_after_it() -> None:
    now = [100.0]
    loader, configuration = Loader(), client.Configuration()
    loader.set_config(configuration)
    throttle_auth_refresh(configuration, seconds=5, clock=lambda: now[0])

    for _ in range(50):  # a burst of requests
        configuration.get_api_key_with_prefix("BearerToken")
    assert loader.runs == 1

    loader.token = "t2"  # the token file was rotated
    now[0] += 4.9
    assert configuration.get_api_key_with_prefix("BearerToken") == "t1"
    now[0] += 0.2
    assert configuration.get_api_key_with_prefix("BearerToken") == "t2"
    assert loader.runs == 2
    now[0] += 5
    configuration.get_api_key_with_prefix("BearerToken")
    assert loader.runs == 3  # still throttled, not replaced by the loader's own copy


def test_no_hook_stays_no_hook() -> None:
    configuration = client.Configuration()
    throttle_auth_refresh(configuration)
    assert configuration.refresh_api_key_hook is None
