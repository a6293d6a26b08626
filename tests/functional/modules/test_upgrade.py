"""The ``upgrade`` execution module (and its ``farm`` aliases) through Salt's loader against real rsync, a real memcached
(apt, loopback port) and a real PHP app (``php -S``) serving the release ``current`` points at.
"""

import os
import threading
import time

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from lab.net import free_port
from lab.upgrade import PhpApp, memcached_command

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def app_root(tmp_path):
    root = tmp_path / "app"
    root.mkdir()
    return root


@pytest.fixture
def loaders_pillar(app_root, upgrade_dist):
    return {"upgrade": {"root": str(app_root), "source": str(upgrade_dist / "{version}")}}


@pytest.fixture
def php_app(app_root, upgrade_memcached):
    app = PhpApp(app_root, "127.0.0.1", free_port(), member="m1", memcached=upgrade_memcached)
    yield app
    app.stop()


def test_release_copies_and_switches_current(modules, app_root, upgrade_dist):
    ret = modules.upgrade.release("1.0.0")
    assert ret["version"] == "1.0.0" and ret["previous"] is None
    assert ret["copied"] and ret["switched"]
    assert os.readlink(app_root / "current") == "releases/1.0.0"
    assert (app_root / "current" / "VERSION").read_text() == "1.0.0\n"
    assert (app_root / "current" / "assets" / "app.css").is_file()
    assert modules.upgrade.version() == "1.0.0"

    ret = modules.upgrade.release("2.0.1")
    assert ret["previous"] == "1.0.0" and ret["switched"]
    assert modules.upgrade.version() == "2.0.1"
    assert os.readlink(app_root / "previous") == "releases/1.0.0"
    assert modules.upgrade.releases() == ["1.0.0", "2.0.1"]
    # No partial or temporary entries left beside the releases.
    assert sorted(p.name for p in (app_root / "releases").iterdir()) == ["1.0.0", "2.0.1"]
    assert sorted(p.name for p in app_root.iterdir()) == ["current", "previous", "releases"]


def test_release_again_is_a_no_op(modules):
    modules.upgrade.release("2.0.1")
    ret = modules.upgrade.release("2.0.1")
    assert ret["copied"] is False and ret["switched"] is False


def test_live_release_that_differs_is_refused_and_kept(modules, app_root, tmp_path):
    modules.upgrade.release("2.0.1")
    other = tmp_path / "other" / "2.0.1"
    other.mkdir(parents=True)
    (other / "VERSION").write_text("tampered\n")
    with pytest.raises(CommandExecutionError, match="live and differs"):
        modules.upgrade.release("2.0.1", source=str(other))
    assert (app_root / "current" / "VERSION").read_text() == "2.0.1\n"
    assert (app_root / "current" / "index.php").is_file()


def test_rollback_switches_back_and_forth(modules):
    modules.upgrade.release("1.0.0")
    modules.upgrade.release("2.0.1")
    ret = modules.upgrade.rollback()
    assert ret == {"version": "1.0.0", "previous": "2.0.1", "restarted": None}
    assert modules.upgrade.version() == "1.0.0"
    assert modules.upgrade.rollback()["version"] == "2.0.1"


def test_the_readmes_farm_names_are_aliases_of_upgrade(modules, app_root):
    farm = sorted(name for name in modules if name.startswith("farm."))
    assert farm == sorted(
        f"farm.{n}"
        for n in ("upgrade_step", "rollback_step", "release", "rollback", "version", "flush_cache")
    )
    assert all("CLI Example:" in (modules[name].__doc__ or "") for name in farm)
    # what a CLI call passes beside the arguments (__pub_*) is not handed on
    ret = modules.farm.release("1.0.0", __pub_fun="farm.release", __pub_jid="1")
    assert ret["version"] == "1.0.0" and ret["switched"]
    modules.farm.release(version="2.0.1")
    assert modules.farm.version() == modules.upgrade.version() == "2.0.1"
    assert modules.farm.rollback()["version"] == "1.0.0"
    assert os.readlink(app_root / "current") == "releases/1.0.0"
    with pytest.raises(SaltInvocationError):
        modules.farm.release("../1.0.0")


def test_rollback_without_previous_is_a_clear_error(modules):
    modules.upgrade.release("1.0.0")
    with pytest.raises(CommandExecutionError, match="nothing to roll back"):
        modules.upgrade.rollback()
    assert modules.upgrade.version() == "1.0.0"


@pytest.mark.parametrize("bad", ["../etc", "", "2.0 1", "-rf", "a/b"])
def test_bad_version_is_refused_before_touching_anything(modules, app_root, bad):
    with pytest.raises(SaltInvocationError, match="bad version"):
        modules.upgrade.release(bad)
    assert list(app_root.iterdir()) == []


def test_missing_source_loses_nothing(modules, app_root):
    modules.upgrade.release("1.0.0")
    with pytest.raises(CommandExecutionError, match="does not exist"):
        modules.upgrade.release("9.9.9")
    assert modules.upgrade.version() == "1.0.0"
    assert sorted(p.name for p in (app_root / "releases").iterdir()) == ["1.0.0"]


def test_failed_rsync_leaves_no_partial_release(modules, app_root, tmp_path):
    modules.upgrade.release("1.0.0")
    with pytest.raises(CommandExecutionError, match="rsync"):
        modules.upgrade.release("3.0.0", source="rsync://127.0.0.1:1/nowhere/")
    assert modules.upgrade.version() == "1.0.0"
    assert sorted(p.name for p in (app_root / "releases").iterdir()) == ["1.0.0"]


def test_switch_is_atomic_for_readers(modules, app_root):
    """A reader opening current/VERSION in a loop never fails while releases switch 8 times."""
    modules.upgrade.release("1.0.0")
    modules.upgrade.release("2.0.1")
    errors, seen, stop = [], set(), threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.add((app_root / "current" / "VERSION").read_text())
            except OSError as exc:
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(4):
            modules.upgrade.rollback()
            time.sleep(0.005)
            modules.upgrade.rollback()
            time.sleep(0.005)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert seen == {"1.0.0\n", "2.0.1\n"}


def test_health_sees_the_switched_release_over_http(modules, php_app):
    modules.upgrade.release("1.0.0")
    php_app.start()
    ret = modules.upgrade.health(url=php_app.url, version="1.0.0", timeout=10)
    assert ret["ok"] and ret["status"] == 200 and ret["version"] == "1.0.0", ret
    modules.upgrade.release("2.0.1")
    ret = modules.upgrade.health(url=php_app.url, version="2.0.1", timeout=5)
    assert ret["ok"] and ret["attempts"] == 1, ret


def test_health_reports_wrong_version_and_errors(modules, php_app):
    modules.upgrade.release("1.0.0")
    php_app.start()
    ret = modules.upgrade.health(url=php_app.url, version="2.0.1", timeout=1, interval=0.2)
    assert ret["ok"] is False and "reports version '1.0.0'" in ret["error"]
    assert ret["attempts"] > 1
    modules.upgrade.release("2.0.2")
    ret = modules.upgrade.health(url=php_app.url, version="2.0.2", timeout=1)
    assert ret["ok"] is False and ret["status"] == 500


def test_health_of_a_dead_server_fails_within_timeout(modules):
    ret = modules.upgrade.health(url=f"http://127.0.0.1:{free_port()}/", timeout=1, interval=0.2)
    assert ret["ok"] is False and ret["status"] is None and ret["error"]
    assert ret["seconds"] <= 2


def test_health_rejects_non_http_urls(modules):
    with pytest.raises(SaltInvocationError, match="http"):
        modules.upgrade.health(url="file:///etc/passwd")


def test_app_session_lives_in_memcached_and_flush_cache_empties_it(
    modules, php_app, upgrade_memcached
):
    import http.client

    modules.upgrade.release("1.0.0")
    php_app.start()
    conn = http.client.HTTPConnection(php_app.address, php_app.port, timeout=5)
    conn.request("GET", "/")
    response = conn.getresponse()
    response.read()
    cookie = [c.split(";")[0] for c in response.headers.get_all("Set-Cookie")]
    sid = next(c.split("=", 1)[1] for c in cookie if c.startswith("APPSID="))
    address, port = upgrade_memcached
    assert "VALUE sess:" + sid in memcached_command(address, port, f"get sess:{sid}")

    ret = modules.upgrade.flush_cache(address=address, port=port)
    assert ret == {"address": address, "port": port, "flushed": True}
    assert memcached_command(address, port, f"get sess:{sid}") == "END\r\n"


def test_flush_cache_endpoint_from_pillar(modules, loaders, upgrade_memcached):
    address, port = upgrade_memcached
    memcached_command(address, port, "set probe 0 60 1\r\nx")
    loaders.opts["pillar"]["upgrade"]["memcached"] = {"address": address, "port": port}
    assert modules.upgrade.flush_cache()["flushed"] is True
    assert memcached_command(address, port, "get probe") == "END\r\n"


def test_flush_cache_endpoint_from_the_topology(modules, loaders, upgrade_memcached):
    """Without upgrade:memcached, the farm's memcached in webfarm:topology, found with this
    minion's webfarm:site/farm grains."""
    address, port = upgrade_memcached
    memcached_command(address, port, "set probe 0 60 1\r\nx")
    farms = {"f2": {"memcached": {"address": address, "port": port}, "members": {}}}
    loaders.opts["pillar"]["webfarm"] = {"topology": {"sites": {"s1": {"farms": farms}}}}
    loaders.grains["webfarm"] = {"role": "web", "site": "s1", "farm": "f1", "member": 1}
    with pytest.raises(SaltInvocationError, match="no memcached for this farm"):
        modules.upgrade.flush_cache()
    loaders.grains["webfarm"]["farm"] = "f2"
    assert modules.upgrade.flush_cache() == {"address": address, "port": port, "flushed": True}
    assert memcached_command(address, port, "get probe") == "END\r\n"


def test_flush_cache_errors(modules):
    with pytest.raises(SaltInvocationError, match="no memcached"):
        modules.upgrade.flush_cache()
    with pytest.raises(CommandExecutionError, match="unreachable"):
        modules.upgrade.flush_cache(address="127.0.0.1", port=free_port(), timeout=1)


def test_upgrade_os_goes_through_salt_pkg_on_debian(modules):
    """Real aptpkg call: rsync is installed, so pkg.install changes nothing and says so."""
    ret = modules.upgrade.upgrade_os(pkgs=["rsync"])
    assert ret["function"] == "pkg.install"
    assert ret["kwargs"] == {"pkgs": ["rsync"], "refresh": False}
    assert ret["changes"] == {}


def test_make_conf_keeps_lines_and_adds_binhost(modules, tmp_path):
    path = tmp_path / "make.conf"
    path.write_text('COMMON_FLAGS="-O2 -pipe"\nFEATURES="parallel-fetch"\n')
    text = modules.upgrade.make_conf(
        path=str(path), binhost_url="http://binhost.example/packages", hw_profile="xeon-e5"
    )
    assert text.splitlines() == [
        'COMMON_FLAGS="-O2 -pipe"',
        'FEATURES="parallel-fetch getbinpkg"',
        'PORTAGE_BINHOST="http://binhost.example/packages/xeon-e5"',
    ]
    with pytest.raises(SaltInvocationError, match="hw_profile"):
        modules.upgrade.make_conf(path=str(path), binhost_url="http://b/p", hw_profile="../x")


# ----------------------------------------------------------------------------- the SLS


def _sls(modules, mods, pillar, test=False):
    ret = modules.state.sls(mods, pillar=pillar, test=test).raw
    assert isinstance(ret, dict), ret
    return ret


def test_binhost_sls_renders_make_conf(modules, loaders, tmp_path, testmode):
    """Gentoo cannot run here: the SLS is applied to a make.conf in a temp dir."""
    loaders.opts["grains"]["webfarm"] = {"hw_profile": "xeon-e5"}
    path = tmp_path / "make.conf"
    path.write_text('COMMON_FLAGS="-O2"\nFEATURES="sandbox"\n')
    pillar = {"upgrade": {"make_conf": str(path), "binhost_url": "http://binhost.lan/packages"}}
    ret = _sls(modules, "upgrade.binhost", pillar, test=testmode)
    (state,) = ret.values()
    if testmode:
        assert state["result"] is None and "diff" in state["changes"]
        assert path.read_text() == 'COMMON_FLAGS="-O2"\nFEATURES="sandbox"\n'
        return
    assert state["result"] is True and state["changes"]
    assert path.read_text() == (
        'COMMON_FLAGS="-O2"\nFEATURES="sandbox getbinpkg"\n'
        'PORTAGE_BINHOST="http://binhost.lan/packages/xeon-e5"\n'
    )
    (again,) = _sls(modules, "upgrade.binhost", pillar).values()
    assert again["result"] is True and again["changes"] == {}


def test_binhost_sls_without_url_fails_cleanly(modules, loaders, tmp_path):
    loaders.opts["grains"]["webfarm"] = {"hw_profile": "xeon-e5"}
    path = tmp_path / "make.conf"
    ret = _sls(modules, "upgrade.binhost", {"upgrade": {"make_conf": str(path)}})
    (state,) = ret.values()
    assert state["result"] is False and "upgrade:binhost_url" in state["comment"]
    assert not path.exists()


def _php_pillar(tmp_path, version):
    return {
        "upgrade": {
            "root": str(tmp_path / "app"),
            "php": {
                "version": version,
                "versions": {"8.1": {"memory_limit": "128M"}, "8.2": {}},
                "base": str(tmp_path / "php"),
                "vhost": str(tmp_path / "apache" / "webfarm-php.conf"),
                "pool_port_base": 9000,
            },
        }
    }


def test_php_versions_side_by_side_and_switch(modules, tmp_path):
    ret = _sls(modules, "upgrade.php", _php_pillar(tmp_path, "8.1"))
    assert all(s["result"] is True for s in ret.values()), ret
    php = tmp_path / "php"
    assert "listen = 127.0.0.1:9081" in (php / "8.1" / "pool.conf").read_text()
    assert "listen = 127.0.0.1:9082" in (php / "8.2" / "pool.conf").read_text()
    assert "memory_limit = 128M" in (php / "8.1" / "php.ini").read_text()
    assert os.readlink(php / "active") == "8.1"
    vhost = tmp_path / "apache" / "webfarm-php.conf"
    assert 'SetHandler "proxy:fcgi://127.0.0.1:9081"' in vhost.read_text()

    pool_81 = (php / "8.1" / "pool.conf").read_text()
    ret = _sls(modules, "upgrade.php", _php_pillar(tmp_path, "8.2"))
    changed = sorted(s["__id__"] for s in ret.values() if s["changes"])
    assert changed == ["php-active-version", "php-vhost-handler"]
    assert os.readlink(php / "active") == "8.2"
    assert 'SetHandler "proxy:fcgi://127.0.0.1:9082"' in vhost.read_text()
    assert "Define WEBFARM_PHP_VERSION 8.2" in vhost.read_text()
    assert (php / "8.1" / "pool.conf").read_text() == pool_81

    again = _sls(modules, "upgrade.php", _php_pillar(tmp_path, "8.2"))
    assert [s["__id__"] for s in again.values() if s["changes"]] == []


def test_php_versions_unknown_version_changes_nothing(modules, tmp_path):
    ret = _sls(modules, "upgrade.php", _php_pillar(tmp_path, "7.4"))
    (state,) = ret.values()
    assert state["result"] is False and "7.4 is not one of" in state["comment"]
    assert not (tmp_path / "php").exists()


# ----------------------------------------------------------------------------- farm steps


def test_upgrade_step_switches_checks_health_and_flushes_in_one_call(
    modules, loaders, php_app, upgrade_memcached, tmp_path
):
    address, port = upgrade_memcached
    loaders.opts["pillar"]["upgrade"].update(
        health_url=php_app.url,
        memcached={"address": address, "port": port},
        check_cmd=["test", "-f", str(php_app.root / "releases" / "{version}" / "VERSION")],
    )
    modules.upgrade.release("1.0.0")
    php_app.start()
    memcached_command(address, port, "set probe 0 60 1\r\nx")
    ret = modules.upgrade.upgrade_step("2.0.1", health_timeout=5)
    assert ret["ok"] is True, ret
    assert (ret["before"], ret["version"], ret["error"]) == ("1.0.0", "2.0.1", None)
    assert ret["health"]["version"] == "2.0.1" and ret["flushed"] is True
    assert ret["check"]["argv"][-1] == str(php_app.root / "releases/2.0.1/VERSION")
    assert ret["check"]["ok"] is True
    assert {"precheck", "upgrade", "health", "check", "flush"} <= set(ret["timings"])
    assert memcached_command(address, port, "get probe") == "END\r\n"

    # a failing release check is a failed step, reported as data
    loaders.opts["pillar"]["upgrade"]["checks"] = {"1.0.0": "false"}
    ret = modules.upgrade.upgrade_step("1.0.0", health_timeout=5)
    assert ret["ok"] is False and ret["error"] == "check false exited 1", ret
    assert ret["before"] == "2.0.1"


def test_upgrade_step_of_a_broken_release_then_rollback_step(modules, loaders, php_app):
    loaders.opts["pillar"]["upgrade"]["health_url"] = php_app.url
    modules.upgrade.release("1.0.0")
    php_app.start()
    ret = modules.upgrade.upgrade_step("2.0.2", health_timeout=1, flush=False)
    assert ret["ok"] is False and ret["before"] == "1.0.0"
    assert ret["error"].startswith("health check failed: HTTP 500")
    assert modules.upgrade.version() == "2.0.2"
    back = modules.upgrade.rollback_step("1.0.0", health_timeout=5, flush=False)
    assert back["ok"] is True and back["from"] == "2.0.2", back
    assert back["health"]["version"] == "1.0.0" and modules.upgrade.version() == "1.0.0"
    assert modules.upgrade.rollback_step("1.0.0", health_timeout=5, flush=False)["ok"] is True
    missing = modules.upgrade.rollback_step("0.9.0", flush=False)
    assert missing["ok"] is False and "not under" in missing["error"]


def test_upgrade_step_leaves_a_member_that_is_already_down_alone(modules, loaders, app_root):
    loaders.opts["pillar"]["upgrade"]["health_url"] = f"http://127.0.0.1:{free_port()}/"
    modules.upgrade.release("1.0.0")
    started = time.monotonic()
    ret = modules.upgrade.upgrade_step("2.0.1")
    assert time.monotonic() - started < 5
    assert ret["ok"] is False and ret["down_before"] is True
    assert ret["error"].startswith("down before the upgrade, left as it was")
    assert modules.upgrade.version() == "1.0.0"
    assert not (app_root / "releases" / "2.0.1").exists()


def test_upgrade_step_rejects_bad_input(modules):
    with pytest.raises(SaltInvocationError, match="bad version"):
        modules.upgrade.upgrade_step("../x")
    with pytest.raises(SaltInvocationError, match="kind must be"):
        modules.upgrade.upgrade_step("2.0.1", kind="big")
    with pytest.raises(SaltInvocationError, match="check command"):
        modules.upgrade.upgrade_step("2.0.1", check={"x": 1})


# ----------------------------------------------------------------------------- build host


def _buildhost_pillar(tmp_path, port):
    return {
        "upgrade": {
            "make_conf": str(tmp_path / "etc" / "make.conf"),
            "buildhost": {
                "pkgdir_root": str(tmp_path / "binpkgs"),
                "hosts_allow": ["127.0.0.1"],
                "address": "127.0.0.1",
                "port": port,
                "uid": "root",
                "gid": "root",
                "use_chroot": False,
                "pid_file": str(tmp_path / "rsyncd.pid"),
                "rsyncd_conf": str(tmp_path / "etc" / "rsyncd.conf"),
                "manage_service": False,
            },
        }
    }


def test_buildhost_sls_serves_what_preprod_built_over_rsync(modules, loaders, tmp_path, testmode):
    """Gentoo cannot run here: the SLS writes make.conf and rsyncd.conf into a temp dir, then
    a real rsync daemon started from that rsyncd.conf serves the PKGDIR, and the fetch
    Portage makes for an rsync:// PORTAGE_BINHOST (FETCHCOMMAND_RSYNC) gets its files."""
    import subprocess

    from lab.proc import stop_process
    from lab.upgrade import wait_port

    loaders.opts["grains"]["webfarm"] = {"role": "preprod", "hw_profile": "xeon-e5"}
    port = free_port()
    pillar = _buildhost_pillar(tmp_path, port)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "make.conf").write_text('COMMON_FLAGS="-O2"\nFEATURES="sandbox"\n')
    ret = _sls(modules, "upgrade.buildhost", pillar, test=testmode)
    assert sorted(s["__id__"] for s in ret.values()) == [
        "upgrade-buildhost-make-conf",
        "upgrade-buildhost-pkgdir",
        "upgrade-buildhost-rsyncd-conf",
    ]
    if testmode:
        assert all(s["result"] is None for s in ret.values()), ret
        assert not (tmp_path / "etc" / "rsyncd.conf").exists()
        return
    assert all(s["result"] is True for s in ret.values()), ret
    assert (tmp_path / "etc" / "make.conf").read_text() == (
        f'COMMON_FLAGS="-O2"\nFEATURES="sandbox buildpkg"\nPKGDIR="{tmp_path}/binpkgs/xeon-e5"\n'
    )
    again = _sls(modules, "upgrade.buildhost", pillar)
    assert [s["__id__"] for s in again.values() if s["changes"]] == []

    # What `emerge --buildpkg` + `emaint binhost --fix` leave in PKGDIR (stand-ins).
    pkgdir = tmp_path / "binpkgs" / "xeon-e5"
    (pkgdir / "dev-libs" / "openssl").mkdir(parents=True)
    (pkgdir / "Packages").write_text("PACKAGES: 1\n\nCPV: dev-libs/openssl-3.0.13\n")
    (pkgdir / "dev-libs" / "openssl" / "openssl-3.0.13-1.gpkg.tar").write_bytes(b"\0" * 4096)
    conf = tmp_path / "etc" / "rsyncd.conf"
    daemon = subprocess.Popen(
        ["rsync", "--daemon", "--no-detach", f"--config={conf}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_port("127.0.0.1", port, proc=daemon)
        binhost = modules.upgrade.make_conf(
            path=str(tmp_path / "none"),
            binhost_url=f"rsync://127.0.0.1:{port}/binpkgs",
            hw_profile="xeon-e5",
        )
        url = binhost.split('PORTAGE_BINHOST="', 1)[1].split('"', 1)[0]
        assert url == f"rsync://127.0.0.1:{port}/binpkgs/xeon-e5"
        fetched = tmp_path / "fetched"
        fetched.mkdir()
        # FETCHCOMMAND_RSYNC of Portage's make.globals: rsync -LtvP "${URI}" "${DISTDIR}/${FILE}"
        got = subprocess.run(
            ["rsync", "-LtvP", f"{url}/Packages", str(fetched / "Packages")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert got.returncode == 0, got.stderr
        assert (fetched / "Packages").read_text() == (pkgdir / "Packages").read_text()
        got = subprocess.run(
            ["rsync", "-LtvP", f"{url}/dev-libs/openssl/openssl-3.0.13-1.gpkg.tar", str(fetched)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert got.returncode == 0, got.stderr
        assert (fetched / "openssl-3.0.13-1.gpkg.tar").stat().st_size == 4096
        # read only, and only for hosts_allow (a client from 127.0.0.2 is refused)
        push = subprocess.run(
            ["rsync", str(fetched / "Packages"), f"{url}/evil"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert push.returncode != 0 and "read only" in push.stderr
        other = subprocess.run(
            ["rsync", "--address=127.0.0.2", f"{url}/Packages", str(fetched / "x")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert other.returncode != 0 and "access denied" in other.stderr.lower()
    finally:
        stop_process(daemon)


def test_buildhost_sls_refuses_a_non_preprod_minion(modules, loaders, tmp_path):
    loaders.opts["grains"]["webfarm"] = {"role": "web", "hw_profile": "xeon-e5"}
    ret = _sls(modules, "upgrade.buildhost", _buildhost_pillar(tmp_path, 1873))
    (state,) = ret.values()
    assert state["result"] is False and "for preprod minions" in state["comment"]
    assert not (tmp_path / "etc").exists()
