"""A rogue monitor through a real salt-master and real salt-minion daemons: not authorized.

``rogue-monitor`` is a minion that lies: its grains say ``webfarm:role: monitor`` and it
publishes its own public key to the mine (``webfarm_nagios_pubkey``), as the real monitor
(``monitor``, the ID the repo's pillar topology names) does. ``nagios.client`` rendered on
a web minion by the master's file server and pillar must authorize the real monitor's key
only (docs/trust.md). Rendering (``state.show_sls``) changes nothing on the host.
"""

import pytest

from lab.sshd import keygen
from tests.support.salt_daemons import stop_and_forget, webfarm_grains

pytestmark = pytest.mark.timeout(600)

WEB = "web-s1-f1-m1"  # named by pillar/webfarm/topology.sls, like "monitor"
MINE = {"webfarm_nagios_pubkey": [{"mine_function": "grains.get"}, "wf_test_pubkey"]}


@pytest.fixture(scope="module")
def monitors(salt_master, salt_minions, salt_cli, tmp_path_factory):
    root = tmp_path_factory.mktemp("nagios-trust")
    keys = {"monitor": keygen(root / "real", "nagios@monitor")}
    keys["rogue-monitor"] = keygen(root / "rogue", "nagios@rogue")
    factories = [
        salt_master.salt_minion_daemon(
            ident,
            overrides={
                "grains": {**webfarm_grains("monitor"), "wf_test_pubkey": key},
                "mine_functions": MINE,
            },
        )
        for ident, key in keys.items()
    ]
    started = []
    try:
        for factory in factories:
            factory.start()
            started.append(factory)
        ret = salt_cli.run("mine.update", minion_tgt="*monitor")
        assert ret.returncode == 0, ret
        yield keys
    finally:
        for factory in started:
            stop_and_forget(salt_master, factory)


def test_a_minion_claiming_the_monitor_role_gets_no_key_authorized(salt_cli, monitors):
    # The rogue's claim is in the mine, found by the grain match the old client used.
    ret = salt_cli.run(
        "mine.get", "webfarm:role:monitor", "webfarm_nagios_pubkey", "grain", minion_tgt=WEB
    )
    assert ret.returncode == 0, ret
    assert ret.data == monitors, ret.data

    ret = salt_cli.run("state.show_sls", "nagios.client", minion_tgt=WEB)
    assert ret.returncode == 0 and isinstance(ret.data, dict), ret
    assert "nagios-client-pillar" not in ret.data, ret.data.get("nagios-client-pillar")
    state = ret.data["nagios-client-authorized-keys"]["file"]
    (lines,) = [d["contents"] for d in state if isinstance(d, dict) and "contents" in d]
    rogue = monitors["rogue-monitor"].split()[1]
    real = monitors["monitor"].split()[1]
    assert [real in line for line in lines] == [True], lines
    assert not any(rogue in line for line in lines), lines
    # from= is the topology's address of the named monitor, not one the rogue reports.
    assert lines[0].startswith('restrict,from="10.77.0.30",command="'), lines
