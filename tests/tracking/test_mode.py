"""Which W&B mode a run picks, from the config, WANDB_MODE and the credentials."""

from __future__ import annotations

from fedlight.tracking.mode import has_api_key, resolve_mode


def test_the_configured_mode_wins(tmp_path):
    env = {"WANDB_MODE": "offline", "WANDB_API_KEY": "k" * 40}
    assert resolve_mode("disabled", env) == "disabled"
    assert resolve_mode("online", {"NETRC": str(tmp_path / "none")}) == "online"


def test_wandb_mode_applies_when_the_config_leaves_it_null():
    assert resolve_mode(None, {"WANDB_MODE": "disabled"}) == "disabled"
    assert resolve_mode(None, {"WANDB_MODE": "dryrun"}) == "offline"


def test_online_only_with_an_api_key(tmp_path):
    no_netrc = {"NETRC": str(tmp_path / "missing")}
    assert resolve_mode(None, no_netrc) == "offline"
    assert resolve_mode(None, {**no_netrc, "WANDB_API_KEY": "k" * 40}) == "online"


def test_a_netrc_entry_counts_only_for_the_w_and_b_host(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert has_api_key({"NETRC": str(netrc)})
    other = {"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.org"}
    assert not has_api_key(other)
    assert resolve_mode(None, other) == "offline"
