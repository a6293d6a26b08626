"""The highstate by role: salt/states/top.sls and pillar/top.sls rendered by Salt itself.

Each minion is Salt's loader with the project's file_roots and pillar_roots (the repo's
``pillar`` after a temp root that plays the operator's ``pillar/secrets``), the minion id
of the example topology and the ``webfarm:role`` grain set; ``state.show_top`` gives the SLS
its top matches, ``state.show_sls``/``state.sls test=True`` what those render to. Nothing
here writes outside the test's temp dirs: the failing states write nothing by design.
"""

import pytest
import yaml
from saltfactories.utils.functional import Loaders

from tests.support.salt_env import REPO

COMMON = ["motd", "less", "nagios.client", "webfarm.role_check"]

# minion id of the example topology -> (role, the SLS its top gives beyond COMMON)
ROLES = {
    "web-s1-f1-m1": ("web", ["accesslog", "upgrade.php"]),
    "lb-primary": ("lb-primary", ["haproxy", "haproxy.sysctl", "haproxy.vrrp"]),
    "lb-s1": ("lb-site", ["haproxy", "haproxy.sysctl", "haproxy.vrrp"]),
    "db-primary": ("db-primary", ["mysqlsnap.schedule"]),
    "db-replica": ("db-replica", ["mysqlsnap.schedule"]),
    "monitor": ("monitor", ["nagios.server"]),
    "logstore": ("logstore", ["accesslog"]),
    "preprod-generic": ("preprod", ["upgrade.php"]),
}

SECRETS = {
    "db.sls": "password: s3cret-db\n",
    "lb.sls": "vrrp_auth_pass: vr1pw\n",
    "accesslog.sls": "store_uri: mongodb://shipper:s3cret-mongo@10.77.0.40:27017/\n",
}


@pytest.fixture
def secrets_root(tmp_path):
    """An empty operator pillar root: pillar/secrets/*.sls not written (the default)."""
    root = tmp_path / "operator-pillar"
    (root / "secrets").mkdir(parents=True)
    return root


def with_secrets(root):
    for name, text in SECRETS.items():
        (root / "secrets" / name).write_text(text)
    return root


@pytest.fixture
def minion(minion_config, secrets_root):
    """``minion(id, role, **grains)``: loaders of that minion; reset afterwards."""
    made = []

    def make(minion_id, role=None, **grains):
        opts = dict(minion_config)
        opts["id"] = minion_id
        opts["pillar"] = {}
        opts["pillar_roots"] = {"base": [str(secrets_root), str(REPO / "pillar")]}
        opts["state_top"] = "top.sls"
        loaders = Loaders(opts)
        made.append(loaders)
        loaders.grains["id"] = minion_id
        loaders.grains.pop("webfarm", None)
        if role is not None:
            loaders.grains["webfarm"] = {"role": role}
        loaders.grains.update(grains)
        loaders.refresh_pillar()
        return loaders

    yield make
    for loaders in made:
        loaders.reset_state()


def top_of(loaders):
    top = loaders.modules.state.show_top()
    assert isinstance(top, dict) and "base" in top, top
    return top["base"]


@pytest.mark.parametrize("minion_id", sorted(ROLES))
def test_each_role_gets_its_sls(minion, minion_id):
    role, extra = ROLES[minion_id]
    assert top_of(minion(minion_id, role)) == COMMON + extra


def test_roles_of_the_top_are_the_roles_the_check_knows():
    known = yaml.safe_load((REPO / "salt" / "states" / "webfarm" / "roles.yaml").read_text())
    assert sorted(known) == sorted(role for role, _ in ROLES.values())


def test_gentoo_web_and_preprod_get_the_binhost_sls(minion):
    web = top_of(minion("web-s1-f1-m1", "web", os_family="Gentoo"))
    assert web == [*COMMON, "accesslog", "upgrade.php", "upgrade.binhost"]
    preprod = top_of(minion("preprod-generic", "preprod", os_family="Gentoo"))
    assert preprod == [*COMMON, "upgrade.php", "upgrade.buildhost"]


@pytest.mark.parametrize(
    "grains, what",
    [({}, "missing"), ({"webfarm": {"role": "webserver"}}, "not a known role: webserver")],
    ids=["missing", "unknown"],
)
def test_a_minion_without_a_known_role_fails_naming_the_grain(minion, grains, what, testmode):
    loaders = minion("web-s1-f1-m1", **grains)
    assert top_of(loaders) == COMMON
    ret = loaders.modules.state.sls("webfarm.role_check", test=testmode).raw
    (only,) = ret.values()
    assert only["result"] is False
    assert only["comment"].startswith(f"grain webfarm:role is {what}; set it to one of db-primary")
    assert only["changes"] == {}


def test_a_known_role_passes_the_check_without_changes(minion):
    ret = minion("db-replica", "db-replica").modules.state.sls("webfarm.role_check").raw
    (only,) = ret.values()
    assert only["result"] is True and only["changes"] == {}
    assert only["name"] == "grain webfarm:role is db-replica"


def test_pillar_is_composed_per_role(minion):
    web = minion("web-s1-f1-m1", "web").pillar
    assert {"webfarm", "nagios", "mine_functions", "accesslog", "upgrade"} <= set(web)
    assert not {"mysqlsnap", "haproxy", "policyroute"} & set(web)
    assert web["accesslog"]["mode"] == "piped" and web["accesslog"]["store_admin"] is False
    store = minion("logstore", "logstore").pillar["accesslog"]
    assert store["mode"] == "none" and store["store_admin"] is True
    lb = minion("lb-s1", "lb-site").pillar
    assert "haproxy" in lb and not {"accesslog", "mysqlsnap"} & set(lb)
    db = minion("db-replica", "db-replica").pillar
    assert "mysqlsnap" in db and not {"accesslog", "haproxy", "upgrade"} & set(db)


def test_secrets_reach_only_the_minions_the_topology_names(minion, secrets_root):
    with_secrets(secrets_root)
    replica = minion("db-replica", "db-replica").pillar
    assert replica["mysqlsnap"]["connection"]["password"] == "s3cret-db"
    assert minion("lb-s1", "lb-site").pillar["haproxy"]["vrrp"]["auth_pass"] == "vr1pw"
    uri = minion("web-s1-f1-m1", "web").pillar["accesslog"]["store"]["uri"]
    assert uri == "mongodb://shipper:s3cret-mongo@10.77.0.40:27017/"
    # a minion the topology does not name gets the role's pillar but not its secret, whatever
    # role grain it claims
    rogue = minion("rogue-host", "db-replica").pillar
    assert "mysqlsnap" in rogue and rogue["mysqlsnap"]["connection"]["password"] is None
    rogue_web = minion("rogue-host", "web").pillar
    assert "@" not in rogue_web["accesslog"]["store"]["uri"]


def test_without_secrets_the_pillar_renders_with_them_unset(minion):
    replica = minion("db-replica", "db-replica").pillar
    assert "_errors" not in replica
    assert replica["mysqlsnap"]["connection"]["password"] is None
    assert "auth_pass" not in minion("lb-s1", "lb-site").pillar["haproxy"]["vrrp"]


def test_missing_db_secret_fails_mysql_backup_cleanly(minion, testmode):
    loaders = minion("db-replica", "db-replica")
    ret = loaders.modules.state.sls("mysqlsnap.schedule", test=testmode).raw
    assert [v["__id__"] for v in ret.values()] == ["mysqlsnap-backup"]
    (only,) = ret.values()
    assert only["result"] is False and only["changes"] == {}
    assert "write pillar/secrets/db.sls" in only["comment"]
    assert "no backup scheduled" in only["comment"]


def test_with_the_db_secret_the_replica_schedules_its_backup(minion, secrets_root):
    with_secrets(secrets_root)
    low = minion("db-replica", "db-replica").modules.state.show_sls("mysqlsnap.schedule")
    assert isinstance(low, dict), low
    assert "present" in low["mysqlsnap-backup"]["schedule"]
    assert "s3cret-db" not in repr(low)  # the job reads it from pillar when it runs


def test_missing_store_credentials_fail_accesslog_before_writing(minion, tmp_path, testmode):
    loaders = minion("web-s1-f1-m1", "web")
    conf = tmp_path / "shipper.json"
    pillar = {"accesslog": {"require_store_credentials": True, "paths": {"config": str(conf)}}}
    ret = loaders.modules.state.sls("accesslog", pillar=pillar, test=testmode).raw
    (only,) = ret.values()
    assert only["__id__"] == "accesslog-store-credentials"
    assert only["result"] is False and only["changes"] == {}
    assert "write pillar/secrets/accesslog.sls" in only["comment"]
    assert not conf.exists()


def test_vrrp_v2_without_its_secret_fails_haproxy_vrrp_cleanly(minion, tmp_path):
    loaders = minion("lb-primary", "lb-primary")
    conf = tmp_path / "keepalived.conf"
    topo = {"primary_vip": {"address": "10.77.0.100", "port": 80, "vrid": 71, "prefix": 16}}
    vrrp = {"version": 2, "advert_int": 1, "install_package": False, "config": str(conf)}
    pillar = {"webfarm": {"topology": topo}, "haproxy": {"vrrp": vrrp, "start": False}}
    ret = loaders.modules.state.sls("haproxy.vrrp", pillar=pillar, test=True).raw
    (only,) = ret.values()
    assert only["result"] is False and only["changes"] == {}
    assert "auth_pass" in only["comment"] and "Traceback" not in only["comment"]
    assert not conf.exists()


def test_only_a_vip_in_the_topology_adds_vrrp(minion, tmp_path):
    loaders = minion("lb-s1", "lb-site")
    assert top_of(loaders) == [*COMMON, "haproxy", "haproxy.sysctl", "haproxy.vrrp"]
    # site s2 has no VIP: its LB gets the tier and its tuning, no keepalived
    assert top_of(minion("lb-s2", "lb-site")) == [*COMMON, "haproxy", "haproxy.sysctl"]
    # the top reads the minion's pillar: give site s2 a VIP through pillar_roots
    extra = tmp_path / "operator-pillar" / "webfarm"
    extra.mkdir()
    topo = yaml.safe_load((REPO / "pillar" / "webfarm" / "topology.sls").read_text())
    topo["webfarm"]["topology"]["sites"]["s2"]["vip"] = {"address": "10.77.2.100", "vrid": 73}
    (extra / "topology.sls").write_text(yaml.safe_dump(topo))
    lb_s2 = minion("lb-s2", "lb-site")
    assert top_of(lb_s2) == [*COMMON, "haproxy", "haproxy.sysctl", "haproxy.vrrp"]


def test_policyroute_pillar_adds_routing(minion, tmp_path):
    loaders = minion("lb-primary", "lb-primary")
    extra = tmp_path / "operator-pillar"
    # as pillar/top.sls says: copy the example up, then uncomment it in the top
    example = REPO / "pillar" / "examples" / "policyroute.sls"
    (extra / "policyroute.sls").write_text(example.read_text())
    (extra / "top.sls").write_text(
        (REPO / "pillar" / "top.sls").read_text().replace("# - policyroute", "- policyroute")
    )
    loaders.refresh_pillar()
    assert top_of(loaders) == [*COMMON, "policyroute", "haproxy", "haproxy.sysctl", "haproxy.vrrp"]


def test_orch_cluster_renders_in_dependency_order(minion):
    loaders = minion("wf-master")
    high = loaders.modules.state.show_sls("orch.cluster")
    assert isinstance(high, dict), high
    waits = sorted(sid for sid in high if sid.startswith("webfarm-answers-"))
    assert waits == [
        f"webfarm-answers-s{s}-f{f}-{m}" for s in (1, 2) for f in (1, 2) for m in (1, 2)
    ]
    wait = high["webfarm-answers-s1-f2-2"]["salt"]
    assert {"tgt": "lb-s1,lb-s1b"} in wait and {"arg": ["http://10.77.1.22:80/"]} in wait
    # webfarm.wait_http fails when the member does not answer in time (a strict gate)
    assert {"name": "webfarm.wait_http"} in wait and {
        "kwarg": {"timeout": 120, "interval": 1}
    } in wait

    def requires(sid):
        (state,) = (k for k in high[sid] if not k.startswith("__"))
        reqs = [d["require"] for d in high[sid][state] if isinstance(d, dict) and "require" in d]
        return {next(iter(r.values())) for r in (reqs[0] if reqs else [])}

    assert requires("webfarm-mine-publish") == {"webfarm-refresh-pillar"}
    assert requires("webfarm-monitor-server") == {"webfarm-mine-publish"}
    assert requires("webfarm-clients") == {"webfarm-monitor-server"}
    assert requires("webfarm-monitor") == {"webfarm-clients"}
    assert requires("webfarm-lb-site") == {"webfarm-monitor", *waits}
    assert requires("webfarm-lb-primary") == {"webfarm-lb-site"}
    clients = high["webfarm-clients"]["salt"]
    assert {"highstate": True} in clients and {"tgt_type": "compound"} in clients
    assert not any("batch" in item for item in clients if isinstance(item, dict))  # all at once


def test_orch_cluster_batch_runs_each_highstate_step_that_many_at_a_time(minion):
    loaders = minion("wf-master")
    high = loaders.modules.state.show_sls("orch.cluster", pillar={"orch": {"batch": "10%"}})
    assert isinstance(high, dict), high
    steps = {
        sid: {k: v for item in body["salt"] if isinstance(item, dict) for k, v in item.items()}
        for sid, body in high.items()
        if "salt" in body
    }
    highstates = sorted(sid for sid, args in steps.items() if args.get("highstate"))
    assert highstates == [
        "webfarm-clients",
        "webfarm-lb-primary",
        "webfarm-lb-site",
        "webfarm-monitor",
    ]
    assert {sid: steps[sid].get("batch") for sid in highstates} == dict.fromkeys(highstates, "10%")
    assert "batch" not in steps["webfarm-mine-publish"]  # only the highstates are batched
