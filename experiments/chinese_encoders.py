"""Which encoder separates Chinese titles' topics? (behind README's Encoders section)

3,000 THUCNews titles (``dev.txt`` of the shared data: ``title<TAB>label``, 10 categories), drawn with a
seed, encoded by each built-in text encoder through the product's own encoders (``tfidf`` fitted on these
titles); the score is the share of titles whose nearest neighbour (cosine, itself excluded) has the same
category. Chance is about 0.1.

    python experiments/chinese_encoders.py [--titles ../shared/data/thucnews-titles/dev.txt] [--n 3000] [--seed 0]
    python experiments/chinese_encoders.py --synthetic DATA   # a `prepare synthetic --lang zh` dataset: its
                                                              # items' titles, by their true topic

About 20 s on 2 cores (MiniLM encodes the titles once).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--titles", type=Path, default=ROOT.parent / "shared" / "data" / "thucnews-titles" / "dev.txt")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoders", default="tfidf,minilm,hashing")
    parser.add_argument("--synthetic", type=Path, default=None, help="a synthetic dataset instead: its items by true topic")
    args = parser.parse_args()
    if args.synthetic is not None:
        import pandas as pd

        items = pd.read_parquet(args.synthetic / "items.parquet", columns=["text", "true_topic"])
        texts, labels, source = items["text"].tolist(), items["true_topic"].to_numpy(), f"the items of {args.synthetic}"
    else:
        if not args.titles.is_file():
            sys.exit(f"{args.titles}: not found; expected THUCNews titles as 'title<TAB>label' lines")
        rows = [line.rstrip("\n").split("\t") for line in args.titles.read_text(encoding="utf-8").splitlines() if "\t" in line]
        pick = np.random.default_rng(args.seed).choice(len(rows), min(args.n, len(rows)), replace=False)
        texts = [rows[i][0] for i in pick]
        labels = np.array([rows[i][1] for i in pick])
        source = f"titles of {args.titles}, seed {args.seed}"
    from interestgym.encoders.registry import build_encoder

    print(f"{len(texts)} {source} ({len(set(labels))} categories)")
    for spec in args.encoders.split(","):
        encoder = build_encoder(spec)
        if spec == "tfidf":
            encoder.fit(texts)
        vectors = encoder.encode(texts, progress=False)
        sims = vectors @ vectors.T
        np.fill_diagonal(sims, -np.inf)
        same = float(np.mean(labels[sims.argmax(axis=1)] == labels))
        print(f"{spec:<8} d={vectors.shape[1]:<4} same-category nearest neighbour {same:.3f}")


if __name__ == "__main__":
    main()
