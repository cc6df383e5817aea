"""The catalog: data checked against the facts digest, and name resolution."""

from __future__ import annotations

import dataclasses

import pytest

from ollamads.catalog.entries import (
    CATALOG_PATH,
    CatalogEntry,
    load_catalog,
    normalize_quant,
    parse_catalog,
    resolve,
)
from ollamads.catalog.families import FAMILIES
from ollamads.errors import OllamadsError

# The guides' published tables: (MoE bits, published GB). Drift in either fails.
FACTS = {
    "deepseek-v3.1": {
        "TQ1_0": (1.66, 170),
        "IQ1_S": (1.78, 185),
        "IQ1_M": (1.93, 200),
        "IQ2_XXS": (2.42, 216),
        "Q2_K_XL": (2.71, 251),
        "IQ3_XXS": (3.12, 273),
        "Q3_K_XL": (3.5, 296),
        "Q4_K_XL": (4.5, 384),
        "Q5_K_XL": (5.5, 481),
        "IQ4_NL": (None, None),
        "Q4_1": (None, None),
    },
    "deepseek-r1": {
        "IQ1_S": (1.58, 131),
        "IQ1_M": (1.73, 158),
        "IQ2_XXS": (2.22, 183),
        "Q2_K_XL": (2.51, 212),
    },
    "deepseek-v3-0324": {
        "IQ1_S": (1.78, 173),
        "IQ1_M": (1.93, 183),
        "IQ2_XXS": (2.42, 203),
        "Q2_K_XL": (2.71, 231),
        "Q3_K_XL": (3.5, 320),
        "Q4_K_XL": (4.5, 406),
    },
}
FACTS["deepseek-v3.1-terminus"] = {
    q: v for q, v in FACTS["deepseek-v3.1"].items() if q not in ("IQ4_NL", "Q4_1")
}

REPOS = {
    "deepseek-v3.1": ("unsloth/DeepSeek-V3.1-GGUF", "v3.1", "hybrid"),
    "deepseek-v3.1-terminus": ("unsloth/DeepSeek-V3.1-Terminus-GGUF", "v3.1", "hybrid"),
    "deepseek-v3-0324": ("unsloth/DeepSeek-V3-0324-GGUF", "v3", "none"),
    "deepseek-r1": ("unsloth/DeepSeek-R1-GGUF", "r1", "always"),
    "deepseek-r1-0528": ("unsloth/DeepSeek-R1-0528-GGUF", "r1", "always"),
}


def test_all_five_models_with_repo_family_and_thinking() -> None:
    catalog = load_catalog()
    assert {m.key: (m.repo, m.family, m.thinking) for m in catalog.models} == REPOS
    for model in catalog.models:
        assert model.prompt_family is FAMILIES[model.family]
        assert model.thinking == model.prompt_family.thinking


@pytest.mark.parametrize("key", sorted(FACTS))
def test_quants_match_the_published_tables(key: str) -> None:
    model = load_catalog().model(key)
    assert {q.name: (q.moe_bits, q.size_gib) for q in model.quants} == FACTS[key]


def test_r1_0528_sizes_are_unknown_not_invented() -> None:
    model = load_catalog().model("deepseek-r1-0528")
    assert model.quants
    for quant in model.quants:
        assert quant.size_gib is None and quant.moe_bits is None
        assert "unknown" in quant.detail
    # Only names seen in a source count as confirmed.
    assert {q.name for q in model.quants if q.confirmed} == {"IQ2_XXS", "Q4_K_XL"}


def test_every_quant_says_where_its_figures_come_from() -> None:
    for entry in load_catalog().entries():
        assert entry.quant.source.strip(), entry.spec
        assert entry.model.source.strip(), entry.model.key


def test_published_layouts() -> None:
    assert resolve("v3.1-terminus:TQ1_0").quant.path == "DeepSeek-V3.1-Terminus-UD-TQ1_0.gguf"
    assert resolve("v3.1:TQ1_0").quant.path == "DeepSeek-V3.1-UD-TQ1_0.gguf"
    terminus_q2 = resolve("v3.1-terminus:Q2_K_XL").quant
    assert (terminus_q2.folder, terminus_q2.shards) == ("UD-Q2_K_XL", 6)
    r1 = resolve("r1:IQ1_S").quant
    assert (r1.folder, r1.shards) == ("DeepSeek-R1-UD-IQ1_S", 3)
    assert resolve("v3.1:IQ4_NL").quant.hub_name == "IQ4_NL"  # a plain quant: no UD- prefix
    assert resolve("r1-0528:TQ1_0").quant.path is None


@pytest.mark.parametrize(
    ("typed", "spec"),
    [
        ("v3.1-terminus:TQ1_0", "deepseek-v3.1-terminus:TQ1_0"),
        ("deepseek-v3.1-terminus:UD-TQ1_0", "deepseek-v3.1-terminus:TQ1_0"),
        ("DeepSeek-V3.1-Terminus:ud-tq1_0", "deepseek-v3.1-terminus:TQ1_0"),
        ("r1:iq1_s", "deepseek-r1:IQ1_S"),
        ("  v3-0324:q2_k_xl ", "deepseek-v3-0324:Q2_K_XL"),
        ("r1-0528:UD-IQ2_XXS", "deepseek-r1-0528:IQ2_XXS"),
        ("unsloth/DeepSeek-V3.1-Terminus-GGUF:TQ1_0", "deepseek-v3.1-terminus:TQ1_0"),
        ("hf.co/unsloth/DeepSeek-R1-GGUF:UD-IQ1_S", "deepseek-r1:IQ1_S"),
    ],
)
def test_resolve_accepts_what_users_type(typed: str, spec: str) -> None:
    assert resolve(typed).spec == spec


def test_ollama_name_is_lower_case_and_resolves_back() -> None:
    entry = resolve("v3.1-terminus:TQ1_0")
    assert entry.ollama_name == "deepseek-v3.1-terminus:tq1_0"
    for entry in load_catalog().entries():
        assert entry.ollama_name == entry.ollama_name.lower()
        assert resolve(entry.ollama_name) == entry


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(OllamadsError) as err:
        resolve("v3.1-terminos:TQ1_0")
    assert err.value.message == "unknown model 'v3.1-terminos'"
    assert "did you mean v3.1-terminus" in err.value.hint


def test_unrelated_model_lists_all_models() -> None:
    with pytest.raises(OllamadsError) as err:
        resolve("llama3:q4_0")
    assert "known models: v3.1, v3.1-terminus, v3-0324, r1, r1-0528" in err.value.hint


def test_unknown_quant_suggests_close_names() -> None:
    with pytest.raises(OllamadsError) as err:
        resolve("r1:IQ1_SS")
    assert "has no quant 'IQ1_SS'" in err.value.message
    assert err.value.hint.startswith("did you mean IQ1_S")


def test_model_without_quant_says_how_to_add_one() -> None:
    with pytest.raises(OllamadsError) as err:
        resolve("deepseek-r1")
    assert "names no quant" in err.value.message
    assert "r1:IQ1_S" in err.value.hint and "Q2_K_XL" in err.value.hint


def test_normalize_quant() -> None:
    assert [normalize_quant(q) for q in ("tq1_0", "UD-TQ1_0", "ud-q2_k_xl ")] == [
        "TQ1_0",
        "TQ1_0",
        "Q2_K_XL",
    ]


def test_records_are_frozen() -> None:
    entry = resolve("r1:IQ1_S")
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.quant = entry.quant  # type: ignore[misc]
    with pytest.raises(TypeError):
        entry.parameters["temperature"] = 1.0  # type: ignore[index]


def test_parameters_family_defaults_then_model_then_quant() -> None:
    catalog = parse_catalog(
        """
        schema = 1
        [models."deepseek-r1"]
        title = "R1"
        repo = "o/r"
        file_prefix = "R1"
        family = "r1"
        thinking = "always"
        source = "test"
        parameters = { num_ctx = 4096, temperature = 0.5 }
        [[models."deepseek-r1".quants]]
        name = "IQ1_S"
        source = "test"
        parameters = { temperature = 0.4 }
        """
    )
    params = catalog.resolve("r1:iq1_s").parameters
    assert params["num_ctx"] == 4096 and params["temperature"] == 0.4
    assert params["min_p"] == FAMILIES["r1"].parameters["min_p"]
    # The shipped catalog overrides nothing: entries carry the family's defaults.
    assert dict(resolve("r1:IQ1_S").parameters) == dict(FAMILIES["r1"].parameters)


_MODEL = """
schema = 1
[models."deepseek-x"]
title = "X"
repo = "o/x"
file_prefix = "X"
family = "{family}"
thinking = "{thinking}"
source = "test"
{extra}
[[models."deepseek-x".quants]]
name = "{quant}"
source = "test"
{quant_extra}
"""


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (dict(extra="colour = 'red'"), "unknown keys ['colour']"),
        (dict(quant_extra="sizegb = 3"), "unknown keys ['sizegb']"),
        (dict(thinking="none"), "contradicts family"),
        (dict(family="v4"), "unknown prompt family"),
        (dict(quant="UD-TQ1_0"), "without the UD- prefix"),
        (dict(quant="tq1_0"), "upper case"),
        (dict(quant_extra="path = 'UD-TQ1_0'"), "must be a folder ending in /"),
    ],
)
def test_catalog_file_is_checked_strictly(fields: dict[str, str], problem: str) -> None:
    values = dict(family="r1", thinking="always", extra="", quant="TQ1_0", quant_extra="") | fields
    with pytest.raises(OllamadsError) as err:
        parse_catalog(_MODEL.format(**values))
    assert problem in err.value.message


def test_shipped_catalog_parses_and_has_no_duplicates() -> None:
    catalog = parse_catalog(CATALOG_PATH.read_text(encoding="utf-8"))
    specs = [e.spec for e in catalog.entries()]
    assert len(specs) == len(set(specs)) == 36


LISTING = [
    "README.md",
    "DeepSeek-R1-0528-UD-TQ1_0.gguf",
    "DeepSeek-R1-0528-UD-TQ1_0_R4.gguf",
    "UD-IQ1_S/DeepSeek-R1-0528-UD-IQ1_S-00002-of-00002.gguf",
    "UD-IQ1_S/DeepSeek-R1-0528-UD-IQ1_S-00001-of-00002.gguf",
    "UD-IQ1_S_R4/DeepSeek-R1-0528-UD-IQ1_S_R4-00001-of-00001.gguf",
    "UD-IQ2_XXS/DeepSeek-R1-0528-UD-IQ2_XXS-00001-of-00001.gguf",
    "UD-IQ2_XXS/params",
]


def _entry(spec: str) -> CatalogEntry:
    return resolve(spec)


def test_select_by_published_folder_or_file() -> None:
    assert _entry("r1-0528:IQ2_XXS").select(LISTING) == [
        "UD-IQ2_XXS/DeepSeek-R1-0528-UD-IQ2_XXS-00001-of-00001.gguf"
    ]
    single = _entry("v3.1-terminus:TQ1_0")
    assert single.select(
        ["DeepSeek-V3.1-Terminus-UD-TQ1_0.gguf", "x/DeepSeek-V3.1-Terminus-UD-TQ1_0.gguf"]
    ) == ["DeepSeek-V3.1-Terminus-UD-TQ1_0.gguf"]


def test_select_by_name_when_layout_unpublished() -> None:
    assert _entry("r1-0528:TQ1_0").select(LISTING) == ["DeepSeek-R1-0528-UD-TQ1_0.gguf"]
    assert _entry("r1-0528:IQ1_S").select(LISTING) == [
        "UD-IQ1_S/DeepSeek-R1-0528-UD-IQ1_S-00001-of-00002.gguf",
        "UD-IQ1_S/DeepSeek-R1-0528-UD-IQ1_S-00002-of-00002.gguf",
    ]
    assert _entry("r1-0528:Q2_K_XL").select(LISTING) == []
