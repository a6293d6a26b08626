"""accesslog SLS files applied through Salt's loader into a tmp tree, and their output checked
by the real tools: ``apache2 -t`` for the piped-log config, ``syslog-ng --syntax-only`` for both
syslog-ng sides, the real store for store.sls. Package installs and service reloads are turned
off by pillar (they would touch the machine's own Apache/syslog-ng)."""

import json
import shutil
import subprocess
import sys
import uuid

import pytest

SYSLOG_NG = shutil.which("syslog-ng") or "/usr/sbin/syslog-ng"


def acl_pillar(tmp_path, uri, **extra):
    root = tmp_path / "root"
    pillar = {
        "install_packages": False,
        "reload_services": False,
        "python": sys.executable,
        "paths": {
            "shipper": str(root / "bin/webfarm_shipper.py"),
            "config": str(root / "etc/webfarm/accesslog-shipper.json"),
            "spool_dir": str(root / "spool"),
            "status_file": str(root / "run/shipper.status.json"),
            "log_file": str(root / "log/shipper.log"),
            "imported_journal": str(root / "lib/imported.json"),
            "apache_conf_available": str(root / "apache2/conf-available"),
            "apache_conf_enabled": str(root / "apache2/conf-enabled"),
            "apache_access_log": str(root / "log/access.log"),
            "syslog_ng_conf_dir": str(root / "syslog-ng/conf.d"),
            "cron_file": str(root / "cron.d/webfarm-accesslog-batch"),
        },
        "store": {"uri": uri, "database": f"st{uuid.uuid4().hex[:8]}"},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(pillar.get(key), dict):
            pillar[key].update(value)
        else:
            pillar[key] = value
    (root / "log").mkdir(parents=True, exist_ok=True)
    return {"accesslog": pillar}, root


def apply(modules, sls, pillar, test=False):
    ret = modules.state.sls(sls, pillar=pillar, test=test)
    ret = getattr(ret, "raw", ret)
    assert isinstance(ret, dict), ret
    return ret


def all_ok(ret, test):
    results = {key: value["result"] for key, value in ret.items()}
    want = {None, True} if test else {True}
    assert set(results.values()) <= want, json.dumps(ret, indent=1, default=str)


def apply_file(modules, sls, pillar, testmode, path):
    """Apply ``sls`` (every state ok); return its result and the text of the file ``path`` it
    writes, None under ``test=True``, which must leave ``path`` absent."""
    ret = apply(modules, sls, pillar, test=testmode)
    all_ok(ret, testmode)
    if testmode:
        assert not path.exists()
        return ret, None
    return ret, path.read_text()


def test_piped_config_passes_apache_t(modules, tmp_path, mongo_server, testmode, apache_factory):
    pillar, root = acl_pillar(tmp_path, mongo_server.uri)
    conf = root / "apache2/conf-enabled/webfarm-accesslog.conf"
    ret, text = apply_file(modules, "accesslog.piped", pillar, testmode, conf)
    if testmode:
        assert any(v["result"] is None for v in ret.values())
        return
    assert f'GlobalLog "||{sys.executable} {root}/bin/webfarm_shipper.py --config' in text
    assert text.rstrip().endswith(" combined")
    config = json.loads((root / "etc/webfarm/accesslog-shipper.json").read_text())
    assert config["uri"] == mongo_server.uri and config["log_format"] == "combined"
    assert (root / "etc/webfarm/accesslog-shipper.json").stat().st_mode & 0o077 == 0
    apache = apache_factory(conf, str(root))
    check = apache.check()
    assert check.returncode == 0, check.stderr
    assert "Syntax OK" in check.stderr
    again = apply(modules, "accesslog.piped", pillar)
    assert all(not v["changes"] for v in again.values()), "second run changed something"


def test_piped_custom_format_defines_its_own_logformat(modules, tmp_path, apache_factory):
    fmt = '%v %h %l %u %t "%r" %>s %B %D "%{Referer}i" "%{User-Agent}i"'
    pillar, root = acl_pillar(tmp_path, "mongodb://127.0.0.1:1/", log_format=fmt)
    all_ok(apply(modules, "accesslog.piped", pillar), False)
    conf = root / "apache2/conf-available/webfarm-accesslog.conf"
    assert "LogFormat " in conf.read_text() and "webfarm_shipper" in conf.read_text()
    check = apache_factory(conf, str(root)).check()
    assert check.returncode == 0, check.stderr


def test_apache_t_really_rejects_a_broken_config(apache_factory, tmp_path):
    """Guards the checks above: ``apache2 -t`` must be able to fail in this setup."""
    bad = tmp_path / "bad.conf"
    bad.write_text('GlobalLog "||/bin/true" combined extra args\n')
    assert apache_factory(bad, str(tmp_path)).check().returncode != 0


def syntax_check(conf, tmp_path):
    main = tmp_path / "syslog-ng-main.conf"
    main.write_text(f'@version: 3.38\n@include "{conf}"\n')
    return subprocess.run(
        [SYSLOG_NG, "--syntax-only", "-f", str(main)], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize("log_host", [False, True], ids=["web", "loghost"])
def test_syslog_ng_config_passes_syntax_only(modules, tmp_path, testmode, log_host):
    pillar, root = acl_pillar(
        tmp_path, "mongodb://127.0.0.1:1/", mode="syslog_ng", log_host=log_host
    )
    conf = root / "syslog-ng/conf.d/webfarm-accesslog.conf"
    _, text = apply_file(modules, "accesslog.syslog_ng", pillar, testmode, conf)
    if testmode:
        return
    if log_host:
        assert "program(" in text and "--source-from-line" in text
        assert (root / "bin/webfarm_shipper.py").exists()
    else:
        assert "disk-buffer(" in text and str(root / "log/access.log") in text
        assert not (root / "bin/webfarm_shipper.py").exists()
    check = syntax_check(conf, tmp_path)
    assert check.returncode == 0, check.stderr
    broken = tmp_path / "broken.conf"
    broken.write_text(text.replace("destination(", "destinaton(", 1))
    assert syntax_check(broken, tmp_path).returncode != 0


def test_batch_writes_a_cron_entry_that_runs(modules, tmp_path, testmode):
    pillar, root = acl_pillar(
        tmp_path, "mongodb://127.0.0.1:1/", mode="batch", batch={"files": ["/x/a.log.1"]}
    )
    cron = root / "cron.d/webfarm-accesslog-batch"
    _, text = apply_file(modules, "accesslog.batch", pillar, testmode, cron)
    if testmode:
        return
    line = text.splitlines()[-1]
    assert line.startswith("47 6 * * * root ")
    assert "--imported-journal" in line and line.endswith("--file /x/a.log.1")
    # The command is a real shipper invocation: --help parses with the same arguments.
    argv = line.split(" root ", 1)[1].split()
    proc = subprocess.run([*argv[:2], "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "--imported-journal" in proc.stdout


def test_store_sls_creates_indexes_then_is_idempotent(modules, tmp_path, mongo_server, testmode):
    pillar, _ = acl_pillar(tmp_path, mongo_server.uri)
    pillar["accesslog"]["store"].update(retention_days=10, index_ip=False)
    db = mongo_server.client()[pillar["accesslog"]["store"]["database"]]
    ret = apply(modules, "accesslog.store", pillar, test=testmode)
    all_ok(ret, testmode)
    (state,) = ret.values()
    if testmode:
        assert state["result"] is None
        assert "time_ttl" not in db.access.index_information()
        return
    assert state["changes"]
    info = db.access.index_information()
    assert info["time_ttl"]["expireAfterSeconds"] == 10 * 86400
    assert "path_time" in info and "ip_time" not in info
    (again,) = apply(modules, "accesslog.store", pillar).values()
    assert again["result"] is True and not again["changes"]
    assert "onlyif condition is false" in again["comment"]


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        ({"mode": "none"}, {"accesslog-nothing-to-do"}),
        (
            {"mode": "piped", "store_admin": True},
            {"accesslog-apache-piped-conf", "accesslog-store-indexes"},
        ),
        ({"mode": "none", "log_host": True}, {"accesslog-syslog-ng-conf", "accesslog-shipper"}),
    ],
)
def test_init_picks_per_host_from_pillar(modules, tmp_path, mongo_server, extra, expect):
    pillar, _ = acl_pillar(tmp_path, mongo_server.uri, **extra)
    ret = apply(modules, "accesslog", pillar, test=True)
    ids = {key.split("_|-")[1] for key in ret}
    assert expect <= ids, sorted(ret)
    assert all(v["result"] is not False for v in ret.values())


def test_init_bad_mode_fails_with_a_comment(modules, tmp_path):
    pillar, _ = acl_pillar(tmp_path, "mongodb://127.0.0.1:1/", mode="carrier-pigeon")
    ret = apply(modules, "accesslog", pillar)
    (state,) = ret.values()
    assert state["result"] is False
    assert "must be piped, syslog_ng, batch or none" in state["comment"]


@pytest.mark.parametrize(
    ("sls", "extra", "wanted"),
    [
        ("accesslog.piped", {}, {"accesslog-shipper-pymongo", "accesslog-apache-graceful"}),
        ("accesslog.syslog_ng", {"log_host": True}, {"accesslog-syslog-ng-reload"}),
    ],
)
def test_production_defaults_install_and_reload(modules, sls, extra, wanted):
    """With the default pillar (packages, reloads on) the SLS renders the install and the
    checked reload; they are only shown here, not run, as they would act on this machine."""
    pillar = {"accesslog": extra}
    low = modules.state.show_sls(sls, pillar=pillar)
    low = getattr(low, "raw", low)
    assert isinstance(low, dict), low
    assert wanted <= set(low), sorted(low)
    config = low["accesslog-shipper-config"]["file"]
    assert {"name": "/etc/webfarm/accesslog-shipper.json"} in config
    assert {"mode": "0600"} in config
