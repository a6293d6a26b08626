"""Pure parts of the stale control-socket cleaner (salt/states/nagios/files/nagios-ssh-clean.py)."""

from pathlib import Path

from lab.modload import load_file

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "salt" / "states" / "nagios" / "files" / "nagios-ssh-clean.py"


def load_cleaner():
    return load_file("nagios_ssh_clean", SCRIPT)


PROC_NET_UNIX = """Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 41001 /run/nagios-ssh/web1.AbCdEfGh12345678
0000000000000000: 00000002 00000000 00010000 0001 01 41002 /run/nagios-ssh/web10
0000000000000000: 00000003 00000000 00000000 0001 03 41003
0000000000000000: 00000002 00000000 00010000 0001 01 41004 @/tmp/abstract
0000000000000000: 00000002 00000000 00010000 0001 01 41005 /run/nagios-ssh/web1
"""


def test_parse_proc_net_unix_keeps_paths_only():
    cleaner = load_cleaner()
    sockets = cleaner.parse_proc_net_unix(PROC_NET_UNIX)
    assert ("/run/nagios-ssh/web10", 41002) in sockets
    assert all(path.startswith("/") for path, _ in sockets)
    assert len(sockets) == 3


def test_master_inodes_match_the_bound_temp_name_not_other_hosts():
    cleaner = load_cleaner()
    sockets = cleaner.parse_proc_net_unix(PROC_NET_UNIX)
    assert cleaner.master_inodes(sockets, "/run/nagios-ssh/web1") == {41001, 41005}
    assert cleaner.master_inodes(sockets, "/run/nagios-ssh/web10") == {41002}
    assert cleaner.master_inodes(sockets, "/run/nagios-ssh/db1") == set()


def test_read_hosts(tmp_path):
    cleaner = load_cleaner()
    hosts = tmp_path / "hosts.list"
    hosts.write_text("web1\n\n  db1  \n")
    assert cleaner.read_hosts(hosts) == {"web1", "db1"}
    assert cleaner.read_hosts(None) is None


def test_missing_control_dir_is_nothing_to_do(tmp_path, capsys):
    cleaner = load_cleaner()
    assert cleaner.main([str(tmp_path / "absent")]) == 0
    assert capsys.readouterr().out == ""


def test_master_of_h1_is_not_the_master_of_h1_dot_b():
    cleaner = load_cleaner()
    sockets = [("/run/nagios-ssh/h1.b", 1), ("/run/nagios-ssh/h1.b.AbCdEfGh12345678", 2),
               ("/run/nagios-ssh/h1.AbCdEfGh12345678", 3)]  # fmt: skip
    assert cleaner.master_inodes(sockets, "/run/nagios-ssh/h1") == {3}
    assert cleaner.master_inodes(sockets, "/run/nagios-ssh/h1.b") == {1, 2}


def test_remove_leaves_a_socket_that_replaced_the_stale_one(tmp_path):
    cleaner = load_cleaner()
    path = tmp_path / "h1"
    path.write_text("old")
    seen = path.lstat()
    (tmp_path / "keep").hardlink_to(path)  # the old inode stays in use: not reused below
    path.unlink()
    path.write_text("new master")
    assert cleaner.remove(path, seen) is False and path.exists()
    assert cleaner.remove(path, path.lstat()) is True and not path.exists()
