"""The shipper's LogFormat parser and spool, imported by path from the file Salt deploys."""

import datetime as dt

import pytest

from lab.shipper import load_shipper

shipper = load_shipper()

LINE = (
    '83.149.9.216 - - [17/May/2015:10:05:03 +0000] "GET /a/b.png?x=1&y=2 HTTP/1.1" 200 203023 '
    '"http://semicomplete.com/" "Mozilla/5.0 (Macintosh)"'
)


def test_combined_line_is_fully_typed():
    doc = shipper.LogFormat("combined").parse(LINE)
    assert doc == {
        "ip": "83.149.9.216",
        "logname": None,
        "user": None,
        "time": dt.datetime(2015, 5, 17, 10, 5, 3, tzinfo=dt.UTC),
        "tz": "+0000",
        "method": "GET",
        "path": "/a/b.png",
        "query": "x=1&y=2",
        "protocol": "HTTP/1.1",
        "status": 200,
        "bytes": 203023,
        "referer": "http://semicomplete.com/",
        "user_agent": "Mozilla/5.0 (Macintosh)",
    }


def test_timezone_is_kept():
    line = '1.2.3.4 - bob [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 304 - "-" "-"'
    doc = shipper.LogFormat("combined").parse(line)
    assert doc["time"].utcoffset() == dt.timedelta(hours=-7)
    assert doc["time"].astimezone(dt.UTC).hour == 20
    assert doc["tz"] == "-0700"
    assert (doc["user"], doc["referer"], doc["user_agent"]) == ("bob", None, None)


def test_clf_bytes_dash_is_zero_and_other_dashes_are_absent():
    # Apache's CLF: %b logs "-" for a response with no body (this 304); %B logs 0 for it.
    line = '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 304 - "-" "-"'
    doc = shipper.LogFormat("combined").parse(line)
    assert doc["bytes"] == 0 and isinstance(doc["bytes"], int)
    assert (doc["logname"], doc["user"], doc["referer"], doc["user_agent"]) == (None,) * 4
    sized = shipper.LogFormat("%h %B %b %{X-Forwarded-For}i").parse("1.2.3.4 0 - -")
    assert sized["bytes"] == 0 and sized["req_x_forwarded_for"] is None


def test_common_and_vhost_combined():
    common = shipper.LogFormat("common").parse(LINE.rsplit(' "http', 1)[0])
    assert common["status"] == 200 and "referer" not in common
    vhost = shipper.LogFormat("vhost_combined").parse("www.example.com:443 " + LINE)
    assert (vhost["vhost"], vhost["port"], vhost["bytes_sent"]) == ("www.example.com", 443, 203023)


def test_every_listed_directive():
    fmt = shipper.LogFormat(
        '%a %p %v %V %m %U %q %H %s %B %D %T "%{X-Forwarded-For}i" "%{Content-Type}o" '
        "%{UNIQUE_ID}e %%"
    )
    doc = fmt.parse(
        "10.0.0.1 80 web1 www.example.com POST /login ?next=/ HTTP/2.0 302 15 1234 0 "
        '"192.0.2.7, 10.0.0.9" "text/html; charset=utf-8" YJk3 %'
    )
    assert doc == {
        "ip": "10.0.0.1",
        "port": 80,
        "vhost": "web1",
        "server_name": "www.example.com",
        "method": "POST",
        "path": "/login",
        "query": "next=/",
        "protocol": "HTTP/2.0",
        "status": 302,
        "bytes": 15,
        "duration_us": 1234,
        "duration_s": 0,
        "req_x_forwarded_for": "192.0.2.7, 10.0.0.9",
        "resp_content_type": "text/html; charset=utf-8",
        "env_unique_id": "YJk3",
    }


def test_original_and_final_status():
    doc = shipper.LogFormat("%h %s %>s").parse("1.2.3.4 200 404")
    assert (doc["status_original"], doc["status"]) == (200, 404)


def test_escaped_quotes_and_bytes_are_decoded():
    line = (
        '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /q\\"x HTTP/1.1" 200 1 '
        '"-" "agent \\"quoted\\" \\x41\\\\"'
    )
    doc = shipper.LogFormat("combined").parse(line)
    assert doc["path"] == '/q"x'
    assert doc["user_agent"] == 'agent "quoted" A\\'


def test_unsplittable_request_is_kept_raw():
    line = '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "\\x16\\x03\\x01" 400 226 "-" "-"'
    doc = shipper.LogFormat("combined").parse(line)
    assert doc["request"] == "\x16\x03\x01" and "method" not in doc
    doc = shipper.LogFormat("combined").parse(line.replace('"\\x16\\x03\\x01"', '"-"'))
    assert doc["request"] is None


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5 "-" "cut', "at '\"'"),
        ("", "after %h"),
        (
            '1.2.3.4 - - [17/Foo/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5 "-" "-"',
            "bad timestamp",
        ),
        ('1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 2000 5 "-" "-"', "after %>s"),
        (
            '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5 "-" "-" extra',
            "unexpected text",
        ),
    ],
)
def test_failures_name_the_reason(line, why):
    with pytest.raises(shipper.ParseError) as err:
        shipper.LogFormat("combined").parse(line)
    assert why in str(err.value)


@pytest.mark.parametrize(
    ("fmt", "why"),
    [
        ("%h %Z", "unsupported"),
        ("%{%Y}t", "custom time"),
        ("%i", "needs a name"),
        ("", "non-empty"),
        ("plain", "no directives"),
    ],
)
def test_unsupported_formats_are_refused(fmt, why):
    with pytest.raises(shipper.FormatError, match=why):
        shipper.LogFormat(fmt)


def test_real_file_counts_add_up(shared_data):
    text = (shared_data / "elastic-apache_logs.log").read_text(encoding="utf-8")
    lines = text.split("\n")[:-1]
    docs, dead = shipper.parse_lines(shipper.LogFormat("combined"), lines, source="s")
    assert len(docs) + len(dead) == len(lines) == 10000
    assert len(dead) == 1 and dead[0]["line"] == lines[8898]
    assert all(d["source"] == "s" and isinstance(d["status"], int) for d in docs)
    assert {d["time"].tzinfo for d in docs} == {dt.UTC}


def test_spool_is_a_bounded_ordered_fifo_with_an_alert_file(tmp_path):
    spool = shipper.Spool(tmp_path / "sp", max_bytes=100, alert_ratio=0.5, lock_wait=0)
    spool.append([b"b1", b"b2"])
    spool.append([b"c1"])
    assert not (tmp_path / "sp" / "ALERT").exists()
    spool.prepend([b"a1"])
    spool.append([b"x" * 50])
    assert (tmp_path / "sp" / "ALERT").exists() and spool.alert
    with pytest.raises(shipper.SpoolFull):
        spool.append([b"y" * 40])
    with pytest.raises(RuntimeError, match="locked by another shipper"):
        shipper.Spool(tmp_path / "sp", max_bytes=100, lock_wait=0)
    seen = []
    while spool.has_data():
        seq, lines = spool.head()
        seen.extend(lines)
        spool.remove(seq)
    assert seen == [b"a1", b"b1", b"b2", b"c1", b"x" * 50]
    assert spool.bytes == 0 and not (tmp_path / "sp" / "ALERT").exists()
    spool.close()


def test_spool_survives_a_restart(tmp_path):
    spool = shipper.Spool(tmp_path / "sp", max_bytes=10**6, lock_wait=0)
    spool.append([b"one"])
    spool.prepend([b"zero"])
    spool.close()
    again = shipper.Spool(tmp_path / "sp", max_bytes=10**6, lock_wait=0)
    assert again.head()[1] == [b"zero"]
    assert again.bytes == len(b"zero\none\n")
    again.close()


def test_settings_from_config_file_and_flags(tmp_path):
    config = tmp_path / "shipper.json"
    config.write_text('{"database": "d1", "batch_size": 50, "files": ["/var/log/a.log"]}')
    settings = shipper.load_settings(["--config", str(config), "--batch-size", "70"])
    assert (settings["database"], settings["batch_size"], settings["files"]) == (
        "d1",
        70,
        ["/var/log/a.log"],
    )
    config.write_text('{"databse": "typo"}')
    with pytest.raises(SystemExit):
        shipper.load_settings(["--config", str(config)])


def test_alert_command_is_an_argument_list(tmp_path):
    settings = shipper.load_settings(["--alert-command", "salt-call event.send 'a b'"])
    assert settings["alert_command"] == ["salt-call", "event.send", "a b"]
    config = tmp_path / "shipper.json"
    config.write_text('{"alert_command": "not a list"}')
    assert shipper.load_settings(["--config", str(config)])["alert_command"] == ["not", "a", "list"]
    config.write_text('{"alert_command": [1, 2]}')
    with pytest.raises(SystemExit):
        shipper.load_settings(["--config", str(config)])
    with pytest.raises(SystemExit):
        shipper.load_settings(["--alert-command", ""])
