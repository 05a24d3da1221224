"""Configuration: strict keys with suggestions, impossible values rejected, --set overrides, groups
checked against the declared features, bundled configs valid, docs/configuration.md complete."""
from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from pepnet import config as C
from pepnet.config import ConfigError, ExperimentConfig, apply_overrides, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tree(tiny_config_tree) -> dict:
    return tiny_config_tree()


def _error(tree: dict, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(tree, "exp.yaml", overrides)
    return str(exc.value)


# ----------------------------------------------------------------------------- valid configs


def test_minimal_config_gets_paper_defaults(tree):
    del tree["model"], tree["train"]
    tree["schema"]["labels"] = {"click": "click", "like": "like"}
    cfg = parse_config(tree)
    m = cfg.model
    got = (m.name, m.embedding_dim, m.gamma, m.stop_gradient, m.epnet_granularity)
    assert got == ("pepnet", 16, 2.0, True, "element")
    assert m.ppnet_gate_on == "input" and m.ppnet_priors == ["user_prior", "item_prior", "author_prior"]
    assert cfg.train.embedding_lr > 0 and cfg.train.dense_lr > 0
    assert cfg.schema_.task_names() == ["click", "like"]
    assert cfg.schema_.labels["click"].column == "click"  # `labels: {task: column}` shorthand


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "src" / "pepnet" / "configs").glob("*.yaml")))
def test_bundled_configs_are_valid(name, monkeypatch):
    monkeypatch.setenv("PEPNET_KUAIRAND", "/data/kuairand")
    monkeypatch.setenv("PEPNET_ALICCP", "/data/aliccp")
    cfg = load_config(name)  # a bare name falls back to the bundled file
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.schema_.groups.general and cfg.schema_.groups.domain_side


def test_data_paths_read_environment_variables(monkeypatch):
    """The KuaiRand / Ali-CCP configs point at a folder the user names; unset, the error names the variable."""
    monkeypatch.delenv("PEPNET_KUAIRAND", raising=False)
    with pytest.raises(ConfigError, match=r"\$\{PEPNET_KUAIRAND\}, which is not set"):
        load_config("kuairand.yaml")
    assert load_config("kuairand.yaml", ["data.files=[k.csv]"]).data.files == ["k.csv"]  # --set needs no variable
    monkeypatch.setenv("PEPNET_KUAIRAND", "/data/kr")
    assert load_config("kuairand.yaml").data.files == ["/data/kr/kuairand_sample.csv"]


def test_round_trip_through_yaml(tree, tmp_path):
    cfg = parse_config(tree)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_config(path) == cfg


# ----------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize("section,typo,valid", [
    ("model", "embeding_dim", "embedding_dim"),
    ("train", "epoch", "epochs"),
    ("train", "dense_lrr", "dense_lr"),
])
def test_unknown_key_names_it_and_suggests_the_closest(tree, section, typo, valid):
    tree[section][typo] = 3
    msg = _error(tree)
    assert "exp.yaml" in msg
    assert f"{section}.{typo}: unknown key; did you mean '{valid}'?" in msg


def test_unknown_key_in_nested_list_and_dict_items(tree):
    tree["schema"]["features"][1]["knd"] = "dense"
    assert "schema.features.1.knd: unknown key; did you mean 'kind'?" in _error(copy.deepcopy(tree))
    del tree["schema"]["features"][1]["knd"]
    tree["schema"]["labels"]["click"] = {"colum": "click"}
    assert "schema.labels.click.colum: unknown key; did you mean 'column'?" in _error(tree)


def test_unknown_key_without_close_match_lists_valid_keys(tree):
    tree["model"]["zzzz"] = 1
    msg = _error(tree)
    assert "model.zzzz: unknown key; valid keys:" in msg and "embedding_dim" in msg


def test_unknown_top_level_section(tree):
    tree["traing"] = {"epochs": 2}
    assert "traing: unknown key; did you mean 'train'?" in _error(tree)


# ----------------------------------------------------------------------------- impossible values


@pytest.mark.parametrize("override,where", [
    ("train.dense_lr=-0.001", "train.dense_lr"),
    ("train.embedding_lr=0", "train.embedding_lr"),
    ("train.epochs=0", "train.epochs"),
    ("train.batch_size=-5", "train.batch_size"),
    ("model.hidden_units=[]", "model.hidden_units"),
    ("model.hidden_units=[64, 0]", "model.hidden_units"),
    ("model.embedding_dim=0", "model.embedding_dim"),
    ("model.gamma=-1", "model.gamma"),
    ("model.dropout=1.0", "model.dropout"),
    ("model.epnet_granularity=row", "model.epnet_granularity"),
    ("data.split.fractions=[0.5, 0.6, 0.1]", "data.split.fractions"),
    ("schema.labels.click.weight=-1", "schema.labels.click.weight"),
    ("schema.stats.0.buckets=1", "schema.stats.0.buckets"),
])
def test_impossible_values_are_rejected_naming_the_key(tree, override, where):
    msg = _error(tree, [override])
    assert f" {where}: " in msg


def test_missing_required_key(tree):
    del tree["schema"]["domain"]
    assert "schema.domain: required key is missing" in _error(tree)


def test_data_needs_files_or_dataset(tree):
    del tree["data"]["dataset"]
    assert "give data.files or data.dataset" in _error(tree)


def test_stat_rate_needs_a_task_target(tree):
    tree["schema"]["stats"][0]["target"] = "clicks"
    assert "target 'clicks' is not a task" in _error(copy.deepcopy(tree))
    del tree["schema"]["stats"][0]["target"]
    assert "needs a 'target'" in _error(tree)


def test_duplicate_feature_names(tree):
    tree["schema"]["features"].append({"name": "user_id"})
    assert "repeated: ['user_id']" in _error(tree)


# ----------------------------------------------------------------------------- groups


def test_group_naming_an_undeclared_feature(tree):
    tree["schema"]["groups"]["user_prior"].append("user_clicks")
    msg = _error(tree)
    assert "groups.user_prior: 'user_clicks' is not a declared feature; did you mean 'user_click'?" in msg


@pytest.mark.parametrize("group", ["general", "domain_side"])
def test_required_groups_cannot_be_empty(tree, group):
    tree["schema"]["groups"][group] = []
    assert f"schema.groups.{group}:" in _error(tree)


def test_unknown_group_name(tree):
    tree["schema"]["groups"]["user_priors"] = ["user_id"]
    assert "schema.groups.user_priors: unknown key; did you mean 'user_prior'?" in _error(tree)


# ----------------------------------------------------------------------------- --set overrides


def test_overrides_nested_keys_lists_and_yaml_values(tree):
    cfg = parse_config(tree, overrides=[
        "train.epochs=7",
        "model.hidden_units=[32, 16, 8]",
        "model.stop_gradient=false",
        "train.dense_lr=3e-4",
        "schema.features.1.min_count=3",          # list index in the path
        "schema.labels.like.weight=0.5",          # dict key in the path
        "data.split.method=random",
        "train.threads=null",
        "name=my run",
    ])
    assert cfg.train.epochs == 7 and cfg.model.hidden_units == [32, 16, 8]
    assert cfg.model.stop_gradient is False and cfg.train.dense_lr == pytest.approx(3e-4)
    assert cfg.schema_.features[1].min_count == 3 and cfg.schema_.labels["like"].weight == 0.5
    assert cfg.data.split.method == "random" and cfg.train.threads is None and cfg.name == "my run"


def test_override_creates_missing_sections_and_keeps_others(tree):
    del tree["model"]
    cfg = parse_config(tree, overrides=["model.embedding_dim=8"])
    assert cfg.model.embedding_dim == 8 and cfg.model.gamma == 2.0


def test_override_values_are_validated_like_the_file(tree):
    assert "model.embeding_dim: unknown key; did you mean 'embedding_dim'?" in _error(tree, ["model.embeding_dim=8"])
    assert "train.epochs:" in _error(copy.deepcopy(tree), ["train.epochs=many"])


@pytest.mark.parametrize("bad,fragment", [
    ("train.epochs", "must look like key.path=value"),
    ("model.hidden_units=[1,", "not valid YAML"),
    ("schema.features.99.kind=dense", "cannot set 'schema.features.99.kind'"),
])
def test_malformed_overrides(tree, bad, fragment):
    assert fragment in _error(tree, [bad])


def test_apply_overrides_edits_the_raw_tree():
    tree = {"a": {"b": [1, 2]}}
    apply_overrides(tree, ["a.b.1=5", "a.c.d=x: 1"])
    assert tree == {"a": {"b": [1, 5], "c": {"d": {"x": 1}}}}


# ----------------------------------------------------------------------------- files


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(scalar)


# ----------------------------------------------------------------------------- the reference stays true


def _config_models() -> list[type[BaseModel]]:
    return [obj for name in C.__all__ if isinstance(obj := getattr(C, name), type) and issubclass(obj, BaseModel)]


def test_configuration_reference_documents_every_field():
    """docs/configuration.md has a section per config model and a table row per field, with its default."""
    doc = (ROOT / "docs" / "configuration.md").read_text()
    models = _config_models()
    assert len(models) >= 12
    missing = []
    for model in models:
        section = re.search(rf"^#+ [^\n]*`{model.__name__}`[^\n]*\n(.*?)(?=^#+ |\Z)", doc, re.M | re.S)
        if section is None:
            missing.append(model.__name__)
            continue
        for name, field in model.model_fields.items():
            key = field.alias or name
            if not re.search(rf"^\| `{re.escape(key)}` \|", section.group(1), re.M):
                missing.append(f"{model.__name__}.{key}")
    assert not missing, f"docs/configuration.md does not document: {missing}"


def test_configuration_reference_is_up_to_date():
    """The generated tables equal what docs/gen_configuration.py renders from the models now (types,
    defaults, constraints, meanings). Fix: ``python docs/gen_configuration.py``."""
    spec = importlib.util.spec_from_file_location("gen_configuration", ROOT / "docs" / "gen_configuration.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert {m for _, m in gen.SECTIONS} == set(_config_models()), "a config model is missing from SECTIONS"
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert gen.updated(text) == text, "docs/configuration.md is out of date: run python docs/gen_configuration.py"


# ----------------------------------------------------------------------------- strict types, duplicate keys


@pytest.mark.parametrize("override, where", [
    ("train.batch_size=true", "train.batch_size"),      # YAML true is not the integer 1
    ("train.batch_size='512'", "train.batch_size"),     # text is not a number
    ("train.epochs=2.0", "train.epochs"),               # a float is not an integer
    ("train.deterministic=1", "train.deterministic"),   # 1 is not a boolean
    ("model.embedding_dim=[8]", "model.embedding_dim"),
])
def test_overrides_are_strictly_typed(tree, override, where):
    msg = _error(tree, [override])
    assert f"{where}:" in msg and "valid" in msg


def test_numbers_keep_their_yaml_meaning(tree):
    cfg = parse_config(tree, "exp.yaml", ["train.dense_lr=3e-4", "train.embedding_lr=1", "train.batch_size=512"])
    assert (cfg.train.dense_lr, cfg.train.embedding_lr, cfg.train.batch_size) == (3e-4, 1.0, 512)
    assert type(cfg.train.dense_lr) is float


def test_a_repeated_yaml_key_names_the_key_and_the_line(tree, tmp_path):
    text = yaml.safe_dump(tree, sort_keys=False).replace("train:\n", "train:\n  epochs: 7\n", 1)
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    line = text.splitlines().index("  epochs: 7") + 1
    with pytest.raises(ConfigError, match=rf"dup\.yaml, line {line + 1 + list(tree['train']).index('epochs')}: "
                                          rf"key 'epochs' repeats the key of line {line}"):
        load_config(path)
    with pytest.raises(ConfigError, match="key 'a' repeats"):
        parse_config(tree, "exp.yaml", ["model.options={a: 1, a: 2}"])


@pytest.mark.parametrize("override, message", [
    ("train.seed=-1", "train.seed: Input should be greater than or equal to 0"),
    ("train.seed=18446744073709551616", "train.seed: Input should be less than"),
    ("train.device=gpu", "train.device: String should match pattern"),
    ("model.name=pepnett", "model.name: Value error, model 'pepnett' is unknown; did you mean 'pepnet'?"),
])
def test_values_that_failed_late_are_caught_when_the_config_is_read(tree, override, message):
    assert message in _error(tree, [override])
