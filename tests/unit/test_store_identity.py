"""The store's key, and the names on shared platforms that carry it (Vast labels, Kaggle slugs)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from launcher.store.identity import KEY_FILE, StoreKeyError, is_store_key, store_key
from launcher.targets.kaggle import handle as kaggle_names
from launcher.targets.vast.lifecycle import parse_label, run_label


def test_a_store_keeps_one_random_key_and_two_stores_differ(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    key = store_key(a)
    assert is_store_key(key) and store_key(a) == key
    assert (a / KEY_FILE).read_text().strip() == key
    assert store_key(b) != key


def test_processes_racing_to_make_the_key_agree(tmp_path: Path) -> None:
    seen: list[str] = []
    threads = [threading.Thread(target=lambda: seen.append(store_key(tmp_path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1 and len(seen) == 8
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]  # no temporary file left


def test_a_damaged_key_file_is_an_error_never_silently_replaced(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text("not a key\n")
    with pytest.raises(StoreKeyError, match="does not hold a store key"):
        store_key(tmp_path)
    assert (tmp_path / KEY_FILE).read_text() == "not a key\n"


def test_a_vast_label_names_the_run_and_the_store() -> None:
    label = run_label("hello-1a2b3c", "0a1b2c3d")
    assert label == "launch:0a1b2c3d:hello-1a2b3c"
    assert parse_label(label) == ("hello-1a2b3c", "0a1b2c3d")
    assert not label.startswith("launch-")  # an older launch's gc does not take it for its own


def test_a_kaggle_kernel_slug_and_title_carry_the_store_key_within_kaggles_limits() -> None:
    key = "0a1b2c3d"
    long_run = f"{'x' * 40}-1a2b3c"
    for run, session in (("hello-1a2b3c", 1), (long_run, 99)):
        slug = kaggle_names.kernel_slug(run, session, key)
        assert re.fullmatch(r"[a-z0-9-]+", slug) and len(slug) <= 50, slug
        assert slug.startswith(kaggle_names.PREFIX) and slug.endswith(f"-{key}")
        title = kaggle_names.kernel_title(run, session, key)
        assert kaggle_names.parse_title(title) == (run, key)
    # for a short job the title still resolves to the slug (the kaggle CLI warns when not)
    title = kaggle_names.kernel_title("hello-1a2b3c", 1, key)
    assert kaggle_names.slugify(title, 99) == kaggle_names.kernel_slug("hello-1a2b3c", 1, key)
    assert kaggle_names.parse_title("launch hello-1a2b3c s1") == ("hello-1a2b3c", "")  # older
    for title in ("launch hello-1a2b3c s1 NOTAKEY", "my notebook", "launch  s1"):
        assert kaggle_names.parse_title(title) is None
