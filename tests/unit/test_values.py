"""webfarm_values: flags and integers read one way for every capability."""

import pytest

import webfarm_values as values


class Refused(Exception):
    pass


@pytest.mark.parametrize(
    ("given", "want"),
    [
        (True, True),
        (False, False),
        ("yes", True),
        (" TRUE ", True),
        ("1", True),
        ("No", False),
        ("0", False),
    ],
)
def test_as_bool_reads_yaml_and_cli_spellings(given, want):
    assert values.as_bool(given, "force") is want


@pytest.mark.parametrize("given", ["maybe", "", None, 1, 0, 2.0, []])
def test_as_bool_refuses_anything_else_with_the_callers_error(given):
    with pytest.raises(Refused, match=r"^force must be true or false, got "):
        values.as_bool(given, "force", Refused)


@pytest.mark.parametrize(
    ("given", "low", "high", "want"),
    [(3, None, None, 3), ("42", 1, None, 42), (" 7 ", 1, 9, 7), (0, 0, None, 0), (-5, None, 0, -5)],
)
def test_as_int_reads_ints_and_their_decimal_strings(given, low, high, want):
    assert values.as_int(given, "n", low, high) == want


@pytest.mark.parametrize(
    ("given", "low", "high", "message"),
    [
        ("two", None, None, "n must be an integer, got 'two'"),
        (True, 1, None, "n must be an integer >= 1, got True"),
        (2.5, None, None, "n must be an integer, got 2.5"),
        (None, None, 9, "n must be an integer <= 9, got None"),
        (0, 1, 1000, "n must be an integer between 1 and 1000, got 0"),
        ("1001", 1, 1000, "n must be an integer between 1 and 1000, got '1001'"),
    ],
)
def test_as_int_refuses_with_the_range_it_wanted(given, low, high, message):
    with pytest.raises(Refused) as caught:
        values.as_int(given, "n", low, high, Refused)
    assert str(caught.value) == message


def test_a_callable_error_keeps_a_callers_exception_shape():
    def plan_error(message):
        return Refused([message])

    with pytest.raises(Refused) as caught:
        values.as_int("x", "batch", 1, error=plan_error)
    assert caught.value.args == (["batch must be an integer >= 1, got 'x'"],)
