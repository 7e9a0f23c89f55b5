"""AppTest of the shell: home page, model table, sidebar disclaimer and device."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core import DISCLAIMER, registry

ROOT = Path(__file__).resolve().parent.parent


def test_home_page_renders_with_model_table_and_disclaimer():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception
    assert at.title[0].value == "Reproductive-medicine image AI"
    assert any(DISCLAIMER in w.value for w in at.warning)
    assert any(DISCLAIMER in c.value for c in at.sidebar.caption)
    assert any("Device: CPU" in c.value or "Device: CUDA" in c.value for c in at.sidebar.caption)
    order = [e.type for e in at.sidebar]  # the case code first: pages point to it, and at 720 px it was off-screen
    assert order.index("text_input") < order.index("caption")
    cards = registry.cards()
    if cards:
        table = at.dataframe[0].value
        assert sorted(table["model"]) == sorted(c.id for c in cards)
        assert set(table["status"]) <= {"not loaded"} | {s for s in table["status"] if s.startswith("loaded on")}
        headlines = at.table[0].value  # readable titles, each with its id
        assert len(headlines) == len(cards) and all(f"({c.id})" in " ".join(headlines.index) for c in cards)
        grade = [row for name, row in headlines.iterrows() if name.endswith("(embryo-grade)")]
        if grade:  # a real held-out figure, not a generated set's
            assert grade[0]["measured on"] == "hungvuong/heldout-groups" and "quality ROC-AUC" in grade[0]["headline"]
        assert [p.label for p in at.get("page_link")] == ["**Embryo grading**", "**Sperm heads**",
                                                          "**PCOS ultrasound**", "**Time-lapse staging**"]
    else:
        assert any("No models" in i.value for i in at.info)


def test_home_page_shows_a_loaded_model_as_loaded(tmp_path, monkeypatch):
    from tests import tiny_models

    tiny_models.torch_model(tmp_path)
    reg = registry.Registry(tmp_path)
    monkeypatch.setattr(registry, "cards", reg.cards)
    monkeypatch.setattr(registry, "status", reg.status)
    reg.load("tiny-torch", "cpu")
    at = AppTest.from_file(str(ROOT / "app_pages/home.py"), default_timeout=60).run()
    assert not at.exception
    row = at.dataframe[0].value.set_index("model").loc["tiny-torch"]
    assert row["status"].startswith("loaded on cpu")
