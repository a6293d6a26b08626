import os
import stat

import pytest
from salt.exceptions import CommandExecutionError

import webfarm_files


def test_read_text_missing_is_none_and_bad_bytes_are_replaced(tmp_path):
    assert webfarm_files.read_text(tmp_path / "absent") is None
    (tmp_path / "latin1").write_bytes(b"caf\xe9\n")
    assert webfarm_files.read_text(tmp_path / "latin1") == "caf\ufffd\n"


def test_read_text_of_a_directory_is_a_clean_error(tmp_path):
    with pytest.raises(CommandExecutionError, match="cannot read"):
        webfarm_files.read_text(tmp_path)


def test_write_atomic_creates_dirs_sets_mode_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "b" / "file.conf"
    webfarm_files.write_atomic(target, "one\n", 0o600)
    assert target.read_text() == "one\n"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    webfarm_files.write_atomic(target, "two\n")
    assert target.read_text() == "two\n"
    assert os.listdir(target.parent) == ["file.conf"]


def test_a_failing_check_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "haproxy.cfg"
    target.write_text("good\n")
    seen = []

    def reject(tmp):
        seen.append(open(tmp).read())
        raise ValueError("invalid")

    with pytest.raises(ValueError, match="invalid"):
        webfarm_files.write_atomic(target, "bad\n", check=reject)
    assert seen == ["bad\n"]
    assert target.read_text() == "good\n"
    assert os.listdir(tmp_path) == ["haproxy.cfg"]


def test_unwritable_directory_is_a_clean_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(CommandExecutionError, match="cannot write"):
        webfarm_files.write_atomic(tmp_path / "file" / "below", "x")
