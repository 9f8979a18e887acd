"""`bench verify`: a board's int8 inference against tflite-micro's interpreter, op by op (real twins, real TFLM)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bench.app.cli import main
from bench.app.verify import VerifyError, compare, verify
from bench.config.boards import load_catalogue, load_rack
from bench.model.tasks import load_task
from bench.numerics.pretrain import build_model
from bench.tflite.io import load_tflite
from bench.tflite.quantize import export_digits_tflite


@pytest.fixture(scope="module")
def digits_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    task = load_task("digits-drift", 0)
    path = tmp_path_factory.mktemp("model") / "digits-cnn.tflite"
    export_digits_tflite(build_model("digits-cnn", task, 0, tmp_path_factory.mktemp("cache")), task, path)
    return path


def test_compare_counts_every_differing_code_and_a_missing_tensor_whole(digits_tflite: Path) -> None:
    model = load_tflite(digits_tflite)
    sizes = [int(np.prod(model.tensors[op.outputs[0]].shape)) for op in model.ops]
    truth = [[np.zeros(n, np.int8) for n in sizes]]
    device = {(0, k): np.zeros(n, np.int8) for k, n in enumerate(sizes)}
    assert all(c.ok for c in compare(model, device, truth))
    device[(0, 1)] = device[(0, 1)].copy()
    device[(0, 1)][3] = -5
    del device[(0, 2)]
    checks = compare(model, device, truth)
    assert (checks[1].mismatched, checks[1].max_abs_diff) == (1, 5)
    assert checks[2].mismatched == sizes[2] and not checks[2].ok
    assert checks[0].ok and checks[-1].ok


@pytest.mark.twin
def test_bench_verify_passes_on_the_exported_digits_cnn(digits_tflite: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["verify", str(digits_tflite), "--board", "nrf52840-dk", "--inputs", "3",
                                       "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output.strip().splitlines()[-1])
    assert got["ok"] and got["inputs"] == 3 and len(got["ops"]) == len(load_tflite(digits_tflite).ops)
    assert all(op["ok"] and op["compared"] == 3 * np.prod(op["shape"]) for op in got["ops"])


@pytest.mark.twin
@pytest.mark.parametrize("name", ["person_detect", "vww_96_int8", "kws_ref_model", "ad01_int8", "hello_world_int8"])
def test_shared_models_are_bit_exact_on_the_m7_twin(shared_models: Path, name: str, tmp_path: Path) -> None:
    """Every model in ../shared/models (MLPerf Tiny's VWW, KWS and the anomaly-detection autoencoder with its 640
    outputs, TFLM's person_detect and hello_world with one): every op equal to tflite-micro's, two random inputs."""
    catalogue = load_catalogue()
    result = verify(shared_models / f"{name}.tflite", load_rack(None, catalogue), catalogue, "nucleo-f746zg", 2, 0,
                    tmp_path)
    assert result.ok, [op for op in result.ops if not op.ok]
    assert result.sram_peak_bytes <= catalogue["nucleo-f746zg"].sram_bytes and result.instructions_per_inference > 0


def test_a_board_outside_the_rack_is_refused_by_name(digits_tflite: Path, tmp_path: Path) -> None:
    catalogue = load_catalogue()
    with pytest.raises(VerifyError, match="board 'stm32h7' is not in rack emulated"):
        verify(digits_tflite, load_rack(None, catalogue), catalogue, "stm32h7", 1, 0, tmp_path)
