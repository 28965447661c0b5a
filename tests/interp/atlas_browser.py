"""Drive an atlas page in the system's Chromium (Playwright, no browser download).

The page test uses these helpers; run as a script, it screenshots a page with a head
selected, for the README:

    python -m tests.interp.atlas_browser docs/atlas.png [--page atlas.html] [--head L5H2]

Without `--page` it screenshots a synthetic atlas (30 layers x 9 heads, a 20-token example).
"""

from __future__ import annotations

import argparse
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from playwright.sync_api import Page, sync_playwright

from interp.atlas_page import write_atlas_page
from interp.figure_export import chromium_path
from interp.heads import Head
from interp.results import Provenance

# Tokens as a BPE tokenizer splits them: a leading space belongs to the word.
_TOKENS = [
    "<|im_start|>",
    *re.findall(
        r" ?\w+|\.",
        "The cat sat on the mat. The dog sat on the rug. Then the cat saw the dog and ran.",
    ),
]


def synthetic_atlas(
    n_layers: int = 30, n_heads: int = 9, n_kv_heads: int = 3, n_tokens: int = 20, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, Provenance, dict[str, Any]]:
    """A made-up atlas (heads, relations, provenance, example) shaped like a real one.

    Patterns mix a first-token sink, a previous-token diagonal and noise per head, and the
    sink and previous-token columns are read off them, so the page's parts agree.
    """
    rng = np.random.default_rng(seed)
    tokens = [_TOKENS[i % len(_TOKENS)] for i in range(n_tokens)]
    sink, previous = rng.uniform(0, 4, (2, n_layers, n_heads, 1, 1))
    logits = rng.normal(size=(n_layers, n_heads, n_tokens, n_tokens))
    logits[..., 0] += sink[..., 0]
    logits += previous * np.eye(n_tokens, k=-1)
    logits[..., ~np.tril(np.ones((n_tokens, n_tokens), dtype=bool))] = -np.inf
    patterns = np.exp(logits - logits.max(-1, keepdims=True))
    patterns /= patterns.sum(-1, keepdims=True)
    layer, head = np.divmod(np.arange(n_layers * n_heads), n_heads)
    retrieval = rng.beta(0.5, 4, n_layers * n_heads)
    heads = pd.DataFrame(
        {
            "layer": layer,
            "head": head,
            "kv_group": head // (n_heads // n_kv_heads),
            "sinks_first_token_share": patterns[..., 1:, 0].mean(-1).ravel(),
            "head_kinds_previous_token": np.diagonal(patterns, -1, 2, 3).mean(-1).ravel(),
            "retrieval_score": retrieval,
            "retrieval_score_low": retrieval * 0.8,
            "retrieval_score_high": np.minimum(retrieval * 1.2, 1.0),
            "retrieval_head": retrieval > 0.3,
            "anchors_distance": rng.uniform(0, n_tokens / 2, n_layers * n_heads),
            "anchors_class": rng.choice(["local", "global"], n_layers * n_heads),
        }
    )
    names = ["sinks_first_token_share", "head_kinds_previous_token", "retrieval_score"]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    relations = pd.DataFrame(
        {
            "method_a": [a for a, _ in pairs],
            "method_b": [b for _, b in pairs],
            "spearman": [heads[a].corr(heads[b], method="spearman") for a, b in pairs],
            "jaccard": rng.uniform(0, 0.5, len(pairs)),
            "k": 10,
            "n": len(heads),
        }
    )
    provenance = Provenance(
        model="synthetic",
        weights_hash="0" * 64,
        analyzer="atlas",
        config={"quick": True, "top_k": 10, "methods": names},
        inputs_hash="0" * 64,
        n_inputs=1,
    )
    return heads, relations, provenance, {"tokens": tokens, "patterns": patterns}


@contextmanager
def opened(path: Path, width: int = 1280, height: int = 900) -> Iterator[tuple[Page, list[str]]]:
    """The page loaded from disk in headless Chromium, and the console errors it logs."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path())
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(path.resolve().as_uri())
            page.wait_for_selector("body[data-ready]", timeout=10_000)
            yield page, errors
        finally:
            browser.close()


def grid_z(page: Page) -> list[list[float | None]]:
    """The z matrix the grid's heatmap draws now."""
    return page.evaluate("() => Array.from(document.getElementById('grid').data[0].z)")


def click_head(page: Page, head: Head) -> None:
    """A real mouse click at the centre of the head's cell in the grid."""
    x, y = page.evaluate(
        """([layer, head]) => {
            const grid = document.getElementById('grid'), box = grid.getBoundingClientRect();
            const xa = grid._fullLayout.xaxis, ya = grid._fullLayout.yaxis;
            return [box.left + xa._offset + xa.l2p(head), box.top + ya._offset + ya.l2p(layer)];
        }""",
        [head.layer, head.head],
    )
    page.mouse.click(x, y)


def screenshot(page_path: Path, out: Path, head: Head, method: str | None = None) -> None:
    """A PNG of the page's top (menu, grid, the head's scores and pattern)."""
    with opened(page_path) as (page, errors):
        if method:
            page.select_option("#method", method)
        click_head(page, head)
        page.wait_for_selector("#head-pattern .main-svg")
        page.mouse.move(0, 0)  # no hover label over the grid
        page.wait_for_timeout(600)  # and plotly's toolbar fades out
        page.screenshot(path=str(out))
    if errors:
        raise RuntimeError(f"The page logged errors: {errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--page", type=Path, help="an atlas page (default: a synthetic one)")
    parser.add_argument("--head", default="L5H2", help="the head to select")
    parser.add_argument("--method", help="the column to colour by (default: the page's first)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        page = args.page or write_atlas_page(Path(folder) / "atlas.html", *synthetic_atlas())
        screenshot(page, args.out, Head.parse(args.head), args.method)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
