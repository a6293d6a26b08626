"""The upgrade lab for pytest: fixtures over :mod:`lab.upgrade` (the PHP app, its releases,
memcached, the drain monitor) with real salt daemons and both HAProxy tiers."""

import threading
from pathlib import Path

import pytest

from lab.net import free_port
from lab.pillar_tree import PillarOverrides
from lab.proc import stop_process
from lab.upgrade import (
    LAB_FARMS,
    LAB_MEMBERS,
    LAB_PREPROD,
    LAB_ROGUE,
    LAB_SITES,
    FarmLab,
    PhpApp,
    build_release,
    install_release,
    lab_grains,
    lab_minion_id,
    lab_minions,
    start_memcached,
)
from tests.support.salt_daemons import master_config


@pytest.fixture(scope="session")
def upgrade_memcached():
    """One real memcached on a free loopback port: ``(address, port)``."""
    address = "127.0.0.1"
    port = free_port(address)
    proc = start_memcached(address, port)
    yield address, port
    stop_process(proc)


@pytest.fixture(scope="session")
def upgrade_dist(tmp_path_factory):
    """Published releases 1.0.0, 2.0.1 and a broken 2.0.2 (answers 500)."""
    dist = tmp_path_factory.mktemp("upgrade-dist")
    build_release(dist, "1.0.0")
    build_release(dist, "2.0.1")
    build_release(dist, "2.0.2", broken=True)
    return dist


# ----------------------------------------------------------------------------- the full lab

SITES, FARMS, MEMBERS = LAB_SITES, LAB_FARMS, LAB_MEMBERS
PREPROD, ROGUE = LAB_PREPROD, LAB_ROGUE
minion_id = lab_minion_id


class UpgradeLab(FarmLab):
    """memcached per farm, a PHP app per member, both HAProxy tiers, per-minion pillar: the
    fixed 2 x 2 x 2 lab of the upgrade tests (its own ids and addresses), with FarmLab's
    pillar, traffic, monitor and stop."""

    def __init__(self, base_dir, dist, pillar_overrides):
        super().__init__(None, base_dir, dist)
        self.pillar_overrides = pillar_overrides
        self.broken_dist = self.base / "dist-broken"

    def start(self):
        members = {}
        for s_index, site in enumerate(SITES, 1):
            for f_index, farm in enumerate(FARMS, 1):
                cache_address = f"127.0.{s_index}.{f_index * 10}"
                cache = (cache_address, free_port(cache_address))
                self._procs.append(start_memcached(*cache))
                self.caches[(site, farm)] = cache
                for member in MEMBERS:
                    ident = minion_id(site, farm, member)
                    address = f"127.0.{s_index}.{f_index * 10 + member}"
                    root = self.base / "apps" / ident
                    install_release(root, self.dist, "1.0.0")
                    app = PhpApp(root, address, free_port(address), member=ident, memcached=cache)
                    self.apps[ident] = app.start()
                    members[(site, farm, member)] = app
        root = self.base / "apps" / PREPROD
        install_release(root, self.dist, "1.0.0")
        self.apps[PREPROD] = PhpApp(root, "127.0.3.10", free_port("127.0.3.10"), member=PREPROD)
        self.apps[PREPROD].start()
        self.topology = self._topology(members)
        self._start_tiers(up_timeout=20)
        self._write_pillar()
        return self

    def _topology(self, members):
        self.primary_port = free_port("127.0.0.1")
        sites = {}
        for s_index, site in enumerate(SITES, 1):
            address = f"127.0.{s_index}.1"
            port = free_port(address)
            sites[site] = {
                "lbs": [{"id": f"u-lb-{site}", "address": address, "port": port}],
                "farms": {
                    farm: {
                        "members": {
                            member: {
                                "id": minion_id(site, farm, member),
                                "address": members[(site, farm, member)].address,
                                "port": members[(site, farm, member)].port,
                            }
                            for member in MEMBERS
                        }
                    }
                    for farm in FARMS
                },
            }
        return {
            "from_mine": False,
            "primary_lb": [
                {"id": "u-lb-primary", "address": "127.0.0.1", "port": self.primary_port}
            ],
            "sites": sites,
        }

    def _write_pillar(self):
        for site in SITES:
            for farm in FARMS:
                for member in MEMBERS:
                    ident = minion_id(site, farm, member)
                    self.pillar_overrides.set(ident, self.member_pillar(ident))
        for site in SITES:
            self.pillar_overrides.set(
                f"u-lb-{site}", {"haproxy": {"site": {"socket": self.instances[site].socket}}}
            )
        self.pillar_overrides.set(PREPROD, self.preprod_pillar(PREPROD))

    def member_pillar(self, ident, source=None, cache=None):
        """The ``upgrade`` pillar of web member ``ident`` (``source`` overrides the dist)."""
        site, farm = ident.split("-")[2:4]
        return super().member_pillar(ident, source, cache or self.caches[(site, farm)])

    def break_member(self, ident, versions):
        """Publish ``versions`` broken (HTTP 500) for ``ident`` only: its pillar source points
        at a second dist. Call ``refresh_pillar`` on it afterwards."""
        for version in versions:
            build_release(self.broken_dist, version, broken=True)
        self.pillar_overrides.set(
            ident, self.member_pillar(ident, source=str(self.broken_dist / "{version}"))
        )

    def mend_member(self, ident):
        self.pillar_overrides.set(ident, self.member_pillar(ident))

    def minion_grains(self):
        return lab_grains()

    def roles(self):
        """``{minion_id: role}`` of the lab's minions, for the master-side topology."""
        return {ident: g["webfarm"]["role"] for ident, g in self.minion_grains().items()}


def upgrade_master_config(base_dir):
    """The example master.d (repo paths, reactors included), a file_tree ext_pillar for
    per-minion settings and the notify file of the failed-upgrade reactor."""
    overrides = master_config()
    overrides["ext_pillar"] = [{"file_tree": {"root_dir": str(Path(base_dir) / "pillar")}}]
    overrides["ext_pillar_first"] = False
    overrides["webfarm_upgrade_notify"] = str(Path(base_dir) / "notify.log")
    return overrides


@pytest.fixture(scope="module")
def upgrade_lab(salt_factories, tmp_path_factory):
    """Real master (+ the upgrade reactors), 8 web minions + 2 site-LB minions + 1 preprod
    minion + 1 rogue minion claiming a web member's role (ROGUE), memcached per farm, a PHP app per member (and on preprod) at release 1.0.0, both
    HAProxy tiers; synced and ready."""
    base = tmp_path_factory.mktemp("upgrade-lab")
    dist = base / "dist"
    for version in ("1.0.0", "2.0.1", "3.0.0", "3.0.1", "3.0.2", "4.0.0"):
        build_release(dist, version)
    build_release(dist, "2.0.2", broken=True)
    overrides = upgrade_master_config(base)
    pillar = PillarOverrides(base / "pillar")
    lab = UpgradeLab(base, dist, pillar)
    started = []
    try:
        lab.start()
        master = salt_factories.salt_master_daemon("wf-upgrade-master", overrides=overrides)
        # Trust from the master: the upgrade runner plans over the minions the master's own
        # pillar topology names (compiled for the master's ID), so the lab names its minions.
        pillar.set(master.config["id"], {"webfarm": {"topology": {"minions": lab.roles()}}})
        master.start()
        started.append(master)
        minions = [
            master.salt_minion_daemon(ident, overrides={"grains": grains})
            for ident, grains in lab_minions().items()
        ]
        # Started a few at a time: each minion start waits seconds for its key exchange.
        for first in range(0, len(minions), 4):
            group = minions[first : first + 4]
            starters = [threading.Thread(target=m.start) for m in group]
            for thread in starters:
                thread.start()
            for thread in starters:
                thread.join(180)
            started.extend(group)
        not_running = [m.id for m in minions if not m.is_running()]
        assert not not_running, f"minions did not start: {not_running}"
        lab.master = master
        lab.notify_log = Path(overrides["webfarm_upgrade_notify"])
        lab.record = Path(master.config["cachedir"]) / "webfarm" / "releases-tested.json"
        lab.salt_cli = master.salt_cli(timeout=120)
        lab.salt_run_cli = master.salt_run_cli(timeout=300)
        ret = lab.salt_cli.run("saltutil.sync_all", minion_tgt="u-*")
        assert ret.returncode == 0, ret
        ret = lab.salt_run_cli.run("saltutil.sync_all")
        assert ret.returncode == 0, ret
        yield lab
    finally:
        # Minions stop in parallel (each takes seconds), the master after them.
        stoppers = [threading.Thread(target=d.terminate) for d in started[1:]]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join(60)
        if started:
            started[0].terminate()
        lab.stop()
