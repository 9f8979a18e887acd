"""The pytest plugin's options and the board parametrization, seen from a user's test session."""

from __future__ import annotations

pytest_plugins = ["pytester"]

USER_TEST = """
def test_sees_board(board, rack):
    assert board in rack.boards
"""


def test_board_fixture_covers_the_default_rack(pytester):
    pytester.makepyfile(USER_TEST)
    result = pytester.runpytest("-p", "bench", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_sees_board[[]nrf52840-dk[]]*", "*test_sees_board[[]nucleo-f746zg[]]*",
                                 "*test_sees_board[[]rpi-pico[]]*"])


def test_board_option_filters_and_rack_option_reads_a_file(pytester):
    pytester.makepyfile(USER_TEST)
    rack = pytester.makefile(".toml", myrack='[[boards]]\nboard = "rpi-pico"\nname = "pico-a"\n'
                                             '[[boards]]\nboard = "rpi-pico"\nname = "pico-b"\n')
    result = pytester.runpytest("--rack", str(rack), "--board", "pico-b", "-q")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest("--board", "rpi-pico", "-q")
    result.assert_outcomes(passed=1)
