"""Board catalogue and rack files: the shipped data is valid, bad files fail naming file and key."""

from pathlib import Path

import pytest

from bench.config.boards import BOARDS_DIR, ConfigError, filter_rack, load_board_file, load_catalogue, load_rack


def test_catalogue_has_the_three_boards_with_their_datasheet_sizes():
    cat = load_catalogue()
    sizes = {name: (b.sram_bytes, b.flash_bytes, b.cpu_hz, b.twin.machine) for name, b in cat.items()}
    assert sizes == {
        "nucleo-f746zg": (320 * 1024, 1024 * 1024, 216_000_000, "mps2-an500"),
        "nrf52840-dk": (256 * 1024, 1024 * 1024, 64_000_000, "mps2-an386"),
        "rpi-pico": (264 * 1024, 2048 * 1024, 125_000_000, "mps2-an385"),
    }


def test_default_rack_is_one_twin_per_board():
    rack = load_rack(None, load_catalogue())
    assert [(e.board, e.kind) for e in rack.boards] == [
        ("nrf52840-dk", "emulated"), ("nucleo-f746zg", "emulated"), ("rpi-pico", "emulated")]


def _board_text(**replace: str) -> str:
    text = (BOARDS_DIR / "rpi-pico.toml").read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


def test_unknown_key_names_file_and_key(tmp_path: Path):
    path = tmp_path / "rpi-pico.toml"
    path.write_text(_board_text(**{"[twin]\n": "[twin]\nmachien = 'x'\n"}))
    with pytest.raises(ConfigError, match=r"rpi-pico.toml: key 'twin.machien': unknown key"):
        load_board_file(path)


def test_missing_field_names_file_and_key(tmp_path: Path):
    path = tmp_path / "rpi-pico.toml"
    path.write_text(_board_text(**{"sram_bytes = 270336": ""}))
    with pytest.raises(ConfigError, match=r"rpi-pico.toml: key 'sram_bytes': Field required"):
        load_board_file(path)


def test_name_must_match_file(tmp_path: Path):
    path = tmp_path / "other.toml"
    path.write_text(_board_text())
    with pytest.raises(ConfigError, match="must match the file name 'other'"):
        load_board_file(path)


def test_invalid_toml_is_reported_with_path(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text("name = ")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_board_file(path)


def test_rack_file_with_unknown_board_and_hardware_entry(tmp_path: Path):
    path = tmp_path / "lab.toml"
    path.write_text('[[boards]]\nboard = "nucleo-f746zg"\nkind = "hardware"\nprobe_uid = "0670FF"\n'
                    'port = "rfc2217://rackhost:4000"\n[[boards]]\nboard = "esp32"\n')
    with pytest.raises(ConfigError, match=r"lab.toml: key 'boards.1.board': unknown board 'esp32'"):
        load_rack(str(path), load_catalogue())
    path.write_text('[[boards]]\nboard = "nucleo-f746zg"\nkind = "hardware"\nport = "/dev/serial/by-id/x"\n')
    rack = load_rack(str(path), load_catalogue())
    assert rack.name == "lab" and rack.boards[0].port == "/dev/serial/by-id/x"


def test_filter_rack_rejects_boards_not_in_rack():
    rack = load_rack(None, load_catalogue())
    assert [e.board for e in filter_rack(rack, ["rpi-pico"]).boards] == ["rpi-pico"]
    with pytest.raises(ConfigError, match="has no board stm32h7"):
        filter_rack(rack, ["stm32h7"])


@pytest.mark.parametrize(("port", "problem"), [
    ("bogus://nowhere:99999", "URL scheme 'bogus' is not one pyserial opens"),
    ("rfc2217://rackhost:99999", "needs host:port with a port in 1..65535"),
    ("socket://:4000", "needs host:port"),
    ("ttyACM0", "neither an absolute device path nor a pyserial URL"),
])
def test_rack_port_must_be_a_device_path_or_a_pyserial_url(tmp_path: Path, port: str, problem: str):
    path = tmp_path / "lab.toml"
    path.write_text(f'[[boards]]\nboard = "nucleo-f746zg"\nkind = "hardware"\nport = "{port}"\n')
    with pytest.raises(ConfigError, match=rf"lab.toml: key 'boards.0.port': .*{problem}"):
        load_rack(str(path), load_catalogue())
    path.write_text('[[boards]]\nboard = "nucleo-f746zg"\nkind = "hardware"\nport = "socket://127.0.0.1:4000"\n')
    assert load_rack(str(path), load_catalogue()).boards[0].port == "socket://127.0.0.1:4000"
