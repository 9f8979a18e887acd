"""Profiles and technique names."""

from pathlib import Path

import pytest

from bench.app.runner import load_profile
from bench.config.profile import TECHNIQUES, TechniqueError, parse_technique


def test_quick_profile_loads():
    profile = load_profile("quick")
    assert [t.name for t in profile.parsed_techniques()] == ["full-fp32", "last-fp32"]


def test_unknown_technique_lists_valid_ones():
    with pytest.raises(TechniqueError) as err:
        parse_technique("sideways-fp32")
    assert all(t in str(err.value) for t in TECHNIQUES)


def test_exactly_fourteen_techniques():
    """4 schemes x fp32 / int8 (QAS) / int8-noqas, the two forward-only ones in fp32, and nothing else (e.g. no
    sparse-fp32-noqas, no int8-qas)."""
    assert sorted(TECHNIQUES) == sorted([*(f"{s}-{n}" for s in ("full", "last", "bias", "sparse")
                                           for n in ("fp32", "int8", "int8-noqas")), "pepita-fp32", "mempepita-fp32"])
    for bad in ("full-fp32-noqas", "full-int8-qas", "full-int4", "full-noqas"):
        with pytest.raises(TechniqueError) as err:
            parse_technique(bad)
        assert all(t in str(err.value) for t in TECHNIQUES)
    t = parse_technique("last-int8-noqas")
    assert (t.scheme, t.numerics, t.is_int8, t.qas) == ("last", "int8-noqas", True, False)
    assert parse_technique("full-int8").qas and not parse_technique("full-fp32").is_int8
    assert parse_technique("sparse-int8", sparse={"bias_k": 1, "layers": {0: 0.5}}).layers == ((0, 0.5),)


def test_trainable_sets():
    layers = [0, 2, 4]
    assert parse_technique("full-fp32").trainable(layers) == {(i, p) for i in layers for p in "wb"}
    assert parse_technique("last-fp32").trainable(layers) == {(4, "w"), (4, "b")}
    assert parse_technique("last-fp32", k=2).trainable(layers) == {(2, "w"), (2, "b"), (4, "w"), (4, "b")}
    assert parse_technique("bias-fp32", k=2).trainable(layers) == {(2, "b"), (4, "b")}


def test_profile_errors_name_file_and_key(tmp_path: Path):
    path = tmp_path / "p.toml"
    path.write_text('techniques = ["full-fp32"]\nstpes = 3\n')
    with pytest.raises(ValueError, match=r"p.toml: key 'stpes': unknown key"):
        load_profile(path)
    path.write_text('techniques = ["full-int4"]\n')
    with pytest.raises(TechniqueError, match=r"p.toml: key 'techniques': unknown technique 'full-int4'"):
        load_profile(path)


def test_sparse_table(tmp_path: Path):
    path = tmp_path / "p.toml"
    path.write_text('techniques = ["sparse-fp32", "bias-fp32"]\nlast_k = 2\n[sparse]\nbias_k = 2\n'
                    'layers = { 0 = 0.25, 2 = 0.5 }\n')
    sparse, bias = load_profile(path).parsed_techniques()
    assert (sparse.name, sparse.k, sparse.layers) == ("sparse-fp32", 2, ((0, 0.25), (2, 0.5)))
    assert sparse.trainable([0, 2, 4]) == {(2, "b"), (4, "b"), (0, "w"), (2, "w")}
    assert bias.trainable([0, 2, 4]) == {(2, "b"), (4, "b")}  # last_k applies to bias-* too
    assert load_profile("techniques").sparse is not None


@pytest.mark.parametrize(("table", "message"), [
    ("layers = { 9 = 0.5 }", r"p.toml: key 'sparse.layers.9': model 'digits-cnn' has no layer 9"),
    ("layers = { 1 = 0.5 }", r"p.toml: key 'sparse.layers.1': layer 1 of 'digits-cnn' is a relu and has no weights"),
    ("layers = { 0 = 0.3 }", r"p.toml: key 'sparse.layers': .*ratio 0.3 is not one of 0.125, 0.25, 0.5, 1"),
    ("bias_k = 1\nlayres = {}", r"p.toml: key 'sparse.layres': unknown key"),
])
def test_sparse_table_errors_name_file_and_key(tmp_path: Path, table: str, message: str):
    path = tmp_path / "p.toml"
    path.write_text(f'techniques = ["sparse-fp32"]\n[sparse]\n{table}\n')
    with pytest.raises(ValueError, match=message):
        load_profile(path)


def test_sparse_technique_needs_its_table(tmp_path: Path):
    path = tmp_path / "p.toml"
    path.write_text('techniques = ["sparse-fp32"]\n')
    with pytest.raises(TechniqueError, match=r"p.toml: key 'sparse': technique 'sparse-fp32' needs a \[sparse\] table"):
        load_profile(path)


def test_missing_imported_model_names_the_path(tmp_path: Path):
    """An imported .tflite model resolves against the repository root; a missing one is a ConfigError naming the
    resolved path and ../shared, both when the profile loads and when `Bench.prepare` gets a profile built in code."""
    from bench.app.runner import Bench
    from bench.config.boards import REPO_ROOT, ConfigError
    from bench.config.profile import Profile

    path = tmp_path / "p.toml"
    path.write_text('model = "../nowhere/absent.tflite"\ntask = "digits96-drift"\nhead_classes = 10\n'
                    'techniques = ["sparse-int8"]\n[sparse]\nbias_k = 1\n')
    missing = str((REPO_ROOT / "../nowhere/absent.tflite").resolve())
    with pytest.raises(ConfigError, match="shared") as err:
        load_profile(path)
    assert missing in str(err.value)
    profile = Profile(name="p", model="../nowhere/absent.tflite", task="digits96-drift", techniques=("full-fp32",))
    with pytest.raises(ConfigError, match="shared") as err:
        Bench(tmp_path).prepare(profile)
    assert missing in str(err.value)


def test_head_classes_only_for_imported_models(tmp_path: Path):
    path = tmp_path / "p.toml"
    path.write_text('head_classes = 10\ntechniques = ["full-fp32"]\n')
    with pytest.raises(ValueError, match="head_classes"):
        load_profile(path)


def test_imported_sparse_layers_name_the_op_and_take_depthwise_convs(tmp_path: Path, shared_models: Path):
    """[sparse] of an imported graph indexes its ops: a depthwise conv (op 25 of person_detect) trains; a pool
    (op 27) is an error naming the file, key, op kind and the ops whose weights do train."""
    model = shared_models / "person_detect.tflite"
    path = tmp_path / "p.toml"
    path.write_text(f'model = "{model}"\ntask = "digits96-drift"\nhead_classes = 10\ntechniques = ["sparse-int8"]\n'
                    '[sparse]\nbias_k = 1\nlayers = { 25 = 0.25 }\n')
    assert load_profile(path).sparse is not None
    path.write_text(path.read_text().replace("25 = 0.25", "27 = 0.25"))
    with pytest.raises(TechniqueError, match=r"p.toml: key 'sparse.layers.27': op 27 is a AVERAGE_POOL_2D; .*"
                                             r"DEPTHWISE_CONV_2D / FULLY_CONNECTED ops: 0, 1, 2, .*25, 26, 28"):
        load_profile(path)
