"""``interestgym finetune``: teach a BERT encoder which items the same users like (co-engagement pairs)."""

from __future__ import annotations

from pathlib import Path

import click

from interestgym.errors import Interrupted

_DEFAULTS = {"max_length": 32, "batch_size": 64, "epochs": 2, "lr": 1e-4, "max_pairs": 20_000, "max_valid_pairs": 2_000,
             "window": 3600.0, "neighbours": 1, "patience": 1, "scale": 20.0, "seed": 0}


@click.command("finetune")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--base", default="minilm", show_default=True, metavar="minilm|PATH",
              help="The encoder to start from: minilm, or the path of a local Hugging Face model folder.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), metavar="MODEL_DIR",
              help="Folder to write the fine-tuned model to (new or empty, unless --overwrite).")
@click.option("--epochs", type=click.IntRange(min=1), default=_DEFAULTS["epochs"], show_default=True,
              help="Most epochs over the training pairs (early stopping may end sooner).")
@click.option("--batch-size", type=click.IntRange(min=2), default=_DEFAULTS["batch_size"], show_default=True,
              help="Pairs per step; the other pairs of the batch are the negatives.")
@click.option("--max-length", type=click.IntRange(min=2), default=_DEFAULTS["max_length"], show_default=True,
              help="Tokens per item text (also the saved model's default for encode).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=_DEFAULTS["lr"], show_default=True,
              help="Peak learning rate (AdamW, linear warm-up over 10% of the steps, then linear decay).")
@click.option("--max-pairs", type=click.IntRange(min=1), default=_DEFAULTS["max_pairs"], show_default=True,
              help="At most this many training pairs (a seeded random subset).")
@click.option("--max-valid-pairs", type=click.IntRange(min=1), default=_DEFAULTS["max_valid_pairs"], show_default=True,
              help="At most this many validation pairs for the validation loss.")
@click.option("--window", type=click.FloatRange(min=0), default=_DEFAULTS["window"], show_default=True,
              help="Seconds: two positives of one user form a pair when at most this far apart.")
@click.option("--neighbours", type=click.IntRange(min=1), default=_DEFAULTS["neighbours"], show_default=True,
              help="Each positive pairs with this many following positives of the same user.")
@click.option("--patience", type=click.IntRange(min=1), default=_DEFAULTS["patience"], show_default=True,
              help="Stop after this many epochs without a lower validation loss.")
@click.option("--scale", type=click.FloatRange(min=0, min_open=True), default=_DEFAULTS["scale"], show_default=True,
              help="Inverse temperature of the contrastive logits.")
@click.option("--pooling", type=click.Choice(["mean", "cls", "last"]), default=None,
              help="Pooling (default: what the base folder declares, else mean).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True,
              help="Where to train (cuda: float32 weights; not yet run on a GPU).")
@click.option("--train-layers", default="3", show_default=True, metavar="N|all",
              help="Train only the top N transformer layers: the embeddings and the layers below are frozen and run "
                   "once per item, so a step costs about N/L of a full one; all = every weight.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (default: every CPU this process may use).")
@click.option("--seed", type=int, default=_DEFAULTS["seed"], show_default=True,
              help="Seed of the pair subsets, the batch order and dropout.")
@click.option("--overwrite", is_flag=True, help="Replace MODEL_DIR if it exists (atomically, once the new model is complete).")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=50, show_default=True, metavar="STEPS",
              help="Write a checkpoint every STEPS steps (and after every epoch; 0: after every epoch only), "
                   "beside MODEL_DIR, for --resume.")
@click.option("--resume", is_flag=True,
              help="Continue the interrupted fine-tune into --out from its last checkpoint, with its own settings "
                   "(only --threads and --checkpoint-every may change): the same weights as an uninterrupted run.")
@click.pass_context
def finetune(ctx: click.Context, dataset: Path, base: str, out: Path, epochs: int, batch_size: int, max_length: int, lr: float,
             max_pairs: int, max_valid_pairs: int, window: float, neighbours: int, patience: int, scale: float,
             pooling: str | None, device: str, train_layers: str, threads: int | None, seed: int, overwrite: bool,
             checkpoint_every: int, resume: bool) -> None:
    """Fine-tune a BERT encoder on DATASET's co-engagement pairs and save it as a model folder.

    \b
    Pairs: consecutive positive events (action weight > 0; ratings >= the manifest's
    positive_rating) of one user, at most --window seconds apart, from TRAINING users only
    (users.parquet split == train); validation users' pairs give the validation loss; test users
    are never read. Loss: symmetric InfoNCE with in-batch negatives (same-item columns masked),
    on the vectors `encode` computes (same tokenizer, pooling, L2 normalisation). The validation
    loss is computed before training and after every epoch; training stops after --patience
    epochs without improvement and the best epoch's weights are saved.

    \b
    MODEL_DIR is a Hugging Face folder (config.json, model.safetensors, tokenizer, pooling,
    sentence_bert_config.json) plus finetune.json (base, dataset, pair counts, epochs, seed,
    losses), written atomically. Encode with it like with any local model folder.

    \b
    Example (ml-100k: about 8 minutes on 2 idle CPU cores, 20+ when they are busy):
      interestgym finetune runs/data/ml-100k --base minilm --out runs/models/minilm-ml100k
      cp -r runs/data/ml-100k runs/data/ml-100k-ft     # a copy: the original keeps its one embedding
      interestgym encode runs/data/ml-100k-ft --encoder runs/models/minilm-ml100k
    \b
    A checkpoint is written every --checkpoint-every steps and after every epoch (in
    .MODEL_DIR.checkpoint beside MODEL_DIR, removed at the end); an interrupted fine-tune
    continues with the same command and --resume, to the weights an uninterrupted run writes.
    """
    from dataclasses import fields, replace

    from click.core import ParameterSource
    from interestgym.encoders.finetune import FinetuneConfig
    from interestgym.encoders.finetune import finetune as run_finetune
    from interestgym.encoders.finetune_checkpoint import (
        checkpoint_dir,
        describe,
        read_checkpoint,
        saved_config,
        written_after,
    )

    from interestgym.data.dataset import Dataset

    layers: int | None = None
    if train_layers != "all":
        try:
            layers = int(train_layers)
        except ValueError:
            raise click.BadParameter(f"{train_layers!r}: expected a whole number of layers or 'all'", param_hint="--train-layers") from None
    ds = Dataset.open(dataset)
    config = FinetuneConfig(base=base, max_length=max_length, batch_size=batch_size, epochs=epochs, learning_rate=lr,
                            scale=scale, window_seconds=window, neighbours=neighbours, max_pairs=max_pairs,
                            max_valid_pairs=max_valid_pairs, patience=patience, pooling=pooling, seed=seed, device=device,
                            train_layers=layers, threads=threads)
    if resume:
        # the checkpoint's settings, with those given on the command line (finetune refuses any that differ but --threads)
        field_of = {"lr": "learning_rate", "window": "window_seconds"}
        names = {f.name for f in fields(FinetuneConfig)}
        given = {field_of.get(p, p) for p in ctx.params if ctx.get_parameter_source(p) == ParameterSource.COMMANDLINE}
        config = replace(FinetuneConfig(**saved_config(read_checkpoint(checkpoint_dir(out)))),
                         **{name: getattr(config, name) for name in given & names})
    try:
        result = run_finetune(ds, out, config, overwrite=overwrite, resume=resume, checkpoint_every=checkpoint_every,
                              log=lambda message: click.echo(message, err=True))
    except KeyboardInterrupt:
        left = checkpoint_dir(out)
        try:
            doc = read_checkpoint(left)
        except Exception:  # noqa: BLE001 - no checkpoint yet (or none readable): nothing to resume
            click.echo(f"interrupted: nothing was written to {out}, and no checkpoint yet; a fine-tune starts over when run "
                       "again", err=True)
        else:
            if written_after(doc, left, out):
                click.echo(f"interrupted after the fine-tuned model was written to {out}; {left} is left over (the next "
                           "fine-tune into it removes it)", err=True)
            else:
                again = " --overwrite" if overwrite else ""  # OUT held a model this run was to replace
                click.echo(f"interrupted: nothing was written to {out}; the last checkpoint ({describe(doc)}) is in {left}: "
                           f"continue with `interestgym finetune {dataset} --out {out} --resume{again}`", err=True)
        raise Interrupted from None  # said what it left: the CLI adds no generic line
    click.echo(result.summary())
    if result.provenance.get("best_epoch") == 0:  # the folder holds the base model's weights: its vectors are the base's
        click.echo(f"Nothing to encode: {out} holds the weights of {result.provenance['base']['spec']} itself (no epoch "
                   "beat it on validation), so its vectors are the base's up to its maximum length (texts longer than the "
                   "folder's --max-length are cut there); try more pairs or epochs, or keep the base encoder")
        return
    copy = Path(f"{str(dataset).rstrip('/')}-{out.name}")
    click.echo(f"Next: encode a copy of the dataset (the original keeps its embedding, so commands without --embeddings "
               f"still know which to use): cp -r {dataset} {copy} && interestgym encode {copy} --encoder {out}")
