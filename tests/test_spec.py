"""The pipeline spec: defaults, validation messages, round trips, overrides."""

from __future__ import annotations

import json

import pytest

from explorer.errors import SpecError
from explorer.spec import diff_specs, parse_spec, parse_value, resolve, set_path


def test_three_line_spec_fills_every_default():
    spec = parse_spec('data = "ring8"\nobjective = "nonsaturating"\nsteps = 10\n')
    assert spec.steps == 10
    assert spec.batch_size == 256 and spec.seed == 0 and spec.device == "auto" and spec.k_d == 1
    assert spec.generator.name == "mlp" and spec.discriminator.name == "mlp"
    assert spec.latent.name == "gaussian"
    assert spec.generator.params["depth"] == 2  # the architecture's own default
    assert spec.optim["generator"]["name"] == "adam" and spec.optim["discriminator"]["lr"] == pytest.approx(1e-3)
    assert spec.provenance["data"].startswith("toys-2d (generative-explorer")


def test_empty_spec_is_a_working_default_pipeline():
    spec = resolve({})
    assert (spec.data.name, spec.objective.name) == ("ring8", "nonsaturating")


def test_toml_and_json_round_trip_to_the_same_spec():
    spec = parse_spec({"data": {"name": "grid25", "std": 0.1}, "objective": "minimax", "steps": 7})
    again_toml = parse_spec(spec.to_toml())
    again_json = parse_spec(json.loads(spec.to_json()))
    assert again_toml.to_dict() == spec.to_dict() == again_json.to_dict()


def test_objective_without_discriminator_drops_it_and_its_optimiser():
    spec = parse_spec({"objective": "mmd"})
    assert spec.discriminator is None
    assert set(spec.optim) == {"generator"}
    assert "discriminator" not in spec.to_dict()


@pytest.mark.parametrize(
    "raw, field, words",
    [
        ({"data": "rnig8"}, "data", ["unknown sampler 'rnig8'", "ring8", "did you mean 'ring8'"]),
        ({"objective": "minmax"}, "objective", ["unknown objective", "minimax", "nonsaturating"]),
        ({"stpes": 10}, "stpes", ["unknown field", "did you mean 'steps'"]),
        ({"steps": 0}, "steps", ["below the minimum 1"]),
        ({"batch_size": "big"}, "batch_size", ["expected an integer"]),
        ({"device": "tpu"}, "device", ["not a valid choice", "auto", "cpu", "cuda"]),
        ({"data": {"name": "ring8", "sdt": 0.1}}, "data.sdt", ["unknown parameter", "did you mean 'std'"]),
        ({"generator": {"name": "mlp", "activation": "rleu"}}, "generator.activation", ["not a valid choice", "relu"]),
        ({"optim": {"generator": {"name": "adamw"}}}, "optim.generator.name", ["not a valid choice", "adam", "sgd", "rmsprop"]),
        ({"optim": {"generator": {"betas": [0.5]}}}, "optim.generator.betas", ["two values"]),
    ],
)
def test_bad_spec_names_the_field_the_value_and_the_choices(raw, field, words):
    with pytest.raises(SpecError) as info:
        resolve(raw)
    assert info.value.field == field
    for word in words:
        assert word in str(info.value)


def test_invalid_toml_is_a_spec_error_not_a_traceback():
    with pytest.raises(SpecError, match="not valid TOML"):
        parse_spec("data = = 3\n")


def test_missing_plugin_recorded_in_provenance_is_named():
    raw = {"data": "checkerboard-xyz", "provenance": {"data": "extras (generative-explorer-extras 0.1.0)"}}
    with pytest.raises(SpecError) as info:
        resolve(raw)
    assert "generative-explorer-extras 0.1.0" in str(info.value) and "not installed" in str(info.value)


def test_set_path_expands_shorthand_and_parse_value_reads_toml_literals():
    raw = {"data": "ring8"}
    set_path(raw, "data.std", parse_value("0.05"))
    set_path(raw, "optim.generator.lr", parse_value("1e-4"))
    set_path(raw, "objective", parse_value("minimax"))
    spec = resolve(raw)
    assert spec.data.params["std"] == 0.05
    assert spec.optim["generator"]["lr"] == pytest.approx(1e-4)
    assert spec.objective.name == "minimax"


def test_setting_a_slot_to_its_own_name_keeps_the_tuned_parameters():
    raw = {"objective": {"name": "mmd", "bandwidths": [0.01, 0.1], "sqrt": True}}
    set_path(raw, "objective", "mmd")
    assert resolve(raw).objective.params["bandwidths"] == [0.01, 0.1]
    set_path(raw, "objective", "minimax")  # another component: its own defaults
    assert resolve(raw).objective.params == {"label_smoothing": 0.0, "mmd_weight": 0.0, "mmd_bandwidths": [0.5, 1.0, 2.0]}
    set_path(raw, "objective", "mmd")
    assert resolve(raw).objective.params["bandwidths"] != [0.01, 0.1]


def test_diff_specs_lists_only_what_differs():
    a = parse_spec({"objective": "minimax"}).to_dict()
    b = parse_spec({"objective": "nonsaturating"}).to_dict()
    assert diff_specs(a, b) == {"objective.name": ("minimax", "nonsaturating")}


def test_every_declared_setting_is_a_typed_attribute_of_the_spec():
    from explorer.spec import SETTINGS, Spec, parse_spec

    spec = parse_spec({"steps": 123, "seed": 4})
    for p in SETTINGS:
        assert isinstance(getattr(Spec, p.name), property), p.name  # declared, not guessed by __getattr__
        assert getattr(spec, p.name) == spec.settings[p.name]
    assert spec.steps == 123 and spec.seed == 4
    with pytest.raises(AttributeError):
        spec.stpes  # noqa: B018  (a misspelt setting is an error, not a lookup)
